"""The platform's alert thresholds evaluated now, for ``biconic health`` and ``biconic top``.

Prometheus fires an alert when a threshold holds *for* a while (CPU > 90 % for 5 min); here each check is one
instantaneous reading (CPU sampled over a second, memory and disks now, the jobs of the last hour, the query
latency histogram as scraped), so a short spike can show that Prometheus would not alert on. The numbers live
in :data:`ALERT_THRESHOLDS`, which a test compares with ``deploy/prometheus/alerts.yml``.
"""

from __future__ import annotations

import math
import os
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from engine.errors import first_line

__all__ = ["ALERT_THRESHOLDS", "Check", "Threshold", "cpu_check", "db_checks", "disk_checks", "evaluate",
           "histogram_quantile", "latency_check", "memory_check", "overall", "queue_checks", "reason",
           "run_checks"]

State = Literal["ok", "info", "warning", "critical", "unknown", "skipped"]


@dataclass(frozen=True)
class Threshold:
    """A check's limits: a value above ``critical`` is critical, above ``warning`` a warning; ``scale_out`` /
    ``scale_in`` are scaling signals (info, never a failure): more or fewer workers for the queue, a bigger
    machine for CPU and memory. ``metric`` is what the Prometheus rule reads."""

    metric: str
    warning: float | None = None
    critical: float | None = None
    scale_out: float | None = None
    scale_in: float | None = None
    unit: str = "ratio"


#: THE alert thresholds of issue 16 (the same numbers as deploy/prometheus/alerts.yml): check -> limits
ALERT_THRESHOLDS: dict[str, Threshold] = {
    "host_cpu": Threshold("biconic_host_cpu_ratio", warning=0.75, critical=0.90, scale_out=0.85),
    "host_memory": Threshold("biconic_host_memory_ratio", warning=0.70, critical=0.85, scale_out=0.80),
    "disk": Threshold("biconic_disk_used_ratio", critical=0.90),
    "error_rate": Threshold("biconic_loads_total", warning=0.01),
    "job_timeouts": Threshold("biconic_time_limit_kills_total", warning=3, unit="per hour"),
    "queue_depth": Threshold("biconic_queue_depth", scale_out=100, scale_in=10, unit="messages"),
    "query_latency_p99": Threshold("biconic_query_duration_seconds", critical=5.0, unit="seconds"),
}

_SEVERITY = {"ok": 0, "skipped": 0, "info": 0, "warning": 1, "critical": 2, "unknown": 2}


@dataclass
class Check:
    """One evaluated check: its reading, the limits it was held against, and what that means."""

    name: str
    value: float | None
    threshold: str
    state: State
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _limits(kind: str) -> str:
    """The limits of ``kind`` as shown: ``warning > 75%, critical > 90%, bigger machine > 85%``."""
    limits = ALERT_THRESHOLDS[kind]
    scale_out = "add workers" if limits.unit == "messages" else "bigger machine"
    parts = [f"{label} > {_fmt(value, limits.unit)}" for label, value in
             (("warning", limits.warning), ("critical", limits.critical), (scale_out, limits.scale_out))
             if value is not None]
    if limits.scale_in is not None:
        parts.append(f"remove workers < {_fmt(limits.scale_in, limits.unit)}")
    return ", ".join(parts)


def _signal(limits: Threshold, value: float) -> str:
    """The scaling advice a reading gives (Prometheus's BiconicScaleOut/InWorkers, BiconicBiggerMachine)."""
    if limits.scale_out is not None and value > limits.scale_out:
        return "add workers" if limits.unit == "messages" else "a bigger machine"
    if limits.scale_in is not None and value < limits.scale_in:
        return "remove workers"
    return ""


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.0%}" if value * 100 == round(value * 100) else f"{value:.1%}"
    if unit == "seconds":
        return f"{value:g} s"
    return f"{value:g}"


def evaluate(kind: str, value: float | None, name: str | None = None, detail: str = "") -> Check:
    """``value`` held against the limits of ``kind`` (a key of :data:`ALERT_THRESHOLDS`)."""
    limits = ALERT_THRESHOLDS[kind]
    state: State = "ok"
    if value is None:
        state = "skipped"
    elif limits.critical is not None and value > limits.critical:
        state = "critical"
    elif limits.warning is not None and value > limits.warning:
        state = "warning"
    if value is not None and _signal(limits, value):
        state = "info" if state == "ok" else state
        detail = "; ".join(filter(None, (_signal(limits, value), detail)))
    return Check(name or kind, value, _limits(kind), state, detail)


def overall(checks: Iterable[Check]) -> str:
    """critical when a check is critical or could not be read, else warning when one warns, else ok."""
    worst = max((_SEVERITY[c.state] for c in checks), default=0)
    return ("ok", "warning", "critical")[worst]


