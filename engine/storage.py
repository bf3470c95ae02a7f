"""The local disk's failures as one line: an ``OSError`` of a file the engine writes or reads (disk full, quota,
read-only filesystem, permission denied, missing folder) becomes a :class:`~engine.errors.StorageError` naming the
path and the space free there, instead of a traceback.

The writers that know their path (the archive writer's work files, the local archive) name it themselves with
:func:`naming`; the load's top level and the CLI translate whatever else escapes with :func:`storage_error`.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import StorageError, first_line

__all__ = ["free_space", "is_storage", "naming", "storage_error"]

#: errno -> what the user reads
_WHY = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the filesystem (or the process's file size limit)",
    errno.EROFS: "read-only filesystem",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is not a folder",
}
#: Arrow's messages carry the errno in their text only: "... Detail: [errno 28] No space left on device"
_ERRNO_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


def _errno(exc: BaseException) -> int | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    found = _ERRNO_TEXT.search(str(exc))
    return int(found.group(1)) if found else None


def is_storage(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk refusing (full, quota, read-only, permissions, a missing folder)."""
    return isinstance(exc, OSError) and _errno(exc) in _WHY


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


def free_space(path: str | Path) -> str:
    """``'1.2 GB free'`` on the filesystem of ``path`` (its nearest existing parent); ``'free space unknown'``."""
    here = Path(path).absolute()
    for candidate in (here, *here.parents):
        try:
            if candidate.exists():
                return f"{_size(shutil.disk_usage(candidate).free)} free"
        except OSError:
            continue
    return "free space unknown"


def storage_error(exc: OSError, path: str | Path | None = None) -> StorageError:
    """``exc`` as one line naming ``path`` (else the error's own file name), why, and the free space there."""
    where = str(path if path is not None else exc.filename if exc.filename is not None else "?")
    code = _errno(exc)
    why = _WHY.get(code, first_line(exc)) if code is not None else first_line(exc)
    space = f" ({free_space(where)} there)" if where != "?" else ""
    full = code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    hint = "free some space" if full else "fix the folder (or point BICONIC_HOME / --archive elsewhere)"
    return StorageError(where, f"{why}{space}; {hint} and re-run (what failed was not committed)")


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Inside, a storage failure (see :func:`is_storage`) becomes a :class:`StorageError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        if not is_storage(exc):
            raise
        raise storage_error(exc, path) from exc
