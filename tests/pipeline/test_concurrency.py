"""Concurrent loads into one table, and the fresh-partition path (COPY into a standalone child, attach at the
end): no duplicates, no loss, and the children end up with the parent's indexes."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import engine

ROWS = 60_000


def _file(path: Path, first_id: int, months: list[int]) -> None:
    """Rows whose time walks through ``months`` in the given order (so two files can cross each other)."""
    per = ROWS // len(months)
    frames = []
    for i, month in enumerate(months):
        ids = pl.int_range(first_id + i * per, first_id + (i + 1) * per, eager=True)
        frames.append(pl.DataFrame({"id": ids, "created_at": [dt.datetime(2026, month, 2)] * per}))
    pl.concat(frames).with_columns(v=pl.col("id") * 2).write_csv(path)


def _load(path: Path, table: str, dsn: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BICONIC_BATCH_ROWS": "2000", "BICONIC_CHUNK_MB": "0.05"}
    return subprocess.Popen([sys.executable, "-m", "engine", "load", str(path), "--into", table,
                             "--partition-by", "created_at", "--dsn", dsn, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_concurrent_loads_crossing_months_lose_and_duplicate_nothing(tmp_path: Path, pg_dsn: str, table: str,
                                                                      sql) -> None:  # type: ignore[no-untyped-def]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _file(a, 0, [2, 1, 3])
    _file(b, ROWS, [1, 3, 2])
    procs = {a: _load(a, table, pg_dsn), b: _load(b, table, pg_dsn)}
    outcomes = {path: p.communicate(timeout=300) for path, p in procs.items()}
    for path, p in procs.items():
        out, err = outcomes[path]
        if p.returncode != 0:
            # the only acceptable failure is a lock conflict (exit 5, "re-run to finish"); a re-run completes it
            assert p.returncode == 5 and "re-run" in err, err
            rerun = _load(path, table, pg_dsn)
            out, err = rerun.communicate(timeout=300)
            assert rerun.returncode == 0, err
        assert json.loads(out)["rows_quarantined"] == 0
    assert sql(f'SELECT count(*), count(DISTINCT id) FROM "{table}"') == [(2 * ROWS, 2 * ROWS)]


def test_fresh_partitions_get_the_parent_indexes(tmp_path: Path, pg_dsn: str, table: str, sql) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "f.csv"
    _file(path, 0, [4, 5])
    engine.load(path, into=table, partition_by="created_at", dsn=pg_dsn)
    for child in (f"{table}_p2026_04", f"{table}_p2026_05"):
        defs = sorted(r[0].split(" USING ")[1] for r in sql("SELECT indexdef FROM pg_indexes WHERE tablename = $1",
                                                             [child]))
        assert defs == ["brin (created_at)", "btree (connection_id, created_at DESC)"]
    # a second load into the same months goes through the attached children, indexes kept up to date
    again = tmp_path / "g.csv"
    _file(again, ROWS, [5, 4])
    engine.load(again, into=table, partition_by="created_at", dsn=pg_dsn)
    assert sql(f'SELECT count(*) FROM "{table}" WHERE connection_id = 0 AND created_at >= $1',
               [dt.datetime(2026, 5, 1)]) == [(ROWS,)]


def test_unique_and_dedupe_across_many_chunks(tmp_path: Path, pg_dsn: str, table: str, sql,  # type: ignore[no-untyped-def]
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition-wide steps decided by a first pass stay exact when the file is cut into many chunks,
    with a two-column key (the flattened key path) and keep='last'."""
    monkeypatch.setenv("BICONIC_CHUNK_MB", "0.002")
    n = 3000
    path = tmp_path / "d.csv"
    pl.DataFrame({
        "a": [i % 700 for i in range(n)], "b": [("x" if (i // 700) % 2 else None) for i in range(n)],
        "id": list(range(n)), "created_at": [dt.datetime(2026, 1, 1 + i % 28) for i in range(n)],
    }).write_csv(path)
    report = engine.load(path, into=table, partition_by="created_at", dsn=pg_dsn,
                         spec={"steps": [{"dedupe": {"keys": ["a", "b"], "keep": "last"}}],
                               "rules": [{"unique": ["a"]}]})
    # (a, b) has 1400 distinct values (b alternates null/x by block); the last of each survives dedupe; then unique on
    # a keeps the first surviving row of each a and quarantines the second
    assert (report.rows_in, report.rows_filtered) == (n, n - 1400)
    assert (report.rows_loaded, report.rows_quarantined) == (700, 700)
    source = pl.read_csv(path).select("a", "b", "id")
    expected_ids = source.group_by("a", "b").agg(pl.col("id").max())
    first_per_a = expected_ids.sort("id").group_by("a", maintain_order=True).first()["id"].sort().to_list()
    assert [r[0] for r in sql(f'SELECT id FROM "{table}" ORDER BY id')] == first_per_a


def test_unique_keys_that_never_repeat_skip_the_full_first_pass(tmp_path: Path, pg_dsn: str, table: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The key-only check settles a unique rule when no key occurs twice; one repeat sends it to the full pass,
    which still quarantines exactly the repeat. Seen from the source: how many times the file is read."""
    from engine.sources.files.csv import CsvSource

    monkeypatch.setenv("BICONIC_CHUNK_MB", "0.002")
    reads: list[str] = []
    chunks = CsvSource.chunks

    def counting(self: CsvSource, partition: Any) -> Any:
        reads.append(partition.label)
        return chunks(self, partition)

    monkeypatch.setattr(CsvSource, "chunks", counting)
    ids = list(range(2000))
    for name, keys, quarantined in (("u.csv", ids, 0), ("r.csv", [*ids[:-1], 7], 1)):
        path = tmp_path / name
        pl.DataFrame({"id": keys, "created_at": [dt.datetime(2026, 1, 1 + i % 28) for i in ids]}).write_csv(path)
        report = engine.load(path, into=table, partition_by="created_at", dsn=pg_dsn,
                             spec={"rules": [{"unique": ["id"]}]})
        assert (report.rows_loaded, report.rows_quarantined) == (2000 - quarantined, quarantined)
    # a probe of the first chunk, the key-only pass, the load; with a repeat also the full first pass
    assert reads.count("u.csv") == 3 and reads.count("r.csv") == 4
