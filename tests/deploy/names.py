"""The metric names the engine exports, which the alert rules and the dashboard may use.

They are read from ``engine.metrics``'s registry (what a scrape shows); ``EXPORTED`` lists them once more, by hand,
so that a metric dropped or renamed in the engine fails a test instead of silently emptying a panel or a rule."""

from __future__ import annotations

import re
from pathlib import Path

import prometheus_client
import yaml
from prometheus_client.metrics_core import Metric

ROOT = Path(__file__).resolve().parent.parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"

#: name -> type, as the metrics contract for issue 16 lists them (counters with their ``_total``)
EXPORTED: dict[str, str] = {
    "biconic_rows_read_total": "counter",
    "biconic_rows_loaded_total": "counter",
    "biconic_rows_quarantined_total": "counter",
    "biconic_rows_filtered_total": "counter",
    "biconic_bytes_read_total": "counter",
    "biconic_bytes_archived_total": "counter",
    "biconic_loads_total": "counter",
    "biconic_load_duration_seconds": "histogram",
    "biconic_jobs_total": "counter",
    "biconic_job_duration_seconds": "histogram",
    "biconic_query_duration_seconds": "histogram",
    "biconic_errors_total": "counter",
    "biconic_retries_total": "counter",
    "biconic_time_limit_kills_total": "counter",
    "biconic_queue_depth": "gauge",
    "biconic_running_jobs": "gauge",
    "biconic_workers": "gauge",
    "biconic_pg_connections_in_use": "gauge",
    "biconic_cache_hits_total": "counter",
    "biconic_cache_misses_total": "counter",
    "biconic_transform_steps_total": "counter",
    "biconic_process_cpu_seconds_total": "counter",
    "biconic_process_resident_memory_bytes": "gauge",
    "biconic_host_cpu_ratio": "gauge",
    "biconic_host_memory_ratio": "gauge",
    "biconic_disk_used_ratio": "gauge",
    "biconic_disk_free_bytes": "gauge",
    "biconic_build_info": "gauge",
}

METRIC = re.compile(r"\bbiconic_[a-z0-9_]+")
RECORDED = re.compile(r"\bbiconic:[a-zA-Z0-9_:]+")


def contract_names() -> frozenset[str]:
    """The sample names of ``EXPORTED``: a histogram's as ``_bucket``, ``_sum`` and ``_count``."""
    names: set[str] = set()
    for name, kind in EXPORTED.items():
        names.update([f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram" else [name])
    return frozenset(names)


def _sample_names(family: Metric) -> list[str]:
    """The names a family's samples are exposed under (``_created`` series are disabled by engine.metrics)."""
    if family.type == "counter":
        return [f"{family.name}_total"]
    if family.type == "histogram":
        return [f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"]
    return [family.name]


def exported() -> tuple[frozenset[str], str]:
    """The biconic sample names the engine exports, and where they were read (for the assertion messages)."""
    from engine.metrics import registry

    scraped: prometheus_client.CollectorRegistry = registry()  # what a scrape of /metrics shows
    names = {n for family in scraped.collect() for n in _sample_names(family) if n.startswith("biconic_")}
    return frozenset(names), "engine.metrics.registry()"


def recording_rules() -> set[str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def unknown_names(exprs: list[str]) -> tuple[set[str], set[str], str]:
    """Metric names and recorded series the expressions use that are neither exported nor recorded."""
    names, source = exported()
    used = {m for expr in exprs for m in METRIC.findall(expr)}
    recorded = {m for expr in exprs for m in RECORDED.findall(expr)}
    return used - names, recorded - recording_rules(), source
