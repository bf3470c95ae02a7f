"""Load history at hand: every run logged in ``biconic.runs`` (succeeded, failed with its message, nothing to
do), ``biconic loads`` and ``biconic quarantine`` over it, rejected rows superseded by a later load of the same
source partition, and the ``biconic.*`` tables readable through ``biconic query``."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import engine
from engine.cli import cli
from engine.errors import PartialLoadError, SchemaDriftError, SpecError
from engine.reads.history import parse_since
from tests.support import Sql

BAD = "day,order_id,qty\n2024-01-01,1,5\n2024-01-02,,6\n2024-01-03,3,-1\n2024-01-04,4,7\n"
FIXED = "day,order_id,qty\n2024-01-01,1,5\n2024-01-02,2,6\n2024-01-03,3,1\n2024-01-04,4,7\n"
RULES = {"rules": [{"not_null": "order_id"}, {"range": {"column": "qty", "min": 0}}]}


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _json(*args: str) -> Any:
    result = _cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- the run log ------------------------------------------------------------------------------------------------
def test_a_load_shows_in_loads_json_with_counts_and_outcome(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = _write(tmp_path / "orders.csv", BAD)
    report = engine.load(path, into=table, connection_id=9, spec=RULES, dsn=pg_dsn)
    (run,) = _json("loads", "--dataset", table, "--dsn", pg_dsn)
    assert run["load_id"] == report.load_id and run["outcome"] == "succeeded"
    assert (run["rows_in"], run["rows_loaded"], run["rows_quarantined"], run["rows_filtered"]) == (4, 2, 2, 0)
    assert (run["partitions_done"], run["partitions_skipped"]) == (1, 0)
    assert run["source"] == str(path) and run["mode"] == "append" and run["connection_id"] == "9"
    assert run["seconds"] > 0 and run["finished_at"] >= run["started_at"] and run["error"] is None
    again = engine.load(path, into=table, connection_id=9, spec=RULES, dsn=pg_dsn)
    newest, oldest = _json("loads", "--dataset", table, "--dsn", pg_dsn)  # newest first
    assert (newest["load_id"], oldest["load_id"]) == (again.load_id, report.load_id)
    assert newest["outcome"] == "nothing to do" and newest["partitions_skipped"] == 1 and newest["rows_in"] == 0
    assert [r["load_id"] for r in engine.loads(table, limit=1, dsn=pg_dsn)] == [again.load_id]


def test_a_spec_error_after_start_is_logged_as_failed(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = _write(tmp_path / "a.csv", "day,v\n2024-01-01,1\n")
    with pytest.raises(SpecError) as info:
        engine.load(path, into=table, spec={"steps": [{"derive": {"w": "nope + 1"}}]}, dsn=pg_dsn)
    (run,) = engine.loads(table, dsn=pg_dsn)
    assert run["outcome"] == "failed" and run["error_class"] == "SpecError"
    assert run["error"] == str(info.value) and "unknown column 'nope'" in run["error"]
    assert run["rows_in"] == 0 and run["partitions_done"] == 0 and run["finished_at"] is not None


def test_a_failure_after_one_partition_keeps_what_committed(tmp_path: Path, pg_dsn: str, table: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder / "a.csv", "day,v\n2024-01-01,1\n2024-01-02,2\n")
    _write(folder / "b.csv", "day,v,extra\n2024-01-03,3,x\n")  # a new column: refused under freeze
    _write(tmp_path / "first.csv", "day,v\n2023-12-31,0\n")
    engine.load(tmp_path / "first.csv", into=table, contract="freeze", dsn=pg_dsn)
    with pytest.raises(PartialLoadError) as info:
        engine.load(folder, into=table, contract="freeze", dsn=pg_dsn)
    assert isinstance(info.value.failures[0][1], SchemaDriftError)
    failed = _json("loads", "--dataset", table, "--dsn", pg_dsn)[0]
    assert failed["outcome"] == "failed" and failed["error_class"] == "PartialLoadError"
    assert failed["error"] == str(info.value)
    assert (failed["partitions_done"], failed["rows_loaded"]) == (1, 2)  # a.csv committed before b.csv failed


def test_since_filters_and_a_bad_value_is_one_line(tmp_path: Path, pg_dsn: str, table: str) -> None:
    report = engine.load(_write(tmp_path / "a.csv", "day,v\n2024-01-01,1\n"), into=table, dsn=pg_dsn)
    assert [r["load_id"] for r in _json("loads", "--dataset", table, "--since", "1h", "--dsn", pg_dsn)] == \
        [report.load_id]
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    assert _json("loads", "--dataset", table, "--since", tomorrow, "--dsn", pg_dsn) == []
    assert engine.loads(table, since=dt.datetime.now(dt.UTC) - dt.timedelta(days=1), dsn=pg_dsn)
    bad = _cli("loads", "--since", "last tuesday", "--dsn", pg_dsn)
    assert bad.exit_code == 2 and bad.output.count("\n") == 1
    assert "--since: 'last tuesday' is neither an ISO date/time" in bad.output


def test_parse_since_forms() -> None:
    now = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    assert parse_since("30m", now=now) == now - dt.timedelta(minutes=30)
    assert parse_since("7d", now=now) == now - dt.timedelta(days=7)
    assert parse_since("2w", now=now) == now - dt.timedelta(weeks=2)
    assert parse_since("2026-05-01T08:00+02:00") == dt.datetime(2026, 5, 1, 6, tzinfo=dt.UTC)
    assert parse_since("2026-05-01").tzinfo is not None  # type: ignore[union-attr]
    with pytest.raises(SpecError, match="--since"):
        parse_since("5 parsecs")


# --- quarantine ---------------------------------------------------------------------------------------------------
def test_quarantine_shows_and_exports_rows(tmp_path: Path, pg_dsn: str, table: str) -> None:
    report = engine.load(_write(tmp_path / "orders.csv", BAD), into=table, connection_id=3, spec=RULES, dsn=pg_dsn)
    rows = _json("quarantine", table, "--dsn", pg_dsn)
    assert [(r["row_number"], r["rule"], r["column_name"]) for r in rows] == [(3, "not_null", "order_id"),
                                                                             (4, "range", "qty")]
    assert all(r["load_id"] == report.load_id and r["source"] == "orders.csv" for r in rows)
    assert json.loads(rows[1]["raw"]) == {"day": "2024-01-03", "order_id": "3", "qty": "-1"}
    assert rows[1]["reason"] and rows[1]["superseded_by"] is None
    assert len(_json("quarantine", table, "--limit", "1", "--dsn", pg_dsn)) == 1
    out = tmp_path / "rejected.csv"
    result = _cli("quarantine", table, "--load", report.load_id, "--csv", str(out), "--dsn", pg_dsn)
    assert result.exit_code == 0, result.output
    with out.open(newline="") as f:
        exported = list(csv.DictReader(f))
    assert list(exported[0]) == ["load_id", "dataset", "connection_id", "source", "row_number", "rule",
                                 "column_name", "reason", "raw", "quarantined_at", "superseded_by"]
    assert [(r["row_number"], r["rule"], r["connection_id"]) for r in exported] == [("3", "not_null", "3"),
                                                                                    ("4", "range", "3")]
    text = _cli("quarantine", table, "--dsn", pg_dsn)
    assert text.exit_code == 0 and "not_null" in text.output and "2 row(s)" in text.output


def test_unknown_dataset_or_load_is_one_line(tmp_path: Path, pg_dsn: str, table: str) -> None:
    engine.load(_write(tmp_path / "a.csv", "day,v\n2024-01-01,1\n"), into=table, dsn=pg_dsn)
    other = engine.load(_write(tmp_path / "b.csv", "day,v\n2024-01-01,1\n"), into=f"{table}_b", dsn=pg_dsn)
    assert engine.quarantined(table, dsn=pg_dsn) == []
    for args, text in [((f"{table}_nope",), "unknown dataset"), ((table, "--load", "feed"), "unknown load id 'feed'"),
                       ((table, "--load", other.load_id), f"loaded dataset '{table}_b'")]:
        result = _cli("quarantine", *args, "--dsn", pg_dsn)
        assert result.exit_code == 2 and result.output.count("\n") == 1 and text in result.output, result.output


UUID_A, UUID_B = "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "9b2e6c1a-0d4f-4a8e-b1c2-7f3e5d6a8b90"


@pytest.mark.parametrize(("one", "two", "one_again"), [(1, 2, "1"), (UUID_A, UUID_B, UUID_A.upper()),
                                                       ("shop-a", "shop-b", "shop-a")], ids=["bigint", "uuid", "text"])
def test_a_fixed_file_reloaded_supersedes_its_old_rows(tmp_path: Path, pg_dsn: str, table: str, one: Any, two: Any,
                                                       one_again: Any) -> None:
    """Also for UUID and text connections (issue 11): the same connection, spelled as it may be, supersedes."""
    path = _write(tmp_path / "orders.csv", BAD)
    other = _write(tmp_path / "other.csv", BAD + "2024-01-09,9,9\n")  # other bytes: identical ones are skipped
    first = engine.load(path, into=table, connection_id=one, spec=RULES, dsn=pg_dsn)
    kept = engine.load(other, into=table, connection_id=one, spec=RULES, dsn=pg_dsn)
    tenant = engine.load(path, into=table, connection_id=two, spec=RULES, dsn=pg_dsn)
    _write(path, FIXED + "2024-01-05,5,8\n")  # fixed: new bytes, same file
    fixed = engine.load(path, into=table, connection_id=one_again, spec=RULES, dsn=pg_dsn)
    assert fixed.rows_quarantined == 0 and fixed.skipped_partitions == 0
    assert engine.quarantined(table, load_id=first.load_id, dsn=pg_dsn) == []  # all superseded
    old = engine.quarantined(table, load_id=first.load_id, superseded=True, dsn=pg_dsn)
    assert len(old) == 2 and {r["superseded_by"] for r in old} == {fixed.load_id}
    assert {r["connection_id"] for r in old} == {str(one)}  # canonical text
    # another file, and the same file of another connection, keep their rows open
    assert len(engine.quarantined(table, load_id=kept.load_id, dsn=pg_dsn)) == 2
    assert [r["load_id"] for r in _json("quarantine", table, "--dsn", pg_dsn)] == [tenant.load_id] * 2
    everything = _json("quarantine", table, "--all", "--load", first.load_id, "--dsn", pg_dsn)
    assert [r["superseded_by"] for r in everything] == [fixed.load_id] * 2


def test_replace_supersedes_the_rows_of_the_partition_it_reloads(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = _write(tmp_path / "orders.csv", BAD)
    first = engine.load(path, into=table, mode="replace", spec=RULES, dsn=pg_dsn)
    _write(path, FIXED)
    second = engine.load(path, into=table, mode="replace", spec=RULES, dsn=pg_dsn)
    old = engine.quarantined(table, load_id=first.load_id, superseded=True, dsn=pg_dsn)
    assert {r["superseded_by"] for r in old} == {second.load_id}


def test_an_incremental_run_supersedes_nothing(pg_dsn: str, sql: Sql, table: str) -> None:
    """Each incremental run reads only new rows: the rows an earlier run rejected were never read again."""
    from tests.sources.sql._helpers import with_params

    src = f"{table}_src"
    sql(f"""CREATE TABLE "{src}" AS SELECT g::int8 AS id, CASE WHEN g = 2 THEN NULL ELSE g END AS order_id,
            timestamptz '2024-03-01 00:00+00' + g * interval '1 hour' AS updated_at FROM generate_series(1, 3) g""")
    kwargs: dict[str, Any] = {"into": table, "partition_by": "updated_at:month", "dsn": pg_dsn,
                              "options": {"cursor": "updated_at"}, "spec": {"rules": [{"not_null": "order_id"}]}}
    first = engine.load(with_params(pg_dsn, table=src), **kwargs)
    sql(f"""INSERT INTO "{src}" VALUES (4, 4, timestamptz '2024-04-01 00:00+00')""")
    second = engine.load(with_params(pg_dsn, table=src), **kwargs)
    assert (first.rows_quarantined, second.rows_in) == (1, 1)
    (row,) = engine.quarantined(table, load_id=first.load_id, dsn=pg_dsn)
    assert row["superseded_by"] is None


# --- biconic.* through query ------------------------------------------------------------------------------------------
def test_query_reads_the_biconic_tables(tmp_path: Path, pg_dsn: str, table: str) -> None:
    report = engine.load(_write(tmp_path / "orders.csv", BAD), into=table, spec=RULES, dsn=pg_dsn)
    result = _cli("query", f"SELECT count(*) AS n FROM biconic.quarantine WHERE dataset = '{table}'",
                  "--json", "--dsn", pg_dsn)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"n": 2}]
    frame = engine.query(f"SELECT r.outcome, l.rows_loaded FROM biconic.runs r JOIN biconic.loads l USING (load_id) "
                         f"WHERE r.load_id = '{report.load_id}'", dsn=pg_dsn)
    assert frame.rows() == [("succeeded", 2)]
    more = _write(tmp_path / "more.csv", BAD + "2024-01-09,9,9\n")
    engine.load(more, into=table, spec=RULES, dsn=pg_dsn)  # the count below is not served from a cache
    again = engine.query(f"SELECT count(*) FROM biconic.quarantine WHERE dataset = '{table}'", dsn=pg_dsn)
    assert again.item() == 4
    refused = _cli("query", "DELETE FROM biconic.runs", "--dsn", pg_dsn)
    assert refused.exit_code == 2 and refused.output.startswith("error:")


def test_query_reads_the_biconic_tables_without_the_scanner(tmp_path: Path, pg_dsn: str, table: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the duckdb-ext-postgres wheel the tables are read through ADBC into Arrow instead."""
    import engine.reads.duck as duck

    monkeypatch.setattr(duck, "_postgres_extension", lambda: None)
    report = engine.load(_write(tmp_path / "orders.csv", BAD), into=table, spec=RULES, dsn=pg_dsn)
    frame = engine.query(f"SELECT outcome, rows_quarantined FROM biconic.runs WHERE load_id = '{report.load_id}'",
                         dsn=pg_dsn)
    assert frame.rows() == [("succeeded", 2)]


