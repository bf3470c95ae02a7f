"""The platform's whole path over HTTP: upload a file in parts with a cut in the middle, resume, import it,
follow the events to ``done``, read the quarantine and the dataset; the rows equal a direct ``biconic load``."""

from __future__ import annotations

import base64
import hashlib
import socket
import urllib.parse
from pathlib import Path

import polars as pl
import pytest

import engine
from tests.jobs.conftest import Worker
from tests.service.conftest import Api
from tests.service.sse import events
from tests.service.test_imports import RULES, with_blanks

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TUS = {"Tus-Resumable": "1.0.0"}


def cut_patch(api: Api, token: str, location: str, offset: int, data: bytes, sent: int) -> None:
    """A PATCH that announces all of ``data`` but sends only ``sent`` bytes, then drops the connection."""
    url = urllib.parse.urlsplit(urllib.parse.urljoin(api.url, location))
    head = (f"PATCH {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw:
        raw.sendall(head + data[:sent])


def test_upload_cut_resume_import_follow_and_read(api: Api, api_worker: Worker, tmp_path: Path, table: str,
                                                  connection: str) -> None:
    path = with_blanks(tmp_path / "orders.csv", 3000, 100)
    data = path.read_bytes()
    token = api.token(connection)
    with api.client(token) as client:
        client.headers.update(TUS)
        made = client.post("/v1/uploads", headers={
            "Upload-Length": str(len(data)), "Upload-Metadata": "filename " + base64.b64encode(b"orders.csv").decode()})
        assert made.status_code == 201, made.text
        location = made.headers["Location"]
        upload_id = location.rstrip("/").rsplit("/", 1)[1]
        cut_patch(api, token, location, 0, data, len(data) // 2)
        offset = int(client.head(location).headers["Upload-Offset"])
        assert 0 <= offset <= len(data) // 2
        done = client.patch(location, content=data[offset:], headers={
            "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        assert done.status_code == 204 and int(done.headers["Upload-Offset"]) == len(data)
        assert client.get(location).json()["sha256"] == hashlib.sha256(data).hexdigest()
        queued = client.post("/v1/imports", json={"upload_id": upload_id, "into": table,
                                                  "partition_by": "created_at:month", "spec": RULES})
        assert queued.status_code == 202, queued.text
        job = queued.json()["job_id"]
        stream = events(client, f"/v1/imports/{job}/events")
        assert stream[-1][0] == "done", stream[-1][1]["error"]
        state = client.get(f"/v1/imports/{job}").json()
        rejected = client.get(f"/v1/imports/{job}/quarantine", params={"limit": 1000}).json()["rows"]
        info = client.get(f"/v1/datasets/{table}").json()
    assert (state["rows_loaded"], state["rows_quarantined"]) == (2970, 30)
    assert [r["row_number"] for r in rejected] == list(range(2, 3001, 100))
    assert {r["source"] for r in rejected} == {"orders.csv"} and info["rows_by_connection"] == {connection: 2970}
    direct = f"{table}_direct"
    engine.load(path, into=direct, connection_id=connection, partition_by="created_at:month", spec=RULES,
                dsn=api.dsn, archive="off")
    served = engine.query(f"SELECT id, created_at, amount, status, connection_id FROM {table} ORDER BY id",
                          dsn=api.dsn, cache=False)
    loaded = engine.query(f"SELECT id, created_at, amount, status, connection_id FROM {direct} ORDER BY id",
                          dsn=api.dsn, cache=False)
    assert served.height == 2970 and served.equals(loaded)
    assert isinstance(served, pl.DataFrame)
