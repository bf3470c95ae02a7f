"""The tenancy matrix: connection B's token against every endpoint, aimed at connection A's upload, import,
quarantine and rows, gets 403 or 404 (or only B's own, empty, share) and never a byte of A's.

The matrix is checked against the served OpenAPI document: an endpoint added without a row here fails."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.jobs.conftest import Worker
from tests.service.conftest import Api
from tests.service.sse import events
from tests.service.test_imports import RULES, uploaded, with_blanks

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: method, path template, JSON body (``{upload}``, ``{job}``, ``{table}`` filled in), the answers B may get
MATRIX = [
    ("OPTIONS", "/v1/uploads", None, {204, 200}),
    ("POST", "/v1/uploads", None, {400, 413, 201}),  # B may make its own upload: never one of A's
    ("HEAD", "/v1/uploads/{upload}", None, {404}),
    ("GET", "/v1/uploads/{upload}", None, {404}),
    ("PATCH", "/v1/uploads/{upload}", None, {404, 409, 415}),
    ("DELETE", "/v1/uploads/{upload}", None, {404}),
    ("POST", "/v1/imports", {"upload_id": "{upload}", "into": "{table}"}, {404}),
    ("GET", "/v1/imports", None, {200}),
    ("GET", "/v1/imports/{job}", None, {404}),
    ("DELETE", "/v1/imports/{job}", None, {404}),
    ("GET", "/v1/imports/{job}/events", None, {404}),
    ("GET", "/v1/imports/{job}/quarantine", None, {404}),
    ("GET", "/v1/datasets", None, {200}),
    ("GET", "/v1/datasets/{table}", None, {404}),
    ("GET", "/v1/datasets/{table}/latest", None, {404}),
    ("POST", "/v1/datasets/{table}/query", {"aggregates": [{"fn": "count", "as": "n"}]}, {404}),
    ("POST", "/v1/sql", {"sql": "SELECT * FROM {table}"}, {403}),
    ("GET", "/healthz", None, {200}),
]


def fill(text: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        text = text.replace("{" + key + "}", value)
    return text


def test_every_endpoint_is_in_the_matrix(api: Api) -> None:
    with api.client() as client:
        served = {(method.upper(), path) for path, ops in client.get("/openapi.json").json()["paths"].items()
                  for method in ops}
    listed = {(method, path.replace("{upload}", "{upload_id}").replace("{job}", "{job_id}")
               .replace("{table}", "{name}")) for method, path, _, _ in MATRIX}
    assert served - listed == set(), "endpoints without a tenancy case"


def test_connection_b_gets_nothing_of_connection_a(api: Api, api_worker: Worker, tmp_path: Path,
                                                   table: str) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    a_token = api.token(a)
    with api.client(a_token) as client:
        loaded = uploaded(client, with_blanks(tmp_path / "a.csv", 200, 10).read_bytes(), "a.csv")
        job = client.post("/v1/imports", json={"upload_id": loaded, "into": table, "spec": RULES,
                                               "partition_by": "created_at:month"}).json()["job_id"]
        assert events(client, f"/v1/imports/{job}/events")[-1][0] == "done"
        spare = uploaded(client, b"id\n1\n", "spare.csv")  # one to try to delete, patch and import
    names = {"upload": spare, "job": job, "table": table}
    secrets = {a, job, loaded, spare, "a.csv", str(tmp_path)}
    with api.client(api.token(b)) as client:
        for method, template, body, allowed in MATRIX:
            path = fill(template, names)
            json_body = None if body is None else filled(body, names)
            headers = {"Tus-Resumable": "1.0.0"}
            if method == "PATCH":
                headers.update({"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
            if method == "POST" and template == "/v1/uploads":
                headers["Upload-Length"] = "5"
            answer = client.request(method, path, json=json_body, headers=headers,
                                    content=b"x" if method == "PATCH" else None)
            assert answer.status_code in allowed, (method, path, answer.status_code, answer.text)
            asked = path + str(json_body)  # an id B sent may be echoed ("no import <id>"): nothing else of A's
            leaked = [s for s in secrets if s in answer.text and s not in asked]
            assert not leaked, (method, path, leaked)
        assert client.get("/v1/imports").json() == [] and client.get("/v1/datasets").json() == []
    with api.client(a_token) as client:  # A's things are all still there
        assert client.get(f"/v1/uploads/{spare}").json()["complete"] is True
        assert client.get(f"/v1/imports/{job}").json()["rows_loaded"] == 180
        assert len(client.get(f"/v1/imports/{job}/quarantine").json()["rows"]) == 20


def filled(body: dict[str, object], names: dict[str, str]) -> dict[str, object]:
    """``body`` with ``{upload}``-style names filled in its string values."""
    return {k: fill(v, names) if isinstance(v, str) else v for k, v in body.items()}
