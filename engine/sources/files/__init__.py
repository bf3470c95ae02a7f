"""File sources: CSV/TSV, JSON/NDJSON, Parquet and Excel workbooks, one partition per file (or sheet).

Owns reading files as bounded chunks (CSV/NDJSON as byte ranges of whole records, the rest as row slices),
guessing the format from the extension, expanding folders and globs, and the Excel parser's sandbox.

May import: ``engine.sources`` (base, chunks), ``engine.plan`` (to type text columns with reject flags), and
the core modules. Never PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import functools
import glob as globlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import SourceError, SpecError
from engine.sources.base import Source

__all__ = ["EXTENSIONS", "FILE_CLASSES", "FORMATS", "expand", "open_files"]

#: file extension -> format name
EXTENSIONS: dict[str, str] = {
    ".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".xlsx": "excel", ".xlsm": "excel",
    ".xls": "excel", ".xlsb": "excel", ".ods": "excel",
}

#: format name -> (module, connector class); imported on first use
FILE_CLASSES: dict[str, tuple[str, str]] = {
    "csv": ("engine.sources.files.csv", "CsvSource"), "tsv": ("engine.sources.files.csv", "CsvSource"),
    "parquet": ("engine.sources.files.parquet", "ParquetSource"),
    "json": ("engine.sources.files.json", "JsonSource"), "ndjson": ("engine.sources.files.json", "JsonSource"),
    "excel": ("engine.sources.files.excel", "ExcelSource"),
}

#: options a format implies (TSV is CSV with tabs; NDJSON is JSON by lines)
_IMPLIED: dict[str, dict[str, Any]] = {"tsv": {"delimiter": "\t"}, "ndjson": {"lines": True}}


def _connector(fmt: str) -> Any:
    import importlib

    module, name = FILE_CLASSES[fmt]
    return getattr(importlib.import_module(module), name)


def _excel_options(options: dict[str, Any]) -> dict[str, Any]:
    opts = dict(options)
    if "sheet" in opts:
        opts["sheets"] = opts.pop("sheet")
    if isinstance(opts.get("sheets"), list):
        opts["sheets"] = tuple(opts["sheets"])
    return opts


def _build(fmt: str, paths: tuple[Path, ...], options: dict[str, Any]) -> Source:
    cls = _connector(fmt)
    opts = {**_IMPLIED.get(fmt, {}), **(_excel_options(options) if fmt == "excel" else options)}
    known = {f.name for f in dataclasses.fields(cls)} - {"paths"}
    for name in opts:
        if name not in known:
            raise SpecError(f"source.{name}", f"unknown option for {cls.__name__}; known: {', '.join(sorted(known))}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()}
    return cls(paths=paths, **fixed)  # type: ignore[no-any-return]


#: format name -> connector factory
FORMATS: dict[str, Callable[[tuple[Path, ...], dict[str, Any]], Source]] = {
    fmt: functools.partial(_build, fmt) for fmt in FILE_CLASSES
}


def _data(path: Path) -> bool:
    """Not a hidden file (macOS ``._orders.csv``) or an office lock file (``~$orders.xlsx``): both sit next
    to real exports with the same extension and would fail the whole load."""
    return not path.name.startswith((".", "~$"))


def expand(path: str) -> tuple[Path, ...]:
    """The files a path names: itself, a folder's readable files, or a glob's matches (sorted)."""
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


def open_files(path: str, *, format: str | None, options: dict[str, Any], known_kinds: list[str]) -> Source:
    """A connector for a file, folder or glob of one format (given, or told by the extensions)."""
    paths = expand(path)
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
        raise SpecError("source.format", f"unknown format {format!r}; known: {', '.join([*FORMATS, *known_kinds])}")
    return FORMATS[format](paths, options)


def describe_files() -> list[dict[str, Any]]:
    """Every file format with its options (for ``biconic sources``)."""
    found: list[dict[str, Any]] = []
    for fmt in FILE_CLASSES:
        cls = _connector(fmt)
        exts = sorted(e for e, f in EXTENSIONS.items() if f == fmt)
        options = {f.name: _default(f) for f in dataclasses.fields(cls) if f.name != "paths"}
        for name, value in _IMPLIED.get(fmt, {}).items():
            options[name] = f"default {value!r}"
        found.append({"kind": fmt, "how": f"a file, folder or glob ({', '.join(exts) or '--format ' + fmt})",
                      "summary": (cls.__doc__ or "").strip().splitlines()[0], "options": options})
    return found


def _default(field: dataclasses.Field[Any]) -> str:
    if "default" in field.metadata:  # a default worked out per file (a sniffed delimiter)
        return f"default: {field.metadata['default']}"
    if field.default is not dataclasses.MISSING:
        return f"default {field.default!r}"
    if field.default_factory is not dataclasses.MISSING:
        return f"default {field.default_factory()!r}"
    return "required"
