"""A one-shot ``biconic load`` pushes its metrics to the Pushgateway of ``BICONIC_PUSHGATEWAY_URL`` when it ends
(a real HTTP server receives them), failed or not; a gateway that does not answer is one warning line and
never changes the exit code."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import cli
from engine.pushgateway import JOB


def _csv(path: Path) -> Path:
    path.write_text("id,city\n1,a\n2,b\n", encoding="utf-8")
    return path


def _pushes(server: Any) -> list[Any]:
    return [request for request, _ in server.log if request.path.startswith(f"/metrics/job/{JOB}/")]


def test_a_load_pushes_its_metrics_when_it_ends(tmp_path: Path, pg_dsn: str, table: str, server: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = f"/metrics/job/{JOB}/instance/{socket.gethostname()}"
    server.expect_request(path, method="PUT").respond_with_data("")
    gateway = server.url_for("/").rstrip("/").replace("http://", "http://biconic:pw%40x@")  # basic auth
    monkeypatch.setenv("BICONIC_PUSHGATEWAY_URL", gateway)
    result = CliRunner().invoke(cli, ["load", str(_csv(tmp_path / "a.csv")), "--into", table, "--dsn", pg_dsn])
    assert result.exit_code == 0, result.output
    pushed = _pushes(server)
    assert len(pushed) == 1 and pushed[0].authorization.parameters == {"username": "biconic", "password": "pw@x"}
    body = pushed[0].get_data(as_text=True)
    assert 'biconic_rows_loaded_total{mode="append"}' in body and "biconic_loads_total" in body
    assert "biconic_host_cpu_ratio" not in body  # only what the command recorded


def test_a_failed_load_pushes_too(tmp_path: Path, pg_dsn: str, table: str, server: Any,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server.expect_request(f"/metrics/job/{JOB}/instance/{socket.gethostname()}", method="PUT").respond_with_data("")
    monkeypatch.setenv("BICONIC_PUSHGATEWAY_URL", server.url_for("/"))
    result = CliRunner().invoke(cli, ["load", str(tmp_path / "missing.csv"), "--into", table, "--dsn", pg_dsn])
    assert result.exit_code not in (0, 1), result.output
    pushed = _pushes(server)
    assert len(pushed) == 1 and 'biconic_loads_total{outcome="failed"}' in pushed[0].get_data(as_text=True)


def test_an_unreachable_gateway_is_a_warning_not_a_failure(tmp_path: Path, pg_dsn: str, table: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BICONIC_PUSHGATEWAY_URL", f"http://user:s3cret@127.0.0.1:{port}")
    result = CliRunner().invoke(cli, ["load", str(_csv(tmp_path / "a.csv")), "--into", table, "--dsn", pg_dsn])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: could not push metrics")]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0] and "s3cret" not in result.output


def test_a_pipeline_run_pushes_too(tmp_path: Path, pg_dsn: str, table: str, server: Any,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    server.expect_request(f"/metrics/job/{JOB}/instance/{socket.gethostname()}", method="PUT").respond_with_data("")
    monkeypatch.setenv("BICONIC_PUSHGATEWAY_URL", server.url_for("/"))
    _csv(tmp_path / "a.csv")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(f"loads:\n  - source: {tmp_path / 'a.csv'}\n    target: {{table: {table}}}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(spec), "--dsn", pg_dsn, "--no-archive"])
    assert result.exit_code == 0, result.output
    pushed = _pushes(server)
    assert len(pushed) == 1 and 'biconic_loads_total{outcome="succeeded"}' in pushed[0].get_data(as_text=True)
