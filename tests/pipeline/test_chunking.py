"""How a file is cut into chunks and batches never changes what loads: partition-wide steps and rules, row
numbers, quarantine, and keys first seen deep in the file all come out as with one chunk.

A test marked 'Regression (review fix N)' reproduces one defect reported in the review (commit
"Review fixes: replace scoped to the connection, ..."): it must fail if that fix is undone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.report import LoadReport
from tests.support import Sql, accounted, column_types


def test_tiny_chunks_load_the_same_as_one_chunk(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition-wide steps and rules (dedupe, unique) and row numbers must not depend on chunking."""
    lines = ["id,day,amount,note"]
    for i in range(1, 121):
        amount = "oops" if i % 17 == 0 else f"{(i % 7) - 1},5"
        note = '"multi\nline"' if i % 13 == 0 else "n"
        lines.append(f"{i % 40},2024-0{1 + i % 3}-{1 + i % 27:02d},\"{amount}\",{note}")
    path = tmp_path / "mixed.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"999,2024-01-01,\"1,0\",bad\xed\xa0\x80\n")
    spec = {"steps": [{"parse_number": {"column": "amount", "decimal": ","}}, {"filter": "amount <> 0.5"},
                      {"dedupe": {"keys": ["id", "day"], "keep": "last"}}],
            "rules": [{"unique": "id"}, {"range": {"column": "amount", "min": 0}}]}

    def load(into: str) -> tuple[LoadReport, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        # most rows repeat an id on purpose: the point is the same outcome at any chunk size
        report = engine.load(path, into=into, dsn=pg_dsn, spec=spec, max_rejected="off")
        rows = sql(f'SELECT id, day, amount, note FROM "{into}" ORDER BY id, day')
        quarantined = sql("SELECT row_number, rule FROM biconic.quarantine WHERE dataset = $1 ORDER BY 1",
                          [into])
        return report, rows, quarantined

    whole, whole_rows, whole_q = load(table)
    monkeypatch.setenv("BICONIC_CHUNK_MB", str(64 / (1 << 20)))
    monkeypatch.setenv("BICONIC_BATCH_ROWS", "3")
    tiny, tiny_rows, tiny_q = load(f"{table}_tiny")
    accounted(whole)
    assert whole.rows_in == 121
    assert whole.rows_loaded > 0 and whole.rows_quarantined > 0 and whole.rows_filtered > 0
    assert "invalid_utf8" in whole.quarantine_by_rule
    assert (tiny.rows_in, tiny.rows_loaded, tiny.rows_quarantined, tiny.rows_filtered) == \
        (whole.rows_in, whole.rows_loaded, whole.rows_quarantined, whole.rows_filtered)
    assert tiny.quarantine_by_rule == whole.quarantine_by_rule
    assert tiny_rows == whole_rows
    assert tiny_q == whole_q


# Regression (review fix 8): NDJSON keys first seen late in the file.
@pytest.mark.parametrize("chunk_mb", [None, "0.05"])
def test_ndjson_key_first_seen_after_row_10020(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                               monkeypatch: pytest.MonkeyPatch, chunk_mb: str | None) -> None:
    if chunk_mb:
        monkeypatch.setenv("BICONIC_CHUNK_MB", chunk_mb)
    path = tmp_path / "late.ndjson"
    with path.open("w") as f:
        for i in range(1, 10_051):
            row: dict[str, Any] = {"id": i, "name": f"n{i}"}
            if i > 10_020:
                row["late"] = f"v{i}"
                row["late_n"] = i * 2
            f.write(json.dumps(row) + "\n")
    report = engine.load(path, into=table, dsn=pg_dsn)
    accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (10_050, 10_050, 0)
    types = column_types(sql, table)
    assert "late" in types and "late_n" in types, types
    rows = sql(f'SELECT id, late, late_n FROM "{table}" WHERE late IS NOT NULL OR late_n IS NOT NULL '
               "ORDER BY id")
    assert rows == [(i, f"v{i}", i * 2) for i in range(10_021, 10_051)]
