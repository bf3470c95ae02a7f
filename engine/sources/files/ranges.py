"""One big text file as several partitions: byte ranges of whole records, cut near every ``split_mb`` MiB.

A job fans out one task per partition, so a single 10 GB CSV listed as one partition loads on one worker. With
``split_mb`` it is listed as ranges that load (and commit through the ledger) on their own. The ranges are
exact: they cover the file's bytes end to end, each ends just past a newline outside quotes (a quoted newline
is never cut), and the header (and ``skip_rows``) lies in the first one; every range reads the column names and
types from the file's start, so all ranges have the same columns.

Finding a cut outside quotes needs the quote parity from the file's start, so the file is read once, in record
chunks; the same pass counts the records before each cut, so a range's row numbers are the whole file's (about
400 MB/s with quotes in every record). The ranges of a file whose ``stat`` is unchanged are remembered, in the
process and beside the content hashes (every job task of the file lists its ranges, to pick its own).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engine.errors import SpecError
from engine.sources.base import Partition
from engine.sources.chunks import record_chunks, scan_records
from engine.sources.files.content import file_stat, recall, remember

__all__ = ["ByteRange", "byte_ranges", "count_records", "range_bytes", "split_bytes", "split_partitions"]

#: how records are counted: CSV counts every record (a blank line reads as a row of nulls), NDJSON skips
#: blank lines as Polars does
Counting = Literal["csv", "ndjson"]

_MIB = 1 << 20
_PASS = 1 << 20  # bytes read at a time by the pass that finds the cuts
_BLANK = re.compile(rb"(?m)^[ \t\r]*\n")

#: ranges found in this process: (path, stat, split, quote, body, counting) -> ranges
_found: dict[tuple[Any, ...], list[ByteRange]] = {}


@dataclass(frozen=True)
class ByteRange:
    """``[start, end)`` of a file, and the records between the data's start and ``start``."""

    start: int
    end: int
    rows_before: int


def split_bytes(value: Any, *, option: str = "source.split_mb") -> int | None:
    """``split_mb`` as bytes (None when unset or 0: one partition per file); anything but a number >= 0 is a
    spec error naming the option.

    >>> split_bytes(0.5)
    524288
    """
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SpecError(option, f"expected a positive number of MiB (e.g. 64, or 0.5), got {value!r}")
    return max(1, int(value * _MIB))


def count_records(data: bytes, quote: bytes | None, counting: Counting = "csv", comment: bytes | None = None) -> int:
    """The rows Polars reads from the records that end in ``data`` (which starts outside quotes): newlines
    outside quotes, less comment lines (Polars skips them); for NDJSON the lines that are not blank."""
    if counting == "ndjson":
        return data.count(b"\n") - len(_BLANK.findall(data))
    if not quote or quote not in data:
        return data.count(b"\n") - _comments(data, comment, lambda _: True)
    import numpy as np

    codes = np.frombuffer(data, dtype=np.uint8)
    # odd quotes so far: inside a quoted field (a running xor of bytes: 7x faster than a cumulative sum)
    inside = np.bitwise_xor.accumulate((codes == quote[0]).view(np.uint8))
    newlines = int(np.count_nonzero((codes == 10) & (inside == 0)))
    return newlines - _comments(data, comment, lambda at: at == 0 or not inside[at - 1])


def _comments(data: bytes, comment: bytes | None, outside: Callable[[int], bool]) -> int:
    """The newline-ended comment lines in ``data``: lines starting with ``comment`` at a record start."""
    if not comment:
        return 0
    starts = [0, *(m.start() + 1 for m in re.finditer(b"\n" + re.escape(comment), data))]
    return sum(1 for at in starts if data.startswith(comment, at) and data.find(b"\n", at) != -1 and outside(at))


def byte_ranges(path: Path, *, split: int, quote: bytes | None, body: int = 0, counting: Counting = "csv",
                comment: bytes | None = None) -> list[ByteRange]:
    """The file's ranges: the first from 0 (with the header, which ends at ``body``), each next one from the
    first record end at or past ``split`` bytes after the previous start; rows counted from ``body``."""
    stat = file_stat(path)
    key = (str(path.resolve()), stat, split, quote, body, counting, comment)
    if key not in _found:
        what = json.dumps(["ranges/1", split, *[b.decode("latin-1") if b else None for b in (quote, comment)],
                           body, counting])
        kept = recall(path, stat, what)
        if kept is not None:
            _found[key] = [ByteRange(*r) for r in json.loads(kept)]
        else:
            _found[key] = _scan(path, split, quote, body, counting, comment)
            remember(path, stat, what, json.dumps([dataclasses.astuple(r) for r in _found[key]]))
    return list(_found[key])


def _scan(path: Path, split: int, quote: bytes | None, body: int, counting: Counting,
          comment: bytes | None) -> list[ByteRange]:
    cuts: list[tuple[int, int]] = []  # (offset, records before it)
    start, rows, offset = 0, 0, body
    with open(path, "rb") as f:
        for data in record_chunks(f, body, _PASS, quote):
            at = 0
            while True:
                target = max(start + split, body + 1) - 1 - offset  # a newline here ends a record at the target
                if target >= len(data):
                    break
                end, _ = scan_records(data, max(target, at), _parity(data, at, max(target, at), quote), quote)
                if end == -1:
                    end = len(data)  # the chunk ends a record
                rows += count_records(data[at:end], quote, counting, comment)
                at, start = end, offset + end
                cuts.append((start, rows))
            rows += count_records(data[at:], quote, counting, comment)
            offset += len(data)
    size = offset
    starts = [(0, 0), *[c for c in cuts if c[0] < size]]
    ends = [s for s, _ in starts[1:]] + [size]
    return [ByteRange(s, e, n) for (s, n), e in zip(starts, ends, strict=True)]


def _parity(data: bytes, at: int, to: int, quote: bytes | None) -> int:
    """The quote parity at ``to`` in ``data``, which is outside quotes at ``at``."""
    return data.count(quote, at, to) % 2 if quote else 0


def range_bytes(partition: Partition, body: int = 0) -> tuple[int, int | None]:
    """Where a partition's records begin and end in its file: its range (past the header), or the whole file."""
    if partition.span is None:
        return body, None
    return max(partition.span[0], body), partition.span[1]


def split_partitions(parts: Sequence[Partition], *, split: int, quote: bytes | None, body: Callable[[Path], int],
                     counting: Counting = "csv", comment: bytes | None = None) -> list[Partition]:
    """Each file partition bigger than ``split`` bytes as its ranges (smaller ones as they are, same key).

    A range is keyed ``<content key>@<start>-<end>`` and known also by the whole file's keys
    (:attr:`Partition.former`): a file loaded whole before counts as loaded, range by range.
    """
    out: list[Partition] = []
    for part in parts:
        if part.size_bytes <= split:
            out.append(part)
            continue
        ranges = byte_ranges(part.file, split=split, quote=quote, body=body(part.file), counting=counting,
                             comment=comment)
        if len(ranges) == 1:
            out.append(part)
            continue
        for r in ranges:
            out.append(dataclasses.replace(
                part, key=f"{part.key}@{r.start}-{r.end}", label=f"{part.file.name}[bytes {r.start}-{r.end}]",
                size_bytes=r.end - r.start, span=(r.start, r.end), rows_before=r.rows_before,
                former=((part.key, part.fingerprint), *part.former)))
    return out
