"""What the PostgreSQL and MySQL/MariaDB sources share, besides their base class: the description of a table's
columns and how each is read, the Arrow form of a driver's columns, watermark values as text and back, the
wording of driver errors, and the options (with how a URL and options become a source's fields).

Each table or query is ONE :class:`~engine.sources.base.Partition` (a list or pattern of tables is a
:class:`~engine.sources.sql.tables.TableSet`, a partition per table). Its fingerprint is a hash of the server
(without password), the table or query and the watermark bounds. A full (non-incremental) read's fingerprint
cannot see changes, so its partition is ``volatile``: merge and replace read it again every run, append skips
it like any re-run (``full_refresh`` reads it again); a ``cursor`` reads only what changed.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import SpecError, first_line
from engine.redact import redact
from engine.sources.incremental import lag_units

__all__ = ["OPTIONS", "Column", "Described", "Dialect", "Kind", "Read", "Run", "database_fields", "decimal_or_text",
           "driver_message", "empty_batch", "fix_array", "mark_text", "minus_lag", "not_after", "parse_mark",
           "plain_number", "range_cut", "says_gone", "typed_value"]

#: ``postgresql`` (also ``postgres://``) or ``mysql`` (also ``mariadb://``)
Dialect = Literal["postgresql", "mysql"]
#: what a column holds, as far as cursors and partition keys care
Kind = Literal["time", "number", "text", "other"]

#: option -> what it does (``engine.load(..., options={...})``, a spec's ``source.options``, or the URL query)
OPTIONS: dict[str, str] = {
    "table": "the table to read: NAME or SCHEMA.NAME (or ?table=NAME in the URL); several, each its own partition: "
             "a list (a,b,c or table= repeated) or a LIKE pattern (SCHEMA.import_%)",
    "query": "a SELECT to read instead of a table (its columns must have distinct names)",
    "cursor": "column read incrementally (e.g. updated_at or id): only rows past the stored watermark",
    "lag": "re-read this far behind the watermark: seconds (or 15m, 2h, 1d) for time cursors, units for numbers",
    "partition_on": "numeric or date/time column whose range is split for parallel reads",
    "partition_num": "how many ranges (connections) read at once with partition_on (default 2)",
    "batch_rows": "rows per chunk loaded at a time (default BICONIC_CHUNK_ROWS, 500000)",
    "password_env": "environment variable holding the password (keeps it out of the URL, shell history and logs)",
    "connection_from_name": "a regex with one group matching each table's whole name: the group is the rows' "
                            "connection_id (e.g. import_([0-9a-f-]{36}))",
    "connection_column": "a column holding each row's connection id, loaded as connection_id",
}

_SCHEMES: dict[str, Dialect] = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql",
                                "mariadb": "mysql"}
#: words of a driver message (one without an error code) that say the server went away: worth a retry
_GONE_WORDS = ("could not connect", "connection refused", "can't connect", "timed out", "terminating connection",
               "server closed the connection", "lost connection", "gone away", "connection reset",
               "timeout expired", "starting up", "shutting down", "too many clients")


class Run(Protocol):
    """Runs one SQL statement on a catalog session and returns its rows."""

    def __call__(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]: ...


# --- columns ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Column:
    """A source column as the catalog (or a probe of the query) describes it."""

    name: str
    #: PostgreSQL ``typname`` (int8, numeric, timestamptz, _int4...) or MySQL ``data_type`` (bigint, datetime...)
    type: str
    precision: int | None = None
    scale: int | None = None
    unsigned: bool = False


@dataclass(frozen=True, kw_only=True)
class Read:
    """How one column is read: its SELECT expression and the Arrow type the driver's values become."""

    sql: str
    to: pa.DataType | None
    kind: Kind


@dataclass
class Described:
    """The relation read and its columns, found once per source (shared by its watermark copies)."""

    relation: str
    columns: list[Column]
    reads: dict[str, Read]
    size_bytes: int
    #: a table's one-column primary key (MySQL pages along it), if any
    primary_key: str | None = None
    #: the columns that may hold NULL (None: unknown, as for a query)
    nullable: set[str] | None = None


def decimal_or_text(precision: int | None, scale: int | None) -> pa.DataType:
    """Arrow's decimal for a numeric that fits it, else text (exact either way)."""
    if precision is not None and 1 <= precision <= 38 and scale is not None and 0 <= scale <= precision:
        return pa.decimal128(precision, scale)
    return pa.string()


_NOT_A_NUMBER = r"(?i)^\s*[+-]?(nan|inf|infinity)\s*$"


