"""Files on the local disk, as every file source takes them: checked, one partition each, and transcoded to
UTF-8 in a stream when written in another encoding."""

from __future__ import annotations

import codecs
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from engine.errors import SourceError
from engine.settings import settings
from engine.sources.base import Partition, file_fingerprint
from engine.sources.chunks import bare_cr_to_lf
from engine.sources.files.content import content_keys
from engine.storage import naming

__all__ = ["check_file", "file_partitions", "transcode_to_utf8"]

_CHUNK = 1 << 20


def transcode_to_utf8(path: Path, encoding: str, *, quote: bytes | None = None, newlines: bool = False) -> IO[bytes]:
    """A UTF-8 copy of ``path`` as an unlinked temporary file (gone when closed), decoded in chunks; with
    ``newlines``, bare CR line ends outside ``quote`` made LF (:func:`engine.sources.chunks.bare_cr_to_lf`).

    Polars reads only UTF-8 and ends records only at LF; streaming the conversion keeps memory flat for any
    file size.
    """
    utf8 = encoding.lower().replace("_", "-") in {"utf-8", "utf8", "utf-8-sig", "utf8-sig"}
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except LookupError:
        raise SourceError(str(path), f"unknown encoding {encoding!r}; "
                                     "try utf-8, utf-8-sig, latin-1 or cp1252") from None
    folder = settings().data_path / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    out = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - handed to the caller, closed by it
    offset, parity, held = 0, 0, b""
    with open(path, "rb") as src:
        while True:
            chunk = src.read(_CHUNK)
            final = not chunk
            try:
                data = chunk if utf8 else decoder.decode(chunk, final=final).encode("utf-8")
            except UnicodeDecodeError as exc:
                out.close()
                raise SourceError(str(path), f"byte {offset + exc.start} is not valid {encoding}: "
                                             f"{exc.reason}") from exc
            if newlines:
                data = held + data
                data, held = (data[:-1], data[-1:]) if data.endswith(b"\r") and not final else (data, b"")
                data, parity = bare_cr_to_lf(data, quote, parity)
            try:
                with naming(folder):  # a full disk under the (unlinked) copy: one line naming its folder
                    out.write(data)
            except BaseException:
                out.close()  # gives its space back at once, not when the error is collected
                raise
            offset += len(chunk)
            if final:
                break
    with naming(folder):
        out.flush()
    out.seek(0)
    return out


def check_file(path: Path) -> None:
    """A clear error for the common ways a file path is wrong."""
    if not path.exists():
        raise SourceError(str(path), "file not found")
    if path.is_dir():
        raise SourceError(str(path), "is a folder, expected a file")
    if not os.access(path, os.R_OK):
        raise SourceError(str(path), "permission denied")


def file_partitions(paths: Sequence[Path]) -> list[Partition]:
    """One partition per file (CSV, JSON, Parquet): keyed and fingerprinted by its bytes (see
    :func:`engine.sources.files.content.content_keys`), known also by its key of older releases."""
    for path in paths:
        check_file(path)
    parts = []
    for path, (key, digest, stat) in zip(paths, content_keys(paths), strict=True):
        parts.append(Partition(key=key, label=path.name, path=path, fingerprint=digest, size_bytes=stat[0],
                               stat=stat, former=((str(path.resolve()), file_fingerprint(path)),)))
    return parts
