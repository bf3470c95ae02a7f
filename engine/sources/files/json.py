"""JSON (an array of objects) and NDJSON (one object per line) files."""

from __future__ import annotations

import functools
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from engine.errors import EmptySourceError, SourceError, SpecError, first_line
from engine.names import unique_names
from engine.plan.columns import ROW_COLUMN
from engine.settings import settings
from engine.sources.base import WIDEN, LateDrift, Partition, reader_from_frame
from engine.sources.chunks import ChunkFactory, RecordTooLarge, record_chunks, sliced_chunks
from engine.sources.files._json_schema import chunk_schema, exact_numbers, inexact, merge, unreadable
from engine.sources.files.local import file_partitions
from engine.sources.files.ranges import range_bytes, split_bytes, split_partitions

__all__ = ["JsonSource"]


def _read_lines(data: bytes, schema: dict[str, pl.DataType], partition: Partition, first: int) -> pl.LazyFrame:
    """One chunk's lines, parsed now: a key Polars inferred as an object or a list that holds a number (or
    another shape) in this chunk is late drift, read again as text (:class:`LateDrift`), not a failed load."""
    try:
        return pl.read_ndjson(data, schema=schema).lazy()
    except pl.exceptions.PolarsError:
        widen = unreadable(data, schema)
        if not widen:
            raise
        where = (f"{partition.label}, in the records from {first}: {', '.join(widen)} changes shape (an object "
                 "or a list, and another kind)")
        raise LateDrift(widen, where) from None


def _read_array(path: Path) -> pl.LazyFrame:
    """A JSON array, parsed by Polars (numbers it would round or overflow as their text, see
    :func:`exact_numbers`); one it cannot type (a key holding a number in one object and an object in a later
    one) is read again through Python's parser, one line per object, with such keys as text."""
    with open(path, "rb") as f:
        data = f.read()
    if inexact(data):
        data = exact_numbers(data)
    try:
        return pl.read_json(data, infer_schema_length=None).lazy()
    except pl.exceptions.ComputeError as exc:
        import json

        items = json.loads(data)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise exc from None
        del data
        lines = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items).encode()
        del items
        schema = chunk_schema(lines)
        schema.update(unreadable(lines, schema))
        return pl.read_ndjson(lines, schema=schema).lazy()


