"""What REST and GraphQL sources share: fetching every page into a spool, reading it back, watermarks.

Every page is fetched first, into a *spool* (:mod:`~engine.sources.api.spool`): an NDJSON file holding one
record per line, written page by page (memory holds one page). Reading is then the NDJSON source's job, so
the schema is the union of fields over all pages (a field first seen on page 3 is a column; ``1`` then ``1.5``
is a float) and row numbers are record numbers.

The whole response set is **one partition**: its key and label are the URL without secrets, its fingerprint
hashes URL, options, watermark bounds and the spooled content, so re-running against unchanged data is skipped
by the ledger. The spool is written on first need (``partitions()``) and removed by :meth:`close`, when the
source is garbage-collected, or at process exit.

* Nested objects are flattened ``flatten`` levels deep (default 1): ``{"customer": {"id": 7}}`` becomes a
  column ``customer.id`` (normalised to ``customer_id`` by the load); deeper objects and lists stay nested and
  are stored as JSON text, as the NDJSON source does.
* JSON has no time type: a field whose every value is an ISO 8601 date or time (one form, as the CSV source
  guesses them) is read as a date or timestamp, so ``partition_by="updated_at:month"`` works as is.
* Incremental: ``cursor`` is the record field holding the change time or number; the stored watermark minus
  ``lag`` is sent to the server (REST: ``incremental_param``; GraphQL: ``incremental_variable``). Which records
  come back is the server's call (``updated_since`` is often inclusive), so use ``mode="merge"`` with a key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from engine.errors import SourceError
from engine.sources.api.http import SECRET_PARAMS, HttpClient, Secrets
from engine.sources.api.options import EndpointOptions
from engine.sources.api.paginate import Page, Paginator, pages
from engine.sources.api.records import MISSING, IsoTimes, flatten, get_path
from engine.sources.api.spool import Spool, held_reader, typed_chunks
from engine.sources.api.watermark import Highest, later, minus_lag
from engine.sources.base import Partition, reader_from_frame
from engine.sources.chunks import ChunkFactory

if TYPE_CHECKING:
    import httpx

__all__ = ["EndpointSource"]


class _Fetched:
    """What one source object fetched: its partitions, high mark, time fields and spool (filled once)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.partitions: list[Partition] | None = None
        self.high: str | None = None
        #: fields holding ISO 8601 dates or times in every record, and their type
        self.times: dict[str, pl.DataType] = {}
        self.spool: Spool | None = None


