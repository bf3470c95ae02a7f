"""Judging a partition by its rejected rows: a file whose rows (nearly) all fail is the wrong file, the wrong
encoding or the wrong kind of ids, not a success with a long quarantine.

While a partition streams, :class:`Rejects` tallies its quarantined rows by (rule, column), keeps one example
reason of each and the first :data:`SAMPLE_ROWS` rows. Before the partition commits, :func:`judge` compares
them with the target's ``max_rejected`` (:mod:`engine.spec.limits`) and raises :class:`RejectedError`; the
caller rolls the partition back (the whole load for replace), then :func:`keep_sample` writes the sample to
``biconic.quarantine`` in a transaction of its own, so the user can see what went wrong.
"""

from __future__ import annotations

import logging

import polars as pl

from engine.errors import BiconicError, RejectedError
from engine.pipeline.context import LoadState
from engine.pipeline.counts import SAMPLE_ROWS, Counts, Rejects
from engine.postgres import copy, meta
from engine.sources.base import Partition

__all__ = ["SAMPLE_ROWS", "Rejects", "judge", "keep_sample"]

log = logging.getLogger(__name__)


def judge(state: LoadState, partition: Partition, counts: Counts) -> None:
    """Refuse to commit a partition with too many rejected rows (see :mod:`engine.spec.limits`)."""
    limit = state.target.max_rejected
    rows = counts.rows_in - counts.filtered
    if not limit.exceeded(rejected=counts.quarantined, rows=rows):
        return
    rejects = state.rejects if state.rejects is not None else Rejects()
    raise RejectedError(partition.label, rejected=counts.quarantined, rows=rows, limit=str(limit),
                        reasons=rejects.top(), load_id=state.report.load_id, kept=rejects.sampled,
                        hint=rejects.hint(), dataset=state.target.table)


def keep_sample(state: LoadState) -> None:
    """After the rollback: the failed partition's sample of rejected rows, in its own transaction. A failure
    here is logged, not raised: the user must see why the load failed, not why the sample was lost."""
    rejects, state.rejects = state.rejects, None
    if rejects is None or not rejects.sample:
        return
    try:
        copy.copy(state.session, meta.QUARANTINE, pl.concat(rejects.sample).to_arrow())
        state.session.commit()
    except BiconicError as exc:
        state.session.rollback()
        log.warning("could not keep the rejected rows' sample: %s", exc)
