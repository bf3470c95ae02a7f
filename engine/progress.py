"""Progress of a long load: what a load reports as it goes, and a terminal bar that draws it (rows, rows/s,
memory, redrawn a few times a second)."""

from __future__ import annotations

import time
from typing import Any, Protocol

__all__ = ["Progress", "TerminalProgress"]


class Progress(Protocol):
    """Receives progress while a load runs (the CLI draws a bar with it)."""

    def update(self, *, label: str, rows: int, done: int, total: int) -> None:
        """``rows`` read so far; ``done`` of ``total`` source partitions finished; ``label`` the current one."""


class TerminalProgress:
    """Draws on stderr with rich; use as a context manager around a load."""

    def __init__(self) -> None:
        import psutil
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._proc = psutil.Process()
        self._started = time.perf_counter()
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.fields[rows]:>12,} rows"), TextColumn("{task.fields[rate]:>10,.0f} rows/s"),
            TextColumn("{task.fields[rss]:>6,.0f} MB"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False, refresh_per_second=4,
        )
        self._task = self._bar.add_task("starting", total=None, rows=0, rate=0.0, rss=0.0)

    def __enter__(self) -> TerminalProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.stop()

    def update(self, *, label: str, rows: int, done: int, total: int) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-6)
        rss = self._proc.memory_info().rss / 1e6
        self._bar.update(self._task, description=f"{label} ({min(done + 1, total)}/{total})", rows=rows,
                         rate=rows / elapsed, rss=rss, completed=done, total=total or None)
