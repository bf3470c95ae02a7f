"""Structured logs: one JSON object per line when stderr is not a terminal (a worker under systemd, a container,
a CI job), readable text on a terminal; every line carries the ids of what it is about and no secret.

>>> configure_logging("INFO")  # doctest: +SKIP
>>> with log_context(job_id="3f2a", connection_id="7"):  # doctest: +SKIP
...     logging.getLogger("biconic.jobs").info("planned %d partitions", 4)
{"ts": "2026-12-04T08:30:00.123Z", "level": "INFO", "logger": "biconic.jobs", "message": "planned 4 partitions",
 "job_id": "3f2a", "connection_id": "7"}

The ids live in a :class:`contextvars.ContextVar`, so a context set by one thread (or asyncio task) is never seen
by another; nested contexts merge. Every message, field and exception text goes through :func:`redact` plus the
scrubbing of bearer tokens, ``token=`` pairs and the secret values the environment holds (the PostgreSQL DSN's
password, AWS keys): a driver that echoes a password in its error cannot put it in a log.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from engine.redact import redact, scrub, url_secrets

__all__ = ["FORMATS", "IDS", "LogHandler", "configure_logging", "current_ids", "log_context", "safe_text",
           "uvicorn_log_config", "wants_json"]

#: the ids a line carries when known, in this order
IDS = ("job_id", "connection_id", "load_id", "dataset", "stage")
#: values of ``BICONIC_LOG_FORMAT``
FORMATS = ("auto", "json", "text")

_context: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("biconic_log_context",
                                                                                   default=None)

#: attributes every LogRecord has (anything else came from ``extra=``), and extras that only repeat the message
#: (uvicorn's coloured copy, Celery's ``data``: the task's arguments, a job request in full)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                                 "color_message", "taskName", "data"}
_BEARER = re.compile(r"(\bbearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_PAIRS = re.compile(r"(\b(?:[a-z_]*token|api[_-]?key|[a-z_]*secret(?:[_-]?access[_-]?key)?|password|passwd|pwd)"
                    r"[\"']?\s*[=:]\s*[\"']?)([^\s\"'&,;}]+)", re.IGNORECASE)
#: environment variables whose values (or URL passwords) must never be printed
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "BICONIC_PG_DSN", "BICONIC_REDIS_URL",
               "BICONIC_BROKER_URL", "BICONIC_RESULT_URL")


@contextmanager
def log_context(**ids: object) -> Iterator[None]:
    """Every log line inside carries ``ids`` (None values are left out; an inner context adds to and overrides
    the outer one, which comes back when the inner one ends)."""
    merged = dict(_context.get() or {})
    merged.update({k: str(v) for k, v in ids.items() if v is not None})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_ids() -> dict[str, str]:
    """The ids the current thread's (or task's) lines carry now."""
    return dict(_context.get() or {})


def _env_secrets() -> list[str]:
    """The secret values the environment holds: each is scrubbed from every line, whatever echoes it."""
    found: list[str] = []
    for name in _SECRET_ENV:
        value = os.environ.get(name, "")
        if not value:
            continue
        found.extend(url_secrets(value) if "://" in value or "=" in value else [value])
    return found


def safe_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` fit for a log: DSN passwords, API keys, bearer tokens, ``token=...`` pairs and ``secrets``
    replaced by ``***``."""
    text = redact(text)
    text = _BEARER.sub(r"\1***", text)
    text = _PAIRS.sub(r"\1***", text)
    return scrub(text, secrets) if secrets else text


