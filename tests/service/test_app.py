"""The served application: OpenAPI, docs, tokens, problem answers."""

from __future__ import annotations

import pytest

from tests.service.conftest import Api

pytestmark = pytest.mark.postgres


def test_the_openapi_document_and_the_docs_are_served(api: Api) -> None:
    with api.client() as client:
        spec = client.get("/openapi.json")
        docs = client.get("/docs")
    assert spec.status_code == 200 and spec.json()["info"]["title"] == "Biconic Engine"
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_no_token_an_unknown_token_and_a_revoked_token_get_401_problems(api: Api, connection: str) -> None:
    from engine.service.tokens import revoke_token

    token = api.token(connection)
    with api.client() as anonymous, api.client("bic_not-a-token") as unknown, api.client(token) as valid:
        assert valid.get("/v1/datasets").status_code == 200
        for client in (anonymous, unknown):
            answer = client.get("/v1/datasets")
            assert answer.status_code == 401
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["status"] == 401 and "token" in answer.json()["detail"]
        revoke_token(api.dsn, token)
        revoked = valid.get("/v1/datasets")
    assert revoked.status_code == 401 and revoked.json()["detail"] == "the token is unknown or revoked"


def test_an_unknown_path_and_a_wrong_method_are_problems_too(api: Api) -> None:
    with api.client() as client:
        missing = client.get("/v1/nothing-here")
        wrong = client.put("/healthz")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert wrong.status_code == 405 and wrong.json()["title"] == "Method not allowed"
