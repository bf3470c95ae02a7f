"""Raw upload lifecycle: compress after 30 days, archive after 90, and every interrupted step finishes on re-run
without losing or duplicating a file."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from engine.archive import uploads
from engine.archive.store import Store, open_store
from engine.archive.uploads import UploadAction, UploadPolicy, tier_uploads, tier_uploads_report
from engine.errors import ArchiveError, SpecError
from engine.settings import settings

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def upload(folder: Path, rel: str, content: bytes, *, days: float) -> Path:
    """A file ``days`` old (by mtime) at ``folder/rel``."""
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    age(path, days)
    return path


def age(path: Path, days: float) -> None:
    stamp = (NOW - timedelta(days=days)).timestamp()
    os.utime(path, (stamp, stamp))


def unzstd(path: Path) -> bytes:
    with pa.CompressedInputStream(str(path), "zstd") as f:
        return bytes(f.read())


def zstd(content: bytes, path: Path, *, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.CompressedOutputStream(str(path), "zstd") as out:
        out.write(content)
    age(path, days)
    return path


def files(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden ones too), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "uploads"
    path.mkdir()
    return path


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(str(tmp_path / "archive"))


CSV = b"id,name\n" + b"".join(b"%d,name %d\n" % (i, i) for i in range(2000))


def test_fresh_and_middle_aged_files_are_untouched(folder: Path, store: Store) -> None:
    a = upload(folder, "a.csv", CSV, days=1)
    b = upload(folder, "sub/b.csv", CSV, days=29.9)
    mtimes = {p: p.stat().st_mtime_ns for p in (a, b)}

    assert tier_uploads(store, folder=folder, now=NOW) == []
    assert files(folder) == ["a.csv", "sub/b.csv"]
    assert {p: p.stat().st_mtime_ns for p in (a, b)} == mtimes
    assert not Path(store.root).exists()


def test_a_31_day_file_is_compressed_in_place(folder: Path, store: Store) -> None:
    src = upload(folder, "sub/orders.csv", CSV, days=31)
    mtime = src.stat().st_mtime_ns

    actions = tier_uploads(store, folder=folder, now=NOW)

    zst = folder / "sub/orders.csv.zst"
    assert actions == [UploadAction("compress", str(src), str(zst), len(CSV), zst.stat().st_size)]
    assert files(folder) == ["sub/orders.csv.zst"]
    assert unzstd(zst) == CSV
    assert zst.stat().st_mtime_ns == mtime  # its age keeps counting from the upload
    assert zst.stat().st_size < len(CSV)
    # a second run has nothing left to do before archive age
    assert tier_uploads(store, folder=folder, now=NOW) == []


@pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd tool is not installed")
def test_the_compressed_file_opens_with_the_standard_zstd_tool(folder: Path, store: Store) -> None:
    upload(folder, "a.csv", CSV, days=31)
    tier_uploads(store, folder=folder, now=NOW)
    out = subprocess.run(["zstd", "-dc", str(folder / "a.csv.zst")], capture_output=True, check=True)
    assert out.stdout == CSV


def test_a_91_day_file_is_compressed_then_archived_in_one_run(folder: Path, store: Store) -> None:
    src = upload(folder, "acme/2025/orders.csv", CSV, days=91)
    already = zstd(b"already compressed", folder / "acme/old.json.zst", days=200)

    actions = tier_uploads(store, folder=folder, now=NOW)

    zst = folder / "acme/2025/orders.csv.zst"
    target = store.path("_uploads", "acme", "2025", "orders.csv.zst")
    assert [(a.action, a.path, a.target) for a in actions] == [
        ("compress", str(src), str(zst)),
        ("archive", str(zst), target),
        ("archive", str(already), store.path("_uploads", "acme", "old.json.zst")),
    ]
    assert actions[1].bytes_before == actions[1].bytes_after == actions[0].bytes_after
    assert files(folder) == []
    assert unzstd(Path(target)) == CSV
    assert unzstd(Path(store.path("_uploads", "acme", "old.json.zst"))) == b"already compressed"
    assert not [p for p in Path(store.root).rglob(".*")]  # no temporary keys left behind


@pytest.mark.s3
def test_a_91_day_file_is_archived_to_s3(folder: Path, s3_archive: str) -> None:
    s3 = open_store(s3_archive)
    upload(folder, "acme/orders.csv", CSV, days=95)
    upload(folder, "acme/new.csv", CSV, days=2)

    actions = tier_uploads(s3, folder=folder, now=NOW)

    key = s3.path("_uploads", "acme", "orders.csv.zst")
    assert [(a.action, a.target) for a in actions] == [
        ("compress", str(folder / "acme/orders.csv.zst")),
        ("archive", f"s3://{key}"),
    ]
    assert files(folder) == ["acme/new.csv"]
    with s3.fs.open(key, "rb") as f, pa.CompressedInputStream(f, "zstd") as z:
        assert bytes(z.read()) == CSV
    assert s3.fs.ls(s3.path("_uploads", "acme")) == [key]  # the temporary key was renamed away
    # a re-run finds nothing to do and uploads nothing twice
    assert tier_uploads(s3, folder=folder, now=NOW) == []


def test_dry_run_lists_the_actions_and_touches_nothing(folder: Path, store: Store) -> None:
    a = upload(folder, "a.csv", CSV, days=31)
    b = upload(folder, "b.csv", CSV, days=120)
    c = zstd(CSV, folder / "c.csv.zst", days=100)
    leftover = upload(folder, ".d.csv.zst.tmp-0123abcd", b"torn", days=0)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")}

    actions = tier_uploads(store, folder=folder, now=NOW, dry_run=True)

    assert actions == [
        UploadAction("compress", str(a), str(folder / "a.csv.zst"), len(CSV), 0),
        UploadAction("compress", str(b), str(folder / "b.csv.zst"), len(CSV), 0),
        UploadAction("archive", str(folder / "b.csv.zst"), store.path("_uploads", "b.csv.zst"), len(CSV), 0),
        UploadAction("archive", str(c), store.path("_uploads", "c.csv.zst"), c.stat().st_size, 0),
    ]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")} == before
    assert leftover.exists()
    assert not Path(store.root).exists()


def test_hidden_files_and_folders_are_skipped(folder: Path, store: Store) -> None:
    upload(folder, ".partial.csv", CSV, days=200)
    upload(folder, ".staging/x.csv", CSV, days=200)

    assert tier_uploads(store, folder=folder, now=NOW) == []
    assert files(folder) == [".partial.csv", ".staging/x.csv"]


# --- interrupted runs: the state a crash leaves, then a re-run ---------------------------------------------


def test_rerun_after_crash_before_deleting_the_original(folder: Path, store: Store) -> None:
    src = upload(folder, "a.csv", CSV, days=40)
    zst = zstd(CSV, folder / "a.csv.zst", days=40)
    zst_bytes = zst.read_bytes()

    actions = tier_uploads(store, folder=folder, now=NOW)

    assert actions == [UploadAction("compress", str(src), str(zst), len(CSV), len(zst_bytes))]
    assert files(folder) == ["a.csv.zst"]
    assert zst.read_bytes() == zst_bytes


def test_a_zst_beside_the_original_that_does_not_match_is_never_deleted(folder: Path, store: Store,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    upload(folder, "a.csv", CSV, days=40)
    zstd(b"something else", folder / "a.csv.zst", days=40)
    upload(folder, "b.csv", CSV, days=40)

    with caplog.at_level(logging.WARNING, logger="biconic.uploads"):
        report = tier_uploads_report(store, folder=folder, now=NOW)

    assert [a.path for a in report.actions] == [str(folder / "b.csv")]
    assert len(report.errors) == 1 and "a.csv" in report.errors[0] and "both left in place" in report.errors[0]
    assert "a.csv" in caplog.text
    assert files(folder) == ["a.csv", "a.csv.zst", "b.csv.zst"]
    assert (folder / "a.csv").read_bytes() == CSV
    assert unzstd(folder / "a.csv.zst") == b"something else"


def test_rerun_after_crash_during_compression_removes_the_temporary_file(folder: Path, store: Store) -> None:
    upload(folder, "sub/a.csv", CSV, days=40)
    upload(folder, "sub/.a.csv.zst.tmp-deadbeef", b"torn half of a zstd stream", days=0)

    actions = tier_uploads(store, folder=folder, now=NOW)

    assert [a.action for a in actions] == ["compress"]
    assert files(folder) == ["sub/a.csv.zst"]
    assert unzstd(folder / "sub/a.csv.zst") == CSV


def test_a_failed_compression_leaves_the_original_and_no_temporary_file(folder: Path, store: Store,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    upload(folder, "a.csv", CSV, days=40)

    def torn(src: Path, dst: Path) -> tuple[int, str]:
        dst.write_bytes(b"not zstd")
        return len(CSV), hashlib.sha256(CSV).hexdigest()

    monkeypatch.setattr(uploads, "_write_zstd", torn)
    report = tier_uploads_report(store, folder=folder, now=NOW)
    assert report.actions == [] and len(report.errors) == 1
    assert files(folder) == ["a.csv"]

    monkeypatch.undo()
    assert [a.action for a in tier_uploads(store, folder=folder, now=NOW)] == ["compress"]
    assert unzstd(folder / "a.csv.zst") == CSV


def test_rerun_after_crash_before_deleting_the_archived_local_file(folder: Path, store: Store,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    zst = zstd(CSV, folder / "acme/a.csv.zst", days=100)
    first = tier_uploads(store, folder=folder, now=NOW)
    target = Path(store.path("_uploads", "acme", "a.csv.zst"))
    zstd(CSV, folder / "acme/a.csv.zst", days=100)  # the local copy a crash would have left
    assert zst.read_bytes() == target.read_bytes()
    stored = target.stat().st_mtime_ns

    def no_upload(*args: object, **kwargs: object) -> None:
        raise AssertionError("uploaded twice")

    monkeypatch.setattr(store, "put_verified", no_upload)
    again = tier_uploads(store, folder=folder, now=NOW)

    assert again == first
    assert files(folder) == []
    assert target.stat().st_mtime_ns == stored
    assert [p.name for p in target.parent.iterdir()] == ["a.csv.zst"]


def test_an_archived_file_with_other_content_is_not_overwritten(folder: Path, store: Store) -> None:
    target = Path(store.path("_uploads", "a.csv.zst"))
    target.parent.mkdir(parents=True)
    zstd(b"the january upload", target, days=0)
    zstd(CSV, folder / "a.csv.zst", days=100)

    report = tier_uploads_report(store, folder=folder, now=NOW)

    assert report.actions == []
    assert len(report.errors) == 1 and "different file" in report.errors[0]
    assert unzstd(target) == b"the january upload"
    assert unzstd(folder / "a.csv.zst") == CSV


def test_a_failed_upload_keeps_the_local_file_and_a_rerun_finishes(folder: Path, store: Store,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    upload(folder, "a.csv", CSV, days=100)

    def down(*args: object, **kwargs: object) -> None:
        raise ArchiveError("somewhere", "ConnectionError: endpoint down", attempts=3)

    monkeypatch.setattr(store, "put_verified", down)
    report = tier_uploads_report(store, folder=folder, now=NOW)
    assert [a.action for a in report.actions] == ["compress"]
    assert len(report.errors) == 1 and "endpoint down" in report.errors[0]
    assert files(folder) == ["a.csv.zst"]

    monkeypatch.undo()
    assert [a.action for a in tier_uploads(store, folder=folder, now=NOW)] == ["archive"]
    assert files(folder) == []
    assert unzstd(Path(store.path("_uploads", "a.csv.zst"))) == CSV


def test_a_bad_upload_is_caught_by_the_checksum(folder: Path, store: Store, monkeypatch: pytest.MonkeyPatch,
                                                manual_clock: object) -> None:
    zstd(CSV, folder / "a.csv.zst", days=100)
    real_put = store.fs.put_file

    def flip_a_byte(local: str, remote: str, **kwargs: object) -> None:
        data = bytearray(Path(local).read_bytes())
        data[-1] ^= 0xFF  # same size: only the SHA-256 check can tell
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        Path(remote).write_bytes(bytes(data))

    monkeypatch.setattr(store.fs, "put_file", flip_a_byte)
    report = tier_uploads_report(store, folder=folder, now=NOW)
    assert report.actions == [] and "SHA-256" in report.errors[0]
    assert files(folder) == ["a.csv.zst"]
    assert not list(Path(store.root).rglob("*.zst*"))

    monkeypatch.setattr(store.fs, "put_file", real_put)
    assert [a.action for a in tier_uploads(store, folder=folder, now=NOW)] == ["archive"]


# --- large and failing files ---------------------------------------------------------------------------------


def test_a_file_larger_than_the_block_size_round_trips(folder: Path, store: Store) -> None:
    rng = random.Random(7)
    pieces = [rng.randbytes(1 << 16) for _ in range(8)]
    content = b"".join(rng.choice(pieces) for _ in range(336)) + b"tail"  # 21 MiB, compressible
    src = upload(folder, "big.bin", content, days=31)

    [action] = tier_uploads(store, folder=folder, now=NOW)

    assert action.bytes_before == len(content) > 20 * uploads.BLOCK
    zst = folder / "big.bin.zst"
    assert action.bytes_after == zst.stat().st_size < len(content)
    assert not src.exists()
    assert hashlib.sha256(unzstd(zst)).digest() == hashlib.sha256(content).digest()


def test_a_vanished_file_is_reported_and_the_others_still_processed(folder: Path, store: Store,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    upload(folder, "a.csv", CSV, days=40)
    gone = upload(folder, "b.csv", CSV, days=40)
    upload(folder, "c.csv", CSV, days=100)
    listed = uploads._units

    def then_delete(*args: object, **kwargs: object) -> object:
        units = listed(*args, **kwargs)  # type: ignore[arg-type]
        gone.unlink()  # removed by someone else between the listing and its turn
        return units

    monkeypatch.setattr(uploads, "_units", then_delete)
    with caplog.at_level(logging.WARNING, logger="biconic.uploads"):
        report = tier_uploads_report(store, folder=folder, now=NOW)

    assert [(a.action, Path(a.path).name) for a in report.actions] == [
        ("compress", "a.csv"), ("compress", "c.csv"), ("archive", "c.csv.zst")]
    assert len(report.errors) == 1 and "b.csv" in report.errors[0] and "FileNotFoundError" in report.errors[0]
    assert "b.csv" in caplog.text
    assert files(folder) == ["a.csv.zst"]


def test_a_file_written_to_while_compressing_is_left_alone(folder: Path, store: Store,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    src = upload(folder, "a.csv", CSV, days=40)
    real = uploads._write_zstd

    def and_append(s: Path, d: Path) -> tuple[int, str]:
        result = real(s, d)
        with open(s, "ab") as f:
            f.write(b"late row\n")
        return result

    monkeypatch.setattr(uploads, "_write_zstd", and_append)
    report = tier_uploads_report(store, folder=folder, now=NOW)

    assert report.actions == [] and "changed while being processed" in report.errors[0]
    assert files(folder) == ["a.csv"]
    assert src.read_bytes() == CSV + b"late row\n"


# --- settings ------------------------------------------------------------------------------------------------


def test_the_policy_must_be_ordered() -> None:
    with pytest.raises(SpecError, match="compress_days"):
        UploadPolicy(compress_days=100)
    with pytest.raises(SpecError):
        UploadPolicy(keep_days=-1)
    assert UploadPolicy(keep_days=1, compress_days=1, archive_days=1).archive_days == 1


def test_a_custom_policy_is_applied(folder: Path, store: Store) -> None:
    upload(folder, "a.csv", CSV, days=3)
    actions = tier_uploads(store, folder=folder, now=NOW, policy=UploadPolicy(keep_days=1, compress_days=2,
                                                                              archive_days=3))
    assert [a.action for a in actions] == ["compress", "archive"]


def test_the_uploads_folder_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       store: Store) -> None:
    assert settings().uploads_path == tmp_path / ".biconic" / "uploads"
    monkeypatch.setenv("BICONIC_UPLOADS_DIR", str(tmp_path / "incoming"))
    assert settings().uploads_path == tmp_path / "incoming"
    upload(tmp_path / "incoming", "a.csv", CSV, days=31)
    assert [a.action for a in tier_uploads(store, now=NOW)] == ["compress"]


def test_a_missing_folder_means_nothing_to_do(tmp_path: Path, store: Store) -> None:
    assert tier_uploads(store, folder=tmp_path / "nope", now=NOW) == []
