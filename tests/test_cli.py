"""The CLI: help for every command, JSON reports, one-line errors with the error's exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from engine.cli import cli
from tests.support import Sql


@pytest.mark.parametrize("command", [[], ["load"], ["run"], ["demo"], ["query"], ["tier"], ["restore"], ["info"],
                                     ["sources"], ["latest"], ["settings"], ["loads"],
                                     ["quarantine"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_python_dash_m_engine_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, check=True)
    assert "load" in out.stdout and "run" in out.stdout


def test_missing_file_is_one_line_and_exit_3(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "engine", "load", str(tmp_path / "nope.csv"), "--into", "t",
                             "--dsn", "postgresql://postgres@127.0.0.1:1/none"], capture_output=True, text=True)
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0
    assert "nope.csv" in result.stderr and "file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_spec_names_the_path(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    pl.DataFrame({"Fecha": ["2026-01-01"], "x": [1]}).write_csv(data)
    spec = tmp_path / "spec.yaml"
    spec.write_text("steps:\n  - rename: {x: y}\n  - bogus: 1\n")
    result = subprocess.run([sys.executable, "-m", "engine", "load", str(data), "--into", "t", "--spec", str(spec),
                             "--dsn", "postgresql://postgres@127.0.0.1:1/none"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "steps[1].bogus: unknown step" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_server_is_a_clear_error_without_password(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    pl.DataFrame({"d": ["2026-01-01"], "x": [1]}).write_csv(data)
    result = subprocess.run([sys.executable, "-m", "engine", "load", str(data), "--into", "t",
                             "--dsn", "postgresql://postgres:s3cret@127.0.0.1:1/none"], capture_output=True, text=True)
    assert result.returncode == 5
    assert "unreachable" in result.stderr
    assert "s3cret" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.postgres
def test_load_json_report_and_rerun(tmp_path: Path, pg_dsn: str, table: str) -> None:
    data = tmp_path / "orders.csv"
    pl.DataFrame({"id": [1, 2, 3], "created_at": ["2026-01-05 10:00:00", "2026-02-01 00:00:00", "2026-02-03 12:00:00"],
                  "amount": [1.5, 2.5, 3.5]}).write_csv(data)
    args = ["load", str(data), "--into", table, "--partition-by", "created_at:month", "--connection", "7",
            "--dsn", pg_dsn, "--json"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    for key in ("load_id", "table", "rows_in", "rows_loaded", "rows_quarantined", "partitions", "seconds",
                "rows_per_s", "peak_rss_mb"):
        assert key in report
    assert report["rows_loaded"] == 3 and report["rows_quarantined"] == 0
    assert report["partitions"] == [f"{table}_p2026_01", f"{table}_p2026_02"]
    second = json.loads(CliRunner().invoke(cli, args).output)
    assert second["rows_loaded"] == 0 and second["skipped_partitions"] == 1
    refreshed = json.loads(CliRunner().invoke(cli, [*args, "--full-refresh"]).output)
    assert refreshed["rows_loaded"] == 3 and refreshed["skipped_partitions"] == 0


@pytest.mark.postgres
def test_run_pipeline_file(tmp_path: Path, pg_dsn: str, table: str) -> None:
    pl.DataFrame({"id": [1, 2], "day": ["2026-03-01", "2026-03-02"]}).write_csv(tmp_path / "a.csv")
    (tmp_path / "p.yaml").write_text(f"source: a.csv\ntarget: {{table: {table}, partition_by: 'day:day'}}\n"
                                     "rules:\n  - range: {column: id, max: 1}\n")
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "p.yaml"), "--dsn", pg_dsn, "--json"])
    assert result.exit_code == 0, result.output
    [report] = [json.loads(line) for line in result.output.splitlines()]  # one JSON line per load
    assert (report["rows_loaded"], report["rows_quarantined"]) == (1, 1)
    again = CliRunner().invoke(cli, ["run", str(tmp_path / "p.yaml"), "--dsn", pg_dsn, "--json", "--full-refresh"])
    assert [json.loads(line)["rows_loaded"] for line in again.output.splitlines()] == [1]


def test_sources_lists_every_kind_with_options() -> None:
    result = CliRunner().invoke(cli, ["sources", "--json"])
    assert result.exit_code == 0, result.output
    kinds = {entry["kind"]: entry for entry in json.loads(result.output)}
    assert {"csv", "tsv", "parquet", "json", "ndjson", "excel", "postgresql", "mysql", "mongodb", "rest",
            "graphql", "adbc"} <= set(kinds)
    assert kinds["csv"]["options"]["delimiter"] == "default: sniffed from the first lines (, ; tab |)"
    assert kinds["tsv"]["options"]["delimiter"] == "default '\\t'"
    assert "sheets" in kinds["excel"]["options"]
    for kind in ("postgresql", "mysql", "mongodb", "rest", "graphql", "adbc"):  # importable here, options listed
        assert not kinds[kind]["summary"].startswith("unavailable"), kinds[kind]
        assert kinds[kind]["options"], kind
    assert "cursor" in kinds["postgresql"]["options"] and "pagination.style" in kinds["rest"]["options"]


# --- options refused up front: one line, exit 2, nothing created ------------------------------------------------------
# A test marked 'Regression (review fix N)' reproduces one defect reported in the review (commit
# "Review fixes: replace scoped to the connection, ..."): it must fail if that fix is undone.
def _one_line_error(stderr: str) -> str:
    text = stderr.strip()
    assert "Traceback" not in stderr, stderr
    assert text.count("\n") == 0, f"expected one line, got:\n{stderr}"
    assert text.startswith("error: "), text
    return text


# Regression (review fix 5): connection ids outside bigint.
def test_cli_connection_beyond_bigint_is_one_line_exit_2(tmp_path: Path, pg_dsn: str, table: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    result = CliRunner().invoke(cli, ["load", str(path), "--into", table, "--connection",
                                      "99999999999999999999", "--dsn", pg_dsn])
    assert result.exit_code == 2, (result.output, result.exception)
    line = _one_line_error(result.stderr)
    assert line.startswith("error: --connection:"), line
    assert "99999999999999999999" in line


# Regression (review fix 6): CSV option types checked up front.
@pytest.mark.parametrize(("option", "name"), [("infer_rows=abc", "infer_rows"), ("skip_rows=-1", "skip_rows"),
                                              ("has_header=maybe", "has_header"),
                                              ("comment_prefix=", "comment_prefix")])
def test_cli_bad_csv_option_is_one_line_exit_2(tmp_path: Path, pg_dsn: str, table: str, sql: Sql, option: str,
                                               name: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    result = CliRunner().invoke(cli, ["load", str(path), "--into", table, "--option", option, "--dsn", pg_dsn])
    assert result.exit_code == 2, (result.output, repr(result.exception))
    line = _one_line_error(result.stderr)
    assert line.startswith(f"error: --option {name}:"), line
    assert "Traceback" not in result.output
    assert sql("SELECT to_regclass($1)", [f'"{table}"']) == [(None,)]


@pytest.mark.parametrize(("args", "start"), [
    (["--mode", "merge"], "error: --key: merge mode needs the key column(s)"),
    (["--partition-by", "day:quarter"], "error: --partition-by: unknown grain 'quarter'"),
    (["--archive", " "], "error: --archive: expected an archive URL"),
    (["--index", "rtree(day)"], "error: --index: index 'rtree(day)' is not method(column [asc|desc], ...)"),
])
def test_load_errors_name_the_flag_not_the_yaml_field(tmp_path: Path, args: list[str], start: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("day,v\n2024-01-01,1\n")
    result = CliRunner().invoke(cli, ["load", str(path), "--into", "t", *args,
                                      "--dsn", "postgresql://postgres@127.0.0.1:1/none"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert _one_line_error(result.stderr).startswith(start), result.stderr


def test_run_errors_keep_the_yaml_field(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("source: a.csv\ntarget: {table: t, mode: merge}\n")
    result = CliRunner().invoke(cli, ["run", str(file)])
    assert result.exit_code == 2
    assert _one_line_error(result.stderr).startswith("error: target.key: merge mode needs"), result.stderr

@pytest.mark.parametrize("value", ["lots", "2.5", "150%", "-3"])
def test_max_rejected_is_checked_before_anything_runs(tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(cli, ["load", str(tmp_path / "a.csv"), "--into", "t", "--max-rejected", value,
                                      "--dsn", "postgresql://postgres@127.0.0.1:1/none"])
    assert result.exit_code == 2
    assert f"target.max_rejected: expected a share 0.0..1.0 (0.5), a percentage (50%), a whole number of rows " \
           f"(1000) or off, got {value!r}" in result.output


@pytest.mark.postgres
def test_load_with_every_row_rejected_exits_3_with_the_reasons(tmp_path: Path, pg_dsn: str, table: str,
                                                               sql: Sql) -> None:
    (tmp_path / "a.csv").write_text("day,qty\n2026-01-01,lots\n2026-01-02,many\n")
    args = ["load", str(tmp_path / "a.csv"), "--into", table, "--option", "dtypes={qty: int}", "--dsn", pg_dsn]
    result = CliRunner().invoke(cli, [*args, "--max-rejected", "100%"])
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("error: a.csv: 2 of 2 rows rejected (every row): type on 'qty': 2")
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    opted_out = CliRunner().invoke(cli, [*args, "--max-rejected", "off", "--json"])
    assert opted_out.exit_code == 0, opted_out.output
    assert json.loads(opted_out.stdout)["rows_quarantined"] == 2


@pytest.mark.postgres
@pytest.mark.parametrize("content", [b"day,qty\n", b"day,qty\n\n\r\n  \n", b""])
def test_an_empty_csv_fails_in_one_line_unless_allowed(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                      content: bytes) -> None:
    """A header only, blank lines or 0 bytes used to be a silent 0-row success; --allow-empty accepts it."""
    (tmp_path / "export.csv").write_bytes(content)
    args = ["load", str(tmp_path / "export.csv"), "--into", table, "--dsn", pg_dsn]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("error: export.csv: ") and "--allow-empty" in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    allowed = CliRunner().invoke(cli, [*args, "--allow-empty", "--json"])
    assert allowed.exit_code == 0, allowed.output
    report = json.loads(allowed.stdout)
    assert (report["rows_in"], report["rows_loaded"]) == (0, 0)
    assert report["source_details"][0]["source"] == "export.csv"


@pytest.mark.postgres
def test_run_json_prints_the_committed_reports_before_the_failing_load(tmp_path: Path, pg_dsn: str,
                                                                        table: str) -> None:
    (tmp_path / "good.csv").write_text("day,qty\n2026-01-01,1\n2026-01-02,2\n")
    (tmp_path / "bad.csv").write_text("day,qty\n2026-01-01,-1\n2026-01-02,-2\n")
    rules = "rules: [{range: {column: qty, min: 0}}]"
    (tmp_path / "p.yaml").write_text(f"loads:\n  - {{source: good.csv, target: {{table: {table}}}, {rules}}}\n"
                                     f"  - {{source: bad.csv, target: {{table: {table}_b}}, {rules}}}\n")
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "p.yaml"), "--dsn", pg_dsn, "--json"])
    assert result.exit_code == 3
    [first] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (first["table"], first["rows_loaded"]) == (table, 2)
    assert result.stderr.startswith("error: bad.csv: 2 of 2 rows rejected (every row): range on 'qty': 2")


def test_cli_a_failed_file_prints_the_report_then_the_error(tmp_path: Path, pg_dsn: str, table: str) -> None:
    (tmp_path / "a.csv").write_text("day,v\n2024-01-01,1\n")
    (tmp_path / "b.csv").write_text("day,v\n2024-01-02,2,extra\n")
    result = CliRunner().invoke(cli, ["load", str(tmp_path), "--into", table, "--dsn", pg_dsn, "--json"])
    assert result.exit_code == 3, (result.output, repr(result.exception))
    report = json.loads(result.stdout)
    assert [(d["source"], d["status"]) for d in report["source_details"]] == [("a.csv", "loaded"), ("b.csv", "failed")]
    assert _one_line_error(result.stderr).startswith("error: 1 of 2 source partitions failed")


def test_cli_connection_takes_a_uuid_and_refuses_a_second_differing_id(tmp_path: Path, pg_dsn: str,
                                                                        table: str) -> None:
    """Issue 11: --connection takes the platform's UUIDs; rows carrying other ids need --connection-override."""
    a = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    path = tmp_path / "a.csv"
    path.write_text("connection_id,day,v\n7,2024-01-01,1\n")
    base = ["load", str(path), "--into", table, "--connection", a.upper(), "--dsn", pg_dsn]
    refused = CliRunner().invoke(cli, base)
    assert refused.exit_code == 2, (refused.output, refused.exception)
    line = _one_line_error(refused.stderr)
    assert "a.csv row 2" in line and "'7'" in line and "--connection-override" in line
    done = CliRunner().invoke(cli, [*base, "--connection-override", "--json"])
    assert done.exit_code == 0, (done.output, done.exception)
    assert json.loads(done.output)["rows_loaded"] == 1
    assert "--connection-override" in CliRunner().invoke(cli, ["load", "--help"]).output


