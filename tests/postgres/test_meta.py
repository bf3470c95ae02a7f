"""The engine's own tables: created once, and brought up to date by ``ensure_meta`` (issue 11: connection ids
of any kind, so their ``connection_id`` columns hold text)."""

from __future__ import annotations

from engine.postgres import meta
from engine.postgres.pool import meta_db
from tests.support import Sql

_TABLES = (meta.LOADS, meta.QUARANTINE, meta.MANIFEST)


def _types(sql: Sql) -> set[str]:
    return {str(r[0]) for r in sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                   "WHERE attrelid = ANY($1::regclass[]) AND attname = 'connection_id'",
                                   [list(_TABLES)])}


def test_ensure_meta_migrates_bigint_connection_ids_to_text(pg_dsn: str, sql: Sql) -> None:
    with meta_db(pg_dsn) as db:
        meta.ensure_meta(db, conn=None)
        assert _types(sql) == {"text"}
        # a database of an older engine: bigint ids, with a row in the ledger
        for table in _TABLES:
            sql(f"ALTER TABLE {table} ALTER COLUMN connection_id TYPE bigint USING connection_id::bigint")
        sql(f"INSERT INTO {meta.LOADS} (load_key, load_id, dataset, connection_id, source, partition_key, "
            "spec_hash, mode) VALUES ('k-migrate', 'l', 'old_ds', 42, 's', 'p', 'h', 'append')")
        try:
            meta.ensure_meta(db, conn=None)
            assert _types(sql) == {"text"}
            assert sql(f"SELECT connection_id FROM {meta.LOADS} WHERE load_key = 'k-migrate'") == [("42",)]
            # and now it is current: the fast check skips the DDL (no lock taken, nothing run)
            ran: list[str] = []

            class Spy:
                def run(self, statement: str, params: object = None, *,
                        conn: object = None) -> list[tuple[object, ...]]:
                    ran.append(statement)
                    return db.run(statement, params)  # type: ignore[arg-type]

            meta.ensure_meta(Spy(), conn=None)
            assert len(ran) == 1
        finally:
            sql(f"DELETE FROM {meta.LOADS} WHERE load_key = 'k-migrate'")
            meta.ensure_meta(db, conn=None)
