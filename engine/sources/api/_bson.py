"""BSON values for the MongoDB source: as JSON for the spool (noting what each column held, to type it back),
and as watermark text and back.

BSON types JSON cannot hold are written as text and typed back after the read: dates become ``timestamptz``
(BSON dates are UTC), Decimal128 a ``numeric`` that holds every value seen, ObjectId its 24-digit hex, binary
base64, NaN and infinities null. Imports ``bson`` (pymongo's) where it is used.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

import polars as pl

from engine.errors import SpecError, first_line

__all__ = ["Columns", "document_row", "ext_json", "flat_row", "json_value", "mark_text", "minus_lag", "parse_mark"]

#: how dates are written to the spool (Python) and parsed back (Polars/chrono)
_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
_DATETIME_PARSE = "%Y-%m-%dT%H:%M:%S%.f"
_MAX_PRECISION = 38


class Columns:
    """What each output column held over the read: a set of kinds, and the widest Decimal128 seen."""

    def __init__(self) -> None:
        self.kinds: dict[str, set[str]] = {}
        #: column -> (digits before the point, digits after) over its decimal values
        self.digits: dict[str, tuple[int, int]] = {}

    def note(self, column: str, kind: str) -> None:
        self.kinds.setdefault(column, set()).add(kind)

    def note_int(self, column: str, value: int) -> None:
        """Whole numbers count towards a decimal column's digits (a column may hold both)."""
        before, after = self.digits.get(column, (0, 0))
        if abs(value) >= 10 ** before:
            self.digits[column] = (len(str(abs(value))), after)
        self.note(column, "int")

    def note_decimal(self, column: str, text: str) -> None:
        whole, _, frac = text.lstrip("-").partition(".")
        before, after = self.digits.get(column, (0, 0))
        self.digits[column] = (max(before, len(whole.lstrip("0"))), max(after, len(frac)))
        self.note(column, "decimal")

    def casts(self) -> dict[str, pl.Expr]:
        """Columns written as text that are really dates or decimals, and the expression typing each back."""
        out: dict[str, pl.Expr] = {}
        for column, kinds in self.kinds.items():
            kinds = kinds - {"null"}
            text = pl.col(column).cast(pl.String)
            if kinds == {"datetime"}:
                out[column] = text.str.to_datetime(_DATETIME_PARSE, time_unit="us", time_zone="UTC", strict=False)
            elif "decimal" in kinds and kinds <= {"decimal", "int"}:
                before, after = self.digits[column]
                if before + after <= _MAX_PRECISION:
                    out[column] = text.cast(pl.Decimal(_MAX_PRECISION, after), strict=False)
        return out

    def typed(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """``frame`` (read back from the spool) with its date and decimal columns typed back."""
        present = frame.collect_schema()
        casts = {c: e for c, e in self.casts().items() if c in present}
        return frame.with_columns(e.alias(c) for c, e in casts.items()) if casts else frame


def _decimal_text(value: decimal.Decimal) -> str | None:
    """Plain notation (no exponent), so every value casts to one numeric type; None for NaN and infinities."""
    return format(value, "f") if value.is_finite() else None


def _utc_naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def json_value(value: Any) -> Any:
    """A BSON value nested inside JSON text: the nearest JSON value (the ``default`` of ``json.dumps``)."""
    from bson import Decimal128, ObjectId
    from bson.timestamp import Timestamp

    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dt.datetime):
        return _utc_naive(value).isoformat() + "Z"
    if isinstance(value, Timestamp):
        return _utc_naive(value.as_datetime()).isoformat() + "Z"
    if isinstance(value, Decimal128):
        return _decimal_text(value.to_decimal())
    if isinstance(value, decimal.Decimal):
        return _decimal_text(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "pattern"):  # bson Regex, re.Pattern
        return str(value.pattern)
    return str(value)  # MinKey, MaxKey, Code, DBRef, out-of-range DatetimeMS: their text


