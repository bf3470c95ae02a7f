"""What every source connector provides: partitions, each scanned lazily as a Polars frame of raw columns."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import polars as pl
import pyarrow as pa

__all__ = ["IncrementalSource", "LateDrift", "Partition", "Source", "file_fingerprint", "reader_from_frame"]

#: the partition option a source reads its widened column types from (see :class:`LateDrift`)
WIDEN = "widen"


class LateDrift(Exception):  # noqa: N818 - a signal to read again, like InvalidUtf8, not an error
    """Columns whose late values need a wider type than the one inferred from the first rows: the pipeline
    reads the partition again with them widened (partition option ``widen``), or refuses under ``freeze``.
    ``where`` says what was found (file, row, value) for the refusal."""

    def __init__(self, widen: dict[str, pl.DataType], where: str = "") -> None:
        self.widen = widen
        self.where = where
        super().__init__(", ".join(f"{c} -> {t}" for c, t in widen.items()))


@dataclass(frozen=True, kw_only=True)
class Partition:
    """One unit of loading: it commits (or is skipped) as a whole.

    ``key`` identifies it inside its source; ``fingerprint`` changes whenever the data may have changed, so both
    are part of the load key. Files: the key is the hash of the bytes (and the sheet), so a touched or
    re-downloaded file is the partition already loaded (see :mod:`engine.sources.files.content`).
    """

    key: str
    label: str
    fingerprint: str
    #: the file, for file sources (None for databases and APIs)
    path: Path | None = None
    size_bytes: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    #: the fingerprint cannot see changes (a database table read without a cursor): merge and replace re-read it
    volatile: bool = False
    #: (key, fingerprint) the same data had in releases before content hashing: committed, they count as loaded
    former: tuple[tuple[str, str], ...] = ()
    #: the file's stat when it was hashed; its rows commit only if it still holds (files only)
    stat: tuple[int, ...] | None = None
    #: a file's byte range ``[start, end)`` when a big text file is split (``split_mb``); None: the whole file
    span: tuple[int, int] | None = None
    #: the file's records before :attr:`span` (so a range's row numbers are the whole file's)
    rows_before: int = 0

    @property
    def origin(self) -> str:
        """What the partition reads, whatever its data holds: a file's path (and sheet, or byte range), else its
        key. A file fixed and loaded again has the same origin, so its old quarantine rows are superseded (a
        range's, by the same range)."""
        if self.path is None:
            return self.key
        sheet = self.options.get("sheet")
        span = f"@{self.span[0]}-{self.span[1]}" if self.span else ""
        return str(self.path.resolve()) + (f"#{sheet}" if sheet else "") + span

    @property
    def file(self) -> Path:
        """The file of a file source's partition."""
        if self.path is None:
            raise TypeError(f"{self.label}: not a file partition")
        return self.path


@runtime_checkable
class Source(Protocol):
    """A source connector: a frozen keyword-only dataclass whose fields are its options."""

    def partitions(self) -> list[Partition]:
        """Every partition of the source, in a stable order."""
        ...

    def scan(self, partition: Partition) -> pl.LazyFrame:
        """The partition as a lazy frame with its raw (unique, non-blank) column names plus ``ROW_COLUMN``."""
        ...

    def chunks(self, partition: Partition) -> Iterator[Callable[[int], pl.LazyFrame]]:
        """The partition as bounded pieces, each a function of the rows before it giving its lazy frame
        (with the same columns and types as :meth:`scan`). Loads run one Polars query per chunk."""
        ...

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        """The partition as an Arrow record-batch stream (memory bounded by the batch size)."""
        ...

    def schema(self) -> pa.Schema:
        """The schema of the first partition (without ``ROW_COLUMN``)."""
        ...


@runtime_checkable
class IncrementalSource(Source, Protocol):
    """A source that can read only what changed since the last run, by a cursor column or API parameter.

    The pipeline reads the stored watermark, asks for :meth:`with_watermark`, loads that copy's partitions,
    and stores :meth:`high_watermark` in the same transaction that commits the rows: a crash neither skips
    nor repeats rows. Watermarks are text (ISO 8601 for times, decimal for numbers).
    """

    #: the cursor column (None: not incremental, every run reads everything)
    cursor: str | None

    def watermark_key(self) -> str:
        """What the watermark belongs to (the source's identity without secrets: host, database, table or
        query hash, endpoint)."""
        ...

    def with_watermark(self, low: str | None) -> IncrementalSource:
        """A copy reading rows with cursor > ``low`` minus the source's lag (all rows when None), up to a high
        mark fixed now; its partitions' fingerprints include both marks."""
        ...

    def high_watermark(self) -> str | None:
        """The high mark of a :meth:`with_watermark` copy (None when there was nothing to read)."""
        ...


def file_fingerprint(path: Path, *extra: str) -> str:
    """The fingerprint files had before content hashing: path, size and mtime (and ``extra``, e.g. a sheet name).
    Kept for :attr:`Partition.former`, so files loaded by an older release are still known."""
    st = os.stat(path)
    text = "\x1f".join([str(path.resolve()), str(st.st_size), str(st.st_mtime_ns), *extra])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def reader_from_frame(
    frame: pl.LazyFrame, *, columns: list[str] | None = None, chunk_size: int = 100_000
) -> pa.RecordBatchReader:
    """Stream a lazy frame as Arrow batches without collecting it whole."""
    frame = frame.select(columns) if columns is not None else frame.select(pl.exclude("^__biconic_.*$"))
    schema = frame.collect_schema()
    arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema

    def batches() -> Iterator[pa.RecordBatch]:
        for df in frame.collect_batches(chunk_size=chunk_size):
            yield from df.to_arrow().cast(arrow_schema).to_batches()

    return pa.RecordBatchReader.from_batches(arrow_schema, batches())
