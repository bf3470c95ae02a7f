"""Which PostgreSQL: the DSN given, else ``BICONIC_PG_DSN``, else an embedded server in the data folder
(``BICONIC_HOME/pg``, by default ``~/.local/share/biconic/pg``).

The embedded server (the ``pgserver`` package: real PostgreSQL binaries in a wheel) is started once per
process and stopped when the last process using it exits, so the README's demo needs no server at all.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

from engine.redact import redact
from engine.settings import settings

__all__ = ["database_label", "embedded_folder", "resolve_dsn"]

_embedded: dict[str, Any] = {}
_lock = threading.Lock()


def resolve_dsn(dsn: str | None = None) -> str:
    """The DSN to use: the argument, else ``BICONIC_PG_DSN``, else the embedded server's."""
    chosen = dsn or settings().dsn()
    if chosen:
        return chosen
    with _lock:
        if "uri" not in _embedded:
            folder = embedded_folder()
            folder.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here
                warnings.simplefilter("ignore")
                from pgserver import get_server  # type: ignore[attr-defined]

                server = get_server(folder)
            _embedded["server"] = server
            _embedded["uri"] = server.get_uri()
        return str(_embedded["uri"])


def embedded_folder() -> Path:
    """Where the embedded server keeps its data."""
    return settings().data_path / "pg"


def database_label(dsn: str | None = None) -> str:
    """Which database :func:`resolve_dsn` picks, safe to print: the URL with its password masked, or
    ``embedded PostgreSQL in <folder>``."""
    chosen = dsn or settings().dsn()
    return redact(chosen) if chosen else f"embedded PostgreSQL in {embedded_folder()}"
