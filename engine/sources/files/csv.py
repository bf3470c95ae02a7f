"""CSV/TSV files: streamed by Polars' native reader, typed from a sample, bad values quarantined not fatal."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl
import pyarrow as pa

from engine.errors import EmptySourceError, SourceError, SpecError, first_line
from engine.names import unique_names
from engine.plan.columns import ROW_COLUMN
from engine.settings import settings
from engine.sources.base import WIDEN, Partition, reader_from_frame
from engine.sources.chunks import (
    ChunkFactory,
    RecordTooLarge,
    bare_cr_to_lf,
    open_binary,
    record_chunks,
    record_end,
    split_records,
)
from engine.sources.files.local import file_partitions, transcode_to_utf8
from engine.sources.files.ranges import range_bytes, split_bytes, split_partitions
from engine.sources.files.sniff import WESTERN, legacy_encoding, sniff_delimiter
from engine.types import ISO_FORMS, parse_type

__all__ = ["CsvSource"]



def _iso_temporal(sample: pl.DataFrame) -> dict[str, pl.DataType]:
    """Text columns whose sampled values are all ISO dates or timestamps.

    Only ISO forms are guessed: ``01/02/2026`` is 1 February in Madrid and January 2 in Boston, so such
    columns stay text until a ``parse_date`` step gives the format.
    """
    found: dict[str, pl.DataType] = {}
    for name, dtype in sample.schema.items():
        if dtype != pl.String:
            continue
        values = sample[name].drop_nulls().str.strip_chars()
        if values.len() == 0:
            continue
        for pattern, target in ISO_FORMS:
            if bool(values.str.contains(pattern).all()):
                found[name] = target
                break
    return found


_HEAD = 1 << 20  # bytes looked at for bare CR line ends
_SNIFF = 1 << 16  # bytes looked at for the delimiter
_DETECT = 4 << 20  # bytes looked at for the encoding when none is given
_UTF8 = {"utf-8", "utf8", "utf-8-sig", "utf8-sig", "utf_8", "utf_8_sig"}


@dataclass(frozen=True, kw_only=True)
class CsvSource:
    """Delimited text files.

    Every column is read as text and converted to the type inferred from the first ``infer_rows`` rows (or
    given in ``dtypes``), so a value that does not fit quarantines its row instead of failing the load.
    ``split_mb`` lists a bigger file as byte ranges of about that many MiB, each a partition of its own (a job
    loads them on several workers); the ranges read the header's names and types from the file's start.

    >>> CsvSource(paths=(Path("orders.csv"),), delimiter=";", encoding="latin-1")  # doctest: +SKIP
    """

    paths: tuple[Path, ...]
    delimiter: str | None = field(default=None, metadata={"default": "sniffed from the first lines (, ; tab |)"})
    quote_char: str | None = '"'
    has_header: bool = True
    encoding: str | None = field(default=None, metadata={"default": "utf-8, or detected when not UTF-8"})
    null_values: tuple[str, ...] = ()
    skip_rows: int = 0
    comment_prefix: str | None = None
    infer_rows: int = 10_000
    dtypes: Mapping[str, str] = field(default_factory=dict)
    split_mb: float | None = None

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("has_header", isinstance(self.has_header, bool), "true or false"),
            ("skip_rows", isinstance(self.skip_rows, int) and not isinstance(self.skip_rows, bool)
             and self.skip_rows >= 0, "a whole number >= 0"),
            ("infer_rows", isinstance(self.infer_rows, int) and not isinstance(self.infer_rows, bool)
             and self.infer_rows >= 1, "a whole number >= 1"),
            ("encoding", self.encoding is None or (isinstance(self.encoding, str) and bool(self.encoding)),
             "an encoding name"),
            ("comment_prefix", self.comment_prefix is None or (isinstance(self.comment_prefix, str)
                                                               and 1 <= len(self.comment_prefix) <= 5),
             "1 to 5 characters, or null"),
            ("null_values", isinstance(self.null_values, str) or (
                isinstance(self.null_values, tuple) and all(isinstance(v, str) for v in self.null_values)),
             "a text or a list of texts"),
            ("dtypes", isinstance(self.dtypes, Mapping), "a mapping of column to type"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise SpecError(f"source.{name}", f"expected {expected}, got {getattr(self, name)!r}")
        if self.delimiter is not None and (not isinstance(self.delimiter, str) or len(self.delimiter.encode()) != 1):
            raise SpecError("source.delimiter", f"expected one single-byte character, got {self.delimiter!r}")
        if self.quote_char is not None and (not isinstance(self.quote_char, str)
                                            or len(self.quote_char.encode()) != 1):
            raise SpecError("source.quote_char",
                            f"expected one single-byte character or null, got {self.quote_char!r}")
        for name, type_name in self.dtypes.items():
            try:
                parse_type(str(type_name))
            except ValueError as exc:
                raise SpecError(f"source.dtypes.{name}", str(exc)) from exc
        if split_bytes(self.split_mb) and self.encoding is not None and self.encoding.lower() not in _UTF8:
            raise SpecError("source.split_mb", f"splits only UTF-8 files, this one is {self.encoding}; "
                                               "convert it to UTF-8 first, or load it whole")

    def partitions(self) -> list[Partition]:
        parts = file_partitions(self.paths)
        split = split_bytes(self.split_mb)
        if split is None:
            return parts
        quote = self._quote()

        def body(path: Path) -> int:
            with open(path, "rb") as f:
                return self._body_start(f, quote)[0]

        comment = self.comment_prefix.encode() if self.comment_prefix else None
        return split_partitions(parts, split=split, quote=quote, body=body, comment=comment)

    def _open(self, partition: Partition) -> str | IO[bytes]:
        """The file as Polars can read it: itself, or a UTF-8 copy with LF line ends when it is in another
        encoding or its first MiB has bare CR line ends (later ones are mended chunk by chunk)."""
        encoding = self._encoding(partition)
        utf8 = encoding.lower() in _UTF8
        with open(partition.file, "rb") as f:
            head = f.read(_HEAD)
        newlines = bare_cr_to_lf(head.removesuffix(b"\r"), self._quote())[0] != head.removesuffix(b"\r")
        if utf8 and not newlines:
            return str(partition.file)
        return transcode_to_utf8(partition.file, encoding, quote=self._quote(), newlines=newlines or not utf8)

    def _common(self, partition: Partition) -> dict[str, Any]:
        return {
            "separator": self._delimiter(partition),
            "quote_char": self.quote_char,
            "skip_rows": self.skip_rows,
            "comment_prefix": self.comment_prefix,
            # a lone string is one null marker, not a list of its characters
            "null_values": ([self.null_values] if isinstance(self.null_values, str) else list(self.null_values))
            or None,
            "encoding": "utf8-lossy" if partition.options.get("utf8_lossy") else "utf8",
        }

    def _delimiter(self, partition: Partition) -> str:
        """The ``delimiter`` option, or when not given the one sniffed from the file's first lines."""
        if self.delimiter is not None:
            return self.delimiter
        found: dict[str, str] = self.__dict__.setdefault("_delimiters", {})  # not a field: fields are options
        name = str(partition.file)
        if name not in found:
            with open(partition.file, "rb") as f:
                head = f.read(_SNIFF)
            try:
                text = head.decode(self._encoding(partition), errors="replace")
            except LookupError:  # an unknown encoding is reported when the file is opened
                text = head.decode("utf-8", errors="replace")
            found[name] = sniff_delimiter(text.removeprefix("\ufeff"),
                                          quote=self.quote_char, skip_rows=self.skip_rows,
                                          comment=self.comment_prefix, complete=len(head) < _SNIFF)
        return found[name]

    def _encoding(self, partition: Partition) -> str:
        """The ``encoding`` option, or when not given UTF-8 unless the file's first MiBs are clearly in another
        (:func:`legacy_encoding`): cp1252 is read as such, any other guess is a one-line hint to say it."""
        if self.encoding is not None:
            return self.encoding
        found: dict[str, str] = self.__dict__.setdefault("_encodings", {})
        name = str(partition.file)
        if name not in found:
            with open(partition.file, "rb") as f:
                head = f.read(_DETECT)
            guess = legacy_encoding(head, complete=len(head) < _DETECT)
            if guess is not None and guess != WESTERN:
                raise SourceError(partition.label, f"not UTF-8, it looks like {guess}: "
                                                   f"try --option encoding={guess}")
            if guess is not None and split_bytes(self.split_mb):
                raise SourceError(partition.label, f"not UTF-8 (it looks like {guess}) and split_mb splits only "
                                                   "UTF-8 files; convert it to UTF-8 first, or load it whole")
            found[name] = guess or "utf-8"
        return found[name]

    def notes(self) -> list[str]:
        """What was guessed about the files read so far (for the load report)."""
        return [*(f"{Path(name).name}: encoding {e} (detected, not UTF-8; set --option encoding=... to override)"
                  for name, e in self.__dict__.get("_encodings", {}).items() if e != "utf-8"),
                *(f"{Path(name).name}: delimiter {d!r} (sniffed; set --option delimiter=... to override)"
                  for name, d in self.__dict__.get("_delimiters", {}).items())]

    def _sniff(self, partition: Partition) -> dict[str, Any]:
        # Header and type sample are read lossily: invalid UTF-8 must surface while streaming, where the
        # pipeline retries in lossy mode and quarantines the affected rows, not fail the whole file here.
        return {**self._common(partition), "encoding": "utf8-lossy"}

    def _names(self, src: str | IO[bytes], partition: Partition) -> list[str]:
        head = pl.read_csv(src, has_header=False, n_rows=1, infer_schema=False, truncate_ragged_lines=True,
                           **self._sniff(partition))
        if not isinstance(src, str):
            src.seek(0)
        if not self.has_header:
            return [f"column_{i}" for i in range(1, head.width + 1)]
        return unique_names(["" if v is None else str(v) for v in head.row(0)])

    def _layout(self, src: str | IO[bytes], partition: Partition) -> tuple[list[str], dict[str, pl.DataType]]:
        """Column names and the types inferred from the first ``infer_rows`` rows (or given in ``dtypes``);
        worked out once per partition (a load with a unique rule reads the partition two or three times)."""
        cache = self.__dict__.setdefault("_layouts", {})  # not a field: fields are the source's options
        key = (str(partition.file), partition.fingerprint)  # a file's ranges share its layout
        if key not in cache:
            cache[key] = self._infer_layout(src, partition)
        names, inferred = cache[key]
        return list(names), {**inferred, **partition.options.get(WIDEN, {})}

    def inferred(self, partition: Partition) -> dict[str, pl.DataType]:
        """The columns whose types were inferred from the first rows (not given in ``dtypes``), as read now:
        a later value that does not fit one is schema drift (:mod:`engine.pipeline.drift`), not a bad row."""
        cache = self.__dict__.get("_layouts", {})
        found = cache.get((str(partition.file), partition.fingerprint))
        if found is None:
            return {}
        types = {**found[1], **partition.options.get(WIDEN, {})}
        return {n: t for n, t in types.items() if t != pl.String and n not in self.dtypes}

    def _infer_layout(self, src: str | IO[bytes], partition: Partition) -> tuple[list[str], dict[str, pl.DataType]]:
        try:
            names = self._names(src, partition)
            # ignore_errors: a bad value just past the sample must become a reject later, not fail the file
            sample = pl.scan_csv(src, has_header=self.has_header, new_columns=names,
                                 infer_schema_length=self.infer_rows, ignore_errors=True,
                                 truncate_ragged_lines=True,  # a ragged row fails later, naming its row
                                 **self._sniff(partition)).head(self.infer_rows).collect()
            inferred = dict(sample.schema)
            inferred.update(_iso_temporal(sample))
            if not isinstance(src, str):
                src.seek(0)
        except pl.exceptions.NoDataError:
            raise EmptySourceError(partition.label, "the file is empty (no header row)") from None
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise SourceError(partition.label, f"not a readable CSV file: {first_line(exc)}") from exc
        for name, type_name in self.dtypes.items():
            if name not in inferred:
                raise SourceError(partition.label, f"dtypes names column {name!r}, which is not in the file")
            inferred[name] = parse_type(type_name)
        return names, inferred

    def _typed(self, frame: pl.LazyFrame, inferred: dict[str, pl.DataType], partition: Partition) -> pl.LazyFrame:
        """Text columns converted to their inferred types; values that do not convert are rejected."""
        from engine.plan.frame import Plan, keep_source_values

        plan = Plan.start(keep_source_values(frame))
        # a blank line reads as a row of nulls: it is not a record, so it is counted as filtered
        plan.drop_where(pl.all_horizontal([pl.col(c).is_null() for c in plan.columns]))
        if partition.options.get("utf8_lossy"):  # checked on the raw text, before columns get their types
            for c in plan.columns:
                plan.reject("invalid_utf8", c, pl.col(c).str.contains("\ufffd", literal=True).fill_null(False),
                            pl.lit(f"{c} held bytes that are not valid UTF-8 (e.g. a lone surrogate)"))
        plan.convert_columns({c: t for c, t in inferred.items() if t != pl.String}, rule="type")
        return plan.frame

    def scan(self, partition: Partition) -> pl.LazyFrame:
        """The whole file as one lazy frame (used for partition-wide passes; loads use :meth:`chunks`)."""
        src = self._open(partition)
        names, inferred = self._layout(src, partition)
        f = open_binary(src)
        try:
            body, lines = self._body_start(f, self._quote())
            if partition.span is not None:  # a range: its bytes (about split_mb), read as one chunk
                start, stop = range_bytes(partition, body)
                f.seek(start)
                return _CsvChunk(self, partition, names, inferred, f.read((stop or start) - start),
                                 first_row=1 + lines + partition.rows_before)(0)
        finally:
            if isinstance(src, str):
                f.close()
            else:
                src.seek(0)
        frame = pl.scan_csv(src, has_header=self.has_header, new_columns=names, infer_schema=False,
                            row_index_name=ROW_COLUMN, row_index_offset=1 + lines, **self._common(partition))
        return self._typed(frame, inferred, partition)

    def _quote(self) -> bytes | None:
        return self.quote_char.encode() if self.quote_char else None

    def _body_start(self, f: IO[bytes], quote: bytes | None) -> tuple[int, int]:
        """Where the data begins: past ``skip_rows`` records, the header, and comment lines among them (as
        Polars skips them: comments do not count as skipped rows). Returns (byte offset, lines before it),
        so row numbers stay line numbers."""
        prefix = self.comment_prefix.encode() if self.comment_prefix else None
        wanted = self.skip_rows + (1 if self.has_header else 0)
        pos = counted = 0
        while counted < wanted:
            f.seek(pos)
            head = f.read(len(prefix) + 3) if prefix else b""
            if pos == 0:
                head = head.removeprefix(b"\xef\xbb\xbf")
            if prefix and head.startswith(prefix):
                end = record_end(f, pos, None)  # a comment is one physical line
            else:
                end = record_end(f, pos, quote)
                counted += 1
            if end == pos:
                break
            pos = end
        f.seek(0)
        lines = f.read(pos).count(b"\n") if pos else 0
        return pos, lines

    def chunks(self, partition: Partition) -> Iterator[ChunkFactory]:
        """Pieces of about ``BICONIC_CHUNK_MB`` of whole records (never cut inside a quoted field)."""
        src = self._open(partition)
        names, inferred = self._layout(src, partition)
        quote = self._quote()
        f = open_binary(src)
        try:
            body, lines = self._body_start(f, quote)
            start, stop = range_bytes(partition, body)
            first_row = 1 + lines + partition.rows_before
            produced = records = False
            try:
                for data in record_chunks(f, start, settings().chunk_bytes, quote, stop,
                                          limit=settings().max_record_bytes):
                    produced = True
                    records = records or not data.isspace()
                    yield _CsvChunk(self, partition, names, inferred, data, first_row=first_row)
            except RecordTooLarge as exc:
                raise SourceError(partition.label, exc.message(f, "BICONIC_MAX_RECORD_MB")) from None
            if not produced:
                yield _CsvChunk(self, partition, names, inferred, b"", first_row=first_row)
            if not records:  # a header only, or blank lines: told to the pipeline by empty()
                self.__dict__.setdefault("_empty", set()).add(partition.key)
        finally:
            f.close()

    def empty(self, partition: Partition) -> str | None:
        """Why the partition had no rows, once :meth:`chunks` has read it to the end (None: it had some).
        A range of a split file is not a file: only a whole file can be empty."""
        if partition.span is not None or partition.key not in self.__dict__.get("_empty", set()):
            return None
        return "no rows: the file has a header only, or only blank lines"

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        return reader_from_frame(self.scan(partition), columns=columns)

    def schema(self) -> pa.Schema:
        return reader_from_frame(self.scan(self.partitions()[0]).head(0)).schema