def fix_array(arr: pa.Array, to: pa.DataType | None) -> pa.Array:
    """A driver's column as the mapped Arrow type (see the dialects' tables)."""
    if isinstance(arr.type, pa.BaseExtensionType):
        arr = arr.storage
    if to is None:
        if arr.type == pa.uint64():  # above 2**63-1 a bigint would wrap: numeric(20,0) holds every value
            return arr.cast(pa.decimal128(20, 0))
        return arr
    if arr.type == to:
        return arr
    if pa.types.is_decimal(to) and pa.types.is_string(arr.type):
        arr = pc.if_else(pc.match_substring_regex(arr, _NOT_A_NUMBER), pa.scalar(None, arr.type), arr)
    if pa.types.is_boolean(to) and pa.types.is_integer(arr.type):
        return pc.not_equal(arr, 0)
    return arr.cast(to)


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A batch with no rows: a read always yields one, so its schema is known."""
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


# --- watermark values -------------------------------------------------------------------------------------
def mark_text(value: Any) -> str:
    """A cursor value as watermark text: ISO 8601 for times (with the offset when the column has a time zone),
    decimal text for numbers."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def plain_number(value: Any) -> str:
    """A cursor or key number as plain decimal text for SQL (never an exponent, never NaN)."""
    number = decimal.Decimal(value) if not isinstance(value, float) else decimal.Decimal(repr(value))
    if not number.is_finite():
        raise SpecError("source.cursor", f"{value!r} is not a usable number")
    return format(number, "f")


def typed_value(value: Any, read: Read) -> Any:
    """A catalog answer as a comparable Python value (numbers come as text to stay exact)."""
    if value is None:
        return None
    if read.kind == "number":
        if isinstance(value, float):
            return decimal.Decimal(repr(value)) if math.isfinite(value) else None
        try:
            number = decimal.Decimal(str(value))
        except ArithmeticError:
            return None
        return number if number.is_finite() else None
    if read.kind == "time":
        return value if isinstance(value, (dt.datetime, dt.date)) else None  # MySQL zero dates come as text
    return value


def parse_mark(text: str, col: Column, read: Read, *, aware: bool) -> Any:
    """Watermark text back to a value of the cursor's type (``aware``: the column's times are instants)."""
    try:
        if read.kind == "time":
            if col.type == "date":
                return dt.datetime.fromisoformat(text).date() if "T" in text or " " in text.strip() else \
                    dt.date.fromisoformat(text.strip())
            value = dt.datetime.fromisoformat(text.strip())
            if aware:
                return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
            return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value
        if read.kind == "number":
            number = decimal.Decimal(text.strip())
            if not number.is_finite():
                raise ValueError("not a finite number")
            return number
        return text
    except (ValueError, ArithmeticError) as exc:
        raise SpecError("source.cursor", f"the stored watermark {text!r} does not fit the cursor "
                                         f"{col.name!r} ({col.type}): {first_line(exc)}") from exc


def minus_lag(value: Any, col: Column, lag: float, *, integral: bool) -> Any:
    """A cursor value moved ``lag`` back (seconds for times, whole days for dates, units for numbers)."""
    if not lag:
        return value
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=lag)
    if isinstance(value, dt.date):
        return value - dt.timedelta(days=math.ceil(lag / 86400))
    if isinstance(value, decimal.Decimal):
        start = value - decimal.Decimal(repr(lag))
        # an integer column: c > 41.5 is c > 41
        return start.to_integral_value(rounding=decimal.ROUND_FLOOR) if integral else start
    raise SpecError("source.lag", f"a lag needs a number or date/time cursor; {col.name!r} is {col.type}")


def not_after(high: Any, start: Any) -> bool:
    """``high <= start``, comparing aware and naive times in UTC."""
    try:
        return bool(high <= start)
    except TypeError:  # aware vs naive: compare in UTC
        def utc(v: dt.datetime) -> dt.datetime:
            return v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo else v
        return bool(utc(high) <= utc(start))


