"""Where archive files live: a local folder (the default) or ``s3://bucket/prefix``, through one fsspec
filesystem, with the one write primitive the archive needs: upload to a temporary key, verify, then rename.

S3 settings come from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``); nothing here logs or echoes a credential.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ArchiveError, SpecError
from engine.retry import ARCHIVE_UPLOAD
from engine.settings import settings
from engine.storage import is_storage, storage_error

__all__ = ["Store", "StoredFile", "open_store", "sha256_of"]

log = logging.getLogger("biconic.storage")


@dataclass(frozen=True)
class StoredFile:
    """A file verified at its final key."""

    path: str  # inside the filesystem, without protocol
    uri: str  # what DuckDB and users open: a local path or s3://...
    bytes: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Store:
    """An archive location. ``root`` is the location's path inside ``fs``; every key is relative to it."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        if self.url.startswith("s3://"):
            import s3fs

            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            client: dict[str, Any] = {}
            if endpoint:
                client["endpoint_url"] = endpoint
            if region:
                client["region_name"] = region
            # a fresh instance: fsspec caches instances per argument set, and a cached one keeps a dead endpoint
            self.fs: Any = s3fs.S3FileSystem(client_kwargs=client, skip_instance_cache=True)
            self.protocol = "s3"
            self.root = self.url[len("s3://"):]
            if not self.root:
                raise SpecError("archive", "an S3 archive URL needs a bucket: s3://bucket/prefix")
        elif "://" in self.url and not self.url.startswith("file://"):
            raise SpecError("archive", f"unsupported archive URL {self.url!r}: use a folder or s3://bucket/prefix")
        else:
            from fsspec.implementations.local import LocalFileSystem

            self.fs = LocalFileSystem(auto_mkdir=True)
            self.protocol = "file"
            self.root = str(Path(self.url.removeprefix("file://")).resolve())

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    def path(self, *parts: str) -> str:
        """The path of a key inside the filesystem."""
        return "/".join([self.root, *parts])

    def path_of(self, uri: str) -> str:
        """The path inside the filesystem of a URI that :meth:`uri` gave."""
        return uri[len("s3://"):] if uri.startswith("s3://") else uri

    def uri(self, path: str) -> str:
        """What to hand to DuckDB or a user for ``path``."""
        return path if self.is_local else f"s3://{path}"

    def put_verified(self, local: Path, final: str, *, check: Callable[[Any, str], None] | None = None,
                     digest: str | None = None) -> StoredFile:
        """Upload ``local`` to a temporary key beside ``final``, verify it there (size, then ``check(fs, tmp)``,
        which re-opens the file: a Parquet footer and row count), then rename it to ``final``.

        A reader listing ``final`` therefore never finds a torn upload. Failures are retried with backoff
        (:data:`engine.retry.ARCHIVE_UPLOAD`); the last one raises :class:`ArchiveError` (transient: a re-run of
        the load completes it).
        """
        size = local.stat().st_size
        digest = digest or sha256_of(local)
        head, _, name = final.rpartition("/")

        def attempt() -> StoredFile:
            tmp = f"{head}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                self.fs.put_file(str(local), tmp)
                got = self.fs.size(tmp)
                if got != size:
                    raise OSError(f"uploaded {got} bytes of {size}")
                if check is not None:
                    check(self.fs, tmp)
                self.fs.mv(tmp, final)
            except BaseException:
                self._discard(tmp)
                raise
            return StoredFile(path=final, uri=self.uri(final), bytes=size, sha256=digest)

        def retrying(number: int, exc: BaseException, wait: float) -> None:
            log.warning("archive write of %s failed (%s), retrying in %.1f s", self.uri(final), type(exc).__name__,
                        wait)

        def disk(exc: BaseException) -> bool:  # a local folder full, read-only or missing: no retry fixes it
            return self.is_local and is_storage(exc)

        try:  # network, permissions, a torn upload: retried, then reported
            return ARCHIVE_UPLOAD.call(attempt, retry_if=lambda exc: isinstance(exc, Exception) and not disk(exc),
                                       on_retry=retrying)
        except Exception as exc:
            if isinstance(exc, OSError) and disk(exc):
                raise storage_error(exc, final) from exc
            raise ArchiveError(self.uri(final), f"{type(exc).__name__}: {exc}",
                               attempts=ARCHIVE_UPLOAD.attempts) from exc

    def _discard(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm_file(path)
        except Exception:  # best effort: an unlisted temporary file is never read
            log.debug("could not remove %s", path)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def remove(self, path: str) -> None:
        self._discard(path)


def open_store(url: str | None = None) -> Store:
    """The archive store for ``url`` (see :meth:`engine.settings.Settings.archive`); archiving off is an
    error here."""
    chosen = settings().archive(url)
    if chosen is None:
        raise SpecError("archive", "archiving is off (BICONIC_ARCHIVE_URL/--archive is 'off'); give an archive URL")
    return Store(chosen)
