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

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import polars as pl
import pyarrow as pa

from engine.errors import SourceError, SourceUnavailableError, SpecError, first_line
from engine.plan.columns import ROW_COLUMN
from engine.redact import redact, scrub, url_secrets
from engine.settings import settings
from engine.sources.api._bson import (
    Columns,
    document_row,
    ext_json,
    flat_row,
    json_value,
    mark_text,
    minus_lag,
    parse_mark,
)
from engine.sources.api.records import MISSING, get_path
from engine.sources.api.spool import Spool, held_reader, typed_chunks
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

#: documents sampled for their fields when a read finds none
_SAMPLE = 100


def _import_pymongo() -> Any:
    try:
        import pymongo
    except ImportError as exc:
        raise SpecError("source", "reading MongoDB needs pymongo: pip install 'biconic-engine[mongodb]'") from exc
    return pymongo


@dataclass(frozen=True, kw_only=True)
class Window:
    """The cursor range of an incremental read: ``low < cursor <= high``, as BSON values."""

    #: the stored watermark minus the lag (None: from the start)
    low: Any
    #: the cursor's maximum when the read was planned (None: no document has the cursor, read nothing)
    high: Any
    #: the stored watermark as stored (part of the fingerprint)
    mark: str | None


@dataclass(frozen=True)
class _Read:
    """One read of the collection: its spool, what each column held, and how many documents were written only
    for their fields (when the read found none; their rows are not read)."""

    spool: Spool
    columns: Columns
    sample: int


