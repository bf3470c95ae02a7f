"""Settings from ``BICONIC_*`` environment variables, and the embedded PostgreSQL used when no DSN is set.

| variable            | meaning                                              | default                    |
|---------------------|------------------------------------------------------|----------------------------|
| BICONIC_PG_DSN      | PostgreSQL URL (``postgresql://user@host:5432/db``)  | embedded server (pgserver) |
| BICONIC_DATA_DIR    | where the embedded server and temp files live        | ``./.biconic``             |
| BICONIC_BATCH_ROWS  | rows per streamed batch (memory vs. per-batch cost)  | 100000                     |
| BICONIC_COPY_STREAMS| helper connections for new partitions (staging.py)   | 2                          |
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

__all__ = ["batch_rows", "data_dir", "redact", "resolve_dsn", "secret_of"]

_embedded: dict[str, Any] = {}
_lock = threading.Lock()


def data_dir() -> Path:
    """The engine's local data folder (embedded PostgreSQL, temporary files)."""
    return Path(os.environ.get("BICONIC_DATA_DIR", ".biconic")).resolve()


def batch_rows() -> int:
    """Rows per batch streamed from the transform into COPY."""
    return int(os.environ.get("BICONIC_BATCH_ROWS", "100000"))


def redact(dsn: str) -> str:
    """A DSN (or any text holding one) safe to print: passwords become ``***``.

    Handles ``user:secret@host`` (even with an unencoded ``@`` in the secret: the authority ends at the last
    ``@`` before the host), ``?password=...``, keyword form ``password = 'a b'``, and API keys in a query
    string (``?api_key=...``, ``&access_token=...``, ``&sig=...``).
    """
    dsn = re.sub(r"(://[^:/@\s]*:)[^/\s]*@(?=[^@/\s]*(?:[/?\s]|$))", r"\1***@", dsn)
    dsn = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^&\s]+)", r"\1***", dsn, flags=re.IGNORECASE)
    # API URLs carry keys in the query string
    keys = r"[a-z_-]*token|api[_-]?key|apikey|key|[a-z_-]*secret|sig|[a-z_-]*signature|auth|pwd"
    dsn = re.sub(rf"([?&](?:{keys})=)[^&\s#]+", r"\1***", dsn, flags=re.IGNORECASE)
    return dsn


def secret_of(dsn: str) -> str | None:
    """The password inside a DSN, so error texts that echo it (libpq does, on bad host names) can be scrubbed."""
    m = re.search(r"://[^:/@\s]*:([^/\s]*)@[^@/\s]*(?:[/?\s]|$)", dsn)
    if m and m.group(1):
        return m.group(1)
    m = re.search(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^&\s]+)", dsn, flags=re.IGNORECASE)
    return m.group(1).strip("'\"") if m else None


def resolve_dsn(dsn: str | None = None) -> str:
    """The DSN to use: the argument, else ``BICONIC_PG_DSN``, else an embedded server under the data folder.

    The embedded server (the ``pgserver`` package: real PostgreSQL binaries in a wheel) is started once per
    process and stopped when the last process using it exits.
    """
    chosen = dsn or os.environ.get("BICONIC_PG_DSN")
    if chosen:
        return chosen
    with _lock:
        if "uri" not in _embedded:
            import warnings

            folder = data_dir() / "pg"
            folder.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here
                warnings.simplefilter("ignore")
                from pgserver import get_server  # type: ignore[attr-defined]

                server = get_server(folder)
            _embedded["server"] = server
            _embedded["uri"] = server.get_uri()
        return str(_embedded["uri"])