class _Formatter(logging.Formatter):
    """A record as one JSON object (``json``) or one readable line (text); both redacted."""

    def __init__(self, json_format: bool, secrets: list[str]) -> None:
        super().__init__()
        self.json_format, self.secrets = json_format, secrets

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record's fields, redacted: ts, level, logger, message, ids, extras, error (and traceback)."""
        clean = self.clean
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": clean(_message(record)),
        }
        ids = _context.get() or {}
        out.update({k: clean(ids[k]) for k in IDS if k in ids})
        out.update({k: clean(v) for k, v in ids.items() if k not in IDS})
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = clean(value) if isinstance(value, str) else value if _plain(value) else clean(repr(value))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            said = str(exc).strip().splitlines()
            out["error"] = clean(f"{type(exc).__name__}: {said[0]}" if said else type(exc).__name__)
            if logging.getLogger().isEnabledFor(logging.DEBUG) or record.levelno <= logging.DEBUG:
                out["traceback"] = clean("".join(traceback.format_exception(*record.exc_info)))
        return out

    def clean(self, text: str) -> str:
        return safe_text(text, self.secrets)

    def format(self, record: logging.LogRecord) -> str:
        out = self.fields(record)
        if self.json_format:
            return json.dumps(out, ensure_ascii=False, default=str)
        ids = " ".join(f"{k}={v}" for k, v in out.items()
                       if k not in ("ts", "level", "logger", "message", "error", "traceback"))
        line = f"{out['ts'][11:23]} {out['level']:<7} {out['logger']}: {out['message']}"
        line += f" [{ids}]" if ids else ""
        line += f" ({out['error']})" if "error" in out else ""
        return line + ("\n" + out["traceback"].rstrip() if "traceback" in out else "")


def _message(record: logging.LogRecord) -> str:
    """The record's message with its arguments; a record whose arguments do not fit says so, not a traceback."""
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - a bad log call must not kill the caller
        return f"{record.msg} (bad log arguments: {record.args!r})"


def _plain(value: object) -> bool:
    return value is None or isinstance(value, bool | int | float)


class LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``stream``, else to whatever ``sys.stderr`` is at the time of each line (a test runner swaps
    it; a handler holding the old one would write to a closed file)."""

    def __init__(self, json_format: bool, stream: TextIO | None = None, level: int | str = logging.NOTSET) -> None:
        super().__init__(stream)
        self.fixed = stream
        self.setFormatter(_Formatter(json_format, _env_secrets()))
        self.setLevel(level)

    @property
    def stream(self) -> TextIO:
        return self.fixed if self.fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO | None) -> None:
        self.fixed = value


def wants_json(json_format: bool | None = None, stream: TextIO | None = None, setting: str | None = None) -> bool:
    """JSON or text: ``json_format`` if given, else ``BICONIC_LOG_FORMAT``; ``auto`` is JSON unless the stream
    (default stderr) is a terminal."""
    if json_format is not None:
        return json_format
    if setting is None:
        from engine.settings import settings

        setting = settings().log_format
    if setting != "auto":
        return setting == "json"
    target = stream if stream is not None else sys.stderr
    isatty = getattr(target, "isatty", None)
    return not (callable(isatty) and isatty())


def configure_logging(level: int | str | None = None, *, json_format: bool | None = None,
                      stream: TextIO | None = None) -> LogHandler:
    """Send every logger's lines (the root's) through one :class:`LogHandler`, at ``level`` (default
    ``BICONIC_LOG_LEVEL``, else WARNING). Called again, it replaces its handler; handlers others added
    (a test runner's) are left alone."""
    if level is None:
        from engine.settings import settings

        level = settings().log_level or "WARNING"
    level = level.upper() if isinstance(level, str) else level
    handler = LogHandler(wants_json(json_format, stream), stream)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, LogHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def uvicorn_log_config(level: str, json_format: bool) -> dict[str, Any]:
    """uvicorn's ``log_config``: its error and access loggers (in every server process it starts) write through
    a :class:`LogHandler`, as the rest of the engine's loggers do."""
    handler = {"()": "engine.logs.LogHandler", "json_format": json_format}
    return {"version": 1, "disable_existing_loggers": False,
            "handlers": {"biconic": handler},
            "root": {"handlers": ["biconic"], "level": level.upper()},
            "loggers": {name: {"handlers": [], "propagate": True}
                        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}}