@dataclass(frozen=True, kw_only=True)
class JsonSource:
    """JSON files. ``ndjson`` streams line by line in bounded memory; a JSON array is parsed whole (one file
    at a time), so prefer NDJSON for big exports. The schema is the union of fields over the
    whole file (NDJSON: chunk by chunk), or over the first ``infer_rows`` rows when set (faster, but keys first
    seen later are not read). ``split_mb`` (NDJSON) lists a bigger file as ranges of whole lines of about that
    many MiB, each a partition of its own, all read with the whole file's schema."""

    paths: tuple[Path, ...]
    lines: bool = False
    infer_rows: int | None = None
    split_mb: float | None = None

    def __post_init__(self) -> None:
        if split_bytes(self.split_mb) and not self.lines:
            raise SpecError("source.split_mb", "splits only NDJSON (one object per line); a JSON array is parsed "
                                               "whole: export NDJSON, or load it without split_mb")

    def partitions(self) -> list[Partition]:
        parts = file_partitions(self.paths)
        split = split_bytes(self.split_mb)
        if split is None:
            return parts
        return split_partitions(parts, split=split, quote=None, body=lambda _: 0, counting="ndjson")

    def _infer(self, partition: Partition) -> dict[str, pl.DataType]:
        """The union of fields and types over the file (or its first ``infer_rows`` lines), chunk by chunk.

        A key first seen late in the file must become a column, not vanish; inferring per chunk keeps memory
        bounded where one Polars inference over the whole file would map all of it.
        """
        cache = self.__dict__.setdefault("_schemas", {})  # not a field: fields are the source's options
        key = (str(partition.file), partition.fingerprint)  # a file's ranges share its schema
        if key not in cache:
            cache[key] = self._infer_file(partition)
        return dict(cache[key])

    def _infer_file(self, partition: Partition) -> dict[str, pl.DataType]:
        if self.infer_rows is not None:
            return dict(pl.scan_ndjson(partition.file, infer_schema_length=self.infer_rows).collect_schema())
        schemas: list[dict[str, pl.DataType]] = []
        with open(partition.file, "rb") as f:
            try:
                for data in record_chunks(f, 0, settings().chunk_bytes, None, limit=settings().max_record_bytes):
                    if data.strip():
                        if inexact(data):  # remembered: only then are the chunks read with exact numbers
                            self.__dict__.setdefault("_inexact", set()).add(str(partition.file))
                            data = exact_numbers(data)
                        schemas.append(chunk_schema(data))
            except RecordTooLarge as exc:
                raise SourceError(partition.label, exc.message(f, "BICONIC_MAX_RECORD_MB")) from None
        if not schemas:
            raise EmptySourceError(partition.label, "no rows: the file holds no JSON lines")
        return merge(schemas)

    def _read_schema(self, partition: Partition) -> tuple[dict[str, pl.DataType], dict[str, pl.DataType]]:
        """NDJSON: the schema to read with (scalars as text) and the scalar types to convert them to.

        Scalars are read as text and converted (as in CSV): a value past the sample that does not fit the
        sampled type quarantines its row instead of failing the whole file.
        """
        inferred = {**self._infer(partition), **partition.options.get(WIDEN, {})}
        scalars = {n: t for n, t in inferred.items() if t.is_numeric() or t == pl.Boolean}
        texts = {n: pl.String() for n, t in inferred.items() if n in scalars or t == pl.Null}
        return {**inferred, **texts}, scalars

    def inferred(self, partition: Partition) -> dict[str, pl.DataType]:
        """NDJSON: the scalar types inferred (over the first ``infer_rows`` lines, or chunk by chunk): a later
        value that does not fit one is schema drift (:mod:`engine.pipeline.drift`), not a bad row."""
        if not self.lines or (str(partition.file), partition.fingerprint) not in self.__dict__.get("_schemas", {}):
            return {}
        return self._read_schema(partition)[1]

    def _finish(self, frame: pl.LazyFrame, scalars: dict[str, pl.DataType], row_offset: int) -> pl.LazyFrame:
        names = list(frame.collect_schema())
        fixed = unique_names(names)
        renamed = dict(zip(names, fixed, strict=True))
        if fixed != names:
            frame = frame.rename(renamed)
        frame = frame.with_row_index(ROW_COLUMN, offset=row_offset)
        if not scalars:
            return frame
        from engine.plan.frame import Plan, keep_source_values

        plan = Plan.start(keep_source_values(frame))
        plan.convert_columns({renamed[n]: t for n, t in scalars.items()}, rule="type")
        return plan.frame

    def scan(self, partition: Partition) -> pl.LazyFrame:
        kind = "NDJSON" if self.lines else "JSON"
        scalars: dict[str, pl.DataType] = {}
        try:
            if self.lines:
                schema, scalars = self._read_schema(partition)
                if partition.span is not None:  # a range: its bytes (about split_mb), read as one piece
                    pieces = self._pieces(partition, schema, scalars, whole=True)
                    try:
                        return next(pieces)(0)
                    finally:
                        pieces.close()  # closes the file
                frame = pl.scan_ndjson(partition.file, schema=schema)
            else:
                frame = _read_array(partition.file)
            frame.collect_schema()
        except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
            raise SourceError(partition.label, f"not a readable {kind} file: {first_line(exc)}") from exc
        return self._finish(frame, scalars, 1)

    def chunks(self, partition: Partition) -> Iterator[ChunkFactory]:
        """NDJSON: byte ranges of whole lines (JSON strings hold no raw newline); JSON: row slices of the
        parsed file."""
        if not self.lines:
            yield from sliced_chunks(self.scan(partition))
            return
        try:
            schema, scalars = self._read_schema(partition)
        except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
            raise SourceError(partition.label, f"not a readable NDJSON file: {first_line(exc)}") from exc
        yield from self._pieces(partition, schema, scalars)

    def _pieces(self, partition: Partition, schema: dict[str, pl.DataType], scalars: dict[str, pl.DataType],
                whole: bool = False) -> Generator[ChunkFactory, None, None]:
        """The partition's lines (its range's, when split) in chunks, or in one piece when ``whole``."""
        first = 1 + partition.rows_before

        def chunk(data: bytes, rows_before: int) -> pl.LazyFrame:
            if not data.strip():
                return self._finish(pl.LazyFrame(schema=schema), scalars, first + rows_before)
            if str(partition.file) in self.__dict__.get("_inexact", ()):
                data = exact_numbers(data)
            return self._finish(_read_lines(data, schema, partition, first + rows_before), scalars,
                                first + rows_before)

        start, stop = range_bytes(partition)
        size = (stop - start) if whole and stop is not None else settings().chunk_bytes
        with open(partition.file, "rb") as f:
            produced = False
            try:
                for data in record_chunks(f, start, max(size, 1), None, stop, limit=settings().max_record_bytes):
                    produced = True
                    yield functools.partial(chunk, data)
            except RecordTooLarge as exc:
                raise SourceError(partition.label, exc.message(f, "BICONIC_MAX_RECORD_MB")) from None
            if not produced:
                yield functools.partial(chunk, b"")

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        return reader_from_frame(self.scan(partition), columns=columns)

    def schema(self) -> pa.Schema:
        return reader_from_frame(self.scan(self.partitions()[0]).head(0)).schema
