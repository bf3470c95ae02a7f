"""Data already in Python as a source: a Polars DataFrame or LazyFrame, a pandas DataFrame, a pyarrow Table,
RecordBatchReader or an iterator of RecordBatches, loaded through the same pipeline in bounded chunks.

>>> engine.load(pl.DataFrame({"id": [1, 2], "day": [date(2026, 1, 1)] * 2}), into="orders")  # doctest: +SKIP

The whole object is ONE partition. Frames and tables are cut into row slices of ``BICONIC_CHUNK_ROWS``
(``batch_rows``) rows (a LazyFrame's plan runs once per slice, like a Parquet scan); a reader or an iterator
is regrouped into chunks as its batches arrive, and can be read only once.

Identity: an object in memory has none that survives the process, so each load of it is a new load (loaded
again). Give ``source_name`` (``engine.load(df, into=..., source_name="orders-2026-06")``) to make it an
identity: a re-run with the same name, table and spec is skipped like a re-run of the same file.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from engine.errors import SourceError, SpecError, first_line
from engine.names import unique_names
from engine.plan.columns import ROW_COLUMN
from engine.sources.base import Partition, reader_from_frame
from engine.sources.chunks import ChunkFactory, sliced_chunks
from engine.sources.stream import stream_chunks

__all__ = ["OPTIONS", "FrameSource", "is_frame", "open_frame"]

#: option -> what it does (``engine.load(df, into=..., source_name=..., options={...})``)
OPTIONS: dict[str, str] = {
    "source_name": "a stable name for the data: a re-run with the same name is skipped (default: each load is new)",
    "batch_rows": "rows per chunk loaded at a time (default BICONIC_CHUNK_ROWS, 500000)",
}


def _is_pandas(data: Any) -> bool:
    """A pandas DataFrame, recognised without importing pandas (it is not a dependency)."""
    return type(data).__module__.partition(".")[0] == "pandas" and type(data).__name__ == "DataFrame"


def is_frame(data: Any) -> bool:
    """Whether ``data`` is in-memory data a :class:`FrameSource` reads (anything but a path or URL)."""
    if isinstance(data, (pl.DataFrame, pl.LazyFrame, pa.Table, pa.RecordBatch, pa.RecordBatchReader)):
        return True
    if _is_pandas(data):
        return True
    return isinstance(data, Iterator)


def _kind(data: Any) -> str:
    return f"{type(data).__module__.partition('.')[0]}.{type(data).__name__}"


@dataclass(frozen=True, kw_only=True)
class FrameSource:
    """In-memory data (see the module docstring), one partition; ``name`` gives it an identity across runs."""

    data: Any = field(repr=False)
    name: str | None = None
    batch_rows: int | None = None
    #: a fingerprint for this object when it has no name: each load of it is new
    _nonce: str = field(default_factory=lambda: uuid.uuid4().hex, repr=False, compare=False)
    #: whether a one-shot stream was handed out already
    _taken: list[bool] = field(default_factory=lambda: [False], repr=False, compare=False)

    def __post_init__(self) -> None:
        if not is_frame(self.data):
            raise SpecError("source", f"expected a file path, URL or in-memory data (polars, pandas, pyarrow), "
                                      f"got {_kind(self.data)}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise SpecError("source_name", f"expected a non-empty name, got {self.name!r}")

    @property
    def label(self) -> str:
        """How reports and the ledger name it: ``python:orders-2026-06`` or ``python:polars.DataFrame``."""
        return f"python:{self.name or _kind(self.data)}"

    @property
    def one_shot(self) -> bool:
        """A reader or an iterator: its batches can be read once."""
        return isinstance(self.data, (pa.RecordBatchReader, Iterator))

    def partitions(self) -> list[Partition]:
        identity = f"name:{self.name}" if self.name is not None else f"object:{self._nonce}"
        fingerprint = hashlib.sha256(identity.encode()).hexdigest()[:32]
        return [Partition(key=self.label, label=self.label, fingerprint=fingerprint)]

    def _frame(self) -> pl.LazyFrame:
        """A re-readable object as a lazy frame with unique names and row numbers."""
        data = self.data
        try:
            if isinstance(data, pa.RecordBatch):
                data = pa.Table.from_batches([data])
            if isinstance(data, pa.Table):
                data = pl.from_arrow(data)
            elif _is_pandas(data):
                data = pl.from_pandas(data)
        except Exception as exc:  # a column Arrow cannot type (mixed objects...)
            raise SourceError(self.label, f"cannot convert to Arrow: {first_line(exc)}") from exc
        frame: pl.LazyFrame = data.lazy()
        names = list(frame.collect_schema())
        fixed = unique_names([str(n) for n in names])
        if fixed != names:
            frame = frame.rename(dict(zip(names, fixed, strict=True)))
        return frame.with_row_index(ROW_COLUMN, offset=1)

    def _batches(self) -> Iterator[pa.RecordBatch]:
        """The batches of a one-shot stream; a second read is an error, not silently nothing."""
        if self._taken[0]:
            raise SpecError("source", f"{self.label} is a stream and was read already (a reader or iterator can "
                                      "be read only once; dedupe and unique rules read twice): pass a table or "
                                      "a DataFrame instead")
        self._taken[0] = True
        for batch in self.data:
            if isinstance(batch, pa.Table):
                yield from batch.to_batches()
            elif isinstance(batch, pa.RecordBatch):
                yield batch
            else:
                raise SourceError(self.label, f"expected pyarrow RecordBatches, got {_kind(batch)}")

    def chunks(self, partition: Partition) -> Iterator[ChunkFactory]:
        if self.one_shot:
            schema = self.data.schema if isinstance(self.data, pa.RecordBatchReader) else None
            yield from stream_chunks(self._batches(), schema, rows=self.batch_rows)
        else:
            yield from sliced_chunks(self._frame(), self.batch_rows)

    def scan(self, partition: Partition) -> pl.LazyFrame:
        if self.one_shot:
            frames = [f(0) for f in self.chunks(partition)]  # a stream is read whole here (scan is for probes)
            return pl.concat([f.drop(ROW_COLUMN) for f in frames], how="diagonal_relaxed") \
                .with_row_index(ROW_COLUMN, offset=1)
        return self._frame()

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        return reader_from_frame(self.scan(partition), columns=columns)

    def schema(self) -> pa.Schema:
        if isinstance(self.data, pa.RecordBatchReader):
            return self.data.schema
        if self.one_shot:
            raise SpecError("source", f"{self.label}: an iterator's schema is known only once it is read")
        return reader_from_frame(self._frame().head(0)).schema


def open_frame(data: Any, options: Mapping[str, Any]) -> FrameSource:
    """A :class:`FrameSource` over ``data`` with its options (see :data:`OPTIONS`)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise SpecError(f"source.{unknown[0]}", f"unknown option for in-memory data; known: {', '.join(OPTIONS)}")
    rows = options.get("batch_rows")
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool) or rows < 1):
        raise SpecError("source.batch_rows", f"expected a whole number >= 1, got {rows!r}")
    return FrameSource(data=data, name=options.get("source_name"), batch_rows=rows)
