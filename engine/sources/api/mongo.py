"""MongoDB collections: an optional filter and projection, read in batches with pymongo, nested documents
flattened to a chosen depth (or each document kept whole as JSON text).

>>> engine.load("mongodb://app@db:27017/shop?collection=orders", into="orders",  # doctest: +SKIP
...             options={"filter": {"status": "paid"}, "flatten": 2, "cursor": "updated_at"})

Documents are spooled, one JSON line each, to a temporary file under the data folder and read back by the
NDJSON source. Fields vary from document to document, so no batch can tell the columns: the spool gives the
union of fields over the whole read (a field missing from some documents is null there; an int in one and a
float in another is a float), memory stays bounded by one batch, and the pipeline's repeated passes over a
partition (dedupe, unique) see the same rows without asking the server again. BSON types the JSON cannot
hold are written as text and typed back: dates become ``timestamptz`` (BSON dates are UTC), Decimal128 a
``numeric`` that holds every value seen, ObjectId its 24-digit hex, binary base64, NaN and infinities null.

A full read's fingerprint is a hash of what was read, so re-running an unchanged collection loads nothing and
a changed one loads again (use mode ``replace`` or ``merge`` for snapshots, or a ``cursor``). With a cursor the
read is incremental: ``{cursor: {"$gt": low - lag, "$lte": high}}`` is added to the filter, ``high`` the
cursor's maximum when the load starts.

No MongoDB server can be installed on the machines this engine is built and tested on: the connector is tested
against ``mongomock`` (an in-process imitation of pymongo's API, injected through :data:`_client_factory`),
never against a live server. Install with ``pip install 'biconic-engine[mongodb]'``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import decimal
import hashlib
import json
import math
import os
import re
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import polars as pl
import pyarrow as pa

from engine.errors import SourceError, SourceUnavailableError, SpecError, first_line
from engine.plan.columns import ROW_COLUMN
from engine.redact import redact, secret_of
from engine.settings import settings
from engine.sources.base import Partition, reader_from_frame
from engine.sources.chunks import ChunkFactory
from engine.sources.incremental import lag_units

__all__ = ["OPTIONS", "MongoMode", "MongoSource", "Window", "open_mongo"]

#: ``columns``: one column per field (nested documents flattened to ``flatten`` levels); ``document``: the
#: ``_id`` and the whole document as JSON text in a ``document`` column
MongoMode = Literal["columns", "document"]

#: option -> what it does (``engine.load(..., options={...})`` and a spec's ``source.options``)
OPTIONS: dict[str, str] = {
    "collection": "the collection to read (or ?collection=NAME in the URL)",
    "database": "the database, when the URL has none (mongodb://host/DB)",
    "filter": "a query document, e.g. {status: paid}; Extended JSON ($oid, $date) is understood",
    "projection": "fields to read: a list of names or a projection document ({items: 0})",
    "flatten": "levels of nested documents turned into columns (a.b); deeper values are JSON text (default 1)",
    "json_columns": "fields kept whole as JSON text whatever the flatten depth",
    "mode": "columns (default) or document: _id plus the whole document as JSON text in `document`",
    "batch_rows": "documents per network batch (default 10000)",
    "cursor": "field read incrementally (e.g. updated_at): only documents past the stored watermark",
    "lag": "re-read this far behind the watermark: seconds (or 15m, 2h, 1d) for dates, units for numbers",
}

#: Test seam: ``_client_factory(url)`` returns the client (``mongomock.MongoClient`` in the tests); None uses
#: ``pymongo.MongoClient``.
_client_factory: Callable[[str], Any] | None = None

_SPOOL_PREFIX = "mongo-"
#: how dates are written to the spool (Python) and parsed back (Polars/chrono)
_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
_DATETIME_PARSE = "%Y-%m-%dT%H:%M:%S%.f"
_MAX_PRECISION = 38
#: documents sampled for their fields when a read finds none
_SAMPLE = 100


def _import_pymongo() -> Any:
    try:
        import pymongo
    except ImportError:
        raise SpecError("source", "reading MongoDB needs pymongo: pip install 'biconic-engine[mongodb]'") from None
    return pymongo


# --- BSON values -> JSON values, with what kind each column has held ----------------------------------------
class _Columns:
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


def _decimal_text(value: decimal.Decimal) -> str | None:
    """Plain notation (no exponent), so every value casts to one numeric type; None for NaN and infinities."""
    return format(value, "f") if value.is_finite() else None


def _utc_naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def _plain(value: Any) -> Any:
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
    return json.dumps(_clean_floats(value), default=_plain, ensure_ascii=False, separators=(",", ":"))


def _scalar(value: Any, column: str, columns: _Columns) -> Any:
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
    return value if isinstance(value, str) else _plain(value)


def _flatten(doc: Mapping[str, Any], depth: int, keep: frozenset[str], columns: _Columns,
             out: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and depth > 0 and name not in keep:
            _flatten(value, depth - 1, keep, columns, out, f"{name}.")
        else:
            out[name] = _scalar(value, name, columns)
    return out


# --- the spool -------------------------------------------------------------------------------------------
@dataclass
class _Spool:
    """One read of the collection, as NDJSON on disk; the file goes when the source object does."""

    path: Path
    rows: int
    digest: str
    columns: _Columns
    #: documents written only for their fields when the read found none (their rows are not read)
    sample: int = 0


def _alive(pid: int) -> bool:
    import psutil

    return bool(psutil.pid_exists(pid))


def _sweep(folder: Path) -> None:
    """Spools left by killed processes (a spool lives only as long as its source object)."""
    for path in folder.glob(f"{_SPOOL_PREFIX}*.ndjson"):
        m = re.match(rf"{_SPOOL_PREFIX}(\d+)-", path.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            path.unlink(missing_ok=True)


class _State:
    """A source object's spool, made on first use (the dataclass is frozen; this holder is not)."""

    def __init__(self) -> None:
        self.spool: _Spool | None = None


