"""``split_mb`` into PostgreSQL: a file loaded as byte ranges gives exactly the rows and quarantine of a whole
load, each range commits through the ledger on its own, and a file loaded whole before is not loaded again."""

from __future__ import annotations

from pathlib import Path

import engine
from engine.pipeline import load_spec
from engine.pipeline.runner import spec_hash
from tests.support import Sql, accounted

#: about 1 KiB per range; types inferred from the first 40 rows (later ranges never see them, and still get them);
#: amount's type is given, so its late bad values are quarantined, not widened as late drift (test_late_drift)
_SPLIT = {"split_mb": 0.001, "infer_rows": 40, "dtypes": {"amount": "double"}}
_WHOLE = {"infer_rows": 40, "dtypes": {"amount": "double"}}
_RULES = {"rules": [{"range": {"column": "amount", "min": 0}}]}


def _orders(tmp_path: Path) -> Path:
    """400 records over about 18 KiB: quoted commas and newlines, and a bad amount on every 50th line."""
    lines = ["id,note,amount"]
    for i in range(1, 401):
        note = f'"line one\nline two, {i}"' if i % 11 == 0 else f'"say ""hi"" {i}"'
        amount = "oops" if i % 50 == 0 else ("-1" if i % 75 == 0 else f"{i}.5")
        lines.append(f"{i},{note},{amount}")
    path = tmp_path / "orders.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(sql: Sql, table: str) -> list[tuple[object, ...]]:
    return sql(f'SELECT id, note, amount FROM "{table}" ORDER BY id')


def _quarantine(sql: Sql, table: str) -> list[tuple[object, ...]]:
    return sql("SELECT row_number, rule FROM biconic.quarantine WHERE dataset = $1 ORDER BY 1", [table])


def test_a_split_load_gives_the_rows_of_a_whole_load(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = _orders(tmp_path)
    whole = engine.load(path, into=table, dsn=pg_dsn, spec=_RULES, options=_WHOLE, max_rejected="off")
    split = engine.load(path, into=f"{table}_split", dsn=pg_dsn, spec=_RULES, options=_SPLIT,
                        max_rejected="off")
    accounted(split)
    assert whole.source_partitions == 1 and split.source_partitions > 5
    assert (split.rows_in, split.rows_loaded, split.rows_quarantined) == \
        (whole.rows_in, whole.rows_loaded, whole.rows_quarantined) == (400, 389, 11)
    assert _rows(sql, f"{table}_split") == _rows(sql, table)
    assert _quarantine(sql, f"{table}_split") == _quarantine(sql, table)


def test_quarantine_row_numbers_are_the_whole_files(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """Row numbers count records from the header (line 1): record 50 is row 51, whatever range holds it."""
    path = _orders(tmp_path)
    engine.load(path, into=table, dsn=pg_dsn, options=_SPLIT, max_rejected="off")
    assert [n for n, _ in _quarantine(sql, table)] == [i + 1 for i in range(50, 401, 50)]


def test_a_split_reload_is_a_no_op(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = _orders(tmp_path)
    first = engine.load(path, into=table, dsn=pg_dsn, options=_SPLIT, max_rejected="off")
    again = engine.load(path, into=table, dsn=pg_dsn, options=_SPLIT, max_rejected="off")
    assert first.rows_loaded == 392 and again.rows_loaded == 0
    assert again.skipped_partitions == again.source_partitions == first.source_partitions
    assert sql(f'SELECT count(*) FROM "{table}"') == [(392,)]


def test_a_file_loaded_whole_before_counts_as_loaded(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    path = _orders(tmp_path)
    engine.load(path, into=table, dsn=pg_dsn, options=_WHOLE, max_rejected="off")
    split = engine.load(path, into=table, dsn=pg_dsn, options=_SPLIT, max_rejected="off")
    assert split.source_partitions > 5 and split.skipped_partitions == split.source_partitions
    assert split.rows_loaded == 0
    assert sql(f'SELECT count(*) FROM "{table}"') == [(392,)]


def test_split_mb_is_not_part_of_the_load_identity(tmp_path: Path) -> None:
    path = str(_orders(tmp_path))
    plain = load_spec(path, "orders", options={"delimiter": ","})
    split = load_spec(path, "orders", options={"delimiter": ",", "split_mb": 64})
    other = load_spec(path, "orders", options={"delimiter": ";"})
    assert spec_hash(plain) == spec_hash(split) != spec_hash(other)


def test_a_split_ndjson_load_gives_the_rows_of_a_whole_load(tmp_path: Path, pg_dsn: str, table: str,
                                                           sql: Sql) -> None:
    path = tmp_path / "events.ndjson"
    amounts = {i: "-1" if i % 40 == 0 else str(i) for i in range(1, 301)}
    path.write_text("".join(f'{{"id": {i}, "amount": {a}}}\n' + ("\n" if i % 3 == 0 else "")  # blank lines too
                            for i, a in amounts.items()))
    whole = engine.load(path, into=table, dsn=pg_dsn, spec=_RULES, max_rejected="off")
    split = engine.load(path, into=f"{table}_split", dsn=pg_dsn, spec=_RULES,
                        options={"split_mb": _SPLIT["split_mb"]}, max_rejected="off")
    assert split.source_partitions > 3
    assert (split.rows_loaded, split.rows_quarantined) == (whole.rows_loaded, whole.rows_quarantined) == (293, 7)
    assert sql(f'SELECT id, amount FROM "{table}_split" ORDER BY id') == \
        sql(f'SELECT id, amount FROM "{table}" ORDER BY id')
    assert _quarantine(sql, f"{table}_split") == _quarantine(sql, table)


def test_the_cli_takes_split_mb_as_a_reader_option(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    import json

    from click.testing import CliRunner

    from engine.cli import cli

    path = _orders(tmp_path)
    args = ["load", str(path), "--into", table, "--dsn", pg_dsn, "--option", "split_mb=0.002",
            "--max-rejected", "off", "--json"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert report["source_partitions"] >= 3 and report["rows_in"] == 400
    again = json.loads(CliRunner().invoke(cli, args).output)
    assert again["rows_loaded"] == 0 and again["skipped_partitions"] == report["source_partitions"]
    bad = CliRunner().invoke(cli, [*args[:6], "split_mb=-2"])
    assert bad.exit_code != 0 and "split_mb" in bad.output and "Traceback" not in bad.output
