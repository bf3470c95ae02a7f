"""Source connectors, chosen by file extension or an explicit ``format``.

``open_source("data/*.csv", delimiter=";")`` expands the glob (or folder), checks the options against the
connector's fields, and returns a connector whose ``partitions()`` are the files (or sheets).
"""

from __future__ import annotations

import dataclasses
import glob as globlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.errors import SourceError, SpecError
from engine.sources.base import ROW_COLUMN, Partition, Source

__all__ = ["EXTENSIONS", "FORMATS", "KINDS", "ROW_COLUMN", "Partition", "Source", "open_source"]

#: file extension -> format name
EXTENSIONS: dict[str, str] = {
    ".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".xlsx": "excel", ".xlsm": "excel",
    ".xls": "excel", ".xlsb": "excel", ".ods": "excel",
}


def _csv(paths: tuple[Path, ...], options: dict[str, Any]) -> Source:
    from engine.sources.csv import CsvSource

    return _build(CsvSource, paths, options)


def _tsv(paths: tuple[Path, ...], options: dict[str, Any]) -> Source:
    return _csv(paths, {"delimiter": "\t", **options})


def _parquet(paths: tuple[Path, ...], options: dict[str, Any]) -> Source:
    from engine.sources.parquet import ParquetSource

    return _build(ParquetSource, paths, options)


def _json(paths: tuple[Path, ...], options: dict[str, Any]) -> Source:
    from engine.sources.json import JsonSource

    return _build(JsonSource, paths, options)


def _ndjson(paths: tuple[Path, ...], options: dict[str, Any]) -> Source:
    return _json(paths, {"lines": True, **options})


def _excel(paths: tuple[Path, ...], options: dict[str, Any]) -> Source:
    from engine.sources.excel import ExcelSource

    opts = dict(options)
    if "sheet" in opts:
        opts["sheets"] = opts.pop("sheet")
    if isinstance(opts.get("sheets"), list):
        opts["sheets"] = tuple(opts["sheets"])
    return _build(ExcelSource, paths, opts)


#: format name -> connector factory
FORMATS: dict[str, Callable[[tuple[Path, ...], dict[str, Any]], Source]] = {
    "csv": _csv, "tsv": _tsv, "parquet": _parquet, "json": _json, "ndjson": _ndjson, "excel": _excel,
}


#: sources that are not files: kind -> (module, factory ``open(url, options) -> Source``); URL schemes map here
KINDS: dict[str, tuple[str, str]] = {
    "postgresql": ("engine.sources.database", "open_database"),
    "mysql": ("engine.sources.database", "open_database"),
    "mongodb": ("engine.sources.mongo", "open_mongo"),
    "rest": ("engine.sources.rest", "open_rest"),
    "graphql": ("engine.sources.rest", "open_graphql"),
    "adbc": ("engine.sources.adbc", "open_adbc"),
}
_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql", "mariadb": "mysql",
            "mongodb": "mongodb", "mongodb+srv": "mongodb", "http": "rest", "https": "rest", "adbc": "adbc"}


def _kind_of_url(path: str) -> str | None:
    scheme, sep, _ = path.partition("://")
    return _SCHEMES.get(scheme.lower()) if sep else None


def _open_kind(kind: str, url: str, options: dict[str, Any]) -> Source:
    import importlib

    module, factory = KINDS[kind]
    return getattr(importlib.import_module(module), factory)(url, options)  # type: ignore[no-any-return]


def _build(cls: Any, paths: tuple[Path, ...], options: dict[str, Any]) -> Source:
    known = {f.name for f in dataclasses.fields(cls)} - {"paths"}
    for name in options:
        if name not in known:
            raise SpecError(f"source.{name}", f"unknown option for {cls.__name__}; known: {', '.join(sorted(known))}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return cls(paths=paths, **fixed)  # type: ignore[no-any-return]


def _data(path: Path) -> bool:
    """Not a hidden file (macOS ``._orders.csv``) or an office lock file (``~$orders.xlsx``): both sit next
    to real exports with the same extension and would fail the whole load."""
    return not path.name.startswith((".", "~$"))


def _expand(path: str) -> tuple[Path, ...]:
    if any(ch in path for ch in "*?["):
        found = sorted(f for f in map(Path, globlib.glob(path, recursive=True)) if f.is_file() and _data(f))
        if not found:
            raise SourceError(path, "no file matches this pattern")
        return tuple(found)
    p = Path(path)
    if p.is_dir():
        found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in EXTENSIONS and _data(f))
        if not found:
            raise SourceError(path, f"the folder holds no readable files ({', '.join(sorted(EXTENSIONS))})")
        return tuple(found)
    if not p.exists():
        raise SourceError(path, "file not found")
    return (p,)


