"""JSON (an array of objects) and NDJSON (one object per line) files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa

from engine.errors import SourceError
from engine.names import unique_names
from engine.sources._files import check_file, first_line
from engine.sources.base import ROW_COLUMN, Partition, file_fingerprint, reader_from_frame

__all__ = ["JsonSource"]


@dataclass(frozen=True, kw_only=True)
class JsonSource:
    """JSON files. ``ndjson`` streams line by line in bounded memory; a JSON array is parsed whole (one file
    at a time), so prefer NDJSON for big exports. The schema is the union of fields over ``infer_rows``."""

    paths: tuple[Path, ...]
    lines: bool = False
    infer_rows: int | None = 10_000

    def partitions(self) -> list[Partition]:
        parts = []
        for path in self.paths:
            check_file(path)
            parts.append(Partition(key=str(path.resolve()), label=path.name, path=path,
                                   fingerprint=file_fingerprint(path), size_bytes=path.stat().st_size))
        return parts

    def scan(self, partition: Partition) -> pl.LazyFrame:
        kind: Literal["NDJSON", "JSON"] = "NDJSON" if self.lines else "JSON"
        try:
            if self.lines:
                frame = pl.scan_ndjson(partition.path, infer_schema_length=self.infer_rows)
            else:
                frame = pl.read_json(partition.path, infer_schema_length=None).lazy()
            names = list(frame.collect_schema())
        except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
            raise SourceError(partition.label, f"not a readable {kind} file: {first_line(exc)}") from None
        fixed = unique_names(names)
        if fixed != names:
            frame = frame.rename(dict(zip(names, fixed, strict=True)))
        return frame.with_row_index(ROW_COLUMN, offset=1)

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        return reader_from_frame(self.scan(partition), columns=columns)

    def schema(self) -> pa.Schema:
        return reader_from_frame(self.scan(self.partitions()[0]).head(0)).schema
