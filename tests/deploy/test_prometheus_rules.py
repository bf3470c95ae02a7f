"""deploy/prometheus: the rules are valid, promtool's unit tests pass, every threshold of issue 16 has its alert
with its severity and tests, the rules read only metrics the engine exports, and the example config is valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy import names
from tests.deploy.names import PROMETHEUS, unknown_names

#: alert -> (severity, for), the thresholds of issue 16
ALERTS = {
    "BiconicHostCpuCritical": ("critical", "5m"),        # CPU > 90% for 5m
    "BiconicHostMemoryCritical": ("critical", "5m"),     # memory > 85% for 5m
    "BiconicDiskAlmostFull": ("critical", "1m"),         # disk > 90%
    "BiconicQueryLatencyHigh": ("critical", "5m"),       # p99 query latency > 5 s
    "BiconicHostCpuHigh": ("warning", "30m"),            # CPU > 75% for 30m
    "BiconicHostMemoryHigh": ("warning", "30m"),         # memory > 70% for 30m
    "BiconicErrorRateHigh": ("warning", "5m"),           # failed loads and jobs > 1%
    "BiconicJobTimeouts": ("warning", None),             # > 3 time-limit kills in an hour
    "BiconicScaleOutWorkers": ("scaling", "5m"),         # queue > 100
    "BiconicScaleInWorkers": ("scaling", "30m"),         # queue < 10
    "BiconicBiggerMachine": ("scaling", "30m"),          # memory > 80% or CPU > 85%
}


def _load(name: str) -> Any:
    return yaml.safe_load((PROMETHEUS / name).read_text(encoding="utf-8"))


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load("alerts.yml")["groups"] for rule in group["rules"]]


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_rules_are_valid(promtool: str) -> None:
    done = _promtool(promtool, "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_unit_tests_pass(promtool: str) -> None:
    done = _promtool(promtool, "test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_wrong_threshold_fails_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: CPU critical at 90% or more (not above 90%) fires for a host at exactly 90%."""
    rules = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    assert "biconic_host_cpu_ratio > 0.9\n" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace("biconic_host_cpu_ratio > 0.9\n",
                                                       "biconic_host_cpu_ratio >= 0.9\n"), encoding="utf-8")
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)
    done = _promtool(promtool, "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert done.returncode != 0
    assert 'instance="at"' in done.stdout + done.stderr


def test_every_threshold_has_its_alert_with_its_severity() -> None:
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    assert set(alerts) == set(ALERTS)
    for name, (severity, duration) in ALERTS.items():
        rule = alerts[name]
        assert rule["labels"] == {"severity": severity}, name
        assert rule.get("for") == duration, name
        assert rule["annotations"]["summary"] and "\n" not in rule["annotations"]["summary"], name
        assert "$value" in rule["annotations"]["description"], name


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [case for test in _load("alerts_test.yml")["tests"] for case in test.get("alert_rule_test", [])]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert set(ALERTS) - fires == set(), "alerts without a test where they fire"
    assert set(ALERTS) - silent == set(), "alerts without a test where they stay silent"
    for case in cases:
        for alert in case.get("exp_alerts") or []:
            assert alert["exp_annotations"]["description"], case["alertname"]
            assert alert["exp_labels"]["severity"] == ALERTS[case["alertname"]][0], case["alertname"]


def test_every_recording_rule_has_its_value_tested() -> None:
    tested = " ".join(case["expr"] for test in _load("alerts_test.yml")["tests"]
                      for case in test.get("promql_expr_test", []))
    records = {rule["record"] for rule in _rules() if "record" in rule}
    assert {r for r in records if r not in tested} == set()


def test_the_rules_use_only_exported_metrics_and_recorded_series() -> None:
    unknown, unrecorded, source = unknown_names([rule["expr"] for rule in _rules()])
    assert unknown == set(), f"not exported according to {source}"
    assert unrecorded == set(), "recorded series that no rule in alerts.yml records"


def test_the_name_check_can_fail() -> None:
    unknown, unrecorded, _ = unknown_names(["rate(biconic_rows_loadded_total[5m]) / biconic:nothing:rate5m"])
    assert unknown == {"biconic_rows_loadded_total"}
    assert unrecorded == {"biconic:nothing:rate5m"}


def test_the_example_config_is_valid(promtool: str, tmp_path: Path) -> None:
    """promtool checks that the admin token file exists: a copy gets one beside it."""
    config = _load("prometheus.yml")
    shutil.copy(PROMETHEUS / "prometheus.yml", tmp_path)
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path)
    for job in config["scrape_configs"]:
        token = job.get("authorization", {}).get("credentials_file")
        if token:
            (tmp_path / token).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / token).write_text("bic_example\n", encoding="utf-8")
    done = _promtool(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["biconic-api"]["authorization"]["credentials_file"]
    assert jobs["pushgateway"]["honor_labels"] is True


def test_the_contract_list_matches_the_engine() -> None:
    """The hand-kept list and the registry agree: a metric dropped or renamed in the engine is caught here."""
    engine_names, _source = names.exported()
    assert engine_names == names.contract_names()
    assert {"biconic_query_duration_seconds_bucket", "biconic_loads_total"} <= engine_names