def reason(checks: Iterable[Check]) -> str:
    """One line saying why the status is critical (the first critical or unreadable check); empty otherwise."""
    for check in checks:
        if _SEVERITY[check.state] == 2:
            said = check.detail or check.state if check.value is None else f"{check.value:.4g} ({check.threshold})"
            return f"{check.name} {check.state}: {said}"
    return ""


def cpu_check(interval: float | None = 1.0) -> Check:
    """The host's CPU busy share sampled over ``interval`` s (None: since the previous call, for a live view)."""
    import psutil

    return evaluate("host_cpu", psutil.cpu_percent(interval=interval) / 100.0)


def memory_check() -> Check:
    import psutil

    return evaluate("host_memory", psutil.virtual_memory().percent / 100.0)


def disk_checks() -> list[Check]:
    """One check per folder the metrics watch (data, uploads, the embedded PostgreSQL's)."""
    from engine.metrics import registry

    found = []
    for family in registry().collect():
        if family.name == "biconic_disk_used_ratio":
            found += [evaluate("disk", s.value, f"disk:{s.labels['folder']}") for s in family.samples]
    return found


def db_checks(dsn: str) -> list[Check]:
    """The share of failed jobs and the attempts stopped by a time limit, both over the last hour, from the
    jobs tables; both 'unknown' (so critical overall) when PostgreSQL does not answer."""
    from engine.postgres.connection import execute
    from engine.postgres.meta_jobs import jobs_db

    try:
        with jobs_db(dsn) as conn:
            failed, finished = execute(
                conn, "SELECT count(*) FILTER (WHERE state = 'failed'), count(*) FROM biconic.jobs "
                      "WHERE state IN ('done', 'failed', 'cancelled') AND finished_at > now() - interval '1 hour'",
                None, dsn)[0]
            timeouts = execute(conn, "SELECT count(*) FROM biconic.job_attempts WHERE outcome = 'timeout' "
                                     "AND coalesce(finished_at, started_at) > now() - interval '1 hour'",
                               None, dsn)[0][0]
    except Exception as exc:  # any failure to read is the same answer: the database cannot be asked
        reason = f"PostgreSQL unreachable: {first_line(exc)}"
        return [Check("error_rate", None, _limits("error_rate"), "unknown", reason),
                Check("job_timeouts", None, _limits("job_timeouts"), "unknown", reason)]
    rate = int(failed) / int(finished) if finished else 0.0
    return [evaluate("error_rate", rate, detail=f"{failed} failed of {finished} finished jobs in the last hour"),
            evaluate("job_timeouts", float(timeouts), detail="attempts stopped by a time limit in the last hour")]


def queue_checks(url: str | None = None) -> list[Check]:
    """Messages waiting in each of the jobs' queues: a scaling signal. Skipped without a configured broker
    (the embedded Redis is not started just to be asked)."""
    from engine.jobs.broker import CONTROL_QUEUE, QUEUE, queue_depths
    from engine.settings import settings

    url = url or settings().broker()
    if url is None:
        return [Check("queue_depth", None, _limits("queue_depth"), "skipped", "no broker configured")]
    try:
        depths = queue_depths((QUEUE, CONTROL_QUEUE), url)
    except Exception as exc:
        return [Check("queue_depth", None, _limits("queue_depth"), "unknown", first_line(exc))]
    return [evaluate("queue_depth", float(sum(depths.values())),
                     detail=", ".join(f"{q}: {n}" for q, n in depths.items()))]


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile``: ``buckets`` are (upper bound, cumulative count) with +Inf last;
    linear within the bucket holding the rank; None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower  # the highest finite bound, as Prometheus answers
            return lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = upper, count
    return lower


def _scrape(url: str, timeout: float) -> str:
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    token = os.environ.get("BICONIC_API_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310  # the user's own URL
        return str(answer.read().decode("utf-8"))


def latency_check(url: str, *, timeout: float = 5.0) -> Check:
    """The p99 of ``biconic_query_duration_seconds`` (every source summed) as exposed at ``url``: counts since
    the process started, not a 5-minute rate."""
    from prometheus_client.parser import text_string_to_metric_families

    name = "query_latency_p99"
    try:
        text = _scrape(url, timeout)
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "biconic_query_duration_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    except Exception as exc:
        return Check(name, None, _limits("query_latency_p99"), "unknown",
                     f"cannot scrape {url}: {first_line(exc)}")
    p99 = histogram_quantile(0.99, list(buckets.items()))
    check = evaluate("query_latency_p99", p99, name, detail=url)
    if p99 is None:
        check.state, check.detail = "ok", f"{url}: no queries yet"
    return check


def run_checks(dsn: str, metrics_urls: Sequence[str] = (), *, cpu_interval: float | None = 1.0) -> list[Check]:
    """Every check, in a fixed order."""
    checks = [cpu_check(cpu_interval), memory_check(), *disk_checks(), *db_checks(dsn), *queue_checks()]
    checks += [latency_check(url) for url in metrics_urls]
    return checks
