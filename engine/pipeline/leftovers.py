"""What a failed load leaves behind, removed before it exits: the archive files it placed under their final
names for partitions that rolled back (never listed, so never read, but they fill the store), and the table a
failed first load created (with its ``biconic.datasets`` row); and, when a load starts, the work files of killed
loads (:func:`sweep_work_files`)."""

from __future__ import annotations

import logging

from engine.archive.writer import sweep_work_folders
from engine.names import qualified
from engine.pipeline.context import LoadState
from engine.postgres import meta
from engine.settings import settings
from engine.sources.api.spool import sweep_spools

__all__ = ["drop_if_unused", "drop_unlisted", "sweep_work_files"]

log = logging.getLogger("biconic.load")


def drop_unlisted(state: LoadState) -> None:
    """After a rollback: remove the archive files the rolled-back partitions placed (local or S3)."""
    if state.store is not None:
        for path in state.unlisted:
            state.store.remove(path)
    state.unlisted.clear()


def drop_if_unused(state: LoadState) -> None:
    """After a failed first load: drop the table it created and its dataset record, if nothing committed to
    it meanwhile. Best effort (the load's own error is what the user sees): a table another load is writing
    (its lock is taken) or that holds rows or ledger entries stays."""
    if not state.created_table:
        return
    state.created_table = False
    session, table = state.session, state.target.table
    conn = session.ddl
    try:
        session.rollback(conn)
        session.run("SELECT pg_advisory_xact_lock(hashtext($1))", [f"table:{table}"], conn=conn)
        session.run(f"LOCK TABLE {qualified(table)} IN ACCESS EXCLUSIVE MODE NOWAIT", conn=conn)
        empty = not session.run(f"SELECT 1 FROM {qualified(table)} LIMIT 1", conn=conn)
        if empty and meta.forget_dataset(session, table, conn=conn):
            session.run(f"DROP TABLE {qualified(table)}", conn=conn)
            session.commit(conn)
        else:
            session.rollback(conn)
    except Exception:  # locked by another load, or the server is gone: the table stays, as before
        log.debug("could not drop the unused table %s", table, exc_info=True)
        session.rollback(conn)


def sweep_work_files() -> None:
    """Remove what killed loads left in the work folder (archive work folders, API and MongoDB spools) at the start
    of every load, archived or not: otherwise each waits for the next load that writes a file of its kind."""
    base = settings().data_path / "tmp"
    if base.is_dir():
        sweep_work_folders(base)
        sweep_spools(base)