@dataclass(frozen=True)
class _CsvChunk:
    """One piece of a CSV file: called with the rows before it, it gives the piece's lazy frame."""

    source: CsvSource
    partition: Partition
    names: list[str]
    inferred: dict[str, pl.DataType]
    data: bytes
    first_row: int

    def _read(self, data: bytes, row_offset: int) -> pl.LazyFrame:
        common = {**self.source._common(self.partition), "skip_rows": 0}
        schema = {n: pl.String() for n in self.names}
        if not data or data.isspace():  # a header-only file: no rows, but the columns
            return pl.LazyFrame(schema={ROW_COLUMN: pl.UInt32(), **schema})
        data = bare_cr_to_lf(data, self.source._quote())[0]  # a late bare CR line end (the chunk starts a record)
        return pl.scan_csv(data, has_header=False, schema=schema, row_index_name=ROW_COLUMN,
                           row_index_offset=row_offset, **common)

    def __call__(self, rows_before: int) -> pl.LazyFrame:
        return self.source._typed(self._read(self.data, self.first_row + rows_before), self.inferred, self.partition)

    def locate(self, rows_before: int) -> int | None:
        """The row number of the first record Polars cannot parse, found by halving the piece (so an error
        such as a ragged row can name its row); None when every part parses on its own."""
        data, offset = self.data, self.first_row + rows_before
        if not self._fails(data):
            return None
        while True:
            halves = split_records(data, self.source._quote())
            if halves is None:
                return offset
            left, right = halves
            if self._fails(left):
                data = left
            else:
                offset += self._read(left, 0).select(pl.len()).collect().item()
                data = right

    def _fails(self, data: bytes) -> bool:
        try:
            self._read(data, 0).collect()
        except pl.exceptions.PolarsError:
            return True
        return False