def _clean_floats(value: Any) -> Any:
    """NaN and infinities (which JSON cannot hold) become null, at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_floats(v) for v in value]
    return value


def _json_text(value: Any) -> str:
    return json.dumps(_clean_floats(value), default=json_value, ensure_ascii=False, separators=(",", ":"))


def _scalar(value: Any, column: str, columns: Columns) -> Any:
    """A top-level (or flattened) value as JSON, noting its kind for the column."""
    from bson import Decimal128
    from bson.timestamp import Timestamp

    if value is None:
        columns.note(column, "null")
        return None
    if isinstance(value, bool):
        columns.note(column, "bool")
        return value
    if isinstance(value, int):
        columns.note_int(column, value)
        return value
    if isinstance(value, float):
        columns.note(column, "float")
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.datetime, Timestamp)):
        columns.note(column, "datetime")
        moment = value.as_datetime() if isinstance(value, Timestamp) else value
        return _utc_naive(moment).strftime(_DATETIME_FORMAT)
    if isinstance(value, (Decimal128, decimal.Decimal)):
        text = _decimal_text(value.to_decimal() if isinstance(value, Decimal128) else value)
        if text is None:
            columns.note(column, "null")
        else:
            columns.note_decimal(column, text)
        return text
    if isinstance(value, (Mapping, list, tuple)):
        columns.note(column, "json")
        return _json_text(value)
    columns.note(column, "str")
    return value if isinstance(value, str) else json_value(value)


def flat_row(doc: Mapping[str, Any], depth: int, keep: frozenset[str], columns: Columns,
             out: dict[str, Any] | None = None, prefix: str = "") -> dict[str, Any]:
    """A document as one row: nested documents ``depth`` levels deep (but not those in ``keep``) become
    ``a.b`` columns, anything deeper JSON text."""
    out = {} if out is None else out
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and depth > 0 and name not in keep:
            flat_row(value, depth - 1, keep, columns, out, f"{name}.")
        else:
            out[name] = _scalar(value, name, columns)
    return out


def document_row(doc: Mapping[str, Any], columns: Columns) -> dict[str, Any]:
    """A document as ``_id`` plus the whole document as JSON text in ``document``."""
    row = {"_id": _scalar(doc.get("_id"), "_id", columns)}
    columns.note("document", "json")
    return {**row, "document": _json_text(doc)}


def ext_json(value: Any) -> Any:
    """Extended JSON inside a filter from YAML or JSON ({"$oid": ...}, {"$date": ...}) as BSON values."""
    from bson import json_util

    if isinstance(value, Mapping):
        return json_util.object_hook({str(k): ext_json(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return [ext_json(v) for v in value]
    return value


# --- watermarks ----------------------------------------------------------------------------------------------
def mark_text(value: Any) -> str:
    """A cursor value as watermark text: ISO 8601 (UTC) for dates, decimal for numbers, hex for ObjectId."""
    from bson import Decimal128, ObjectId

    if isinstance(value, dt.datetime):
        return _utc_naive(value).replace(tzinfo=dt.UTC).isoformat()
    if isinstance(value, Decimal128):
        return str(value.to_decimal())
    if isinstance(value, (bool, int, float, str, ObjectId, decimal.Decimal)):
        return str(value) if not isinstance(value, float) else repr(value)
    raise SpecError("source.cursor", f"cursor values of type {type(value).__name__} cannot be a watermark; "
                                     "use a date, number, string or ObjectId field")


def parse_mark(text: str, like: Any) -> Any:
    """Watermark text back to a value of the cursor's type (the type of its current maximum)."""
    from bson import Decimal128, ObjectId
    from bson.errors import BSONError

    try:
        if isinstance(like, dt.datetime):
            return _utc_naive(dt.datetime.fromisoformat(text))
        if isinstance(like, ObjectId):
            return ObjectId(text)
        if isinstance(like, Decimal128):
            return Decimal128(text)
        if isinstance(like, bool):
            return text == "True"
        if isinstance(like, (int, float)):
            number = decimal.Decimal(text)
            return int(number) if number == number.to_integral_value() and isinstance(like, int) else float(number)
        return text
    except (ValueError, TypeError, ArithmeticError, BSONError) as exc:
        raise SpecError("source.cursor", f"the stored watermark {text!r} does not fit the cursor's type "
                                         f"{type(like).__name__} ({first_line(exc)})") from exc


def minus_lag(value: Any, lag: float) -> Any:
    """A cursor value moved back by ``lag`` (seconds for dates and ObjectIds, units for numbers)."""
    from bson import Decimal128, ObjectId

    if not lag:
        return value
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=lag)
    if isinstance(value, ObjectId):  # the smallest id of the second, lag seconds earlier
        return ObjectId.from_datetime(value.generation_time - dt.timedelta(seconds=lag))
    if isinstance(value, Decimal128):
        return Decimal128(value.to_decimal() - decimal.Decimal(str(lag)))
    if isinstance(value, int) and not isinstance(value, bool):
        return value - math.ceil(lag)
    if isinstance(value, float):
        return value - lag
    raise SpecError("source.lag", f"a lag needs a date or number cursor; this one holds {type(value).__name__}")
