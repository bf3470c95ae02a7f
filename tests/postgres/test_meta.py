"""The engine's own tables: created once, and brought up to date by ``ensure_meta`` (issue 11: connection ids
of any kind, so their ``connection_id`` columns hold text)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from engine.postgres import meta
from engine.postgres.pool import meta_db

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
