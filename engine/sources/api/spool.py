"""The NDJSON spool: records of a schemaless read written to a local file, then read by the NDJSON source.

>>> spool = Spool(owner, kind="api")  # doctest: +SKIP
>>> spool.write([{"id": 1}, {"id": 2, "late": "field"}]); spool.close()  # doctest: +SKIP
>>> spool.scan("https://api.example.com/v1/items").collect()  # doctest: +SKIP

Records vary in fields, so no page or batch can tell the columns: the spool gives the union of fields over the
whole read, memory holds one page (or batch), and the pipeline's repeated passes over a partition see the same
rows without asking the server again. The file lives under ``settings().data_path/tmp`` as long as its owner
object does (``weakref.finalize``: it goes when the owner is garbage-collected or the process exits, or on
:meth:`Spool.remove`); spools left by killed processes are swept when the next one is made.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from engine.settings import settings
from engine.sources.base import Partition, reader_from_frame
from engine.sources.chunks import ChunkFactory
from engine.storage import naming

__all__ = ["Spool", "SpoolKind", "held_reader", "sweep_spools", "typed_chunks"]

#: what a spool holds (its file name starts with it)
SpoolKind = Literal["api", "mongo"]
#: a spool older than this belongs to a killed load even if its process id is in use again
STALE_SECONDS = 24 * 3600
_NAME = re.compile(r"(?:api|mongo)-(\d+)-\w+\.ndjson")


def _alive(pid: int) -> bool:
    import psutil

    return bool(psutil.pid_exists(pid))


def sweep_spools(folder: Path) -> None:
    """Spools left by killed processes (a spool lives only as long as its owner object)."""
    stale = time.time() - STALE_SECONDS  # a pid used again by another process would otherwise keep it for ever
    for path in folder.glob("*.ndjson"):
        m = _NAME.fullmatch(path.name)
        with contextlib.suppress(OSError):  # another user's spool, or swept meanwhile: not this load's failure
            if m and int(m.group(1)) != os.getpid() and (not _alive(int(m.group(1))) or
                                                         path.stat().st_mtime < stale):
                path.unlink(missing_ok=True)


class Spool:
    """One read's records as NDJSON on disk, removed with ``owner``.

    :meth:`write` appends records (counted in :attr:`rows` and hashed into :attr:`digest`, unless written as a
    ``sample`` for their fields only); :meth:`close` ends writing; :meth:`scan` and :meth:`chunks` read the file.
    """

    def __init__(self, owner: object, *, kind: SpoolKind) -> None:
        folder = settings().data_path / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        sweep_spools(folder)
        self.path = folder / f"{kind}-{os.getpid()}-{uuid.uuid4().hex}.ndjson"
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close() or remove()
        self._finalizer = weakref.finalize(owner, _discard, self._file, self.path)
        self._hash = hashlib.sha256()
        #: records written (samples not counted)
        self.rows = 0

    def write(self, records: Iterable[Mapping[str, Any]], *, default: Callable[[Any], Any] | None = None,
              sample: bool = False) -> int:
        """Append ``records``, one JSON line each (``default`` as in :func:`json.dumps`); how many there were."""
        written = 0
        with naming(self.path):  # a full disk under the spool: one line naming it and the space free there
            for record in records:
                written += 1
                line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=default).encode() + b"\n"
                self._file.write(line)
                if not sample:
                    self._hash.update(line)
                    self.rows += 1
        return written

    @property
    def digest(self) -> str:
        """A SHA-256 (hex) of the records written: the content's fingerprint."""
        return self._hash.hexdigest()

    @property
    def size(self) -> int:
        """Bytes on disk (after :meth:`close`)."""
        return self.path.stat().st_size

    def close(self) -> None:
        """No more records: flush the file so it can be read."""
        with naming(self.path):
            self._file.close()

    def remove(self) -> None:
        """Delete the file now (reading it afterwards fails)."""
        self._finalizer()

    def _partition(self, label: str) -> Partition:
        return Partition(key=label, label=label, fingerprint=self.digest, path=self.path)

    def scan(self, label: str) -> pl.LazyFrame:
        """The records as the NDJSON source reads them (errors name ``label``)."""
        from engine.sources.files.json import JsonSource

        return JsonSource(paths=(self.path,), lines=True).scan(self._partition(label))

    def chunks(self, label: str) -> Iterator[ChunkFactory]:
        """The records in bounded chunks of whole lines."""
        from engine.sources.files.json import JsonSource

        yield from JsonSource(paths=(self.path,), lines=True).chunks(self._partition(label))



def _discard(file: Any, path: Path) -> None:
    file.close()
    path.unlink(missing_ok=True)


def held_reader(owner: object, frame: pl.LazyFrame, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
    """``frame`` (a scan of a spool) as an Arrow stream that keeps ``owner``, and so the spool, until its last
    batch is read."""
    reader = reader_from_frame(frame, columns=columns)
    return pa.RecordBatchReader.from_batches(reader.schema, _holding(owner, reader))


def _holding(owner: object, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    yield from reader  # ``owner`` stays a local of this frame until the last batch


def typed_chunks(chunks: Iterable[ChunkFactory], typed: Callable[[pl.LazyFrame], pl.LazyFrame]) -> Iterator[
        ChunkFactory]:
    """Each chunk passed through ``typed`` (text fields converted to the types the whole read showed)."""
    for make in chunks:
        yield functools.partial(_typed_chunk, make, typed)


def _typed_chunk(make: ChunkFactory, typed: Callable[[pl.LazyFrame], pl.LazyFrame], rows_before: int) -> pl.LazyFrame:
    return typed(make(rows_before))
