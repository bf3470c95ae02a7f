"""The schema of an NDJSON file, merged chunk by chunk, with late drift read as text rather than failing.

Polars infers a schema it then cannot read with when a key holds a number in some lines and an object or a
list in others (``{"n": 5}`` ... ``{"n": {"a": 1}}``): such a key is read as text (objects and lists as
their JSON text). Conflicts the inference sees are settled here; those it misses (it may infer a struct for
a key that also holds numbers) are found when a chunk fails to read, and the key widened then
(:func:`unreadable`).
"""

from __future__ import annotations

import decimal
import math
import re

import polars as pl

__all__ = ["chunk_schema", "exact_numbers", "inexact", "merge", "unreadable"]


def _kind(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Struct):
        return "object"
    if isinstance(dtype, (pl.List, pl.Array)):
        return "list"
    return "null" if dtype == pl.Null else "scalar"


def merge(schemas: list[dict[str, pl.DataType]]) -> dict[str, pl.DataType]:
    """The union of chunk schemas, in first-seen order: scalars widened by Polars' rules; a key that is an
    object in one chunk and a number (or a list) in another, or objects Polars cannot unify, is text."""
    names: dict[str, list[pl.DataType]] = {}
    for schema in schemas:
        for name, dtype in schema.items():
            names.setdefault(name, []).append(dtype)
    merged: dict[str, pl.DataType] = {}
    for name, dtypes in names.items():
        kinds = {_kind(t) for t in dtypes} - {"null"}
        if len(kinds) > 1:
            merged[name] = pl.String()
            continue
        try:
            frames = [pl.DataFrame(schema={name: t}) for t in dtypes]
            merged[name] = pl.concat(frames, how="vertical_relaxed").schema[name]
        except pl.exceptions.PolarsError:
            merged[name] = pl.String()
    return merged


def chunk_schema(data: bytes) -> dict[str, pl.DataType]:
    """One chunk's schema; a chunk whose lines Polars cannot unify is halved until each part infers."""
    try:
        return dict(pl.scan_ndjson(data, infer_schema_length=None).collect_schema())
    except pl.exceptions.PolarsError:
        lines = data.splitlines(keepends=True)
        if len(lines) <= 1:
            raise
        half = len(lines) // 2
        return merge([chunk_schema(b"".join(lines[:half])), chunk_schema(b"".join(lines[half:]))])


def unreadable(data: bytes, schema: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The nested keys of ``schema`` that ``data`` cannot be read with, as text: each is tried alone."""
    found: dict[str, pl.DataType] = {}
    for name, dtype in schema.items():
        if _kind(dtype) in ("object", "list"):
            try:
                pl.read_ndjson(data, schema={name: dtype})
            except pl.exceptions.PolarsError:
                found[name] = pl.String()
    return found


#: digits as 0 and E as e (signs deleted), so that two substring searches find 16 digits in a row or a
#: 3-digit exponent (a regex search takes 4 s per 230 MB, this 0.4 s)
_FOLD = bytes.maketrans(b"123456789E", b"000000000e")
_MAYBE = (b"0" * 16, b"0e000")
#: a JSON number where a value starts (after ``:``, ``[`` or ``,``), not inside a string
_NUMBER = re.compile(rb"(?<=[:\[,])(\s*)(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(?=\s*[,\]}])")
#: integers Polars reads exactly (as Int64, else Int128: numeric(38,0))
_SAFE_INT = (1 << 127) - 1


def _exact(number: bytes) -> bool:
    """Whether Polars reads the number back to the same value: float64 holds it, as its shortest text."""
    text = number.decode()
    if not any(c in text for c in ".eE"):
        return abs(int(text)) <= _SAFE_INT
    value = float(text)
    return math.isfinite(value) and decimal.Decimal(repr(value)) == decimal.Decimal(text)


def inexact(data: bytes) -> bool:
    """Whether ``data`` may hold a number Polars would round or overflow (false alarms cost a slower read)."""
    folded = data.translate(_FOLD, b"+-")
    return any(m in folded for m in _MAYBE)


def exact_numbers(data: bytes) -> bytes:
    """``data`` with the numbers Polars would round or overflow (1e400, 0.1000000000000000055511, integers
    past 128 bits) as JSON strings of their own digits: their column is read as text, digit for digit,
    rather than rounded, turned into Infinity, or refused."""

    def quote(m: re.Match[bytes]) -> bytes:
        return m.group(0) if _exact(m.group(2)) else m.group(1) + b'"' + m.group(2) + b'"'

    return _NUMBER.sub(quote, data)
