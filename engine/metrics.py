"""The engine's metrics: one prometheus-client registry, every name ``biconic_*``, every label bounded.

Code that counts calls :func:`metrics` (``metrics().rows_loaded.labels(mode="append").inc(n)``). The set is
built on first use, not at import, because prometheus-client decides at creation whether a value lives in this
process or in a file shared by a pool of processes: ``biconic worker`` (Celery's prefork pool) and ``biconic
serve --workers N`` call :func:`use_multiprocess` first, so their children write to one folder and any of them
(or the parent) can answer ``/metrics`` for all.

Labels never carry file names, load ids, job ids, dataset names or free text: a label value is one of a short
list (outcomes, modes, source kinds, rules, error classes, queues) or a connection id (running jobs).

Gauges that describe the machine (CPU, memory, disks) or the broker (queue depth) are read when scraped, by the
collectors of :func:`registry`, so every exposing process shows them without a loop of its own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics", "exposition", "metrics", "package_version", "recorded", "registry", "use_multiprocess"]

#: seconds: loads and jobs take from a tenth of a second to an hour
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: seconds: reads answer in milliseconds from the cache, in seconds from the archive
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # type: ignore[no-untyped-call]  # no ``*_created`` series: they double a scrape and no rule here reads them
_lock = threading.Lock()
_queue_reader: Callable[[], dict[str, int]] | None = None
_pool_size: Callable[[], int] | None = None


@dataclass(frozen=True)
class Metrics:
    """Every metric the engine records (see the README's Monitoring section for what each means)."""

    rows_read: Counter
    rows_loaded: Counter
    rows_quarantined: Counter
    rows_filtered: Counter
    bytes_read: Counter
    bytes_archived: Counter
    loads: Counter
    load_duration: Histogram
    jobs: Counter
    job_duration: Histogram
    query_duration: Histogram
    errors: Counter
    retries: Counter
    time_limit_kills: Counter
    running_jobs: Gauge
    pg_connections_in_use: Gauge
    cache_hits: Counter
    cache_misses: Counter
    transform_steps: Counter


def _build(registry: CollectorRegistry) -> Metrics:
    def counter(name: str, doc: str, *labels: str) -> Counter:
        return Counter(name, doc, labels, registry=registry)

    def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
        return Histogram(name, doc, labels, registry=registry, buckets=buckets)

    return Metrics(
        rows_read=counter("biconic_rows_read", "Rows read from sources", "source_kind"),
        rows_loaded=counter("biconic_rows_loaded", "Rows committed to PostgreSQL", "mode"),
        rows_quarantined=counter("biconic_rows_quarantined", "Rows rejected by a rule, kept in quarantine", "rule"),
        rows_filtered=counter("biconic_rows_filtered", "Rows dropped by filter steps or as blank"),
        bytes_read=counter("biconic_bytes_read", "Source bytes read", "source_kind"),
        bytes_archived=counter("biconic_bytes_archived", "Parquet bytes written to the archive"),
        loads=counter("biconic_loads", "Finished loads by outcome", "outcome"),
        load_duration=histogram("biconic_load_duration_seconds", "Wall time of a load", DURATION_BUCKETS,
                                "outcome"),
        jobs=counter("biconic_jobs", "Finished jobs by outcome", "outcome"),
        job_duration=histogram("biconic_job_duration_seconds", "Wall time of a job", DURATION_BUCKETS, "outcome"),
        query_duration=histogram("biconic_query_duration_seconds", "Latency of a read by where it was answered",
                                 LATENCY_BUCKETS, "source"),
        errors=counter("biconic_errors", "Engine errors by class and exit code", "type", "exit_code"),
        retries=counter("biconic_retries", "Retries taken, by what was retried", "what"),
        time_limit_kills=counter("biconic_time_limit_kills", "Job tasks stopped by a time limit", "kind"),
        running_jobs=Gauge("biconic_running_jobs", "Job tasks running now, per connection", ["connection"],
                           registry=registry, multiprocess_mode="livesum"),
        pg_connections_in_use=Gauge("biconic_pg_connections_in_use", "PostgreSQL connections held open",
                                    registry=registry, multiprocess_mode="livesum"),
        cache_hits=counter("biconic_cache_hits", "Redis cache hits", "kind"),
        cache_misses=counter("biconic_cache_misses", "Redis cache misses", "kind"),
        transform_steps=counter("biconic_transform_steps", "Transformation steps executed (per partition)",
                                "step"),
    )


_own_registry = CollectorRegistry(auto_describe=True)


@functools.cache
def metrics() -> Metrics:
    """The process's metrics, created on first use (after :func:`use_multiprocess`, where it is called)."""
    return _build(_own_registry)


def use_multiprocess(folder: Path) -> None:
    """Record into ``folder`` shared by this process and the children it starts (they inherit the variable);
    emptied first, as files of a previous run would add stale values. Call before anything is counted."""
    from prometheus_client import values

    with _lock:
        if metrics.cache_info().currsize:
            raise RuntimeError("use_multiprocess() must come before the first metric is recorded")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[_MULTIPROC_ENV] = str(folder)
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # decided at import; this process may have imported it


def multiprocess_folder() -> Path | None:
    """The shared folder when this process records for a pool, else None."""
    folder = os.environ.get(_MULTIPROC_ENV)
    return Path(folder) if folder else None


def mark_process_dead(pid: int) -> None:
    """A pool child ended: its live gauges (running jobs, connections) stop counting."""
    if multiprocess_folder() is not None:
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def read_queues_with(reader: Callable[[], dict[str, int]] | None, pool_size: Callable[[], int] | None = None) -> None:
    """Where ``biconic_queue_depth`` comes from when scraped: ``reader() -> {queue: depth}`` (the autoscaler's
    broker reading), and ``biconic_workers`` from ``pool_size()`` (a worker's processes); None where there is
    no broker or pool."""
    global _queue_reader, _pool_size
    _queue_reader, _pool_size = reader, pool_size


def registry() -> CollectorRegistry:
    """What ``/metrics`` shows: this process's metrics, or the whole pool's, plus the machine and the queues."""
    folder = multiprocess_folder()
    if folder is None:
        metrics()  # every family listed, also before anything happened
        shown = _own_registry
    else:
        from prometheus_client import multiprocess

        shown = CollectorRegistry()
        multiprocess.MultiProcessCollector(shown, path=str(folder))  # type: ignore[no-untyped-call]
    combined = CollectorRegistry()
    combined.register(_Registered(shown))
    combined.register(_MachineCollector())
    return combined


def exposition() -> tuple[bytes, str]:
    """The body and content type of a scrape."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry()), CONTENT_TYPE_LATEST


class _Registered(Collector):
    """A registry's families, passed through (so one scrape joins several sources)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Any]:
        return self._source.collect()


class _MachineCollector(Collector):
    """Read at scrape time: the process tree's CPU and memory, the host's, the disks, the queues, the build."""

    def collect(self) -> Iterator[Any]:
        import psutil

        build = GaugeMetricFamily("biconic_build_info", "Engine version", labels=["version"])
        build.add_metric([package_version()], 1.0)
        yield build
        cpu, rss = _process_tree()
        yield CounterMetricFamily("biconic_process_cpu_seconds", "CPU seconds of this process and its children",
                                  value=cpu)
        yield GaugeMetricFamily("biconic_process_resident_memory_bytes",
                                "Resident memory of this process and its children", value=rss)
        yield GaugeMetricFamily("biconic_host_cpu_ratio", "Busy share of the host's CPUs (0..1)",
                                value=psutil.cpu_percent(interval=None) / 100.0)
        yield GaugeMetricFamily("biconic_host_memory_ratio", "Used share of the host's memory (0..1)",
                                value=psutil.virtual_memory().percent / 100.0)
        used = GaugeMetricFamily("biconic_disk_used_ratio", "Used share of the filesystem holding a folder",
                                 labels=["folder"])
        free = GaugeMetricFamily("biconic_disk_free_bytes", "Free bytes of the filesystem holding a folder",
                                 labels=["folder"])
        for name, path in _folders():
            with contextlib.suppress(OSError):
                usage = shutil.disk_usage(path)
                used.add_metric([name], (usage.total - usage.free) / usage.total if usage.total else 0.0)
                free.add_metric([name], float(usage.free))
        yield used
        yield free
        yield from _queue_families()


def package_version() -> str:
    """The installed package's version (not ``engine.__version__``: importing the package would import back)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("biconic-engine")
    except PackageNotFoundError:
        return "0"


def _process_tree() -> tuple[float, float]:
    """CPU seconds and resident bytes of this process plus its children (a worker's pool)."""
    import psutil

    me = psutil.Process()
    cpu = rss = 0.0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            cpu += times.user + times.system
            rss += proc.memory_info().rss
    return cpu, rss


def _folders() -> list[tuple[str, Path]]:
    """The folders whose disks matter: the data folder, the uploads folder and, when it can be told, the
    embedded PostgreSQL's data directory (a server elsewhere shows its own disk through its own exporter)."""
    from engine.settings import settings

    limits = settings()
    found = [("data", limits.data_path), ("uploads", limits.uploads_path)]
    embedded = limits.data_path / "pg"
    if embedded.exists():
        found.append(("postgres", embedded))
    return [(name, path if path.exists() else _existing_parent(path)) for name, path in found]


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _queue_families() -> Iterator[Any]:
    depth = GaugeMetricFamily("biconic_queue_depth", "Job messages waiting in a broker queue", labels=["queue"])
    workers = GaugeMetricFamily("biconic_workers", "Worker pool processes alive in this worker")
    if _queue_reader is not None:
        with contextlib.suppress(Exception):  # a broker that does not answer leaves the gauge out, not the scrape
            for queue, count in sorted(_queue_reader().items()):
                depth.add_metric([queue], float(count))
    yield depth
    if _pool_size is not None:
        with contextlib.suppress(Exception):
            workers.add_metric([], float(_pool_size()))
    yield workers


def recorded() -> CollectorRegistry:
    """Only what this process recorded (no machine or queue readings): what a one-shot command pushes to a
    Pushgateway, where a host gauge would outlive the moment it was read."""
    metrics()
    return _own_registry
