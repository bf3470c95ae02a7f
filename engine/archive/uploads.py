"""The lifecycle of raw uploaded files: kept as-is for a week, ZSTD-compressed after a month, moved to the
archive store after three months, so the upload folder stays small without ever losing a file.

>>> from engine.archive.store import open_store
>>> actions = tier_uploads(open_store(), dry_run=True)  # doctest: +SKIP

Uploads live in ``BICONIC_UPLOADS_DIR`` (default ``{data dir}/uploads``); a file's age is now minus its mtime,
and a compressed file keeps its original's mtime, so its age keeps counting from the upload. Every step can be
interrupted and re-run: a file is deleted only after its replacement has been written, synced and verified
(size and SHA-256), and a re-run finishes a half-done step instead of doing it twice.

Runs must not overlap: a second run removes the first one's temporary files (the first then fails that file,
without loss).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from engine.archive.store import Store, sha256_of
from engine.errors import SpecError
from engine.settings import settings

__all__ = ["UploadAction", "UploadPolicy", "UploadReport", "tier_uploads", "tier_uploads_report"]

log = logging.getLogger("biconic.uploads")

#: read and write size: memory stays bounded whatever the file size
BLOCK = 1 << 20
_DAY = 86400.0
# ".{name}.zst.tmp-{8 hex}": hidden, so readers skip it, and specific enough never to match an upload
_TEMP = re.compile(r"^\..+\.zst\.tmp-[0-9a-f]{8}$")

Action = Literal["compress", "archive"]


@dataclass(frozen=True)
class UploadPolicy:
    """Ages in days. Nothing happens before ``compress_days``; ``keep_days`` is the promise to users (files are
    untouched at least that long) and is checked to stay below the other two.

    >>> UploadPolicy(compress_days=14)
    UploadPolicy(keep_days=7, compress_days=14, archive_days=90)
    """

    keep_days: int = 7
    compress_days: int = 30
    archive_days: int = 90

    def __post_init__(self) -> None:
        if not 0 <= self.keep_days <= self.compress_days <= self.archive_days:
            raise SpecError("uploads.policy", f"need 0 <= keep_days ({self.keep_days}) <= compress_days "
                            f"({self.compress_days}) <= archive_days ({self.archive_days})")


@dataclass(frozen=True)
class UploadAction:
    """One completed (or, on a dry run, planned) step.

    ``bytes_after`` is the size of ``target`` (0 on a dry run). On a dry run that compresses then archives a
    file, the archive step's ``path`` is the ``.zst`` still to be written and ``bytes_before`` the original size.
    """

    action: Action
    path: str  # the local file acted on
    target: str  # the .zst path, or the archive URI
    bytes_before: int
    bytes_after: int


@dataclass(frozen=True)
class UploadReport:
    """What a run did, and the files it could not handle (each message names the file); those are left in
    place and retried by the next run."""

    actions: list[UploadAction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def tier_uploads(store: Store, *, folder: Path | None = None, policy: UploadPolicy = UploadPolicy(),
                 now: datetime | None = None, dry_run: bool = False) -> list[UploadAction]:
    """Compress and archive the uploads that are old enough; the steps completed. Per-file failures are logged
    and skipped: use :func:`tier_uploads_report` to get them too.

    >>> tier_uploads(open_store("s3://bucket/archive"), now=datetime(2025, 6, 1, tzinfo=UTC))  # doctest: +SKIP
    [UploadAction(action='compress', path='/data/uploads/a.csv', target='/data/uploads/a.csv.zst', ...)]
    """
    return tier_uploads_report(store, folder=folder, policy=policy, now=now, dry_run=dry_run).actions


def tier_uploads_report(store: Store, *, folder: Path | None = None, policy: UploadPolicy = UploadPolicy(),
                        now: datetime | None = None, dry_run: bool = False) -> UploadReport:
    """:func:`tier_uploads`, also returning the per-file errors.

    Files are walked recursively (hidden files and folders skipped). One older than ``compress_days`` becomes
    ``name.zst``; one older than ``archive_days`` goes, compressed, to ``{store}/_uploads/{relative path}``.
    """
    root = (folder or settings().uploads_path).resolve()
    clock = (now or datetime.now(UTC)).timestamp()
    report = UploadReport()
    if not root.is_dir():
        log.info("uploads folder %s does not exist; nothing to tier", root)
        return report
    for original, compressed in _units(root, dry_run=dry_run, errors=report.errors):
        try:
            _tier_one(store, root, original, compressed, policy, clock, dry_run, report.actions)
        except Exception as exc:  # a vanished, unreadable or conflicting file must not stop the sweep
            name = original or compressed
            message = f"{name}: {type(exc).__name__}: {exc}"
            log.warning("upload tiering skipped %s", message)
            report.errors.append(message)
    return report


def _units(root: Path, *, dry_run: bool, errors: list[str]) -> list[tuple[Path | None, Path | None]]:
    """Each upload paired with its ``.zst`` (either may be missing), so a half-done compression is seen whole.
    Leftover temporary files are removed here."""
    originals: list[Path] = []
    compressed: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        for name in filenames:
            path = here / name
            if _TEMP.match(name):
                if not dry_run:
                    try:
                        path.unlink()
                        log.info("removed leftover temporary file %s", path)
                    except OSError as exc:
                        log.warning("could not remove leftover temporary file %s: %s", path, exc)
                        errors.append(f"{path}: {type(exc).__name__}: {exc}")
                continue
            if name.startswith(".") or not path.is_file() or path.is_symlink():
                continue
            if name.endswith(".zst"):
                compressed.add(path)
            else:
                originals.append(path)
    units: list[tuple[Path | None, Path | None]] = []
    for path in originals:
        zst = _zst_of(path)
        units.append((path, zst if zst in compressed else None))
        compressed.discard(zst)
    units.extend((None, path) for path in compressed)
    return sorted(units, key=lambda unit: str(unit[0] or unit[1]))


def _tier_one(store: Store, root: Path, original: Path | None, compressed: Path | None, policy: UploadPolicy,
              clock: float, dry_run: bool, actions: list[UploadAction]) -> None:
    planned: os.stat_result | None = None  # the original a dry run would have compressed
    if original is not None:
        stat = original.stat()
        if _age_days(stat, clock) >= policy.compress_days:
            zst = _zst_of(original)
            if dry_run:
                actions.append(UploadAction("compress", str(original), str(zst), stat.st_size, 0))
                planned = stat
            else:
                actions.append(_compress(original, zst))
            compressed = zst
    if compressed is None:
        return
    stat = planned or compressed.stat()
    if _age_days(stat, clock) < policy.archive_days:
        return
    final = store.path("_uploads", *compressed.relative_to(root).parts)
    if dry_run:
        actions.append(UploadAction("archive", str(compressed), store.uri(final), stat.st_size, 0))
    else:
        actions.append(_archive(store, compressed, final))


def _age_days(stat: os.stat_result, clock: float) -> float:
    return (clock - stat.st_mtime) / _DAY


def _zst_of(path: Path) -> Path:
    return path.with_name(path.name + ".zst")


def _compress(src: Path, dst: Path) -> UploadAction:
    """``src`` -> ``dst`` (ZSTD), then delete ``src``. An existing ``dst`` that holds exactly ``src`` is the
    trace of a run interrupted before the delete: it is kept and only the delete is redone."""
    before = src.stat()
    if dst.exists():
        size, digest = _zstd_content(dst)
        if (size, digest) != (before.st_size, sha256_of(src)):
            raise FileExistsError(f"{dst.name} exists and does not hold this file; both left in place")
    else:
        tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            size, digest = _write_zstd(src, tmp)
            _fsync(tmp)
            if _zstd_content(tmp) != (size, digest):
                raise OSError(f"{tmp.name} does not decompress to {src.name}")
            _unchanged(src, before, size)  # before the rename: a .zst in place always matches its original
            os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
            os.replace(tmp, dst)
            _fsync(dst.parent)
        finally:
            tmp.unlink(missing_ok=True)
    _unchanged(src, before, size)
    src.unlink()
    after = dst.stat().st_size
    log.info("compressed %s (%d -> %d bytes)", src, before.st_size, after)
    return UploadAction("compress", str(src), str(dst), before.st_size, after)


def _archive(store: Store, local: Path, final: str) -> UploadAction:
    """Upload ``local`` to ``final`` (verified by SHA-256 at a temporary key), then delete ``local``. A ``final``
    already holding the same bytes is the trace of a run interrupted before the delete."""
    before = local.stat()
    digest = sha256_of(local)
    if store.exists(final):
        if _remote_sha256(store.fs, final) != digest:
            raise FileExistsError(f"{store.uri(final)} already holds a different file; local copy kept")
    else:
        store.put_verified(local, final, check=lambda fs, tmp: _check_sha256(fs, tmp, digest), digest=digest)
    _unchanged(local, before, before.st_size)
    local.unlink()
    log.info("archived %s to %s (%d bytes)", local, store.uri(final), before.st_size)
    return UploadAction("archive", str(local), store.uri(final), before.st_size, before.st_size)


def _write_zstd(src: Path, dst: Path) -> tuple[int, str]:
    """Compress ``src`` into ``dst`` block by block; the size and SHA-256 of what was read."""
    import pyarrow as pa

    digest = hashlib.sha256()
    size = 0
    with open(src, "rb") as f, pa.CompressedOutputStream(str(dst), "zstd") as out:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
            size += len(block)
            out.write(block)
    return size, digest.hexdigest()


def _zstd_content(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of the decompressed content, streamed."""
    import pyarrow as pa

    digest = hashlib.sha256()
    size = 0
    with pa.CompressedInputStream(str(path), "zstd") as f:
        while block := f.read(BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _remote_sha256(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(fs: Any, path: str, expected: str) -> None:
    got = _remote_sha256(fs, path)
    if got != expected:
        raise OSError(f"uploaded SHA-256 {got[:12]}… differs from local {expected[:12]}…")


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk before the original is deleted."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unchanged(path: Path, before: os.stat_result, size: int) -> None:
    """A file still being written (or replaced) while we copied it must not be deleted."""
    now = path.stat()
    if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or size != before.st_size:
        raise OSError(f"{path.name} changed while being processed; left in place")