def open_source(path: str | Path, *, format: str | None = None, options: Mapping[str, Any] | None = None) -> Source:
    """A connector for a file, folder or glob (all files of one format), or for a database or API given by
    its URL (``postgresql://...?table=orders``) or by ``format`` (``rest``, ``graphql``, ``mongodb``, ``adbc``)."""
    kind = format if format in KINDS else (_kind_of_url(str(path)) if format is None else None)
    if kind is not None:
        return _open_kind(kind, str(path), dict(options or {}))
    paths = _expand(str(path))
    if format is None:
        kinds = {EXTENSIONS.get(p.suffix.lower()) for p in paths}
        if None in kinds:
            odd = next(p for p in paths if p.suffix.lower() not in EXTENSIONS)
            raise SpecError("source.format", f"cannot tell the format of {odd.name}; set format to one of "
                                             f"{', '.join(FORMATS)}")
        if len(kinds) > 1:
            raise SpecError("source.format", f"files of several formats ({', '.join(sorted(k or '' for k in kinds))});"
                                             " load one format at a time or set format")
        format = kinds.pop()
    assert format is not None
    if format not in FORMATS:
        raise SpecError("source.format", f"unknown format {format!r}; known: {', '.join([*FORMATS, *KINDS])}")
    return FORMATS[format](paths, dict(options or {}))


_FILE_CLASSES = {"csv": ("engine.sources.csv", "CsvSource"), "tsv": ("engine.sources.csv", "CsvSource"),
                 "parquet": ("engine.sources.parquet", "ParquetSource"), "json": ("engine.sources.json", "JsonSource"),
                 "ndjson": ("engine.sources.json", "JsonSource"), "excel": ("engine.sources.excel", "ExcelSource")}
_KIND_OPTIONS = {"graphql": "GRAPHQL_OPTIONS"}
_HOW = {"postgresql": "postgresql://user@host:5432/db?table=NAME (or --option query=SQL)",
        "mysql": "mysql://user@host:3306/db?table=NAME (MariaDB too; or --option query=SQL)",
        "mongodb": "mongodb://user@host:27017/db?collection=NAME", "rest": "https://api.example.com/v1/items",
        "graphql": "https://api.example.com/graphql --format graphql", "adbc": "adbc://DRIVER --format adbc"}


def describe_sources() -> list[dict[str, Any]]:
    """Every source kind with how to name it and its options (``biconic sources``)."""
    import importlib

    found: list[dict[str, Any]] = []
    for fmt, (module, cls_name) in _FILE_CLASSES.items():
        cls = getattr(importlib.import_module(module), cls_name)
        exts = sorted(e for e, f in EXTENSIONS.items() if f == fmt)
        options = {f.name: _default(f) for f in dataclasses.fields(cls) if f.name != "paths"}
        if fmt == "tsv":
            options["delimiter"] = "default '\\t'"
        if fmt == "ndjson":
            options["lines"] = "default True"
        found.append({"kind": fmt, "how": f"a file, folder or glob ({', '.join(exts) or '--format ' + fmt})",
                      "summary": (cls.__doc__ or "").strip().splitlines()[0], "options": options})
    for kind, (module, _factory) in KINDS.items():
        entry: dict[str, Any] = {"kind": kind, "how": _HOW.get(kind, kind), "options": {}}
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            entry["summary"] = f"unavailable here: {exc}"
        else:
            entry["summary"] = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
            entry["options"] = dict(getattr(mod, _KIND_OPTIONS.get(kind, "OPTIONS"), {}))
        found.append(entry)
    return found


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return f"default {field.default!r}"
    if field.default_factory is not dataclasses.MISSING:
        return f"default {field.default_factory()!r}"
    return "required"
