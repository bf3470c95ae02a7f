"""New partitions filled on helper connections (engine.postgres.staging): the same rows and indexes as the
single-transaction path, nothing visible before the commit, and a killed load's leftovers never attached."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.errors import SinkError
from engine.postgres import staging

INDEXES = ["brin (created_at)", "btree (connection_id, created_at DESC)"]


def _file(path: Path, months: list[int], first_id: int = 0, per: int = 3000) -> Path:
    """``per`` rows for each entry of ``months`` (a month may repeat), ids counting up from ``first_id``."""
    ids = list(range(first_id, first_id + per * len(months)))
    pl.DataFrame({"id": ids, "connection_id": [i % 5 for i in ids],
                  "created_at": [dt.datetime(2026, months[n // per], 1 + i % 27, 10) for n, i in enumerate(ids)]}
                 ).write_csv(path)
    return path


def _children(sql, table: str) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r[0] for r in sql("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                    "WHERE i.inhparent = to_regclass($1)", [table]))


@pytest.mark.parametrize("streams", ["1", "2", "3"])
def test_every_stream_count_gives_the_same_rows_and_indexes(tmp_path: Path, pg_dsn: str, table: str, sql,  # type: ignore[no-untyped-def]
                                                            monkeypatch: pytest.MonkeyPatch, streams: str) -> None:
    monkeypatch.setenv("BICONIC_COPY_STREAMS", streams)
    monkeypatch.setenv("BICONIC_BATCH_ROWS", "2000")  # many parts per child
    path = _file(tmp_path / "a.csv", [3, 1, 2, 1, 3])
    report = engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn, archive=False)
    assert report.rows_loaded == 15_000
    assert sql(f'SELECT count(*), count(DISTINCT id) FROM "{table}"') == [(15_000, 15_000)]
    assert _children(sql, table) == [f"{table}_p2026_0{m}" for m in (1, 2, 3)]
    for child in _children(sql, table):
        defs = sorted(r[0].split(" USING ")[1] for r in sql("SELECT indexdef FROM pg_indexes WHERE tablename = $1",
                                                             [child]))
        assert defs == INDEXES  # adopted by the parent's indexes, not built twice
        assert sql("SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'c'",
                   [child]) == [(0,)]  # the staging bounds check is gone
    attached = sql("SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                   "WHERE p.relkind = 'I' AND p.relname LIKE $1", [f"{table}%"])
    assert attached == [(6,)]  # 3 children x 2 indexes, each attached to the parent's index
    # a second file appends into the attached children and adds a new one
    engine.load(_file(tmp_path / "b.csv", [2, 4], first_id=100_000), into=table, partition_by="created_at:month",
                dsn=pg_dsn, archive=False)
    assert sql(f'SELECT count(*) FROM "{table}"') == [(21_000,)]
    assert len(_children(sql, table)) == 4


@pytest.mark.parametrize("streams", ["1", "2"])
def test_a_killed_loads_staged_child_is_dropped_not_attached(tmp_path: Path, pg_dsn: str, table: str, sql,  # type: ignore[no-untyped-def]
                                                            monkeypatch: pytest.MonkeyPatch, streams: str) -> None:
    """A helper committed February's child, then the load was killed before attaching it: the next load of
    February drops that table (it carries the staging check) instead of attaching its rows."""
    monkeypatch.setenv("BICONIC_COPY_STREAMS", streams)
    engine.load(_file(tmp_path / "jan.csv", [1]), into=table, partition_by="created_at:month", dsn=pg_dsn,
                archive=False)
    orphan = f"{table}_p2026_02"
    sql(f'CREATE TABLE "{orphan}" (LIKE "{table}", CONSTRAINT "{staging.bounds_constraint(orphan)}" '
        "CHECK (created_at >= '2026-02-01' AND created_at < '2026-03-01'))")
    sql(f"INSERT INTO \"{orphan}\" (id, connection_id, created_at) SELECT g, 1, '2026-02-05' "
        "FROM generate_series(900000, 900099) g")
    engine.load(_file(tmp_path / "feb.csv", [2], first_id=50_000), into=table, partition_by="created_at:month",
                dsn=pg_dsn, archive=False)
    assert sql(f'SELECT count(*), min(id) FROM "{table}" WHERE created_at >= \'2026-02-01\'') == [(3000, 50_000)]
    assert orphan in _children(sql, table)


def test_a_foreign_table_with_a_childs_name_is_an_error(tmp_path: Path, pg_dsn: str, table: str, sql,  # type: ignore[no-untyped-def]
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_COPY_STREAMS", "2")
    engine.load(_file(tmp_path / "jan.csv", [1]), into=table, partition_by="created_at:month", dsn=pg_dsn,
                archive=False)
    sql(f'CREATE TABLE "{table}_p2026_02" (note text)')  # someone else's table, not ours to drop
    with pytest.raises(SinkError, match="exists and is not a partition"):
        engine.load(_file(tmp_path / "feb.csv", [2]), into=table, partition_by="created_at:month", dsn=pg_dsn,
                    archive=False)
    assert sql(f'SELECT count(*) FROM "{table}"') == [(3000,)]
    assert sql(f'SELECT count(*) FROM "{table}_p2026_02"') == [(0,)]


def test_a_failing_helper_rolls_the_load_back_and_a_rerun_completes(tmp_path: Path, pg_dsn: str, table: str,  # type: ignore[no-untyped-def]
                                                                    sql, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_COPY_STREAMS", "2")
    monkeypatch.setenv("BICONIC_BATCH_ROWS", "1000")
    path = _file(tmp_path / "a.csv", [1, 2, 3])
    real = staging.FreshChildren._copy
    calls = {"n": 0}

    def flaky(self, stream, child, data):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise SinkError("COPY into a staged child: server went away (injected)")
        return real(self, stream, child, data)

    monkeypatch.setattr(staging.FreshChildren, "_copy", flaky)
    with pytest.raises(SinkError, match="injected"):
        engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn, archive=False)
    assert sql("SELECT to_regclass($1)", [f'"{table}"']) == [(None,)]  # a failed first load leaves no table
    assert sql("SELECT count(*) FROM pg_class WHERE relname LIKE $1", [f"{table}%"]) == [(0,)]  # nor children
    monkeypatch.setattr(staging.FreshChildren, "_copy", real)
    report = engine.load(path, into=table, partition_by="created_at:month", dsn=pg_dsn, archive=False)
    assert (report.rows_loaded, report.skipped_partitions) == (9000, 0)
    assert sql(f'SELECT count(*), count(DISTINCT id) FROM "{table}"') == [(9000, 9000)]


def test_a_load_failing_after_its_children_were_committed_drops_them(tmp_path: Path, pg_dsn: str, table: str,  # type: ignore[no-untyped-def]
                                                                     sql, monkeypatch: pytest.MonkeyPatch) -> None:
    """The helpers committed and the children were attached, then the ledger update failed: the load's
    transaction rolls back (detaching them) and the committed standalone children are dropped, not left
    for a later load of the same months to find."""
    from engine.postgres import meta

    monkeypatch.setenv("BICONIC_COPY_STREAMS", "2")
    engine.load(_file(tmp_path / "jan.csv", [1]), into=table, partition_by="created_at:month", dsn=pg_dsn,
                archive=False)  # the table exists, so the failing load below only adds children

    def broken(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise SinkError("ledger update failed (injected)")

    monkeypatch.setattr(meta, "complete", broken)
    with pytest.raises(SinkError, match="injected"):
        engine.load(_file(tmp_path / "spring.csv", [2, 3, 4], first_id=10_000), into=table,
                    partition_by="created_at:month", dsn=pg_dsn, archive=False)
    leftovers = sql("SELECT relname FROM pg_class WHERE relname LIKE $1 AND relkind IN ('r', 'p')",
                    [f"{table}_p%"])
    assert sorted(r[0] for r in leftovers) == [f"{table}_p2026_01"]
    assert sql(f'SELECT count(*) FROM "{table}"') == [(3000,)]


def test_an_append_into_existing_children_opens_no_helper_connections(tmp_path: Path, pg_dsn: str, table: str,
                                                                       sql, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The helpers (two more connections, their threads and a stage lock) are opened for the first new child,
    not for every load: the platform's common load appends into months that exist."""
    import engine.pipeline.publish as publish

    opened: list[object] = []

    class Counted(staging.FreshChildren):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            opened.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(publish, "FreshChildren", Counted)
    engine.load(_file(tmp_path / "a.csv", [1, 2]), into=table, partition_by="created_at:month", dsn=pg_dsn,
                archive=False)
    assert len(opened) == 1
    engine.load(_file(tmp_path / "b.csv", [2, 1], first_id=10_000), into=table, partition_by="created_at:month",
                dsn=pg_dsn, archive=False)
    assert len(opened) == 1  # the same months: no helpers
    engine.load(_file(tmp_path / "c.csv", [3], first_id=20_000), into=table, partition_by="created_at:month",
                dsn=pg_dsn, archive=False)
    assert len(opened) == 2 and sql(f'SELECT count(*) FROM "{table}"') == [(15_000,)]
