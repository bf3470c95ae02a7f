"""``/v1/imports``: a job per import, its state and events, its rejected rows, and tenancy over all of it."""

from __future__ import annotations

import base64
import csv
import uuid
from pathlib import Path

import httpx
import pytest

from tests.jobs.conftest import Worker
from tests.service.conftest import Api
from tests.service.sse import events
from tests.service.test_bad_input import jobs_of
from tests.service.test_datasets import orders

pytestmark = pytest.mark.postgres

RULES = {"rules": [{"not_null": ["status"]}]}


def with_blanks(path: Path, n: int, every: int) -> Path:
    """Orders whose ``status`` is empty on every ``every``-th row (rejected by RULES)."""
    orders(path, n)
    rows = list(csv.reader(path.open()))
    for i, row in enumerate(rows[1:]):
        if i % every == 0:
            row[3] = ""
    with path.open("w", newline="") as out:
        csv.writer(out).writerows(rows)
    return path


def admin_import(api: Api, path: Path, table: str, connection: str, **extra: object) -> str:
    with api.client(api.token(scope="admin")) as client:
        answer = client.post("/v1/imports", json={"source": str(path), "into": table, "connection_id": connection,
                                                  "partition_by": "created_at:month", **extra})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


def test_an_import_streams_its_progress_to_done_and_pages_its_rejected_rows(
        api: Api, api_worker: Worker, tmp_path: Path, table: str, connection: str) -> None:
    job = admin_import(api, with_blanks(tmp_path / "o.csv", 50, 10), table, connection, spec=RULES)
    with api.client(api.token(connection, "read")) as client:
        stream = events(client, f"/v1/imports/{job}/events")
        state = client.get(f"/v1/imports/{job}").json()
        first = client.get(f"/v1/imports/{job}/quarantine", params={"limit": 3}).json()
        second = client.get(f"/v1/imports/{job}/quarantine", params={"offset": 3, "limit": 3}).json()
        download = client.get(f"/v1/imports/{job}/quarantine", params={"format": "csv"})
    assert stream[-1][0] == "done" and all(name == "progress" for name, _ in stream[:-1]), stream
    assert (state["state"], state["rows_in"], state["rows_loaded"], state["rows_quarantined"]) == ("done", 50, 45, 5)
    assert [r["row_number"] for r in first["rows"] + second["rows"]] == [2, 12, 22, 32, 42]
    assert first["next_offset"] == 3 and second["next_offset"] is None
    assert first["rows"][0]["rule"] == "not_null" and first["rows"][0]["values"]["id"] == "0"
    assert download.headers["content-type"].startswith("text/csv") and len(download.text.splitlines()) == 6


def test_another_connections_import_is_404_everywhere_and_its_list_is_its_own(
        api: Api, api_worker: Worker, tmp_path: Path, table: str, connection: str) -> None:
    job = admin_import(api, with_blanks(tmp_path / "o.csv", 20, 5), table, connection, spec=RULES)
    other = str(uuid.uuid4())
    with api.client(api.token(other)) as client:
        for method, path in (("GET", f"/v1/imports/{job}"), ("DELETE", f"/v1/imports/{job}"),
                             ("GET", f"/v1/imports/{job}/events"), ("GET", f"/v1/imports/{job}/quarantine"),
                             ("GET", f"/v1/imports/{job[:8]}")):
            answer = client.request(method, path)
            assert answer.status_code == 404 and connection not in answer.text, (method, path, answer.text)
        assert client.get("/v1/imports").json() == []
        assert client.get("/v1/imports", params={"connection_id": connection}).status_code == 403
    with api.client(api.token(connection, "read")) as client:
        assert [j["job_id"] for j in client.get("/v1/imports").json()] == [job]
        assert client.delete(f"/v1/imports/{job}").status_code == 403  # a read token cancels nothing


