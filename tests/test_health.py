"""``biconic health``: each threshold held against readings over and under it, the same numbers as the
Prometheus alert rules, the JSON document, and the exit code with a real /metrics endpoint and the real
PostgreSQL."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import cli
from engine.health import ALERT_THRESHOLDS, Check, evaluate, histogram_quantile, overall, reason

ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"


@pytest.mark.parametrize(("kind", "under", "over", "state"), [
    ("host_cpu", 0.74, 0.76, "warning"),
    ("host_cpu", 0.89, 0.91, "critical"),
    ("host_memory", 0.69, 0.71, "warning"),
    ("host_memory", 0.84, 0.86, "critical"),
    ("disk", 0.89, 0.91, "critical"),
    ("error_rate", 0.009, 0.011, "warning"),
    ("job_timeouts", 3, 4, "warning"),
    ("query_latency_p99", 4.9, 5.1, "critical"),
])
def test_a_reading_over_a_threshold_fires_and_one_under_does_not(kind: str, under: float, over: float,
                                                                 state: str) -> None:
    assert evaluate(kind, over).state == state
    assert evaluate(kind, under).state in ("ok", "warning") and evaluate(kind, under).state != state


def test_queue_depth_is_a_scaling_signal_never_a_failure() -> None:
    assert (evaluate("queue_depth", 101).state, evaluate("queue_depth", 101).detail) == ("info", "add workers")
    assert evaluate("queue_depth", 101, detail="biconic: 101").detail == "add workers; biconic: 101"
    assert (evaluate("queue_depth", 9).state, evaluate("queue_depth", 9).detail) == ("info", "remove workers")
    assert evaluate("queue_depth", 50).state == "ok"
    assert (evaluate("host_memory", 0.81).state, evaluate("host_memory", 0.81).detail) == \
        ("warning", "a bigger machine")
    assert evaluate("host_memory", 0.79).detail == ""
    assert overall([evaluate("queue_depth", 500)]) == "ok"


def test_overall_status_is_the_worst_check_and_an_unreadable_one_is_critical() -> None:
    ok, warn = evaluate("host_cpu", 0.1), evaluate("host_cpu", 0.8)
    unknown = Check("error_rate", None, "", "unknown", "PostgreSQL unreachable: refused")
    assert overall([ok]) == "ok" and overall([ok, warn]) == "warning" and overall([warn, unknown]) == "critical"
    assert reason([ok, warn, unknown]) == "error_rate unknown: PostgreSQL unreachable: refused"
    assert reason([evaluate("host_cpu", 0.95)]) == \
        "host_cpu critical: 0.95 (warning > 75%, critical > 90%, bigger machine > 85%)"


def test_p99_interpolates_within_its_bucket_like_prometheus() -> None:
    assert histogram_quantile(0.99, [(1.0, 0.0), (5.0, 0.0), (10.0, 100.0), (float("inf"), 100.0)]) == \
        pytest.approx(9.95)
    assert histogram_quantile(0.5, [(1.0, 50.0), (2.0, 100.0), (float("inf"), 100.0)]) == pytest.approx(1.0)
    assert histogram_quantile(0.99, [(1.0, 0.0), (float("inf"), 10.0)]) == 1.0  # beyond the last bound
    assert histogram_quantile(0.99, [(1.0, 0.0), (float("inf"), 0.0)]) is None


def _rule_numbers() -> dict[str, set[float]]:
    """metric (or recording rule source) -> the numbers its alert expressions compare against."""
    import yaml

    found: dict[str, set[float]] = {}
    rules = [r for group in yaml.safe_load(ALERTS.read_text())["groups"] for r in group["rules"] if "alert" in r]
    assert rules, "alerts.yml has no alert rules"
    for rule in rules:
        for part in re.split(r"\b(?:or|and|unless)\b", str(rule["expr"])):  # one comparison per part
            numbers = {float(n) for n in re.findall(r"[<>]=?\s*([0-9]+(?:\.[0-9]+)?)\b", part)}
            for kind, limits in ALERT_THRESHOLDS.items():
                if limits.metric.removesuffix("_total") in part or _recorded(kind) in part:
                    found.setdefault(kind, set()).update(numbers)
    return found


def _recorded(kind: str) -> str:
    return {"error_rate": "biconic:error_ratio", "job_timeouts": "job_timeouts", "queue_depth": "biconic:queue_depth",
            "query_latency_p99": "query_latency_seconds:p99"}.get(kind, "\0")


def test_the_thresholds_table_equals_the_prometheus_alert_rules() -> None:
    if not ALERTS.exists():
        pytest.skip("deploy/prometheus/alerts.yml is not on this branch")
    in_rules = _rule_numbers()
    for kind, limits in ALERT_THRESHOLDS.items():
        ours = {v for v in (limits.warning, limits.critical, limits.scale_out, limits.scale_in) if v is not None}
        assert ours <= in_rules.get(kind, set()), (kind, ours, in_rules.get(kind))
        assert in_rules.get(kind, set()) <= ours, (kind, "alerts.yml has more thresholds", in_rules.get(kind))


def _histogram(p99_seconds_bucket: str) -> str:
    lines = ["# HELP biconic_query_duration_seconds Latency of a read",
             "# TYPE biconic_query_duration_seconds histogram"]
    for source, bucket_counts in (("cache", {"1.0": 0, "5.0": 0, "10.0": 0}), ("archive", {"1.0": 0, "5.0": 0})):
        for le, count in {**bucket_counts, p99_seconds_bucket: 50, "+Inf": 50}.items():
            lines.append(f'biconic_query_duration_seconds_bucket{{le="{le}",source="{source}"}} {count}')
        lines += [f'biconic_query_duration_seconds_count{{source="{source}"}} 50',
                  f'biconic_query_duration_seconds_sum{{source="{source}"}} 400']
    return "\n".join(lines) + "\n"


def test_a_p99_over_5s_at_a_metrics_url_is_critical_and_exits_2(
        _http_server: Any, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_API_TOKEN", "admin-secret")
    _http_server.expect_request("/metrics", headers={"Authorization": "Bearer admin-secret"}).respond_with_data(
        _histogram("10.0"), content_type="text/plain; version=0.0.4")
    try:
        result = CliRunner().invoke(cli, ["health", "--json", "--metrics-url", _http_server.url_for("/metrics"),
                                          "--dsn", pg_dsn])
    finally:
        _http_server.clear()
    assert result.exit_code == 2, result.output
    found = json.loads(result.stdout)  # stderr may hold log lines
    assert found["status"] == "critical"
    latency = [c for c in found["checks"] if c["name"] == "query_latency_p99"]
    assert len(latency) == 1 and latency[0]["state"] == "critical" and latency[0]["value"] == pytest.approx(9.95)


def test_a_real_run_against_postgresql_is_ok_or_warning(pg_dsn: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BICONIC_BROKER_URL", "BICONIC_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["health", "--json", "--dsn", pg_dsn])
    found = json.loads(result.stdout)
    # with no broker configured, the one-shot command starts no embedded Redis (one that would outlive it)
    assert not (tmp_path / ".biconic" / "redis").exists()
    assert set(found) == {"status", "reason", "checks"}
    for check in found["checks"]:
        assert set(check) == {"name", "value", "threshold", "state", "detail"}
    states = {c["name"]: c["state"] for c in found["checks"]}
    assert {"host_cpu", "host_memory", "disk:data", "error_rate", "job_timeouts", "queue_depth"} <= set(states)
    assert states["error_rate"] == states["job_timeouts"] == "ok"
    host_critical = any(states[n] == "critical" for n in states if n.startswith(("host_", "disk:")))
    # a shared test machine may truly be busy: then, and only then, the status may be critical
    assert found["status"] in (("ok", "warning", "critical") if host_critical else ("ok", "warning"))
    assert result.exit_code == (2 if found["status"] == "critical" else 0)


def test_postgresql_unreachable_is_critical_with_a_one_line_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    result = CliRunner().invoke(cli, ["health", "--dsn", f"postgresql://postgres@127.0.0.1:{port}/none"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("status: critical (")
    error_rate = next(line for line in lines if line.startswith("error_rate "))
    assert " unknown  (PostgreSQL unreachable: " in error_rate and "refused" in error_rate
    assert "Traceback" not in result.output


def test_a_metrics_url_that_does_not_answer_is_critical(pg_dsn: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
    result = CliRunner().invoke(cli, ["health", "--json", "--metrics-url", url, "--dsn", pg_dsn])
    assert result.exit_code == 2
    latency = next(c for c in json.loads(result.output)["checks"] if c["name"] == "query_latency_p99")
    assert latency["state"] == "unknown" and latency["detail"].startswith(f"cannot scrape {url}: ")


@pytest.mark.parametrize(("command", "says"), [("health", "instantaneous"), ("top", "Ctrl-C")])
def test_help(command: str, says: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and says in result.output


@pytest.mark.parametrize("command", ["health", "top"])
def test_readme_usage_lists_exactly_the_commands_options(command: str) -> None:
    from tests.test_readme import _options, _usage

    assert set(re.findall(r"--[a-z][a-z-]*", _usage(command))) == _options(command)
