"""Resumable uploads' records: who owns each one, how long it is, where its bytes are, when it expires.

An upload is a row of ``biconic.uploads`` (its owner: the token that made it and that token's connection, NULL
for an admin token) and one data file, ``{uploads folder}/tus/{upload_id}/{filename}``, whose size on disk *is*
the upload's offset: what a cut connection left is exactly what the next PATCH continues from. The SHA-256 of the
whole file is computed once, when its last byte arrives. An unfinished upload expires
``BICONIC_UPLOAD_EXPIRY_HOURS`` after its last chunk and is then swept (:func:`sweep_expired_uploads`, on the beat).

A data file is locked (``flock``, non-blocking) by whoever appends to it or sweeps it, so two PATCHes of one
upload never interleave (the second is refused, 423) and the sweep never takes an upload a PATCH is filling.

>>> path, filename = finished_upload(dsn, upload_id, caller)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.postgres.meta_jobs import run_with_tables
from engine.service.problems import ProblemError
from engine.service.tokens import TokenInfo
from engine.settings import settings

__all__ = ["Upload", "create_upload", "extend_expiry", "find_upload", "finish", "finished_upload", "locked",
           "remove_upload", "safe_filename", "sha256_of", "storage_problem", "sweep_expired_uploads",
           "tus_folder"]

_TABLE = """CREATE TABLE IF NOT EXISTS biconic.uploads (
    upload_id uuid PRIMARY KEY, token_id text NOT NULL, connection_id text, length bigint NOT NULL,
    filename text NOT NULL, metadata jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL, completed_at timestamptz, sha256 text)"""
_INDEX = """CREATE INDEX IF NOT EXISTS uploads_unfinished ON biconic.uploads (expires_at)
    WHERE completed_at IS NULL"""
_COLUMNS = ("upload_id::text, token_id, connection_id, length, filename, metadata::text, created_at, expires_at, "
            "completed_at, sha256")
_NAME_MAX = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_READ = 1 << 20
_ready: set[str] = set()


@dataclass(frozen=True)
class Upload:
    """One upload's record; its offset is the size of its data file."""
    upload_id: str
    token_id: str
    connection_id: str | None
    length: int
    filename: str
    metadata: dict[str, str]
    created_at: dt.datetime
    expires_at: dt.datetime
    completed_at: dt.datetime | None
    sha256: str | None

    @property
    def folder(self) -> Path:
        return tus_folder() / self.upload_id

    @property
    def path(self) -> Path:
        return self.folder / self.filename

    @property
    def complete(self) -> bool:
        return self.completed_at is not None

    def offset(self) -> int:
        """Bytes on disk (a data file not made yet holds none)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


def tus_folder() -> Path:
    """Where the uploads' data files live: ``{uploads folder}/tus``."""
    return settings().uploads_path / "tus"


def safe_filename(name: str | None) -> str:
    """``name`` made harmless as one path component: its last segment, characters other than letters, digits,
    ``.``, ``_`` and ``-`` replaced by ``_``, no leading dot, at most 100 characters, its extension kept.

    >>> safe_filename("../../etc/passwd"), safe_filename("r\\u00e9sum\\u00e9 2026.xlsx")
    ('passwd', 'r_sum__2026.xlsx')
    """
    base = re.split(r"[/\\]", name or "")[-1]
    clean = _UNSAFE.sub("_", base)
    clean = "_" + clean[1:] if clean.startswith(".") else clean
    if len(clean) > _NAME_MAX:
        stem, dot, ext = clean.rpartition(".")
        ext = ext[:20] if dot and stem else ""
        clean = clean[:_NAME_MAX - len(ext) - 1] + "." + ext if ext else clean[:_NAME_MAX]
    return clean if clean.strip("_") else "upload"


