"""The re-load rule of append and merge: which key each source partition commits under, or whether it is skipped.

- A partition whose load key (or the key an older release gave it, :attr:`Partition.former`) is in the ledger is
  skipped: a file's key follows its bytes, so a touched or re-downloaded file adds nothing.
- A *volatile* partition (a database table read without a cursor: its key cannot see changes) is read again by
  every merge, under a key of its own run (the load id): its rows update the old ones, and each run has its own
  ledger row and archive file. Append skips it like any re-run.
- A full refresh (``full_refresh=True``) loads every partition again, on purpose, under a key naming the refresh
  (or its usual key, for a partition never loaded before). The refresh is recorded in ``biconic.refreshes`` until
  every partition committed, so a re-run after a crash resumes the same refresh: the partitions it committed are
  skipped and nothing is loaded twice. Replace is one transaction and needs none of this (see
  :func:`engine.pipeline.publish.replace_all`).
"""

from __future__ import annotations

import hashlib
import uuid

from engine.pipeline.context import LoadState, Refresh
from engine.postgres import meta, meta_refresh
from engine.sources.base import Partition

__all__ = ["again", "begin_refresh", "end_refresh", "key_to_load"]


def again(key: str, run: str) -> str:
    """The key of loading ``key``'s partition once more, in the run or refresh ``run``."""
    return hashlib.sha256(f"{key}\x1f{run}".encode()).hexdigest()


def _scope(state: LoadState) -> str:
    """What a full refresh belongs to: the source (without secrets) and everything that shapes the load."""
    text = "\x1f".join([state.report.source, state.spec.source.format or "", state.spec_hash])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def begin_refresh(state: LoadState, keys: list[str]) -> None:
    """Start a full refresh, or resume the one a crash interrupted; note which keys it loads as first loads."""
    if not state.full_refresh:
        return
    session, target = state.session, state.target
    scope = _scope(state)
    refresh_id, first = meta_refresh.start_refresh(session, target.table, target.connection_id, scope, uuid.uuid4().hex,
                                           conn=session.ddl)
    # a key loaded by this refresh as a first load is in ``first`` already: it must not become a second load
    first |= {k for k in keys if k not in first and not meta.is_loaded(session, k, conn=session.ddl)}
    meta_refresh.note_first_keys(session, target.table, target.connection_id, scope, first, conn=session.ddl)
    session.commit(session.ddl)
    state.refresh = Refresh(scope=scope, refresh_id=refresh_id, first_keys=frozenset(first))


def end_refresh(state: LoadState) -> None:
    """Every partition of the full refresh committed: the next one starts anew."""
    if state.refresh is None:
        return
    session, target = state.session, state.target
    meta_refresh.finish_refresh(session, target.table, target.connection_id, state.refresh.scope, conn=session.ddl)
    session.commit(session.ddl)


def key_to_load(state: LoadState, partition: Partition, key: str, former: list[str]) -> str | None:
    """The key to commit the partition under, or None to skip it (already loaded); ``former``: the keys older
    releases gave the partition."""
    session = state.session
    if state.refresh is not None:
        chosen = key if key in state.refresh.first_keys else again(key, state.refresh.refresh_id)
    elif partition.volatile and state.target.mode == "merge":
        chosen = again(key, state.report.load_id)
    else:
        chosen = key
        if any(meta.is_loaded(session, k, conn=session.ddl) for k in former):
            return None
    return None if meta.is_loaded(session, chosen, conn=session.ddl) else chosen
