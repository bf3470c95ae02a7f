"""The ``biconic`` schema migrates forward: a database made by an older engine (no run log, no superseded
columns on the quarantine) gets them on the next load, and the fast "already current" check stays true after."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.postgres import meta
from engine.postgres.connection import Session
from tests.support import Sql


def test_ensure_meta_adds_the_run_log_and_supersede_columns(pg_dsn: str, sql: Sql) -> None:
    with Session(pg_dsn) as session:
        meta.ensure_meta(session, conn=session.ddl)
        session.commit(session.ddl)
    # what an engine before the run log left behind
    sql("DROP TABLE biconic.runs")
    sql("ALTER TABLE biconic.quarantine DROP COLUMN superseded_by, DROP COLUMN superseded_at, "
        "DROP COLUMN partition_key")
    with Session(pg_dsn) as session:
        meta.ensure_meta(session, conn=session.ddl)
        session.commit(session.ddl)
    assert sql("SELECT to_regclass('biconic.runs') IS NOT NULL") == [(True,)]
    columns = {r[0] for r in sql("SELECT column_name FROM information_schema.columns WHERE table_schema = 'biconic' "
                                 "AND table_name = 'quarantine'")}
    assert {"partition_key", "superseded_by", "superseded_at"} <= columns
    # current now: a further call takes no lock and runs no DDL
    with Session(pg_dsn) as session:
        seen = _Seen(session)
        meta.ensure_meta(seen, conn=session.ddl)
        session.commit(session.ddl)
    assert len(seen.statements) == 1 and seen.statements[0].startswith("SELECT 1 FROM pg_attribute")


class _Seen:
    """A session that notes every statement it runs."""

    def __init__(self, session: Session) -> None:
        self.session, self.statements = session, list[str]()

    def run(self, sql: str, params: Sequence[Any] | None = None, *, conn: Any = None) -> list[tuple[Any, ...]]:
        self.statements.append(sql)
        return self.session.run(sql, params, conn=conn)
