"""The run log: every load run leaves one row in ``biconic.runs``, whatever becomes of it.

The row is inserted on the load's ``ddl`` connection and committed before any data moves, so it survives
the rollback of a failed partition; the outcome is written at the end on a pooled autocommit connection of
its own (the load's connections may be mid-failure). Writing the outcome never hides the load's own error:
that error propagates unchanged, and a log that cannot be written costs one warning.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from engine.errors import first_line
from engine.ids import ConnectionId
from engine.postgres import meta
from engine.postgres.connection import Session
from engine.postgres.pool import meta_db
from engine.redact import redact
from engine.report import LoadReport

__all__ = ["RunLog", "recorded"]

log = logging.getLogger("biconic.runs")


class RunLog:
    """One run's row in ``biconic.runs``: :meth:`begin` once the schema exists, then :meth:`finish`."""

    def __init__(self, dsn: str, report: LoadReport, connection_id: ConnectionId | None) -> None:
        self.dsn, self.report, self.connection_id = dsn, report, connection_id
        self.started = time.perf_counter()
        self.begun = False

    def begin(self, session: Session) -> None:
        """Insert the run's row on the ddl connection (the caller commits it with the schema)."""
        r = self.report
        meta.start_run(session, r.load_id, dataset=r.table, source=r.source, mode=r.mode,
                       connection_id=self.connection_id, conn=session.ddl)
        self.begun = True

    def finish(self, error: BaseException | None = None) -> None:
        """Write the outcome; the counts come from the partitions the run committed."""
        if not self.begun:
            return
        seconds = self.report.seconds if error is None and self.report.seconds else time.perf_counter() - self.started
        try:
            with meta_db(self.dsn) as db:
                meta.finish_run(db, self.report.load_id, outcome="succeeded" if error is None else "failed",
                                seconds=round(seconds, 3), skipped=self.report.skipped_partitions,
                                error_class=None if error is None else type(error).__name__,
                                error=None if error is None else redact(first_line(error)))
        except Exception as exc:  # the load's outcome stands; only its log line is missing
            log.warning("could not record the outcome of load %s: %s", self.report.load_id,
                        redact(first_line(exc)))


@contextlib.contextmanager
def recorded(dsn: str, report: LoadReport, connection_id: ConnectionId | None) -> Iterator[RunLog]:
    """Record the run around the block: ``failed`` with the error's class and one-line message if it raises
    (the error goes on unchanged), else ``succeeded`` (or ``nothing to do``)."""
    run = RunLog(dsn, report, connection_id)
    try:
        yield run
    except BaseException as exc:
        run.finish(exc)
        raise
    run.finish()
