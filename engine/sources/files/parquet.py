"""Parquet files, scanned natively by Polars (projection and slices pushed into the reader)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from engine.errors import SourceError, first_line
from engine.names import unique_names
from engine.plan.columns import ROW_COLUMN
from engine.sources.base import Partition, reader_from_frame
from engine.sources.chunks import ChunkFactory, sliced_chunks
from engine.sources.files.local import file_partitions

__all__ = ["ParquetSource"]


@dataclass(frozen=True, kw_only=True)
class ParquetSource:
    """Parquet files; each file is one partition."""

    paths: tuple[Path, ...]

    def partitions(self) -> list[Partition]:
        return file_partitions(self.paths)

    def scan(self, partition: Partition) -> pl.LazyFrame:
        try:
            frame = pl.scan_parquet(partition.file)
            names = list(frame.collect_schema())
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise SourceError(partition.label, f"not a readable Parquet file: {first_line(exc)}") from exc
        fixed = unique_names(names)
        if fixed != names:
            frame = frame.rename(dict(zip(names, fixed, strict=True)))
        return frame.with_row_index(ROW_COLUMN, offset=1)

    def chunks(self, partition: Partition) -> Iterator[ChunkFactory]:
        """Row slices of about ``BICONIC_CHUNK_ROWS`` rows: bounded memory whatever the size."""
        yield from sliced_chunks(self.scan(partition))

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        return reader_from_frame(self.scan(partition), columns=columns)

    def schema(self) -> pa.Schema:
        return reader_from_frame(self.scan(self.partitions()[0]).head(0)).schema
