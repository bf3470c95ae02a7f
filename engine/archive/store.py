"""Where archive files live: a local folder (the default) or ``s3://bucket/prefix``, through one fsspec
filesystem, with the one write primitive the archive needs: upload to a temporary key, verify, then rename.

S3 settings come from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``); nothing here logs or echoes a credential. Every S3 call has the
connect and read timeouts of :mod:`engine.settings` and is tried once by botocore and s3fs: the retries are
ours (:data:`engine.retry.ARCHIVE_UPLOAD`, ``BICONIC_NETWORK_RETRIES`` attempts), on the engine's clock, and an
upload gives up at ``BICONIC_UPLOAD_DEADLINE``, since it runs inside the load's open transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.clock import clock
from engine.errors import ArchiveError, SpecError, first_line
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
    #: a file was already at the final key (a re-run of a committed key): not the caller's to remove on failure
    replaced: bool = False


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
            self.endpoint = _host_port(endpoint, region)
            self._expect_dropped = False
            limits = settings()
            # one try per call in botocore and s3fs (theirs multiply: 5 x 5 x 15 s on a mute endpoint); ours retry
            config = {"connect_timeout": limits.connect_timeout, "read_timeout": limits.read_timeout,
                      "retries": {"max_attempts": 0}}
            # a fresh instance: fsspec caches instances per argument set, and a cached one keeps a dead endpoint
            self.fs: Any = s3fs.S3FileSystem(client_kwargs=client, config_kwargs=config, skip_instance_cache=True)
            self.fs.retries = 1
            self.protocol = "s3"
            self.root = self.url[len("s3://"):]
            if not self.root:
                raise SpecError("archive", "an S3 archive URL needs a bucket: s3://bucket/prefix")
        elif "://" in self.url and not self.url.startswith("file://"):
            raise SpecError("archive", f"unsupported archive URL {self.url!r}: use a folder or s3://bucket/prefix")
        else:
            from fsspec.implementations.local import LocalFileSystem

            self.fs = LocalFileSystem(auto_mkdir=True)
            self.endpoint = "local disk"
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
                     digest: str | None = None, until: float | None = None) -> StoredFile:
        """Upload ``local`` to a temporary key beside ``final``, verify it there (size, then ``check(fs, tmp)``,
        which re-opens the file: a Parquet footer and row count), then rename it to ``final``.

        A reader listing ``final`` never finds a torn upload. Failures are retried with backoff (``ARCHIVE_UPLOAD``,
        ``BICONIC_NETWORK_RETRIES`` attempts) until ``BICONIC_UPLOAD_DEADLINE`` s, or ``until`` on the engine's
        clock; each S3 call is cut at the deadline too. Then :class:`ArchiveError` names the endpoint (transient).
        """
        size = local.stat().st_size
        digest = digest or sha256_of(local)
        head, _, name = final.rpartition("/")
        limits = settings()
        policy = dataclasses.replace(ARCHIVE_UPLOAD, attempts=limits.network_retries)
        deadline = until if until is not None else clock().monotonic() + limits.upload_deadline

        def timeout() -> dict[str, float]:
            """fsspec's own bound on one blocking call (remote stores only): what is left of the deadline."""
            return {} if self.is_local else {"timeout": max(deadline - clock().monotonic(), 0.001)}

        def attempt() -> StoredFile:
            tmp = f"{head}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
            self._no_expect_continue()
            try:
                self.fs.put_file(str(local), tmp, **timeout())
                got = self.fs.size(tmp, **timeout())
                if got != size:
                    raise OSError(f"uploaded {got} bytes of {size}")
                if check is not None:
                    check(self.fs, tmp)
                replaced = bool(self.fs.exists(final, **timeout()))
                self.fs.mv(tmp, final)
            except BaseException as exc:
                # an endpoint that did not answer would not answer the clean-up either: a stray temporary key is
                # harmless (never listed, never read), a load held past its deadline is not
                if self.is_local or (not self._unanswered(exc) and deadline > clock().monotonic()):
                    self._discard(tmp, **timeout())
                raise
            return StoredFile(path=final, uri=self.uri(final), bytes=size, sha256=digest, replaced=replaced)

        def retrying(number: int, exc: BaseException, wait: float) -> None:
            tries[0] = number + 1
            log.warning("archive write of %s (%s) failed (%s), retrying in %.1f s", self.uri(final), self.endpoint,
                        type(exc).__name__, wait)

        def disk(exc: BaseException) -> bool:  # a local folder full, read-only or missing: no retry fixes it
            return self.is_local and is_storage(exc)

        tries = [1]
        try:  # network, permissions, a torn upload: retried, then reported
            return policy.call(attempt, retry_if=lambda exc: isinstance(exc, Exception) and not disk(exc),
                               on_retry=retrying, deadline=deadline - clock().monotonic())
        except Exception as exc:
            if isinstance(exc, OSError) and disk(exc):
                raise storage_error(exc, final) from exc
            said = first_line(exc) if str(exc).strip() else "no answer"
            bounds = (f"connect timeout {limits.connect_timeout:g} s, read timeout {limits.read_timeout:g} s, "
                      f"deadline {limits.upload_deadline:g} s")
            raise ArchiveError(self.uri(final), f"{self.endpoint}: {type(exc).__name__}: {said} ({bounds})",
                               attempts=tries[0]) from exc

    def _no_expect_continue(self) -> None:
        """Send S3 uploads without ``Expect: 100-continue``: aiohttp waits for the ``100 Continue`` with no read
        timeout at all, so an endpoint that never answers would hold the upload (and the load) forever."""
        if self.is_local or self._expect_dropped:
            return
        from botocore.handlers import add_expect_header

        self.fs.connect()  # makes the client (no request)
        self.fs.s3.meta.events.unregister("before-call.s3", add_expect_header)
        self._expect_dropped = True

    @staticmethod
    def _unanswered(exc: BaseException) -> bool:
        """Whether ``exc`` says the S3 endpoint did not answer (timeout, connection failure)."""
        if isinstance(exc, (TimeoutError, ConnectionError)):
            return True
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
        from fsspec.exceptions import FSTimeoutError

        return isinstance(exc, (BotoConnectionError, HTTPClientError, FSTimeoutError))

    def _discard(self, path: str, **timeout: float) -> None:
        try:
            if self.fs.exists(path, **timeout):
                self.fs.rm_file(path, **timeout)
        except Exception:  # best effort: an unlisted temporary file is never read
            log.debug("could not remove %s", path)

    def exists(self, path: str) -> bool:
        """Whether ``path`` is there; a store that does not answer within the read timeout is an ArchiveError."""
        try:
            return bool(self.fs.exists(path, **({} if self.is_local else {"timeout": settings().read_timeout})))
        except Exception as exc:
            said = first_line(exc) if str(exc).strip() else "no answer"
            raise ArchiveError(self.uri(path), f"{self.endpoint}: {type(exc).__name__}: {said}") from exc

    def remove(self, path: str) -> None:
        self._discard(path)


def _host_port(endpoint: str | None, region: str | None) -> str:
    """The S3 endpoint as ``host:port`` (no credentials, no path): AWS's own when none is set."""
    if not endpoint:
        return f"s3.{region or 'us-east-1'}.amazonaws.com:443"
    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    port = parts.port or (80 if parts.scheme == "http" else 443)
    return f"{parts.hostname}:{port}"


def open_store(url: str | None = None) -> Store:
    """The archive store for ``url`` (see :meth:`engine.settings.Settings.archive`); archiving off is an
    error here."""
    chosen = settings().archive(url)
    if chosen is None:
        raise SpecError("archive", "archiving is off (BICONIC_ARCHIVE_URL/--archive is 'off'); give an archive URL")
    return Store(chosen)
