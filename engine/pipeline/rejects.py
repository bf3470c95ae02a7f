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
from collections import Counter
from typing import TYPE_CHECKING

import polars as pl

from engine.errors import BiconicError, RejectedError
from engine.pipeline.counts import Counts
from engine.postgres import copy, meta
from engine.sources.base import Partition

if TYPE_CHECKING:  # the load's state holds the partition's Rejects
    from engine.pipeline.context import LoadState

__all__ = ["SAMPLE_ROWS", "Rejects", "judge", "keep_sample"]

#: rejected rows kept in quarantine when their partition fails on them
SAMPLE_ROWS = 1_000
#: reasons named in the error
_TOP = 3
#: quarantine rules that point at the file's encoding rather than at its rows
_ENCODING_RULES = frozenset({"invalid_utf8"})

log = logging.getLogger(__name__)


class Rejects:
    """A partition's quarantined rows: counted by (rule, column), one example reason each, and a sample."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str | None]] = Counter()
        self.examples: dict[tuple[str, str | None], str] = {}
        self.sample: list[pl.DataFrame] = []
        self.sampled = 0

    def add(self, rows: pl.DataFrame) -> None:
        """Quarantine rows as written (``rule``, ``column_name``, ``reason``, ...)."""
        grouped = rows.group_by("rule", "column_name").agg(pl.len().alias("n"), pl.col("reason").first())
        for rule, column, n, reason in grouped.iter_rows():
            self.counts[(rule, column)] += n
            self.examples.setdefault((rule, column), reason or "")
        if self.sampled < SAMPLE_ROWS:
            part = rows.head(SAMPLE_ROWS - self.sampled)
            self.sample.append(part)
            self.sampled += part.height

    def top(self) -> list[tuple[str, str | None, int, str]]:
        """The most frequent reasons: (rule, column, rows, example reason)."""
        return [(rule, column, n, self.examples[(rule, column)])
                for (rule, column), n in self.counts.most_common(_TOP)]

    def hint(self) -> str:
        """The likely fix for the most frequent reasons."""
        if any(rule in _ENCODING_RULES for rule, _column in self.counts):
            return "wrong encoding? try --option encoding=latin-1 (or cp1252; in a pipeline file: source.encoding)"
        return ""


def judge(state: LoadState, partition: Partition, counts: Counts) -> None:
    """Refuse to commit a partition with too many rejected rows (see :mod:`engine.spec.limits`)."""
    limit = state.target.max_rejected
    rows = counts.rows_in - counts.filtered
    if not limit.exceeded(rejected=counts.quarantined, rows=rows):
        return
    rejects = state.rejects if state.rejects is not None else Rejects()
    raise RejectedError(partition.label, rejected=counts.quarantined, rows=rows, limit=str(limit),
                        reasons=rejects.top(), load_id=state.report.load_id, kept=rejects.sampled,
                        hint=rejects.hint())


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