def _run(dsn: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    return run_with_tables(dsn, [_TABLE, _INDEX], _ready, sql, params)


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _expiry(now: dt.datetime | None) -> dt.datetime:
    return _now(now) + dt.timedelta(hours=settings().upload_expiry_hours)


def _upload(row: tuple[Any, ...]) -> Upload:
    upload_id, token_id, connection, length, filename, metadata, made, expires, done, sha = row
    return Upload(upload_id, token_id, connection, int(length), filename, json.loads(metadata), made, expires,
                  done, sha)


def create_upload(dsn: str, caller: TokenInfo, *, length: int, metadata: dict[str, str],
                  now: dt.datetime | None = None) -> Upload:
    """Record a new upload of ``length`` bytes for ``caller``: 413 above ``BICONIC_UPLOAD_MAX_MB`` or the uploads
    folder's free space, 429 when the token already holds ``BICONIC_UPLOADS_PER_TOKEN`` unfinished ones.
    Its data file is made empty."""
    limit = settings().upload_max_mb
    if length > limit * (1 << 20):
        raise ProblemError(413, f"Upload-Length {length} is above the {limit} MB an upload may take")
    tus_folder().mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(tus_folder()).free
    if length > free:
        raise ProblemError(413, f"the uploads folder has {free >> 20} MB free; this upload needs {length >> 20} MB")
    made = _now(now)
    upload_id = str(uuid.uuid4())
    name = safe_filename(metadata.get("filename") or metadata.get("name"))
    connection = None if caller.connection_id is None else str(caller.connection_id)
    _run(dsn, "BEGIN")
    try:  # the count and the insert under the token's lock: two racing POSTs cannot both take the last place
        _run(dsn, "SELECT pg_advisory_xact_lock(hashtext('biconic.uploads'), hashtext($1))", [caller.token_id])
        held = _run(dsn, "SELECT count(*) FROM biconic.uploads WHERE token_id = $1 AND completed_at IS NULL "
                         "AND expires_at > $2::timestamptz", [caller.token_id, made.isoformat()])[0][0]
        if held >= settings().uploads_per_token:
            raise ProblemError(429, f"this token already holds {held} unfinished uploads (the limit); finish or "
                                    "delete one first", headers={"Retry-After": "60"})
        _run(dsn, "INSERT INTO biconic.uploads (upload_id, token_id, connection_id, length, filename, metadata, "
                  "created_at, expires_at) VALUES ($1::uuid, $2, $3, $4, $5, $6::jsonb, $7::timestamptz, "
                  "$8::timestamptz)",
             [upload_id, caller.token_id, connection, length, name, json.dumps(metadata), made.isoformat(),
              _expiry(now).isoformat()])
        _run(dsn, "COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            _run(dsn, "ROLLBACK")
        raise
    upload = find_upload(dsn, upload_id, caller, now=now)
    upload.folder.mkdir(parents=True, exist_ok=True)
    upload.path.touch()
    return upload


def find_upload(dsn: str, upload_id: str, caller: TokenInfo, *, now: dt.datetime | None = None) -> Upload:
    """``caller``'s upload ``upload_id`` (any upload for an admin token); 404 when it is unknown, another
    connection's, or unfinished past its expiry."""
    try:
        key = str(uuid.UUID(upload_id))
    except ValueError:
        raise ProblemError(404, f"no upload {upload_id[:64]!r}") from None
    connection = None if caller.is_admin or caller.connection_id is None else str(caller.connection_id)
    rows = _run(dsn, f"SELECT {_COLUMNS} FROM biconic.uploads WHERE upload_id = $1::uuid "
                     "AND ($2 OR connection_id = $3) AND (completed_at IS NOT NULL OR expires_at > $4::timestamptz)",
                [key, caller.is_admin, connection or "", _now(now).isoformat()])
    if not rows:
        raise ProblemError(404, f"no upload {key} (unknown, expired, or not this token's connection's)")
    return _upload(rows[0])


def extend_expiry(dsn: str, upload: Upload, *, now: dt.datetime | None = None) -> dt.datetime:
    """Push an unfinished upload's expiry to ``BICONIC_UPLOAD_EXPIRY_HOURS`` from now (a chunk arrived)."""
    expires = _expiry(now)
    _run(dsn, "UPDATE biconic.uploads SET expires_at = $2::timestamptz WHERE upload_id = $1::uuid "
              "AND completed_at IS NULL", [upload.upload_id, expires.isoformat()])
    return expires


@contextlib.contextmanager
def locked(upload: Upload, *, create: bool = True) -> Iterator[int]:
    """The data file open for writing and locked for the block; 423 when another request holds it, 404 when the
    upload's folder is gone (it was deleted)."""
    try:
        fd = os.open(upload.path, os.O_RDWR | (os.O_CREAT if create else 0), 0o640)
    except FileNotFoundError:
        raise ProblemError(404, f"no upload {upload.upload_id} (it was deleted)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProblemError(423, f"upload {upload.upload_id} is being written by another request; retry when "
                                    "it ends (HEAD gives the offset)", headers={"Retry-After": "1"}) from None
        yield fd
    finally:
        os.close(fd)  # releases the lock


def sha256_of(fd: int) -> str:
    """SHA-256 of the open file ``fd``, read 1 MB at a time."""
    digest = hashlib.sha256()
    position = 0
    while block := os.pread(fd, _READ, position):
        digest.update(block)
        position += len(block)
    return digest.hexdigest()


def finish(dsn: str, upload: Upload, fd: int) -> Upload:
    """Record a full upload complete with its SHA-256 (``fd``: its locked data file)."""
    sha = sha256_of(fd)
    done = _run(dsn, "UPDATE biconic.uploads SET completed_at = $2::timestamptz, sha256 = $3 "
                     "WHERE upload_id = $1::uuid RETURNING completed_at",
                [upload.upload_id, _now(None).isoformat(), sha])
    if not done:
        raise ProblemError(404, f"no upload {upload.upload_id} (it was deleted)")
    return dataclasses.replace(upload, completed_at=done[0][0], sha256=sha)


def remove_upload(dsn: str, upload: Upload) -> None:
    """Delete an upload: its row, then its folder (a PATCH still writing it writes into a removed file)."""
    _run(dsn, "DELETE FROM biconic.uploads WHERE upload_id = $1::uuid", [upload.upload_id])
    shutil.rmtree(upload.folder, ignore_errors=True)


def finished_upload(dsn: str, upload_id: str, caller: TokenInfo) -> tuple[Path, str]:
    """The data file of ``caller``'s complete upload and its (sanitised) filename, for an import.

    404 when the upload is unknown, another connection's, or expired; 409 while it is not complete (a full one
    whose completion was never recorded, e.g. the server stopped after its last byte, is completed here).
    The filename is safe as a path component; the name the client gave is in the upload's metadata."""
    upload = find_upload(dsn, upload_id, caller)
    if not upload.complete and upload.offset() == upload.length:
        with contextlib.suppress(ProblemError), locked(upload, create=False) as fd:
            if os.fstat(fd).st_size == upload.length:
                upload = finish(dsn, upload, fd)
    if not upload.complete:
        raise ProblemError(409, f"upload {upload.upload_id} is not complete: {upload.offset()} of {upload.length} "
                                "bytes received")
    if not upload.path.is_file():
        raise ProblemError(404, f"upload {upload.upload_id}'s file is no longer in the uploads folder")
    return upload.path, upload.filename


def sweep_expired_uploads(dsn: str, now: dt.datetime | None = None) -> int:
    """Remove every unfinished upload past its expiry (row and files); how many. One a request is writing (its
    file locked) is left for the next sweep."""
    cutoff = _now(now).isoformat()
    rows = _run(dsn, "SELECT upload_id::text, filename FROM biconic.uploads WHERE completed_at IS NULL "
                     "AND expires_at <= $1::timestamptz ORDER BY expires_at", [cutoff])
    removed = 0
    for upload_id, filename in rows:
        folder = tus_folder() / upload_id
        with _try_lock(folder / filename) as free:
            if not free:
                continue
            gone = _run(dsn, "DELETE FROM biconic.uploads WHERE upload_id = $1::uuid AND completed_at IS NULL "
                             "AND expires_at <= $2::timestamptz RETURNING 1", [upload_id, cutoff])
            if gone:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed


@contextlib.contextmanager
def _try_lock(path: Path) -> Iterator[bool]:
    """Whether ``path`` could be locked (a missing file is free), holding the lock for the block."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def storage_problem(exc: OSError) -> ProblemError:
    """The problem answering a failed write to the uploads folder (507 when it is full)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ProblemError(507, "the uploads folder is full; the chunk was not kept")
    code = errno.errorcode.get(exc.errno or 0, "an I/O error")
    return ProblemError(500, f"the uploads folder could not take the chunk ({code})")