# --- watermarks -------------------------------------------------------------------------------------------


def _mark_text(value: Any) -> str:
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


def _parse_mark(text: str, like: Any) -> Any:
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
                                         f"{type(like).__name__} ({first_line(exc)})") from None


def _minus_lag(value: Any, lag: float) -> Any:
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


def _at_path(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _ext_json(value: Any) -> Any:
    """Extended JSON inside a filter from YAML or JSON ({"$oid": ...}, {"$date": ...}) as BSON values."""
    from bson import json_util

    if isinstance(value, Mapping):
        return json_util.object_hook({str(k): _ext_json(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return [_ext_json(v) for v in value]
    return value


# --- the source -------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Window:
    """The cursor range of an incremental read: ``low < cursor <= high``, as BSON values."""

    #: the stored watermark minus the lag (None: from the start)
    low: Any
    #: the cursor's maximum when the read was planned (None: no document has the cursor, read nothing)
    high: Any
    #: the stored watermark as stored (part of the fingerprint)
    mark: str | None


@dataclass(frozen=True, kw_only=True)
class MongoSource:
    """One MongoDB collection (one partition), read in batches and spooled as NDJSON.

    >>> MongoSource(url="mongodb://app@db:27017", database="shop", collection="orders",  # doctest: +SKIP
    ...             filter={"status": "paid"}, flatten=2)
    """

    #: the connection URL, passwords included: never printed (see :attr:`label`)
    url: str = field(repr=False)
    database: str
    collection: str
    filter: Mapping[str, Any] = field(default_factory=dict)
    projection: Mapping[str, Any] | tuple[str, ...] | None = None
    flatten: int = 1
    json_columns: tuple[str, ...] = ()
    mode: MongoMode = "columns"
    batch_rows: int = 10_000
    cursor: str | None = None
    lag: float = 0.0
    #: set by :meth:`with_watermark`: the cursor range this copy reads (None: everything)
    window: Window | None = None
    _state: _State = field(default_factory=_State, init=False, repr=False, compare=False)

    # --- identity -----------------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The collection as logs and reports show it: ``mongodb://app:***@db:27017/shop.orders``."""
        parts = urlsplit(redact(self.url))
        return f"{parts.scheme}://{parts.netloc}/{self.database}.{self.collection}"

    def _filter_hash(self) -> str:
        from bson import json_util

        text = json_util.dumps(self.filter, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def watermark_key(self) -> str:
        return f"{self.label}#{self._filter_hash()}" if self.filter else self.label

    # --- reading ------------------------------------------------------------------------------------------
    def _secrets(self) -> list[str]:
        secret = secret_of(self.url)
        return [s for s in {secret, unquote(secret)} if s] if secret else []

    def _error(self, exc: BaseException, doing: str) -> SourceError:
        """pymongo's error, wrapped once, without the password; an unreachable server or a lost connection
        (``ConnectionFailure``: timeouts, failovers) is worth a retry."""
        pymongo = _import_pymongo()
        text = first_line(exc)
        for secret in self._secrets():
            if len(secret) >= 4:
                text = text.replace(secret, "***")
            else:  # a very short one only where it stands alone, not inside every word holding it
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
        unavailable = isinstance(exc, pymongo.errors.ConnectionFailure)
        return (SourceUnavailableError if unavailable else SourceError)(self.label, f"{doing}: {text}")

    @contextlib.contextmanager
    def _collection(self) -> Iterator[Any]:
        """The collection, on a client closed afterwards (unless the test seam lent it)."""
        if _client_factory is not None:
            yield _client_factory(self.url)[self.database][self.collection]
            return
        pymongo = _import_pymongo()
        # out-of-range dates come back as DatetimeMS (written as text) instead of failing the whole read
        client = pymongo.MongoClient(self.url, datetime_conversion="DATETIME_AUTO")
        try:
            yield client[self.database][self.collection]
        finally:
            client.close()

    def _query(self) -> dict[str, Any] | None:
        """The filter with the incremental range; None when the range is known to be empty."""
        base = _ext_json(dict(self.filter))
        if self.window is None or self.cursor is None:
            return base  # type: ignore[no-any-return]
        low, high = self.window.low, self.window.high
        if high is None:
            return None
        window: dict[str, Any] = {"$lte": high}
        if low is not None:
            window["$gt"] = low
        cond = {self.cursor: window}
        return {"$and": [base, cond]} if base else cond

    def _documents(self, query: dict[str, Any] | None, *, newest: int | None = None) -> Iterator[Mapping[str, Any]]:
        """The documents matching ``query`` in ``_id`` order (or the ``newest`` few, latest first)."""
        if query is None:
            return
        projection = list(self.projection) if isinstance(self.projection, tuple) else self.projection
        pymongo = _import_pymongo()
        from bson.errors import BSONError

        try:
            with self._collection() as coll:
                if newest is not None:
                    yield from coll.find(query, projection).sort("_id", -1).limit(newest)
                else:  # _id order: stable across reads (the fingerprint hashes the rows) and always indexed
                    yield from coll.find(query, projection, batch_size=self.batch_rows).sort("_id", 1)
        except (pymongo.errors.PyMongoError, BSONError) as exc:
            raise self._error(exc, "cannot read the collection") from None

    def _write(self, f: Any, doc: Mapping[str, Any], columns: _Columns, keep: frozenset[str]) -> bytes:
        line = json.dumps(self._row(doc, columns, keep), ensure_ascii=False, separators=(",", ":"),
                          default=_plain).encode() + b"\n"
        f.write(line)
        return line

    def _row(self, doc: Mapping[str, Any], columns: _Columns, keep: frozenset[str]) -> dict[str, Any]:
        if self.mode == "document":
            return {"_id": _scalar(doc.get("_id"), "_id", columns), "document": _scalar_json(doc, columns)}
        return _flatten(doc, self.flatten, keep, columns, {})

    def _spool(self) -> _Spool:
        state = self._state
        if state.spool is not None:
            return state.spool
        folder = settings().data_path / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        _sweep(folder)
        path = folder / f"{_SPOOL_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.ndjson"
        columns = _Columns()
        keep = frozenset(self.json_columns)
        digest = hashlib.sha256()
        rows = sample = 0
        try:
            with open(path, "wb") as f:
                for doc in self._documents(self._query()):
                    digest.update(self._write(f, doc, columns, keep))
                    rows += 1
                if not rows:
                    # Nothing new, yet the (empty) chunk must carry the collection's fields and types: the
                    # table is planned from it (a partition_by column must be there).
                    for doc in self._documents(_ext_json(dict(self.filter)), newest=_SAMPLE):
                        self._write(f, doc, columns, keep)
                        sample += 1
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        weakref.finalize(state, path.unlink, missing_ok=True)
        state.spool = _Spool(path=path, rows=rows, digest=digest.hexdigest()[:32], columns=columns, sample=sample)
        return state.spool

    def _json(self) -> tuple[Any, Partition]:
        from engine.sources.files.json import JsonSource

        spool = self._spool()
        source = JsonSource(paths=(spool.path,), lines=True)
        return source, source.partitions()[0]

    def _typed(self, frame: pl.LazyFrame, columns: _Columns) -> pl.LazyFrame:
        present = frame.collect_schema()
        casts = {c: e for c, e in columns.casts().items() if c in present}
        return frame.with_columns(e.alias(c) for c, e in casts.items()) if casts else frame

    def _empty(self, spool: _Spool) -> pl.LazyFrame:
        """No rows, with the fields of the newest documents (or ``_id`` alone in an empty collection)."""
        if not spool.sample:
            return pl.LazyFrame(schema={"_id": pl.String}).with_row_index(ROW_COLUMN, offset=1)
        source, part = self._json()
        return self._typed(source.scan(part), spool.columns).head(0)

    # --- Source protocol ----------------------------------------------------------------------------------
    def partitions(self) -> list[Partition]:
        if self.window is not None:
            text = "\x1f".join([self.watermark_key(), self.window.mark or "", self.high_watermark() or ""])
            fingerprint = hashlib.sha256(text.encode()).hexdigest()[:32]
            size = 0
        else:
            spool = self._spool()
            fingerprint = spool.digest
            size = spool.path.stat().st_size if spool.rows else 0
        key = self.watermark_key()
        return [Partition(key=key, label=self.label, fingerprint=fingerprint, size_bytes=size)]

    def scan(self, partition: Partition) -> pl.LazyFrame:
        spool = self._spool()
        if not spool.rows:
            return self._empty(spool)
        source, part = self._json()
        try:
            return self._typed(source.scan(part), spool.columns)
        except SourceError as exc:
            raise SourceError(self.label, exc.message) from None

    def chunks(self, partition: Partition) -> Iterator[ChunkFactory]:
        spool = self._spool()
        if not spool.rows:
            empty = self._empty(spool)
            yield lambda rows_before: empty
            return
        source, part = self._json()
        try:
            for factory in source.chunks(part):
                yield _typed_chunk(self, factory, spool.columns)
        except SourceError as exc:
            raise SourceError(self.label, exc.message) from None

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        return reader_from_frame(self.scan(partition), columns=columns)

    def schema(self) -> pa.Schema:
        return reader_from_frame(self.scan(self.partitions()[0]).head(0)).schema

    # --- IncrementalSource protocol -----------------------------------------------------------------------
    def _max_cursor(self) -> Any:
        assert self.cursor is not None
        pymongo = _import_pymongo()
        base = _ext_json(dict(self.filter))
        present = {self.cursor: {"$ne": None}}
        try:
            with self._collection() as coll:
                found = list(coll.find({"$and": [base, present]} if base else present, {self.cursor: 1})
                             .sort(self.cursor, -1).limit(1))
        except pymongo.errors.PyMongoError as exc:
            raise self._error(exc, f"cannot find the highest {self.cursor!r}") from None
        return _at_path(found[0], self.cursor) if found else None

    def with_watermark(self, low: str | None) -> MongoSource:
        """A copy reading documents with ``low - lag < cursor <= high``, high the cursor's maximum now."""
        if self.cursor is None:
            raise SpecError("source.cursor", "set a cursor field to read incrementally")
        high = self._max_cursor()
        start = None
        if high is not None:  # None: no document has the cursor yet, read nothing and keep the watermark
            _mark_text(high)  # an unusable type fails here, before anything is read
            if low is not None:
                start = _parse_mark(low, high)
                if start >= high:  # nothing new (or the maximum went down): never move the watermark back
                    high = start
                start = _minus_lag(start, self.lag)
        return dataclasses.replace(self, window=Window(low=start, high=high, mark=low))

    def high_watermark(self) -> str | None:
        if self.window is None or self.window.high is None:
            return None
        return _mark_text(self.window.high)


def _scalar_json(doc: Mapping[str, Any], columns: _Columns) -> str:
    columns.note("document", "json")
    return _json_text(doc)


def _typed_chunk(source: MongoSource, factory: ChunkFactory, columns: _Columns) -> ChunkFactory:
    def chunk(rows_before: int) -> pl.LazyFrame:
        return source._typed(factory(rows_before), columns)
    return chunk


# --- opening from a URL and options -----------------------------------------------------------------------
def _bad(name: str, message: str) -> SpecError:
    return SpecError(f"source.{name}", message)


def _int_option(opts: dict[str, Any], name: str, default: int, *, least: int) -> int:
    value = opts.get(name, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise _bad(name, f"expected a whole number >= {least}, got {value!r}")
    return value


def _document_option(opts: dict[str, Any], name: str) -> dict[str, Any]:
    value = opts.get(name)
    if value is None:
        return {}
    if isinstance(value, str):
        from bson import json_util

        try:
            value = json_util.loads(value)
        except ValueError as exc:
            raise _bad(name, f"not a JSON document: {first_line(exc)}") from None
    if not isinstance(value, Mapping):
        raise _bad(name, f"expected a document (mapping), got {type(value).__name__}")
    return dict(value)


def open_mongo(url: str, options: Mapping[str, Any]) -> MongoSource:
    """A :class:`MongoSource` from ``mongodb://user:pw@host:27017/db?collection=NAME`` and options
    (see :data:`OPTIONS`).

    >>> open_mongo("mongodb://db:27017/shop?collection=orders", {"flatten": 0})  # doctest: +SKIP
    """
    opts = dict(options)
    for name in opts:
        if name not in OPTIONS:
            raise _bad(name, f"unknown option for mongodb; known: {', '.join(sorted(OPTIONS))}")
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    in_url = {k: v for k, v in params if k == "collection"}
    if "collection" in in_url and "collection" in opts and in_url["collection"] != opts["collection"]:
        raise _bad("collection", "given both in the URL and as an option, with different values")
    collection = opts.get("collection") or in_url.get("collection")
    if not collection or not isinstance(collection, str):
        raise _bad("collection", "which collection? add ?collection=NAME to the URL or set the collection option")
    client_url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in params if k != "collection"])))
    database = opts.get("database") or unquote(parts.path.lstrip("/"))
    if not database:
        raise _bad("database", "which database? put it in the URL (mongodb://host:27017/DB) or set database")
    if opts.get("database") and parts.path.strip("/") and opts["database"] != unquote(parts.path.strip("/")):
        raise _bad("database", "given both in the URL and as an option, with different values")

    mode = opts.get("mode", "columns")
    if mode not in ("columns", "document"):
        raise _bad("mode", f"expected columns or document, got {mode!r}")
    projection = opts.get("projection")
    if isinstance(projection, (list, tuple)):
        if not all(isinstance(p, str) for p in projection):
            raise _bad("projection", "a list of projected fields must hold names only")
        projection = tuple(projection)
    elif projection is not None:
        projection = _document_option(opts, "projection")
    json_columns = opts.get("json_columns", ())
    if isinstance(json_columns, str):
        json_columns = [json_columns]
    if not isinstance(json_columns, (list, tuple)) or not all(isinstance(c, str) for c in json_columns):
        raise _bad("json_columns", "expected a list of field names (dotted for nested ones: address.geo)")
    cursor = opts.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or not cursor.strip()):
        raise _bad("cursor", f"expected a field name, got {cursor!r}")
    return MongoSource(
        url=client_url, database=database, collection=collection, filter=_document_option(opts, "filter"),
        projection=projection, flatten=_int_option(opts, "flatten", 1, least=0),
        json_columns=tuple(json_columns), mode=mode, batch_rows=_int_option(opts, "batch_rows", 10_000, least=1),
        cursor=cursor, lag=lag_units(opts.get("lag", 0)),
    )