def test_loads_prints_one_line_per_run_for_people(tmp_path: Path, pg_dsn: str, table: str) -> None:
    """Without --json: newest first, outcome, counts, partitions, duration and load id; a failure's error below."""
    report = engine.load(_write(tmp_path / "orders.csv", BAD), into=table, spec=RULES, dsn=pg_dsn)
    with pytest.raises(SpecError):
        engine.load(_write(tmp_path / "b.csv", "day,v\n2024-01-01,1\n"), into=table,
                    spec={"steps": [{"derive": {"w": "nope + 1"}}]}, dsn=pg_dsn)
    result = _cli("loads", "--dataset", table, "--dsn", pg_dsn)
    assert result.exit_code == 0, result.output
    failed, error, done = result.stdout.splitlines()
    assert f"  {table}  failed: 0 in, 0 loaded" in failed
    assert error.startswith("    SpecError: ") and "unknown column 'nope'" in error
    assert f"  {table}  succeeded: 4 in, 2 loaded, 2 quarantined, 0 filtered; partitions 1 done, 0 skipped; " in done
    assert re.search(r"; \d+\.\d\d s  load " + report.load_id + "$", done), done
    assert result.stderr == "2 load(s)\n"


def test_a_merge_re_reading_a_database_table_supersedes_its_old_rows(pg_dsn: str, sql: Sql, table: str) -> None:
    """A table without a cursor is read whole by every merge: the rows an earlier merge rejected are superseded."""
    from tests.sources.sql._helpers import with_params

    src = f"{table}_src"
    sql(f"""CREATE TABLE "{src}" AS SELECT g::int8 AS id, CASE WHEN g = 2 THEN NULL ELSE g END AS order_id,
            date '2024-03-01' AS day FROM generate_series(1, 12) g""")
    kwargs: dict[str, Any] = {"into": table, "mode": "merge", "key": "id", "dsn": pg_dsn,
                              "spec": {"rules": [{"not_null": "order_id"}]}}
    first = engine.load(with_params(pg_dsn, table=src), **kwargs)
    assert first.rows_quarantined == 1
    sql(f'UPDATE "{src}" SET order_id = 2 WHERE id = 2')
    second = engine.load(with_params(pg_dsn, table=src), **kwargs)
    assert (second.rows_loaded, second.rows_quarantined) == (12, 0)
    assert engine.quarantined(table, dsn=pg_dsn) == []
    (row,) = engine.quarantined(table, load_id=first.load_id, superseded=True, dsn=pg_dsn)
    assert row["superseded_by"] == second.load_id
