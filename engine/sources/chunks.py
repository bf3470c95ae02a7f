"""Cutting a partition into bounded chunks, so memory stays flat whatever the file size.

Polars' streaming engine reads ahead of a slow consumer without limit (measured: a 5M-row CSV feeding COPY
peaked at 1.9 GB). So the engine never hands Polars a whole big file: text files are cut into byte ranges of
whole records, columnar and in-memory frames into row slices, and each chunk is one Polars query.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import IO

import polars as pl

from engine.settings import settings

__all__ = ["ChunkFactory", "RecordTooLarge", "bare_cr_to_lf", "open_binary", "record_chunks", "record_end",
           "row_slices", "scan_records", "sliced_chunks", "split_records"]

#: A chunk: given how many rows came before it in the partition, its lazy frame.
ChunkFactory = Callable[[int], pl.LazyFrame]


_BLOCK = 1 << 16
_BARE_CR = re.compile(rb"\r(?!\n)")


def bare_cr_to_lf(data: bytes, quote: bytes | None, parity: int = 0) -> tuple[bytes, int]:
    """``data`` with each CR that is not followed by LF, outside quotes, made an LF (old Mac line ends, or
    mixed in with CRLF and LF: Polars ends records only at LF), and the quote parity at its end.

    One byte for one, so offsets and record cuts stay valid; a CR inside a quoted value is kept. ``parity`` is
    1 when ``data`` starts inside quotes; a caller reading in blocks keeps a block's final CR for the next.
    """
    if b"\r" not in data or not _BARE_CR.search(data):
        return data, (parity + data.count(quote)) % 2 if quote else 0
    if not quote:
        return _BARE_CR.sub(b"\n", data), 0
    parts = data.split(quote)
    for i in range(parity, len(parts), 2):  # segments outside quotes; a doubled quote toggles twice
        parts[i] = _BARE_CR.sub(b"\n", parts[i])
    return quote.join(parts), (parity + len(parts) - 1) % 2


def open_binary(src: str | IO[bytes]) -> IO[bytes]:
    """A binary file object positioned at 0 (a path is opened; an open file is rewound)."""
    if isinstance(src, str):
        return open(src, "rb")
    src.seek(0)
    return src


def scan_records(block: bytes, at: int, parity: int, quote: bytes | None,
                 stop: int | None = None) -> tuple[int, int]:
    """The index just past the first newline in ``block[at:stop]`` outside quotes (-1 if none), and the quote
    parity carried to the end of what was examined (``stop``, else the block's end)."""
    pos = at
    end = len(block) if stop is None else stop
    while True:
        nl = block.find(b"\n", pos, end)
        if nl == -1:
            if quote:
                parity = (parity + block.count(quote, pos, end)) % 2
            return -1, parity
        if quote:
            parity = (parity + block.count(quote, pos, nl)) % 2
        if parity == 0:
            return nl + 1, 0
        pos = nl + 1


def record_end(f: IO[bytes], start: int, quote: bytes | None) -> int:
    """The byte offset just past the record that begins at ``start`` (the file size if it never ends)."""
    f.seek(start)
    offset, parity = start, 0
    while True:
        block = f.read(_BLOCK)
        if not block:
            return offset
        end, parity = scan_records(block, 0, parity, quote)
        if end != -1:
            return offset + end
        offset += len(block)


def split_records(data: bytes, quote: bytes | None) -> tuple[bytes, bytes] | None:
    """``data`` (whole records) cut in two at the record boundary nearest its middle; None for one record."""
    middle = len(data) // 2
    parity = data.count(quote, 0, middle) % 2 if quote else 0
    end, _ = scan_records(data, middle, parity, quote)
    if end == -1 or end >= len(data):
        end, _ = scan_records(data, 0, 0, quote)
        if end == -1 or end >= len(data):
            return None
    return data[:end], data[end:]


class RecordTooLarge(Exception):  # noqa: N818 - told to the reader, which names its file
    """One record longer than ``limit`` bytes; ``start`` is the byte offset where it begins."""

    def __init__(self, start: int, limit: int) -> None:
        self.start = start
        self.limit = limit
        super().__init__(f"a record at byte {start} is over {limit} bytes")

    def message(self, f: IO[bytes], setting: str) -> str:
        """The refusal, naming the line where the record begins (counted now: only on this error path)."""
        f.seek(0)
        lines, left = 1, self.start
        while left > 0:
            block = f.read(min(_BLOCK, left))
            if not block:
                break
            lines += block.count(b"\n")
            left -= len(block)
        mib = self.limit / (1 << 20)
        return (f"line {lines}: a record (one row, or a cell) over {mib:g} MiB; the limit keeps a load's memory "
                f"bounded (a record costs about 13 times its size while parsed): raise it with {setting}=..., "
                "or fix the file (an unclosed quote makes the rest of the file one cell)")


def _last_record(head: bytes, quote: bytes | None) -> int:
    """Where the last record that begins in ``head`` (which begins with a record) begins."""
    at = 0
    while True:
        end, _ = scan_records(head, at, 0, quote)
        if end == -1:
            return at
        if end >= len(head):
            return end
        at = end


def record_chunks(f: IO[bytes], start: int, target: int, quote: bytes | None,
                  stop: int | None = None, *, limit: int | None = None) -> Iterator[bytes]:
    """Whole records from ``start`` to ``stop`` (a record boundary, else the end), about ``target`` bytes at a
    time, read sequentially.

    A cut is made only at a newline where the count of quote characters since the chunk began is even, so
    every chunk starts outside quotes (RFC 4180's doubled quotes keep the count even). Reading with
    ``read`` rather than a memory map keeps file pages out of the process's resident set. A record that
    runs on past ``limit`` bytes raises :class:`RecordTooLarge` before more of it is read.
    """
    f.seek(start)
    left = -1 if stop is None else max(stop - start, 0)  # -1: no bound

    def read(n: int) -> bytes:
        nonlocal left
        if left < 0:
            return f.read(n)
        data = f.read(min(n, left))
        left -= len(data)
        return data

    carry = b""
    offset = start  # of head
    while True:
        head = carry + read(max(target - len(carry), 0))
        if not head:
            return
        parts = [head]
        parity = head.count(quote) % 2 if quote else 0
        begins = offset + head.rfind(b"\n") + 1  # where the record running past head begins, or later
        spill = len(head)
        while True:
            more = read(_BLOCK)
            if not more:
                yield b"".join(parts)
                return
            end, parity = scan_records(more, 0, parity, quote)
            if end == -1:
                parts.append(more)
                spill += len(more)
                if limit is not None and offset + spill - begins > limit:
                    raise RecordTooLarge(offset + _last_record(head, quote), limit)
                continue
            parts.append(more[:end])
            carry = more[end:]
            offset += spill + end
            break
        yield b"".join(parts)


def row_slices(total: int, rows: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` slices covering ``total`` rows; one empty slice when there are no rows."""
    if total == 0:
        yield 0, 0
        return
    for offset in range(0, total, rows):
        yield offset, min(rows, total - offset)


def sliced_chunks(frame: pl.LazyFrame, rows: int | None = None) -> Iterator[ChunkFactory]:
    """Row slices of a frame that is already in memory (or mapped): slicing it costs nothing.

    The frame already carries its row numbers, so ``rows_before`` is not needed.
    """
    def piece(offset: int, length: int, _rows_before: int) -> pl.LazyFrame:
        return frame.slice(offset, length)

    total = int(frame.select(pl.len()).collect().item())
    for offset, length in row_slices(total, rows or settings().chunk_rows):
        yield functools.partial(piece, offset, length)
