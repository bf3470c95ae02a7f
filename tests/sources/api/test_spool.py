"""The NDJSON spool shared by the REST, GraphQL and MongoDB sources: what it counts and hashes, how long its
file lives, and spools of dead processes swept away."""

from __future__ import annotations

import gc
import hashlib
import os

import polars as pl

from engine.settings import settings
from engine.sources.api.spool import Spool, held_reader, typed_chunks


class _Owner:
    """Stands for a source's state holder: the spool lives as long as it does."""


def test_rows_digest_and_samples() -> None:
    owner = _Owner()
    spool = Spool(owner, kind="api")
    assert spool.path.parent == settings().data_path / "tmp" and spool.path.name.startswith(f"api-{os.getpid()}-")
    assert spool.write([{"id": 1, "name": "á"}, {"id": 2}]) == 2
    assert spool.write([{"id": 9, "late": True}], sample=True) == 1  # for its fields only
    spool.close()
    assert spool.rows == 2
    assert spool.digest == hashlib.sha256('{"id":1,"name":"á"}\n{"id":2}\n'.encode()).hexdigest()
    assert spool.path.read_text(encoding="utf-8").count("\n") == 3
    frame = spool.scan("https://api.example.com/v1").collect()
    assert frame["id"].to_list() == [1, 2, 9] and "late" in frame.columns


def test_chunks_pass_through_the_typing_function() -> None:
    owner = _Owner()
    spool = Spool(owner, kind="api")
    spool.write({"n": i} for i in range(5))
    spool.close()
    chunks = list(typed_chunks(spool.chunks("x"), lambda f: f.with_columns(pl.lit(1).alias("typed"))))
    frame = pl.concat(make(0).collect() for make in chunks)
    assert frame["n"].to_list() == [0, 1, 2, 3, 4] and set(frame["typed"].to_list()) == {1}


def test_file_goes_with_its_owner_or_on_remove() -> None:
    owner = _Owner()
    spool = Spool(owner, kind="mongo")
    spool.close()
    path = spool.path
    assert path.exists()
    del owner
    gc.collect()
    assert not path.exists()
    kept = _Owner()
    other = Spool(kept, kind="api")
    other.remove()
    assert not other.path.exists()


def test_a_reader_keeps_the_owner_until_read() -> None:
    owner = _Owner()
    spool = Spool(owner, kind="api")
    spool.write([{"id": 1}])
    spool.close()
    reader = held_reader(owner, spool.scan("x"))
    del owner
    gc.collect()
    assert spool.path.exists()
    assert reader.read_all().num_rows == 1


def test_spools_of_dead_processes_are_swept() -> None:
    folder = settings().data_path / "tmp"
    folder.mkdir(parents=True)
    stale = [folder / "api-999999999-abc.ndjson", folder / "mongo-999999999-abc.ndjson"]
    mine = folder / f"api-{os.getpid()}-abc.ndjson"
    other = folder / "archive-999999999-abc.ndjson"  # not a spool: not ours to sweep
    for path in [*stale, mine, other]:
        path.write_text("{}\n")
    Spool(_Owner(), kind="api").remove()
    assert not any(p.exists() for p in stale) and mine.exists() and other.exists()
