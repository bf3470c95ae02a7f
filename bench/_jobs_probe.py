"""What ``bench/jobs.py`` watches while jobs run: a ``biconic worker`` it starts and always stops, and a sampler
of memory and CPU (the worker's processes, PostgreSQL, Redis, the whole machine) read from /proc through psutil.

CPU figures are deltas over the measured window. PostgreSQL is counted twice: every ``postgres`` process on
the server (live ones, plus what the postmaster's reaped children used: exact, but other sessions on the shared
server count too), and only the backends serving a connection of the watched processes (matched by client
port; a backend that lives less than one sampling period is missed, so that figure is a lower bound).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PORT = re.compile(r"\((\d+)\)")


def _cpu(times: Any, *, reaped: bool = False) -> float:
    own = float(times.user + times.system)
    return own + float(times.children_user + times.children_system) if reaped else own


def _busy() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@dataclass
class Sampler:
    """Polls every ``every`` seconds from :meth:`start` to :meth:`stop`; ``root`` is the process whose tree is
    "the client" (a worker, or the benchmark itself with ``include_root=False`` for the loads it runs)."""

    root: int
    include_root: bool = True
    every: float = 0.5
    peak_root_mb: float = 0.0
    peak_child_mb: float = 0.0
    peak_children_mb: float = 0.0
    _base: dict[int, float] = field(default_factory=dict)
    _seen: dict[int, float] = field(default_factory=dict)
    _ours_pg: dict[int, float] = field(default_factory=dict)
    _pg_base: dict[int, float] = field(default_factory=dict)
    _marks: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._pg_base = self._postgres()
        for proc in self._tree():
            self._base[proc.pid] = self._time(proc)
        self._marks = {"t": time.perf_counter(), "busy": _busy(), "pg_all": sum(self._pg_base.values()),
                       "redis": self._redis()}
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """The window's figures: wall, peaks, CPU seconds per group and the machine's busy seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        wall = time.perf_counter() - self._marks["t"]
        client = sum(max(0.0, cpu - self._base.get(pid, 0.0)) for pid, cpu in self._seen.items())
        root = max(0.0, self._seen.get(self.root, 0.0) - self._base.get(self.root, 0.0)) if self.include_root else 0
        pg_all = sum(self._postgres().values()) - self._marks["pg_all"]
        ours = sum(max(0.0, cpu - self._pg_base.get(pid, 0.0)) for pid, cpu in self._ours_pg.items())
        return {"window_s": round(wall, 2), "peak_main_rss_mb": round(self.peak_root_mb),
                "peak_child_rss_mb": round(self.peak_child_mb), "peak_children_rss_mb": round(self.peak_children_mb),
                "cpu_main_s": round(root, 1), "cpu_children_s": round(client - root, 1),
                "pg_cpu_ours_s": round(ours, 1), "pg_cpu_all_s": round(pg_all, 1),
                "redis_cpu_s": round(self._redis() - self._marks["redis"], 2),
                "machine_busy_s": round(_busy() - self._marks["busy"], 1),
                "machine_cores": os.cpu_count()}

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _tree(self) -> list[psutil.Process]:
        try:
            top = psutil.Process(self.root)
            return ([top] if self.include_root else []) + top.children(recursive=True)
        except psutil.Error:
            return []

    @staticmethod
    def _time(proc: psutil.Process) -> float:
        try:
            return _cpu(proc.cpu_times())
        except psutil.Error:
            return 0.0

    def _sample(self) -> None:
        ports: set[int] = set()
        children = 0.0
        for proc in self._tree():
            try:
                rss = proc.memory_info().rss / 2**20
                self._seen[proc.pid] = max(self._seen.get(proc.pid, 0.0), _cpu(proc.cpu_times()))
                ports |= {c.laddr.port for c in proc.net_connections("tcp") if c.raddr and c.raddr.port == 5432}
            except psutil.Error:
                continue
            if proc.pid == self.root:
                self.peak_root_mb = max(self.peak_root_mb, rss)
            else:
                children += rss
                self.peak_child_mb = max(self.peak_child_mb, rss)
        self.peak_children_mb = max(self.peak_children_mb, children)
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.info["name"] != "postgres" or not proc.info["cmdline"]:
                continue
            found = PORT.search(" ".join(proc.info["cmdline"]))
            if found and int(found.group(1)) in ports:
                self._ours_pg[proc.pid] = max(self._ours_pg.get(proc.pid, 0.0), self._time(proc))

    @staticmethod
    def _postgres() -> dict[int, float]:
        """CPU seconds of every postgres process; the postmaster's include its reaped (ended) backends."""
        out: dict[int, float] = {}
        for proc in psutil.process_iter(["name", "ppid"]):
            if proc.info["name"] != "postgres":
                continue
            try:
                top = proc.parent() is None or proc.parent().name() != "postgres"  # type: ignore[union-attr]
                out[proc.pid] = _cpu(proc.cpu_times(), reaped=top)
            except psutil.Error:
                continue
        return out

    @staticmethod
    def _redis() -> float:
        return sum(Sampler._time(p) for p in psutil.process_iter(["name"]) if p.info["name"] == "redis-server")


class Worker:
    """``biconic worker --concurrency N`` in its own process group, its log in a file; :meth:`stop` ends the whole
    group (the pool's children too), politely first."""

    def __init__(self, python: str, concurrency: int, *, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - lives as long as the worker
        self.proc = subprocess.Popen([python, "-m", "engine", "worker", "--concurrency", str(concurrency),
                                      "--loglevel", "INFO"], env=env, cwd=cwd, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({self.proc.returncode}); see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker was not ready after {timeout:g} s; see {self.log}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the group (Celery's warm shutdown), SIGKILL to whatever is left after ``timeout``."""
        if self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group, even after the main one ended
        self.proc.wait()
        self._out.close()
