"""Files are known by their bytes: the hash pass reads in bounded blocks, is remembered while the file's stat holds,
and gives identical files in one listing keys of their own."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import pytest
import xxhash

from engine.errors import SourceError
from engine.sources.files import content
from engine.sources.files.content import BLOCK, content_hash, content_keys, hash_stream, unchanged


class _Reads(io.RawIOBase):
    """A stream of ``size`` bytes that notes the largest read asked of it."""

    def __init__(self, size: int) -> None:
        self.left, self.largest = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        self.largest = max(self.largest, len(buffer))
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_the_hash_pass_reads_in_blocks_of_bounded_size() -> None:
    stream = _Reads(10 * BLOCK + 7)
    assert hash_stream(stream) == xxhash.xxh3_128(b"x" * (10 * BLOCK + 7)).hexdigest()
    assert stream.largest == BLOCK and stream.left == 0


def test_hashing_a_large_file_holds_one_block(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with open(path, "wb") as f:
        for _ in range(32):
            f.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        digest, _ = content_hash(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest == xxhash.xxh3_128(path.read_bytes()).hexdigest()
    assert peak < 3 * BLOCK  # one reused buffer, not the 32 MB file


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "o.csv"
    path.write_text("a,b\n1,2\n")
    digest, stat = content_hash(path)
    content._seen.clear()  # a new process: only the cache file remembers

    def no_read(*_: object, **__: object) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(content, "hash_stream", no_read)
    assert content_hash(path) == (digest, stat)
    os.utime(path)  # touched: hashed again (and found the same)
    monkeypatch.undo()
    again, touched = content_hash(path)
    assert again == digest and touched != stat


def test_identical_files_in_one_listing_get_keys_of_their_own(tmp_path: Path) -> None:
    for name, text in [("a.csv", "x\n1\n"), ("b.csv", "x\n2\n"), ("c.csv", "x\n1\n")]:
        (tmp_path / name).write_text(text)
    keys = content_keys([tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"])
    a, b, c = (k for k, _, _ in keys)
    assert a == keys[0][1] and c == f"{a}#2" and b != a
    # alone, the copy is the file already known
    assert content_keys([tmp_path / "c.csv"])[0][0] == a


def test_a_file_rewritten_after_hashing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("a\n1\n")
    _, stat = content_hash(path)
    unchanged(path, stat)
    path.write_text("a\n2\n")
    with pytest.raises(SourceError, match="changed while it was loaded"):
        unchanged(path, stat)