@dataclass(frozen=True, kw_only=True, repr=False)
class EndpointSource:
    """An HTTP endpoint whose pages of JSON records make one partition; subclasses say how to page and where
    the records are (:meth:`_paginator`, :meth:`_page`) and what identifies the request set (:meth:`_identity`).
    """

    url: str
    options: EndpointOptions
    #: set by :meth:`with_watermark`: (the stored low mark,) or () when not bounded
    bounds: tuple[str | None, ...] = ()
    _state: _Fetched = field(default_factory=_Fetched, init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        # a URL or params may still carry a secret the user typed in: show them as reports do
        options = self.options
        params = getattr(options, "params", None)
        if params:
            masked = {k: "***" if k.lower() in SECRET_PARAMS else v for k, v in params.items()}
            options = options.model_copy(update={"params": masked})
        url = Secrets(None).url(self.url)
        return f"{type(self).__name__}(url={url!r}, options={options!r}, bounds={self.bounds!r})"

    # --- what subclasses say ---
    def _identity(self) -> list[str]:
        raise NotImplementedError

    def _paginator(self, sent: str | None) -> Paginator:
        raise NotImplementedError

    def _page(self, http: HttpClient, response: httpx.Response, number: int) -> Page:
        raise NotImplementedError

    @property
    def label(self) -> str:
        """The URL as shown in reports and errors (no password, no secret query values)."""
        return Secrets(None).url(self.url)

    @property
    def cursor(self) -> str | None:
        """The record field the watermark comes from (None: every run reads everything)."""
        return self.options.cursor

    # --- incremental ---
    def watermark_key(self) -> str:
        """The endpoint the watermark belongs to: URL (without secrets) and records path or connection."""
        return "#".join([Secrets(None).url(self.url), *self._identity()[1:2]])

    def with_watermark(self, low: str | None) -> EndpointSource:
        """A copy asking the server for records changed since ``low`` (minus ``lag``); all when None."""
        return dataclasses.replace(self, bounds=(low,))

    def high_watermark(self) -> str | None:
        """The largest ``cursor`` value fetched, or the low mark when nothing newer came back."""
        self.partitions()
        return self._state.high

    def _sent(self) -> str | None:
        """The watermark value sent to the server (the low mark minus the lag), or None."""
        low = self.bounds[0] if self.bounds else None
        return minus_lag(low, self.options.lag) if low is not None else None

    # --- fetching ---
    def partitions(self) -> list[Partition]:
        """One partition holding every record of every page (fetched now, once); none when there are none."""
        state = self._state
        with state.lock:
            if state.partitions is None:
                state.partitions = self._fetch()
            return list(state.partitions)

    def close(self) -> None:
        """Remove the spool file now (it also goes when the source is garbage-collected or the process exits)."""
        if self._state.spool is not None:
            self._state.spool.remove()

    def _fetch(self) -> list[Partition]:
        label, state = self.label, self._state
        low = self.bounds[0] if self.bounds else None
        sent = self._sent()
        highest, times = Highest(), IsoTimes()
        spool = state.spool = Spool(state, kind="api")
        try:
            with HttpClient(self.url, self.options, label=label) as http:
                read = functools.partial(self._page, http)
                for number, records in enumerate(pages(http, self._paginator(sent), read,
                                                       max_pages=self.options.max_pages), start=1):
                    spool.write(self._records(records, number, highest, times))
            spool.close()
        except BaseException:
            spool.remove()
            raise
        state.high = later(low, highest.result())
        state.times = times.result()
        if not spool.rows:
            spool.remove()
            return []
        text = "\x1f".join([*self._identity(), repr(low), repr(sent), repr(state.high), spool.digest])
        return [Partition(key=label, label=label, path=spool.path, size_bytes=spool.size,
                          fingerprint=hashlib.sha256(text.encode()).hexdigest()[:32])]

    def _records(self, records: list[Any], page: int, highest: Highest, times: IsoTimes) -> Iterator[dict[str, Any]]:
        """One page's records, flattened, their cursor values and time fields noted."""
        cursor = self.options.cursor
        for number, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                raise SourceError(self.label, f"page {page}: record {number} is a {type(record).__name__}, not an "
                                              "object; point records at a list of objects")
            if cursor is not None:
                value = get_path(record, cursor)
                highest.add(None if value is MISSING else value)
            flat = flatten(record, self.options.flatten)
            times.add(flat)
            yield flat

    # --- reading: the NDJSON source over the spool ---
    def _spool(self) -> Spool:
        spool = self._state.spool
        if spool is None or not spool.path.exists():
            raise SourceError(self.label, "the fetched records are gone (the source was closed); fetch again "
                                          "with a new source")
        return spool

    def _typed(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """ISO 8601 text fields as dates and times (a value that does not convert quarantines its row)."""
        schema = frame.collect_schema()
        times = {c: t for c, t in self._state.times.items() if schema.get(c) == pl.String}
        if not times:
            return frame
        from engine.plan.frame import Plan, keep_source_values

        plan = Plan.start(keep_source_values(frame))
        plan.convert_columns(times, rule="type")
        return plan.frame

    def scan(self, partition: Partition) -> pl.LazyFrame:
        """The records as a lazy frame (keep the source alive while using it: it owns the spool file)."""
        return self._typed(self._spool().scan(self.label))

    def chunks(self, partition: Partition) -> Iterator[ChunkFactory]:
        """The records in bounded chunks of whole lines of the spool."""
        yield from typed_chunks(self._spool().chunks(self.label), self._typed)

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        """The records as an Arrow stream."""
        return held_reader(self, self.scan(partition), columns=columns)

    def schema(self) -> pa.Schema:
        """The union of fields over every fetched record."""
        parts = self.partitions()
        if not parts:
            raise SourceError(self.label, "the API returned no records, so there is no schema to show")
        return reader_from_frame(self.scan(parts[0]).head(0)).schema