def range_cut(lo: Any, hi: Any, i: int, n: int, *, integral: bool) -> Any:
    """The ``i``-th of ``n`` cuts of ``[lo, hi]`` into ranges of about equal width."""
    if isinstance(lo, dt.datetime):
        return lo + (hi - lo) * i / n
    if isinstance(lo, dt.date):
        return lo + dt.timedelta(days=(hi - lo).days * i // n)
    return lo + (hi - lo) * i // n if integral else lo + (hi - lo) * i / n


# --- driver errors ----------------------------------------------------------------------------------------
_ERROR_CODE = re.compile(r"^\((\d+), ['\"](.*)['\"]\)$", re.S)


def driver_message(exc: BaseException) -> str:
    """The useful line of a driver error: libpq's ``ERROR:`` text, MySQL's message without its code tuple."""
    text = str(exc)
    m = re.search(r"ERROR:\s+(.*)", text)
    if m:
        return m.group(1).strip()[:300]
    m = _ERROR_CODE.match(text.strip())
    if m:
        return m.group(2).strip()[:300]
    m = re.search(r"MySqlError \{ ERROR \d+ \(\w+\): (.*?) \}", text)
    if m:
        return m.group(1).strip()[:300]
    line = first_line(exc)
    line = re.sub(r"^(?:[A-Z_]+: )?(?:\[libpq\] )?(?:Failed to connect: )?", "", line)
    return re.sub(r"\s+", " ", line)


def says_gone(text: str) -> bool:
    """Whether a driver message without an error code says the server went away (connectorx, libpq's
    connection failures)."""
    lowered = text.lower()
    return any(word in lowered for word in _GONE_WORDS)


# --- opening ----------------------------------------------------------------------------------------------
def _bad(name: str, message: str) -> SpecError:
    return SpecError(f"source.{name}", message)


def _int_option(opts: Mapping[str, Any], name: str, default: int | None, *, least: int) -> int | None:
    value = opts.get(name, default)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise _bad(name, f"expected a whole number >= {least}, got {value!r}")
    return value


def _name_option(opts: Mapping[str, Any], name: str) -> str | None:
    value = opts.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise _bad(name, f"expected a name, got {value!r}")
    return value.strip()


def _merged_options(options: Mapping[str, Any], params: list[tuple[str, str]]) -> dict[str, Any]:
    """The options with the URL's option parameters (``?table=...``) merged in; unknown names refused."""
    opts = dict(options)
    for name in opts:
        if name not in OPTIONS:
            raise _bad(name, f"unknown option for a database source; known: {', '.join(sorted(OPTIONS))}")
    if isinstance(opts.get("table"), (list, tuple)):  # several tables: one text, as in the URL
        opts["table"] = ",".join(str(t) for t in opts["table"])
    tables = [v for k, v in params if k == "table"]
    if len(tables) > 1:  # ?table=a&table=b is the list a,b
        params = [*[(k, v) for k, v in params if k != "table"], ("table", ",".join(tables))]
    for key, value in params:
        if key in OPTIONS:
            if key in opts and str(opts[key]) != value:
                raise _bad(key, "given both in the URL and as an option, with different values")
            opts[key] = value
    return opts


def _with_password(netloc: str, variable: str | None, url: str) -> str:
    """The URL's ``user@host`` with the password read from the environment variable ``variable`` (named by the
    ``password_env`` option); the netloc as it is without one."""
    if variable is None:
        return netloc
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        raise _bad("password_env", f"the URL {redact(url)!r} names no user; write user@host")
    if ":" in userinfo:
        raise _bad("password_env", "the URL holds a password too; give it in one place only")
    password = os.environ.get(variable)
    if password is None:
        raise _bad("password_env", f"environment variable {variable} is not set")
    return f"{userinfo}:{quote(password, safe='')}@{host}"


def database_fields(url: str, options: Mapping[str, Any]) -> tuple[Dialect, dict[str, Any]]:
    """The dialect of ``url`` and the checked fields of its source (see :data:`OPTIONS`), with
    ``connection_from_name`` and ``connection_column`` (for a :class:`~engine.sources.sql.tables.TableSet`, not
    a source field); other URL parameters (``sslmode``...) stay in the URL, for the driver."""
    parts = urlsplit(url)
    dialect = _SCHEMES.get(parts.scheme.lower())
    if dialect is None:
        raise SpecError("source.path", f"not a database URL: {redact(url)!r}; use postgresql:// or mysql://")
    params = parse_qsl(parts.query, keep_blank_values=True)
    opts = _merged_options(options, params)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise SpecError("source.path", f"bad port in {redact(url)!r}") from exc
    table, query = _name_option(opts, "table"), opts.get("query")
    if query is not None:
        if not isinstance(query, str) or not query.strip().rstrip(";").strip():
            raise _bad("query", f"expected a SELECT statement, got {query!r}")
        query = query.strip().rstrip(";").strip()
    if table is not None and query is not None:
        raise _bad("query", "read a table or a query, not both")
    if table is None and query is None:
        raise _bad("table", "what to read? add ?table=NAME to the URL, or set the table or query option")
    if "partition_num" in opts and opts.get("partition_on") is None:
        raise _bad("partition_num", "partition_num needs partition_on (the column whose range is split)")
    by_name, by_column = opts.get("connection_from_name"), _name_option(opts, "connection_column")
    if by_name is not None and by_column is not None:
        raise _bad("connection_column", "take the connection id from the table's name or from a column, not both")
    driver_query = urlencode([(k, v) for k, v in params if k not in OPTIONS])
    netloc = _with_password(parts.netloc, _name_option(opts, "password_env"), url)
    return dialect, {
        "url": urlunsplit((parts.scheme, netloc, parts.path, driver_query, "")), "table": table,
        "query": query, "cursor": _name_option(opts, "cursor"), "lag": lag_units(opts.get("lag", 0)),
        "partition_on": _name_option(opts, "partition_on"),
        "partition_num": _int_option(opts, "partition_num", 2, least=1) or 2,
        "batch_rows": _int_option(opts, "batch_rows", None, least=1),
        "connection_from_name": by_name, "connection_column": by_column,
    }
