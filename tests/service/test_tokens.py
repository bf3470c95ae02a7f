"""``biconic tokens``: a token is shown once, stored only hashed, scoped, and revoked by id."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from engine.cli import cli
from engine.service.tokens import list_tokens, verify_token

pytestmark = pytest.mark.postgres


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_a_token_is_shown_once_stored_hashed_and_revoked_by_id(pg_dsn: str, sql) -> None:  # type: ignore[no-untyped-def]
    made = json.loads(run("tokens", "create", "--connection", "3F2504E0-4F89-11D3-9A0C-0305E82C3301", "--scope",
                          "read", "--note", "dashboard", "--json", "--dsn", pg_dsn))
    token = made["token"]
    assert token.startswith("bic_") and len(token) > 40
    assert made["connection_id"] == "3f2504e0-4f89-11d3-9a0c-0305e82c3301" and made["scope"] == "read"
    stored = sql("SELECT token_hash, connection_id FROM biconic.api_tokens WHERE token_id = $1::uuid",
                 [made["token_id"]])
    assert stored[0][0] != token and token not in json.dumps([list(r) for r in sql("SELECT * FROM biconic.api_tokens")],
                                                            default=str)
    info = verify_token(pg_dsn, token)
    assert info is not None
    assert (info.connection_id, info.scope, info.is_admin) == (made["connection_id"], "read", False)
    listed = run("tokens", "list", "--dsn", pg_dsn)
    assert made["token_id"] in listed and "dashboard" in listed and token not in listed
    assert "revoked" in run("tokens", "revoke", made["token_id"], "--dsn", pg_dsn)
    assert verify_token(pg_dsn, token) is None
    assert "already revoked" in run("tokens", "revoke", made["token_id"], "--dsn", pg_dsn)
    assert [t["revoked_at"] is not None for t in list_tokens(pg_dsn) if t["token_id"] == made["token_id"]] == [True]


@pytest.mark.parametrize(("args", "says"), [
    (["--scope", "admin", "--connection", "7"], "an admin token sees every connection"),
    (["--scope", "write"], "a write token belongs to one connection"),
    (["--connection", "bad id with spaces"], "expected a connection id"),
])
def test_a_token_that_cannot_be_made_says_why(pg_dsn: str, args: list[str], says: str) -> None:
    result = CliRunner().invoke(cli, ["tokens", "create", *args, "--dsn", pg_dsn])
    assert result.exit_code == 2 and says in result.output, result.output


def test_revoking_an_unknown_token_is_a_clear_error(pg_dsn: str) -> None:
    result = CliRunner().invoke(cli, ["tokens", "revoke", "00000000-0000-0000-0000-000000000000", "--dsn", pg_dsn])
    assert result.exit_code == 2 and "no token" in result.output
