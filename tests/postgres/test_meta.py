"""The engine's own tables: created once, and brought up to date by ``ensure_meta``: connection ids of any kind
(their ``connection_id`` columns hold text), the run log and the superseded columns of the quarantine; the
fast "already current" check stays true after."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from engine.postgres import meta
from engine.postgres.connection import Session
from engine.postgres.pool import meta_db
from tests.support import Sql

_TABLES = (meta.LOADS, meta.QUARANTINE, meta.MANIFEST)


@pytest.fixture
def old_dsn(server_dsn: str) -> Iterator[str]:
    """A database of its own (the engine's tables are rewritten here, as an older engine left them)."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    name = f"biconic_meta_{uuid.uuid4().hex[:10]}"
    with pgdbapi.connect(server_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base, _, query = server_dsn.partition("?")
    yield f"{base.rpartition('/')[0]}/{name}" + (f"?{query}" if query else "")
    with pgdbapi.connect(server_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _types(db: meta.Runs) -> set[str]:
    return {str(r[0]) for r in db.run("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                      "WHERE attrelid = ANY($1::regclass[]) AND attname = 'connection_id'",
                                      [list(_TABLES)])}


def test_ensure_meta_migrates_bigint_connection_ids_to_text(old_dsn: str) -> None:
    with meta_db(old_dsn) as db:
        meta.ensure_meta(db, conn=None)
        assert _types(db) == {"text"}
        # a database of an older engine: bigint ids, with a row in the ledger
        for table in _TABLES:
            db.run(f"ALTER TABLE {table} ALTER COLUMN connection_id TYPE bigint USING connection_id::bigint")
        db.run(f"INSERT INTO {meta.LOADS} (load_key, load_id, dataset, connection_id, source, partition_key, "
               "spec_hash, mode) VALUES ('k', 'l', 'old_ds', 42, 's', 'p', 'h', 'append')")
        meta.ensure_meta(db, conn=None)
        assert _types(db) == {"text"}
        assert db.run(f"SELECT connection_id FROM {meta.LOADS} WHERE load_key = 'k'") == [("42",)]
        # and now it is current: the fast check skips the DDL (no lock taken, nothing else run)
        ran: list[str] = []

        class Spy:
            def run(self, statement: str, params: object = None, *, conn: object = None) -> list[tuple[object, ...]]:
                ran.append(statement)
                return db.run(statement, params)  # type: ignore[arg-type]

        meta.ensure_meta(Spy(), conn=None)
        assert len(ran) == 1


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


@dataclass(frozen=True)
class _File:
    uri: str
    connection_id: Any
    period: dt.date
    rows: int
    bytes: int
    sha256: str
    min_time: dt.datetime | None
    max_time: dt.datetime | None


def test_record_files_lists_every_file_in_one_statement_and_updates_a_listed_one(
        pg_dsn: str, sql: Sql, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of files per load go in one INSERT; values keep their types (a naive time is read in the
    session's zone, UTC here, as a single bound value was), and a file listed again is updated, not doubled."""
    utc = dt.UTC
    files = [_File(f"file:///a/{i}.parquet", uuid.UUID(int=i) if i % 2 else i, dt.date(2026, 1 + i % 12, 1),
                   i, 10 * i, f"{i:064x}", dt.datetime(2026, 1, 1, i % 24) if i % 3 else None,
                   dt.datetime(2026, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))))
             for i in range(300)]
    with Session(pg_dsn) as session:
        meta.ensure_meta(session, conn=session.ddl)
        session.commit(session.ddl)
        statements: list[str] = []
        run = session.run
        monkeypatch.setattr(session, "run", lambda text, *a, **k: statements.append(text) or run(text, *a, **k))
        meta.record_files(session, files, dataset="public.t", load_key="k1", load_id="l1")
        assert len(statements) == 1
        meta.record_files(session, [dataclasses.replace(files[5], rows=999)], dataset="public.t", load_key="k1",
                          load_id="l2", state="cold")
        meta.record_files(session, [], dataset="public.t", load_key="k1", load_id="l3")
        session.commit()
    rows = {r[0]: r[1:] for r in sql(f"SELECT uri, connection_id, period, rows, bytes, sha256, min_time, max_time, "
                                      f"load_id, state FROM {meta.MANIFEST} WHERE dataset = 'public.t'")}
    assert len(rows) == 300
    assert rows[files[4].uri] == ("4", dt.date(2026, 5, 1), 4, 40, f"{4:064x}", dt.datetime(2026, 1, 1, 4, tzinfo=utc),
                                  dt.datetime(2026, 1, 1, 22, tzinfo=utc), "l1", "hot")
    assert rows[files[3].uri][0] == str(uuid.UUID(int=3)) and rows[files[3].uri][5] is None
    assert rows[files[5].uri][2:3] == (999,) and rows[files[5].uri][-2:] == ("l2", "cold")
