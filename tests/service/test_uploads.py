"""tus 1.0 uploads at /v1/uploads against a real ``biconic serve``: tuspy as it is, a cut connection resumed,
the protocol's refusals (each leaving the upload as it was), expiry, tenancy and hostile filenames."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from engine.service import upload_store
from engine.service.problems import ProblemError
from engine.service.tokens import TokenInfo, verify_token
from tests.service.conftest import Api, start_server, stop
from tests.support import Sql

pytestmark = pytest.mark.postgres

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {**TUS, "Content-Type": "application/offset+octet-stream"}
MB = 1 << 20


def _bytes(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def _create(client: httpx.Client, length: int, filename: str | bytes = "orders.csv") -> str:
    metadata = f"filename {_b64(filename)},filetype {_b64('text/csv')}"
    made = client.post("/v1/uploads", headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": metadata})
    assert made.status_code == 201, made.text
    return urlsplit(made.headers["location"]).path


def _patch(client: httpx.Client, url: str, data: bytes, offset: int, **headers: str) -> httpx.Response:
    return client.patch(url, content=data, headers={**CHUNK, "Upload-Offset": str(offset), **headers})


def _offset(client: httpx.Client, url: str) -> int:
    return int(client.head(url, headers=TUS).headers["upload-offset"])


def _on_disk(api: Api, url: str) -> Path:
    folder = Path(api.env["BICONIC_HOME"]) / "uploads" / "tus" / url.rsplit("/", 1)[-1]
    files = list(folder.iterdir())
    assert len(files) == 1
    return files[0]


def _caller(api: Api, token: str) -> TokenInfo:
    info = verify_token(api.dsn, token)
    assert info is not None
    return info


def _wait_for(client: httpx.Client, url: str, reached: Callable[[int], bool]) -> None:
    deadline = time.monotonic() + 20
    while not reached(_offset(client, url)):
        assert time.monotonic() < deadline, "the upload's offset never got there"
        time.sleep(0.05)


def _settled(client: httpx.Client, url: str) -> int:
    """The offset once no request writes the upload any more (an empty PATCH at it is taken, not refused 423)."""
    deadline = time.monotonic() + 20
    while True:
        offset = _offset(client, url)
        if _patch(client, url, b"", offset).status_code == 204:
            return offset
        assert time.monotonic() < deadline, "the cut PATCH never let go of the upload"
        time.sleep(0.1)


@contextlib.contextmanager
def _raw_patch(api: Api, token: str, url: str, offset: int, length: int, **headers: str) -> Iterator[socket.socket]:
    """A PATCH whose body the test sends (or cuts) by hand on a plain socket."""
    where = urlsplit(api.url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((where.hostname, where.port)) as sock:
        sock.sendall((f"PATCH {url} HTTP/1.1\r\nHost: {where.netloc}\r\nAuthorization: Bearer {token}\r\n"
                      f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                      f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\n{extra}\r\n").encode())
        yield sock


def test_options_advertises_the_version_extensions_and_limits(api: Api) -> None:
    with api.client() as client:
        answer = client.options("/v1/uploads")
    assert answer.status_code == 204 and answer.headers["tus-version"] == "1.0.0"
    assert answer.headers["tus-extension"] == "creation,checksum,termination,expiration"
    assert int(answer.headers["tus-max-size"]) == 20480 * MB
    assert {"md5", "sha1", "sha256"} <= set(answer.headers["tus-checksum-algorithm"].split(","))


@pytest.mark.parametrize(("chunk_mb", "checksum"), [(6, True), (16, False)])
def test_tuspy_uploads_a_file_in_chunks(api: Api, connection: str, tmp_path: Path, chunk_mb: int,
                                        checksum: bool) -> None:
    from tusclient import client as tus

    token = api.token(connection)
    data = _bytes(20 * MB + 123, seed=chunk_mb)
    source = tmp_path / "orders.csv"
    source.write_bytes(data)
    uploader = tus.TusClient(f"{api.url}/v1/uploads", headers={"Authorization": f"Bearer {token}"}).uploader(
        str(source), chunk_size=chunk_mb * MB, metadata={"filename": "orders.csv"}, upload_checksum=checksum)
    uploader.upload()
    location = str(uploader.url)
    upload_id = location.rsplit("/", 1)[-1]
    with api.client(token) as client:
        state = client.get(f"/v1/uploads/{upload_id}").json()
    assert state["complete"] and state["offset"] == state["length"] == len(data)
    assert state["sha256"] == hashlib.sha256(data).hexdigest() and state["filename"] == "orders.csv"
    assert state["expires_at"] is None
    assert _on_disk(api, location).read_bytes() == data


def test_a_cut_connection_keeps_what_arrived_and_the_upload_resumes(api: Api, connection: str, tmp_path: Path) -> None:
    from tusclient import client as tus

    token = api.token(connection)
    data = _bytes(8 * MB, seed=7)
    with api.client(token) as client:
        url = _create(client, len(data))
        with _raw_patch(api, token, url, 0, len(data)) as sock:
            sock.sendall(data[:3 * MB + 17])
            _wait_for(client, url, lambda offset: offset >= MB)  # the server is writing; then the connection drops
        offset = _settled(client, url)
        assert MB <= offset <= 3 * MB + 17
        assert _on_disk(api, url).read_bytes() == data[:offset]  # the offset is what is really on disk
        assert client.get(url).json()["complete"] is False
        source = tmp_path / "orders.csv"
        source.write_bytes(data)
        resumed = tus.TusClient(f"{api.url}/v1/uploads", headers={"Authorization": f"Bearer {token}"}).uploader(
            str(source), url=f"{api.url}{url}", chunk_size=6 * MB)
        assert resumed.offset == offset  # tuspy asked (HEAD) where to resume
        resumed.upload()
        state = client.get(url).json()
    assert state["complete"] and state["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_cut_chunk_with_a_checksum_is_not_kept(api: Api, connection: str) -> None:
    token = api.token(connection)
    data = _bytes(4 * MB, seed=8)
    with api.client(token) as client:
        url = _create(client, len(data))
        assert _patch(client, url, data[:MB], 0).status_code == 204
        digest = _b64(hashlib.sha256(data[MB:]).digest())
        with _raw_patch(api, token, url, MB, len(data) - MB, **{"Upload-Checksum": f"sha256 {digest}"}) as sock:
            sock.sendall(data[MB:2 * MB + 5])
            _wait_for(client, url, lambda offset: offset > MB)  # written as it arrives, until the cut
        assert _settled(client, url) == MB  # a partial chunk cannot be verified: none of it was kept
        assert _on_disk(api, url).stat().st_size == MB


def test_a_checksum_mismatch_is_460_and_nothing_is_appended(api: Api, connection: str) -> None:
    data = _bytes(3 * MB, seed=2)
    with api.client(api.token(connection)) as client:
        url = _create(client, len(data))
        assert _patch(client, url, data[:MB], 0).status_code == 204
        wrong = _patch(client, url, data[MB:], MB, **{"Upload-Checksum": f"sha1 {_b64(hashlib.sha1(b'x').digest())}"})
        assert wrong.status_code == 460 and wrong.headers["content-type"] == "application/problem+json"
        assert wrong.headers["tus-resumable"] == "1.0.0" and "discarded" in wrong.json()["detail"]
        assert _offset(client, url) == MB and _on_disk(api, url).stat().st_size == MB
        md5 = _b64(hashlib.md5(data[MB:]).digest())
        right = _patch(client, url, data[MB:], MB, **{"Upload-Checksum": f"md5 {md5}"})
        assert right.status_code == 204
        assert client.get(url).json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_bad_requests_are_problems_and_leave_the_upload_as_it_was(api: Api, connection: str) -> None:
    with api.client(api.token(connection)) as client:
        url = _create(client, 100)
        assert _patch(client, url, b"a" * 10, 0).status_code == 204
        answers = {
            "offset": _patch(client, url, b"b" * 10, 0),
            "type": client.patch(url, content=b"b" * 10, headers={**TUS, "Upload-Offset": "10",
                                                                 "Content-Type": "application/octet-stream"}),
            "version": client.patch(url, content=b"b", headers={**CHUNK, "Tus-Resumable": "0.2.2",
                                                                "Upload-Offset": "10"}),
            "algorithm": _patch(client, url, b"b", 10, **{"Upload-Checksum": "crc32 AAAA"}),
            "no offset": client.patch(url, content=b"b", headers=CHUNK),
            "past the end": _patch(client, url, b"b" * 91, 10),
            "metadata": client.post("/v1/uploads", headers={**TUS, "Upload-Length": "5",
                                                            "Upload-Metadata": "filename not*base64"}),
            "no length": client.post("/v1/uploads", headers=TUS),
            "long metadata": client.post("/v1/uploads", headers={**TUS, "Upload-Length": "5",
                                                                 "Upload-Metadata": "k " + "QUFB" * 2100}),
            "not a number": client.post("/v1/uploads", headers={**TUS, "Upload-Length": b"\xb2"}),
        }
        assert {k: a.status_code for k, a in answers.items()} == {
            "offset": 409, "type": 415, "version": 412, "algorithm": 400, "no offset": 400, "past the end": 413,
            "metadata": 400, "no length": 400, "not a number": 400, "long metadata": 400}
        for answer in answers.values():
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["tus-resumable"] == "1.0.0" and "\n" not in answer.json()["detail"]
        assert answers["version"].headers["tus-version"] == "1.0.0"
        assert _offset(client, url) == 10 and _on_disk(api, url).read_bytes() == b"a" * 10


def test_an_oversized_upload_is_refused_and_nothing_is_stored(api: Api, connection: str, sql: Sql) -> None:
    token = api.token(connection)
    with api.client(token) as client:
        big = client.post("/v1/uploads", headers={**TUS, "Upload-Length": str(20481 * MB)})
        url = _create(client, 10)

        def body() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it early
            yield from (b"x" * 4 for _ in range(5))

        streamed = client.patch(url, content=body(), headers={**CHUNK, "Upload-Offset": "0"})
    assert big.status_code == 413 and "20480 MB" in big.json()["detail"]
    assert streamed.status_code == 413 and "nothing was kept" in streamed.json()["detail"]
    assert _on_disk(api, url).stat().st_size == 0
    info = _caller(api, token)
    assert sql("SELECT count(*) FROM biconic.uploads WHERE token_id = $1", [info.token_id]) == [(1,)]


def test_a_token_holds_a_limited_number_of_unfinished_uploads(api: Api, connection: str) -> None:
    token = api.token(connection)
    with api.client(token) as client, api.client(api.token(connection)) as other:
        urls = [_create(client, 10) for _ in range(20)]
        refused = client.post("/v1/uploads", headers={**TUS, "Upload-Length": "10"})
        assert refused.status_code == 429 and "20 unfinished uploads" in refused.json()["detail"]
        _create(other, 10)  # the limit is the token's
        assert _patch(client, urls[0], b"0123456789", 0).status_code == 204  # finished: no longer counted
        assert client.delete(urls[1], headers=TUS).status_code == 204
        _create(client, 10)
        _create(client, 10)
        assert client.post("/v1/uploads", headers={**TUS, "Upload-Length": "10"}).status_code == 429


def test_termination_removes_the_upload_and_its_file(api: Api, connection: str) -> None:
    with api.client(api.token(connection)) as client:
        url = _create(client, 10)
        assert _patch(client, url, b"abc", 0).status_code == 204
        folder = _on_disk(api, url).parent
        assert client.delete(url, headers=TUS).status_code == 204
        assert client.head(url, headers=TUS).status_code == 404
        assert client.delete(url, headers=TUS).status_code == 404
    assert not folder.exists()


def test_an_expired_upload_is_refused_then_swept(api: Api, connection: str, sql: Sql,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from engine.jobs import sweeps

    monkeypatch.setenv("BICONIC_HOME", api.env["BICONIC_HOME"])
    monkeypatch.delenv("BICONIC_UPLOADS_DIR", raising=False)
    with api.client(api.token(connection)) as client:
        abandoned, busy, finished = (_create(client, 10) for _ in range(3))
        assert _patch(client, abandoned, b"abc", 0).status_code == 204
        assert _patch(client, finished, b"0123456789", 0).status_code == 204
        files = {url: _on_disk(api, url) for url in (abandoned, busy, finished)}
        now = dt.datetime.now(dt.UTC)
        assert upload_store.sweep_expired_uploads(api.dsn, now=now + dt.timedelta(hours=23)) == 0
        sql("UPDATE biconic.uploads SET expires_at = now() - interval '1 minute' "
            "WHERE upload_id = $1::uuid", [abandoned.rsplit("/", 1)[-1]])
        assert client.head(abandoned, headers=TUS).status_code == 404  # expired: gone for the client at once
        assert files[abandoned].exists()
        later = now + dt.timedelta(hours=25)
        with files[busy].open("rb+") as held:  # a PATCH is writing it: the sweep leaves it
            fcntl.flock(held, fcntl.LOCK_EX)
            outcome = sweeps.sweep_uploads(api.dsn, now=later)
        assert outcome.ok and outcome.removed >= 1 and "sweep_uploads: removed" in outcome.summary()
        assert not files[abandoned].parent.exists() and files[busy].exists() and files[finished].exists()
        assert client.get(finished).json()["complete"] is True
        assert upload_store.sweep_expired_uploads(api.dsn, now=later) >= 1
        assert not files[busy].exists()


def test_another_connections_token_sees_nothing_and_changes_nothing(api: Api, connection: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_HOME", api.env["BICONIC_HOME"])
    monkeypatch.delenv("BICONIC_UPLOADS_DIR", raising=False)
    owner, stranger = api.token(connection), api.token(str(uuid.uuid4()))
    with api.client(owner) as mine, api.client(stranger) as theirs, api.client(api.token(scope="admin")) as admin, \
            api.client(api.token(connection, scope="read")) as reader:
        url = _create(mine, 10, filename="secret-plan.csv")
        assert _patch(mine, url, b"12345", 0).status_code == 204
        answers = [theirs.head(url, headers=TUS), _patch(theirs, url, b"xxxxx", 5), theirs.get(url),
                   theirs.delete(url, headers=TUS)]
        assert [a.status_code for a in answers] == [404, 404, 404, 404]
        assert all("secret" not in a.text and "upload-offset" not in a.headers for a in answers)
        assert reader.get(url).json()["offset"] == 5  # a read token of the connection sees it, cannot write it
        assert _patch(reader, url, b"xxxxx", 5).status_code == 403
        assert admin.get(url).json()["offset"] == 5
        assert _offset(mine, url) == 5 and _on_disk(api, url).read_bytes() == b"12345"
        upload_id = url.rsplit("/", 1)[-1]
        callers = {"owner": _caller(api, owner), "stranger": _caller(api, stranger)}
        for name, status in (("stranger", 404), ("owner", 409)):
            with pytest.raises(ProblemError) as refused:
                upload_store.finished_upload(api.dsn, upload_id, callers[name])
            assert refused.value.status == status
        assert _patch(mine, url, b"67890", 5).status_code == 204
        path, filename = upload_store.finished_upload(api.dsn, upload_id, callers["owner"])
    assert path.read_bytes() == b"1234567890" and filename == "secret-plan.csv"


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "a\x00b\n.csv", "..", "C:\\Windows\\evil.csv",
                                     "x" * 300 + ".csv", "", ".bashrc", "répertoire/ñ 1.xlsx"])
def test_a_hostile_filename_is_made_harmless(api: Api, connection: str, hostile: str) -> None:
    with api.client(api.token(connection)) as client:
        url = _create(client, 3, filename=hostile)
        assert _patch(client, url, b"abc", 0).status_code == 204
        state = client.get(url).json()
    stored = _on_disk(api, url)
    assert stored.name == state["filename"] and stored.read_bytes() == b"abc"
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}", stored.name)
    for extension in (".csv", ".xlsx"):
        assert stored.name.endswith(extension) == hostile.endswith(extension)


def test_safe_filename() -> None:
    assert upload_store.safe_filename("../../etc/passwd") == "passwd"
    assert upload_store.safe_filename("C:\\Windows\\evil.csv") == "evil.csv"
    assert upload_store.safe_filename("a\x00b\n.csv") == "a_b_.csv"
    assert upload_store.safe_filename("..") == "_."
    assert upload_store.safe_filename(None) == upload_store.safe_filename("///") == "upload"
    long = upload_store.safe_filename("y" * 300 + ".parquet")
    assert len(long) == 100 and long.endswith(".parquet")


def test_two_patches_of_one_upload_never_interleave(api: Api, connection: str) -> None:
    token = api.token(connection)
    data = _bytes(4 * MB, seed=3)
    with api.client(token) as client:
        url = _create(client, len(data))
        with _raw_patch(api, token, url, 0, len(data)) as sock:
            sock.sendall(data[:2 * MB])
            _wait_for(client, url, lambda offset: offset > 0)  # the first PATCH is writing
            second = _patch(client, url, data, 0)
            sock.sendall(data[2 * MB:])
            reply = sock.recv(4096).decode()
        assert second.status_code == 423 and second.headers["retry-after"] == "1"
        assert reply.startswith("HTTP/1.1 204")
        assert client.get(url).json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_location_method_override_and_the_root_path(api: Api, connection: str, pg_dsn: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from engine.service.app import create_app

    monkeypatch.setenv("BICONIC_HOME", str(tmp_path))

    token = api.token(connection)
    with api.client(token) as client:
        made = client.post("/v1/uploads", headers={**TUS, "Upload-Length": "4"})
        assert made.headers["location"].startswith(f"{api.url}/v1/uploads/")
        proxied = client.post("/v1/uploads", headers={**TUS, "Upload-Length": "0", "X-Forwarded-Proto": "https",
                                                      "Host": "files.example.com"})
        assert proxied.headers["location"].startswith("https://files.example.com/v1/uploads/")
        empty = client.get(urlsplit(proxied.headers["location"]).path).json()
        assert empty["complete"] and empty["sha256"] == hashlib.sha256(b"").hexdigest()
        url = urlsplit(made.headers["location"]).path
        via_post = client.post(url, content=b"abcd", headers={**CHUNK, "Upload-Offset": "0",
                                                               "X-HTTP-Method-Override": "PATCH"})
        assert via_post.status_code == 204 and client.get(url).json()["complete"]
    with TestClient(create_app(pg_dsn, root_path="/biconic")) as local:
        behind = local.post("/v1/uploads", headers={**TUS, "Upload-Length": "4", "Authorization": f"Bearer {token}"})
    assert behind.status_code == 201 and behind.headers["location"].startswith("http://testserver/biconic/v1/uploads/")


@pytest.mark.slow
def test_a_1gb_upload_keeps_the_servers_memory_flat(api: Api, connection: str) -> None:
    import threading

    import psutil

    server = psutil.Process(api.proc.pid)

    def rss() -> int:
        return sum(p.memory_info().rss for p in (server, *server.children(recursive=True)))

    size, block = 1024 * MB, _bytes(MB, seed=9)
    with api.client(api.token(connection)) as client:
        warm = _create(client, MB)  # the first upload's imports and buffers are not what is measured
        assert _patch(client, warm, block, 0).status_code == 204
        url = _create(client, size, filename="big.bin")
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(rss())
                stop.wait(0.2)

        before = rss()
        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        try:
            sent = client.patch(url, content=(block for _ in range(size // MB)), timeout=600,
                                headers={**CHUNK, "Upload-Offset": "0", "Content-Length": str(size)})
        finally:
            seconds = time.perf_counter() - started
            stop.set()
            sampler.join()
        state = client.get(url).json()
        assert client.delete(url, headers=TUS).status_code == 204
    expected = hashlib.sha256()
    for _ in range(size // MB):
        expected.update(block)
    peak = max(samples)
    print(f"\n1 GB upload in one PATCH: {size / MB / seconds:.0f} MB/s ({seconds:.1f} s, SHA-256 included); "
          f"server RSS before {before / MB:.0f} MB, peak {peak / MB:.0f} MB (+{(peak - before) / MB:.1f} MB), "
          f"{len(samples)} samples")
    assert sent.status_code == 204 and state["complete"] and state["sha256"] == expected.hexdigest()
    assert peak - before < 60 * MB


def test_an_upload_larger_than_the_free_space_is_refused(pg_dsn: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from engine.service.tokens import create_token

    monkeypatch.setenv("BICONIC_HOME", str(tmp_path))
    caller = verify_token(pg_dsn, create_token(pg_dsn, connection_id=str(uuid.uuid4()))["token"])
    assert caller is not None
    free = shutil.disk_usage(tmp_path).free
    monkeypatch.setenv("BICONIC_UPLOAD_MAX_MB", str(free // MB + 10))
    with pytest.raises(ProblemError) as refused:
        upload_store.create_upload(pg_dsn, caller, length=free + MB, metadata={})
    assert refused.value.status == 413 and "MB free" in refused.value.detail
    assert list((tmp_path / "uploads" / "tus").iterdir()) == []


@pytest.mark.parametrize("largest", [0, 5, 10, 99, 100, 250, 1000, 2999])
def test_up_to_matches_exactly_the_numbers_from_0_to_its_largest(largest: int) -> None:
    from engine.service.uploads import up_to

    pattern = re.compile(up_to(largest))
    assert [n for n in range(4000) if pattern.fullmatch(str(n))] == list(range(largest + 1))
    assert not pattern.fullmatch("007") and not pattern.fullmatch("-1") and not pattern.fullmatch("")


def test_a_client_gone_silent_mid_chunk_frees_its_upload_after_the_read_timeout(api: Api, connection: str,
                                                                                tmp_path: Path) -> None:
    server = start_server({**api.env, "BICONIC_READ_TIMEOUT": "1"}, tmp_path)
    try:
        token = server.token(connection)
        data = _bytes(1000)
        with server.client(token, headers=TUS) as client:
            url = _create(client, len(data))
            with _raw_patch(server, token, url, 0, len(data)) as silent:
                silent.sendall(data[:10])  # then nothing more, and the connection stays open
                deadline = time.monotonic() + 20
                # 423 while the silent PATCH holds the upload; 409 if this one came first (the 10 bytes not on disk)
                while (resumed := _patch(client, url, data[10:], 10)).status_code in (409, 423):
                    assert time.monotonic() < deadline, "the silent PATCH kept its lock"
                    time.sleep(0.2)
            assert resumed.status_code == 204 and _offset(client, url) == len(data)
            assert client.get(url).json()["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        stop(server.proc)
