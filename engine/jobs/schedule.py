"""``biconic beat``: the periodic jobs, sent to the workers on a schedule by exactly one beat per deployment.

=======================  ======================  ==========================================================
task                     every                   what (see :mod:`engine.jobs.sweeps`)
=======================  ======================  ==========================================================
biconic.tier             day, 02:00 UTC          old partitions verified against the archive and moved out
biconic.tier_uploads     day, 03:00 UTC          raw uploads compressed, then archived, by age
biconic.sweep_staged     hour                    staged children of killed loads
biconic.sweep_archive    6 hours                 archive files a killed load uploaded but never listed
biconic.sweep_cache      15 minutes              cached rows of superseded versions and gone datasets
biconic.sweep_uploads    hour                    tus uploads left unfinished past their expiry
=======================  ======================  ==========================================================

The beat holds a PostgreSQL advisory lock for its whole life (:func:`engine.jobs.sweeps.one_beat`): a second
beat exits with an error, and a beat that lost its lock (its connection dropped) stops at its next tick
instead of scheduling beside a new one. Each task also runs alone (a slow run makes the next tick's copy skip).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.beat import PersistentScheduler
from celery.schedules import crontab

from engine.jobs import sweeps
from engine.jobs.app import app
from engine.jobs.sweeps import BeatLock
from engine.settings import settings

__all__ = ["JOBS", "SCHEDULE", "LockedScheduler", "run_beat"]

log = logging.getLogger("biconic.jobs")

#: task name -> when (seconds, or a crontab)
SCHEDULE: dict[str, Any] = {
    "biconic.tier": crontab(minute="0", hour="2"),
    "biconic.tier_uploads": crontab(minute="0", hour="3"),
    "biconic.sweep_staged": 3600.0,
    "biconic.sweep_archive": 6 * 3600.0,
    "biconic.sweep_cache": 900.0,
    "biconic.sweep_uploads": 3600.0,
}


def _logged(outcome: sweeps.Outcome) -> str:
    line = outcome.summary()
    (log.warning if not outcome.ok else log.info)(line)
    return line


#: task name -> the maintenance job it runs (each takes the DSN the beat was started with)
JOBS: dict[str, Callable[[str | None], sweeps.Outcome]] = {
    "biconic.tier": sweeps.tier,
    "biconic.tier_uploads": sweeps.tier_uploads,
    "biconic.sweep_staged": sweeps.sweep_staged,
    "biconic.sweep_archive": sweeps.sweep_unlisted_archive,
    "biconic.sweep_cache": sweeps.sweep_cache,
    "biconic.sweep_uploads": sweeps.sweep_uploads,
}


def _register(name: str, job: Callable[[str | None], sweeps.Outcome]) -> None:
    """One Celery task per maintenance job: run it, log its one-line summary, return that line."""
    def run(dsn: str | None = None) -> str:
        return _logged(job(dsn))

    app.task(name=name)(run)


for _name, _job in JOBS.items():
    _register(_name, _job)


class LockedScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's scheduler, checking at every tick that this beat still holds the deployment's beat lock."""

    lock: BeatLock | None = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if LockedScheduler.lock is not None:
            LockedScheduler.lock.check()  # raises BeatRunningError: the beat stops
        return float(super().tick(*args, **kwargs))


def beat_schedule(dsn: str | None) -> dict[str, dict[str, Any]]:
    """The schedule as Celery's ``beat_schedule`` setting; ``dsn`` goes to every task (None: the worker's)."""
    return {name: {"task": name, "schedule": every, "args": (dsn,)} for name, every in SCHEDULE.items()}


def run_beat(*, dsn: str | None = None, loglevel: str = "INFO") -> None:
    """Run the beat in this process until it is stopped; a :class:`~engine.errors.BeatRunningError` if another
    one runs."""
    folder = settings().data_path / "beat"
    folder.mkdir(parents=True, exist_ok=True)
    app.conf.update(beat_schedule=beat_schedule(dsn), beat_schedule_filename=str(folder / "schedule"),
                    beat_scheduler="engine.jobs.schedule:LockedScheduler")
    with sweeps.one_beat(dsn) as lock:
        LockedScheduler.lock = lock
        try:
            app.Beat(loglevel=loglevel).run()
        finally:
            LockedScheduler.lock = None
