"""A dataset's index set in PostgreSQL (engine.postgres.indexes): the default pair, a declared set (GiST
included), declared indexes added to an existing table, and every new child repeating its parent's set, so
that attaching it adopts the indexes instead of building them again."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import engine
from engine.errors import SpecError
from engine.postgres import ddl
from engine.postgres.connection import Session
from tests.support import Sql, orders_frame


def _defs(sql: Sql, table: str) -> list[str]:
    """A table's index definitions from ``USING`` on (the names differ between a parent and its children)."""
    return sorted(str(r[0]).split(" USING ")[1] for r in sql("SELECT indexdef FROM pg_indexes WHERE tablename = $1",
                                                             [table]))


def _adopted(sql: Sql, child: str) -> int:
    """How many of a child's indexes are attached to an index of its parent."""
    return int(sql("SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid "
                   "WHERE x.indrelid = to_regclass($1)", [f'"{child}"'])[0][0])


def _file(tmp_path: Path, name: str, start: dt.date) -> Path:
    path = tmp_path / name
    orders_frame(6, start=start, step_days=3).write_parquet(path)
    return path


def test_the_default_set_is_brin_and_the_composite_btree_on_every_child(tmp_path: Path, pg_dsn: str, table: str,
                                                                        sql: Sql) -> None:
    engine.load(_file(tmp_path, "a.parquet", dt.date(2026, 1, 1)), into=table, partition_by="created_at",
                dsn=pg_dsn, archive=False)
    expected = ["brin (created_at)", "btree (connection_id, created_at DESC)"]
    assert _defs(sql, table) == expected
    assert _defs(sql, f"{table}_p2026_01") == expected
    assert _adopted(sql, f"{table}_p2026_01") == 2


def test_a_declared_set_replaces_the_default_and_gist_says_what_it_needs(tmp_path: Path, pg_dsn: str, table: str,
                                                                         sql: Sql) -> None:
    path = _file(tmp_path, "a.parquet", dt.date(2026, 1, 1))
    declared = ["btree(connection_id, created_at desc)", "gist(city, created_at)"]
    sql("DROP EXTENSION IF EXISTS btree_gist")
    with pytest.raises(SpecError) as failed:
        engine.load(path, into=table, partition_by="created_at", dsn=pg_dsn, archive=False, indexes=declared)
    message = str(failed.value)
    assert "\n" not in message and "gist(city, created_at)" in message and "btree_gist" in message, message
    assert sql("SELECT to_regclass($1)", [f'"{table}"']) == [(None,)]  # the new table went with the failure
    sql("CREATE EXTENSION btree_gist")
    report = engine.load(path, into=table, partition_by="created_at", dsn=pg_dsn, archive=False, indexes=declared)
    assert report.rows_loaded == 6
    expected = ["btree (connection_id, created_at DESC)", "gist (city, created_at)"]
    assert _defs(sql, table) == expected
    assert _defs(sql, f"{table}_p2026_01") == expected and _adopted(sql, f"{table}_p2026_01") == 2
    # none at all, for a table that is only ever scanned whole
    engine.load(path, into=f"{table}_bare", partition_by="created_at", dsn=pg_dsn, archive=False, indexes=[])
    assert _defs(sql, f"{table}_bare") == [] and _defs(sql, f"{table}_bare_p2026_01") == []


def test_an_existing_table_gets_the_declared_indexes_it_lacks_and_keeps_the_others(tmp_path: Path, pg_dsn: str,
                                                                                   table: str, sql: Sql) -> None:
    engine.load(_file(tmp_path, "a.parquet", dt.date(2026, 1, 1)), into=table, partition_by="created_at",
                dsn=pg_dsn, archive=False)
    engine.load(_file(tmp_path, "b.parquet", dt.date(2026, 3, 1)), into=table, partition_by="created_at",
                dsn=pg_dsn, archive=False, indexes=["btree(city)"])
    expected = ["brin (created_at)", "btree (city)", "btree (connection_id, created_at DESC)"]
    assert _defs(sql, table) == expected
    for child in (f"{table}_p2026_01", f"{table}_p2026_03"):  # built on the old child, adopted by the new one
        assert _defs(sql, child) == expected and _adopted(sql, child) == 3
    with pytest.raises(SpecError, match=r"^target.indexes: index 'btree\(nope\)': \S+ has no column 'nope'$"):
        engine.load(_file(tmp_path, "c.parquet", dt.date(2026, 5, 1)), into=table, partition_by="created_at",
                    dsn=pg_dsn, archive=False, indexes=["btree(nope)"])


def test_a_table_made_with_the_old_third_index_repeats_it_on_new_children(tmp_path: Path, pg_dsn: str, table: str,
                                                                          sql: Sql) -> None:
    """Tables created before this release have a single-column B-tree on connection_id: the table's own set is
    read from the catalog, so a child filled beside the load is built with all three and attaching it adopts
    them (built with the default two, the third would be built again at attach time, in the load's
    transaction)."""
    engine.load(_file(tmp_path, "a.parquet", dt.date(2026, 1, 1)), into=table, partition_by="created_at",
                dsn=pg_dsn, archive=False)
    sql(f'CREATE INDEX "{table}_conn_idx" ON "{table}" (connection_id)')
    with Session(pg_dsn) as session:
        info = ddl.describe(session, table)
    assert info is not None and sorted(info.indexes) == ["USING brin (created_at)", "USING btree (connection_id)",
                                                         "USING btree (connection_id, created_at DESC)"]
    engine.load(_file(tmp_path, "b.parquet", dt.date(2026, 3, 1)), into=table, partition_by="created_at",
                dsn=pg_dsn, archive=False)
    child = f"{table}_p2026_03"
    assert _defs(sql, child) == ["brin (created_at)", "btree (connection_id)",
                                 "btree (connection_id, created_at DESC)"]
    assert _adopted(sql, child) == 3
