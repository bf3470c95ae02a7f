"""Disk failures as one line: the errno read from an OSError (or from Arrow's text), the path, the free space."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from engine.errors import BiconicError, StorageError
from engine.storage import free_space, is_storage, naming, storage_error


def test_disk_full_names_the_path_and_the_free_space(tmp_path: Path) -> None:
    where = tmp_path / "not" / "yet" / "there.parquet"  # measured at its nearest existing parent
    error = storage_error(OSError(errno.ENOSPC, "No space left on device"), where)
    assert isinstance(error, BiconicError) and error.exit_code == StorageError.exit_code == 8
    text = str(error)
    assert "\n" not in text
    assert text.startswith(f"{where}: no space left on device (")
    assert " free there)" in text and "free some space" in text


def test_arrow_errors_carry_their_errno_in_the_text() -> None:
    arrow = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert is_storage(arrow)
    assert "no space left on device" in str(storage_error(arrow, "/x/y.parquet"))
    assert not is_storage(OSError("footer says 3 rows, 4 were written"))
    assert not is_storage(ValueError("[errno 28]"))


@pytest.mark.parametrize(("code", "said"), [(errno.EROFS, "read-only filesystem"), (errno.EACCES, "permission denied"),
                                            (errno.ENOENT, "no such file or folder"),
                                            (errno.EDQUOT, "disk quota exceeded")])
def test_each_kind_says_why(tmp_path: Path, code: int, said: str) -> None:
    text = str(storage_error(OSError(code, "x", str(tmp_path / "f")), None))
    assert text.startswith(f"{tmp_path / 'f'}: {said} (")


def test_naming_translates_only_disk_failures(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info, naming(tmp_path):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.path == str(tmp_path)
    with pytest.raises(ConnectionResetError), naming(tmp_path):
        raise ConnectionResetError(errno.ECONNRESET, "reset")


def test_free_space_of_a_path_that_does_not_exist_yet(tmp_path: Path) -> None:
    assert free_space(tmp_path / "a" / "b").endswith(" free")
