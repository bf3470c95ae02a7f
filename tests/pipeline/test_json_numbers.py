"""A JSON number past float64 reaches PostgreSQL digit for digit (as text: ``n::numeric`` is exact)."""

from __future__ import annotations

from pathlib import Path

import engine
from tests.support import Sql, data_types


def test_numbers_past_float64_load_exactly(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = tmp_path / "n.ndjson"
    path.write_text('{"id": 1, "n": 1e400}\n{"id": 2, "n": 0.1000000000000000055511151231257827}\n'
                    '{"id": 3, "n": 2.5}\n')
    report = engine.load(path, into=table, dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (3, 0)
    assert data_types(sql, table)["n"] == "text"
    rows = sql(f'SELECT n, n::numeric = 1e400, n::numeric::text FROM "{table}" ORDER BY id')
    assert rows[0][1] is True
    assert rows[1][2] == "0.1000000000000000055511151231257827" and rows[2][0] == "2.5"