@pytest.mark.parametrize(("first", "later", "words"), [
    ("3F2504E0-4F89-11D3-9A0C-0305E82C3301", "42", "connection_id is uuid; connection id 42 is an integer"),
    ("7", "shop-eu", "connection_id is bigint; connection id 'shop-eu' is text"),
])
def test_cli_an_id_of_another_kind_is_one_line_and_exit_2(tmp_path: Path, pg_dsn: str, table: str, first: str,
                                                          later: str, words: str) -> None:
    """Issue 11: the dataset's connection_id type is fixed by its first load; another kind is refused."""
    (tmp_path / "a.csv").write_text("day,v\n2024-01-01,1\n")
    (tmp_path / "b.csv").write_text("day,v\n2024-01-02,2\n")
    done = CliRunner().invoke(cli, ["load", str(tmp_path / "a.csv"), "--into", table, "--connection", first,
                                    "--dsn", pg_dsn])
    assert done.exit_code == 0, (done.output, done.exception)
    refused = CliRunner().invoke(cli, ["load", str(tmp_path / "b.csv"), "--into", table, "--connection", later,
                                       "--dsn", pg_dsn])
    assert refused.exit_code == 2, (refused.output, refused.exception)
    assert f"{table}.{words}" in _one_line_error(refused.stderr)
    bad = CliRunner().invoke(cli, ["load", str(tmp_path / "b.csv"), "--into", table, "--connection", "a b"])
    assert bad.exit_code == 2
    assert _one_line_error(bad.stderr).startswith("error: --connection: expected a connection id: an integer, a UUID")


def test_a_load_imports_its_modules_then_freezes_them_out_of_the_collectors_way() -> None:
    """The objects the load's imports leave behind live as long as the process: frozen, Python's cycle
    collector stops walking them (it cost ~0.2 CPU-s of a 1M-row load); it runs again for what comes after."""
    code = ("import gc, sys; from engine.cli import _import_for_loads; before = gc.get_freeze_count(); "
            "_import_for_loads(); print(before, gc.get_freeze_count() > 50_000, gc.isenabled(), "
            "'engine.pipeline.runner' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "True", "True", "True"]
