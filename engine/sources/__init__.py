"""Sources: where rows come from, read as bounded chunks of one partition at a time.

``open_source("data/*.csv", options={"delimiter": ";"})`` expands the glob (or folder), checks the options
against the connector's fields, and returns a connector whose ``partitions()`` are the files (or sheets); a
URL (``postgresql://...?table=orders``) or ``format`` (``rest``, ``graphql``, ``mongodb``, ``adbc``) opens a
database or an API instead.

Owns the connector protocol (:mod:`~engine.sources.base`), chunking (:mod:`~engine.sources.chunks`,
:mod:`~engine.sources.stream`), incremental reads (:mod:`~engine.sources.incremental`) and the registry
below; the connectors live in ``files/``, ``sql/`` (fixed-schema databases, streamed as Arrow) and ``api/``
(schemaless records: REST, GraphQL, MongoDB, spooled to NDJSON); :mod:`~engine.sources.frames` reads data
already in Python (the ``python`` kind).

May import: ``engine.plan`` (sources type raw text with the plan's reject flags) and the core modules.
Never ``engine.postgres``, ``engine.pipeline`` or anything above.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import SpecError
from engine.sources.base import Partition, Source
from engine.sources.files import EXTENSIONS, FORMATS, describe_files, open_files

__all__ = ["EXTENSIONS", "FORMATS", "KINDS", "Partition", "Source", "describe_sources", "open_source",
           "resolve_env_path"]

#: sources that are not files: kind -> (module, factory ``open(url, options) -> Source``); URL schemes map here
KINDS: dict[str, tuple[str, str]] = {
    "postgresql": ("engine.sources.sql", "open_database"),
    "mysql": ("engine.sources.sql", "open_database"),
    "mongodb": ("engine.sources.api.mongo", "open_mongo"),
    "rest": ("engine.sources.api.rest", "open_rest"),
    "graphql": ("engine.sources.api.graphql", "open_graphql"),
    "adbc": ("engine.sources.sql.adbc", "open_adbc"),
    "python": ("engine.sources.frames", "open_frame"),
}
#: where each kind documents its options: (module, a dict of option -> description)
_OPTIONS_OF: dict[str, tuple[str, str]] = {
    "postgresql": ("engine.sources.sql.postgres", "OPTIONS"), "mysql": ("engine.sources.sql.mysql", "OPTIONS"),
    "mongodb": ("engine.sources.api.mongo", "OPTIONS"), "rest": ("engine.sources.api.rest", "OPTIONS"),
    "graphql": ("engine.sources.api.graphql", "OPTIONS"), "adbc": ("engine.sources.sql.adbc", "OPTIONS"),
    "python": ("engine.sources.frames", "OPTIONS"),
}
_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql", "mariadb": "mysql",
            "mongodb": "mongodb", "mongodb+srv": "mongodb", "http": "rest", "https": "rest", "adbc": "adbc"}
_HOW = {"postgresql": "postgresql://user@host:5432/db?table=NAME (or --option query=SQL)",
        "mysql": "mysql://user@host:3306/db?table=NAME (MariaDB too; or --option query=SQL)",
        "mongodb": "mongodb://user@host:27017/db?collection=NAME", "rest": "https://api.example.com/v1/items",
        "graphql": "https://api.example.com/graphql --format graphql", "adbc": "adbc://DRIVER --format adbc",
        "python": "engine.load(frame, into=...): a polars/pandas DataFrame, pyarrow Table, reader or batch iterator"}


def _kind_of_url(path: str) -> str | None:
    scheme, sep, _ = path.partition("://")
    return _SCHEMES.get(scheme.lower()) if sep else None


def resolve_env_path(path: str) -> str:
    """``env:NAME`` is the value of the environment variable ``NAME`` (a DSN with its password, kept out of
    pipeline files, shell history and reports, which show ``env:NAME``); any other path as it is."""
    m = re.fullmatch(r"env:([A-Za-z_][A-Za-z0-9_]*)", path.strip())
    if m is None:
        return path
    value = os.environ.get(m.group(1))
    if value is None or not value.strip():
        raise SpecError("source.path", f"environment variable {m.group(1)} is not set")
    return value.strip()


def open_source(path: str | Path | Any, *, format: str | None = None,
                options: Mapping[str, Any] | None = None) -> Source:
    """A connector for a file, folder or glob (all files of one format), or for a database or API given by
    its URL (``postgresql://...?table=orders``, or ``env:NAME`` for the URL held by that environment variable)
    or by ``format`` (``rest``, ``graphql``, ``mongodb``, ``adbc``); in-memory data (a DataFrame, an Arrow
    table or stream: anything but a path) opens the ``python`` kind."""
    if not isinstance(path, (str, Path)):
        module, factory = KINDS["python"]
        return getattr(importlib.import_module(module), factory)(path, dict(options or {}))  # type: ignore[no-any-return]
    path = resolve_env_path(str(path))
    kind = format if format in KINDS else (_kind_of_url(str(path)) if format is None else None)
    if kind is not None:
        module, factory = KINDS[kind]
        return getattr(importlib.import_module(module), factory)(str(path), dict(options or {}))  # type: ignore[no-any-return]
    return open_files(str(path), format=format, options=dict(options or {}), known_kinds=list(KINDS))


def describe_sources() -> list[dict[str, Any]]:
    """Every source kind with how to name it and its options (``biconic sources``)."""
    found = describe_files()
    for kind in KINDS:
        entry: dict[str, Any] = {"kind": kind, "how": _HOW.get(kind, kind), "options": {}}
        module, options = _OPTIONS_OF[kind]
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            entry["summary"] = f"unavailable here: {exc}"
        else:
            entry["summary"] = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
            entry["options"] = dict(getattr(mod, options, {}))
        found.append(entry)
    return found