class _State:
    """A source object's read, made on first use (the dataclass is frozen; this holder is not)."""

    def __init__(self) -> None:
        self.read: _Read | None = None


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
    def _error(self, exc: BaseException, doing: str) -> SourceError:
        """pymongo's error, without the password; an unreachable server or a lost connection
        (``ConnectionFailure``: timeouts, failovers) is worth a retry."""
        pymongo = _import_pymongo()
        unavailable = isinstance(exc, pymongo.errors.ConnectionFailure)
        text = scrub(first_line(exc), url_secrets(self.url))
        return (SourceUnavailableError if unavailable else SourceError)(self.label, f"{doing}: {text}")

    @contextlib.contextmanager
    def _collection(self) -> Iterator[Any]:
        """The collection, on a client closed afterwards (unless the test seam lent it)."""
        if _client_factory is not None:
            yield _client_factory(self.url)[self.database][self.collection]
            return
        pymongo = _import_pymongo()
        # out-of-range dates come back as DatetimeMS (written as text) instead of failing the whole read
        client = pymongo.MongoClient(self.url, datetime_conversion="DATETIME_AUTO", **_timeouts(self.url))
        try:
            yield client[self.database][self.collection]
        finally:
            client.close()

    def _query(self) -> dict[str, Any] | None:
        """The filter with the incremental range; None when the range is known to be empty."""
        base = ext_json(dict(self.filter))
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
            raise self._error(exc, "cannot read the collection") from exc

    def _rows(self, docs: Iterator[Mapping[str, Any]], columns: Columns) -> Iterator[dict[str, Any]]:
        keep = frozenset(self.json_columns)
        for doc in docs:
            yield document_row(doc, columns) if self.mode == "document" else flat_row(doc, self.flatten, keep,
                                                                                        columns)

    def _read(self) -> _Read:
        state = self._state
        if state.read is not None:
            return state.read
        columns = Columns()
        spool = Spool(state, kind="mongo")
        try:
            spool.write(self._rows(self._documents(self._query()), columns), default=json_value)
            sample = 0
            if not spool.rows:
                # Nothing new, yet the (empty) chunk must carry the collection's fields and types: the
                # table is planned from it (a partition_by column must be there).
                newest = self._documents(ext_json(dict(self.filter)), newest=_SAMPLE)
                sample = spool.write(self._rows(newest, columns), default=json_value, sample=True)
            spool.close()
        except BaseException:
            spool.remove()
            raise
        state.read = _Read(spool=spool, columns=columns, sample=sample)
        return state.read

    def _empty(self, read: _Read) -> pl.LazyFrame:
        """No rows, with the fields of the newest documents (or ``_id`` alone in an empty collection)."""
        if not read.sample:
            return pl.LazyFrame(schema={"_id": pl.String}).with_row_index(ROW_COLUMN, offset=1)
        return read.columns.typed(read.spool.scan(self.label)).head(0)

    # --- Source protocol ----------------------------------------------------------------------------------
    def partitions(self) -> list[Partition]:
        if self.window is not None:
            text = "\x1f".join([self.watermark_key(), self.window.mark or "", self.high_watermark() or ""])
            fingerprint = hashlib.sha256(text.encode()).hexdigest()[:32]
            size = 0
        else:
            read = self._read()
            fingerprint = read.spool.digest[:32]
            size = read.spool.size if read.spool.rows else 0
        key = self.watermark_key()
        return [Partition(key=key, label=self.label, fingerprint=fingerprint, size_bytes=size)]

    def scan(self, partition: Partition) -> pl.LazyFrame:
        read = self._read()
        if not read.spool.rows:
            return self._empty(read)
        return read.columns.typed(read.spool.scan(self.label))

    def chunks(self, partition: Partition) -> Iterator[ChunkFactory]:
        read = self._read()
        if not read.spool.rows:
            empty = self._empty(read)
            yield lambda rows_before: empty
            return
        yield from typed_chunks(read.spool.chunks(self.label), read.columns.typed)

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        return held_reader(self, self.scan(partition), columns=columns)

    def schema(self) -> pa.Schema:
        return reader_from_frame(self.scan(self.partitions()[0]).head(0)).schema

    # --- IncrementalSource protocol -----------------------------------------------------------------------
    def _max_cursor(self) -> Any:
        assert self.cursor is not None
        pymongo = _import_pymongo()
        base = ext_json(dict(self.filter))
        present = {self.cursor: {"$ne": None}}
        try:
            with self._collection() as coll:
                found = list(coll.find({"$and": [base, present]} if base else present, {self.cursor: 1})
                             .sort(self.cursor, -1).limit(1))
        except pymongo.errors.PyMongoError as exc:
            raise self._error(exc, f"cannot find the highest {self.cursor!r}") from exc
        value = get_path(found[0], self.cursor) if found else None
        return None if value is MISSING else value

    def with_watermark(self, low: str | None) -> MongoSource:
        """A copy reading documents with ``low - lag < cursor <= high``, high the cursor's maximum now."""
        if self.cursor is None:
            raise SpecError("source.cursor", "set a cursor field to read incrementally")
        high = self._max_cursor()
        start = None
        if high is not None:  # None: no document has the cursor yet, read nothing and keep the watermark
            mark_text(high)  # an unusable type fails here, before anything is read
            if low is not None:
                start = parse_mark(low, high)
                if start >= high:  # nothing new (or the maximum went down): never move the watermark back
                    high = start
                start = minus_lag(start, self.lag)
        return dataclasses.replace(self, window=Window(low=start, high=high, mark=low))

    def high_watermark(self) -> str | None:
        if self.window is None or self.window.high is None:
            return None
        return mark_text(self.window.high)


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
            raise _bad(name, f"not a JSON document: {first_line(exc)}") from exc
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


def _timeouts(url: str) -> dict[str, int]:
    """The settings' connect and read timeouts (ms) as pymongo options, unless the URL sets its own."""
    limits = settings()
    connect, read = int(limits.connect_timeout * 1000), int(limits.read_timeout * 1000)
    wanted = {"connectTimeoutMS": connect, "serverSelectionTimeoutMS": connect, "socketTimeoutMS": read}
    return {k: v for k, v in wanted.items() if k.lower() not in url.lower()}
