"""Bad requests get one clear problem+json line and store nothing; a proxy's path prefix is honoured."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.service.conftest import Api, service_env, start_server, stop

pytestmark = pytest.mark.postgres


def jobs_of(api: Api, connection: str) -> int:
    from engine.jobs.client import list_jobs

    return len(list_jobs(dsn=api.dsn, connection_id=connection))


@pytest.mark.parametrize(("body", "headers", "status", "says"), [
    (b"{not json", {"Content-Type": "application/json"}, 400, "JSON"),
    (b'{"into": "t", "upload_id": "x"}', {"Content-Type": "text/plain"}, 415, "application/json"),
    (b'{"into": "t", "upload_id": "x"}', {}, 415, "application/json"),
    (b'["into", "t"]', {"Content-Type": "application/json"}, 422, "body"),
    (b'{"into": "t", "upload_id": "x", "mode": "upsert"}', {"Content-Type": "application/json"}, 422, "mode"),
    (b'{"into": "t", "upload_id": "x", "surprise": 1}', {"Content-Type": "application/json"}, 422, "surprise"),
])
def test_a_malformed_import_request_is_a_problem_and_queues_nothing(api: Api, connection: str, body: bytes,
                                                                    headers: dict[str, str], status: int,
                                                                    says: str) -> None:
    with api.client(api.token(connection)) as client:
        answer = client.post("/v1/imports", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert set(problem) == {"type", "title", "status", "detail"} and says in problem["detail"]
    assert "\n" not in problem["detail"] and "Traceback" not in answer.text
    assert jobs_of(api, connection) == 0


def test_an_oversized_body_is_refused_before_it_is_read_whole(api: Api, connection: str) -> None:
    huge = b'{"into": "t", "upload_id": "' + b"x" * (2 * 2**20) + b'"}'
    with api.client(api.token(connection)) as client:
        answer = client.post("/v1/imports", content=huge, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.headers["content-type"] == "application/problem+json"
    assert jobs_of(api, connection) == 0


def test_an_oversized_chunked_body_is_refused_where_it_passes_the_cap(api: Api, connection: str) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"into": "t", "upload_id": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    with api.client(api.token(connection)) as client:
        answer = client.post("/v1/imports", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "BICONIC_API_MAX_BODY_KB" in answer.json()["detail"]
    assert jobs_of(api, connection) == 0


def test_a_page_past_the_limit_is_refused(api: Api, connection: str) -> None:
    with api.client(api.token(connection)) as client:
        answer = client.get("/v1/imports", params={"limit": 100_000})
    assert answer.status_code == 422 and "limit" in answer.json()["detail"]


def test_behind_a_proxy_the_root_path_is_in_the_documents_and_either_path_is_served(
        api: Api, tmp_path: Path, connection: str) -> None:
    server = start_server({**api.env, "BICONIC_HOME": str(tmp_path / "home")}, tmp_path, "--root-path", "/biconic")
    try:
        token = {"Authorization": f"Bearer {api.token(connection)}"}
        spec = httpx.get(f"{server.url}/openapi.json").json()
        stripped = httpx.get(f"{server.url}/v1/imports", headers=token)  # a proxy that strips the prefix
        kept = httpx.get(f"{server.url}/biconic/v1/imports", headers=token)  # one that keeps it
        docs = httpx.get(f"{server.url}/docs").text
    finally:
        stop(server.proc)
    assert spec["servers"] == [{"url": "/biconic"}] and "/biconic/openapi.json" in docs
    assert stripped.status_code == kept.status_code == 200


def test_service_env_is_what_the_fixtures_share() -> None:
    env = service_env("postgresql://x", "redis://y/1", Path("/tmp/h"))
    assert (env["BICONIC_PG_DSN"], env["BICONIC_BROKER_URL"], env["BICONIC_HOME"]) == ("postgresql://x",
                                                                                       "redis://y/1", "/tmp/h")


def test_a_browser_on_an_allowed_origin_may_upload_and_read_the_tus_headers(api: Api, tmp_path: Path,
                                                                            connection: str) -> None:
    origin = "https://app.example.com"
    server = start_server({**api.env, "BICONIC_API_CORS_ORIGINS": origin}, tmp_path)
    try:
        preflight = httpx.options(f"{server.url}/v1/uploads/x", headers={
            "Origin": origin, "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization,tus-resumable,upload-offset,content-type"})
        made = httpx.post(f"{server.url}/v1/uploads", headers={
            "Origin": origin, "Authorization": f"Bearer {server.token(connection)}", "Tus-Resumable": "1.0.0",
            "Upload-Length": "10"})
        elsewhere = httpx.options(f"{server.url}/v1/uploads/x", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "PATCH"})
    finally:
        stop(server.proc)
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
    assert made.status_code == 201 and "Location" in made.headers["access-control-expose-headers"]
    assert "access-control-allow-origin" not in elsewhere.headers