def test_a_connection_token_may_not_import_a_path_nor_for_another_connection(api: Api, tmp_path: Path,
                                                                             table: str, connection: str) -> None:
    path = orders(tmp_path / "o.csv", 5)
    with api.client(api.token(connection)) as client:
        by_path = client.post("/v1/imports", json={"source": str(path), "into": table})
        other = client.post("/v1/imports", json={"upload_id": str(uuid.uuid4()), "into": table,
                                                 "connection_id": str(uuid.uuid4())})
        secret = client.post("/v1/imports", json={"upload_id": str(uuid.uuid4()), "into": table,
                                                  "options": {"password_env": "BICONIC_PG_DSN"}})
        neither = client.post("/v1/imports", json={"into": table})
    assert by_path.status_code == 403 and other.status_code == 403
    assert secret.status_code == 400 and "options.password_env" in secret.json()["detail"]
    assert neither.status_code == 422 and "upload_id" in neither.json()["detail"]


def test_a_cancelled_import_says_so(api: Api, tmp_path: Path, table: str, connection: str) -> None:
    job = admin_import(api, orders(tmp_path / "o.csv", 5), table, connection)  # no worker: it stays queued
    with api.client(api.token(connection)) as client:
        cancelled = client.delete(f"/v1/imports/{job}").json()
        again = client.delete(f"/v1/imports/{job}").json()
        stream = events(client, f"/v1/imports/{job}/events")
        failed = client.get("/v1/imports", params={"state": "cancelled"}).json()
    assert cancelled == {"job_id": job, "cancelled": True, "state": "cancelled"}
    assert again["cancelled"] is False and stream == [("cancelled", stream[0][1])]
    assert [j["job_id"] for j in failed] == [job]


def test_a_failed_import_says_why_in_api_words_and_keeps_its_rejected_rows_at_hand(
        api: Api, api_worker: Worker, tmp_path: Path, table: str, connection: str) -> None:
    path = with_blanks(tmp_path / "bad.csv", 2, 1)  # every row breaks the rule: nothing may commit
    job = admin_import(api, path, table, connection, spec=RULES)
    with api.client(api.token(connection, "read")) as client:
        stream = events(client, f"/v1/imports/{job}/events")
        state = client.get(f"/v1/imports/{job}").json()
        listed = client.get("/v1/imports", params={"state": "failed"}).json()
        rejected = client.get(f"/v1/imports/{job}/quarantine").json()
    assert stream[-1][0] == "failed", state
    assert "2 of 2 rows rejected" in state["error"]
    for text in (state["error"], listed[0]["error"], stream[-1][1]["error"]):
        assert str(tmp_path) not in text and "biconic quarantine" not in text, text
        assert f"GET /v1/imports/{job}/quarantine" in text and "bad.csv" in text
    assert [r["row_number"] for r in rejected["rows"]] == [2, 3] and rejected["rows"][0]["source"] == "bad.csv"


def uploaded(client: httpx.Client, data: bytes, name: str = "o.csv") -> str:
    """A finished tus upload of ``data`` (one PATCH); its id."""
    tus = {"Tus-Resumable": "1.0.0"}
    metadata = "filename " + base64.b64encode(name.encode()).decode()
    made = client.post("/v1/uploads", headers={**tus, "Upload-Length": str(len(data)), "Upload-Metadata": metadata})
    done = client.patch(made.headers["Location"], content=data, headers={
        **tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert done.status_code == 204, done.text
    return str(made.headers["Location"]).rstrip("/").rsplit("/", 1)[1]


def test_a_connection_token_loads_only_into_a_plain_dataset_name(api: Api, tmp_path: Path, connection: str) -> None:
    with api.client(api.token(connection)) as client:
        upload = uploaded(client, orders(tmp_path / "o.csv", 3).read_bytes())
        for into in ("other_schema.t", "biconic.api_tokens", "pg_class", "1abc", 'a"b'):
            answer = client.post("/v1/imports", json={"upload_id": upload, "into": into})
            assert answer.status_code == 400 and answer.json()["detail"].startswith("into:"), (into, answer.text)
    with api.client(api.token(scope="admin")) as client:
        assert client.post("/v1/imports", json={"source": "x.csv", "into": "biconic.jobs",
                                                "connection_id": "7"}).status_code == 400
    assert jobs_of(api, connection) == 0
