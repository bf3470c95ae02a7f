"""API tokens: made once, shown once, stored only as their SHA-256, revoked by id.

A token is ``bic_`` + 43 URL-safe characters (256 random bits), so a plain SHA-256 is a safe way to store it (no
salt or slow hash is needed against guessing 256 bits). A token is ``read``, ``write`` (read + uploads and
imports) or ``admin`` (everything, every connection, raw SQL); a read or write token belongs to one connection.

>>> made = create_token("postgresql://...", connection_id="3f2504e0-4f89-11d3-9a0c-0305e82c3301")  # doctest: +SKIP
>>> made["token"]  # doctest: +SKIP
'bic_...'
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from engine.errors import BiconicError, SpecError
from engine.ids import ConnectionId, parse_connection_id
from engine.postgres.meta_jobs import run_with_tables

__all__ = ["SCOPES", "Scope", "TokenInfo", "TokenNotFoundError", "create_token", "list_tokens", "revoke_token",
           "verify_token"]

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
_PREFIX = "bic_"
_TABLE = """CREATE TABLE IF NOT EXISTS biconic.api_tokens (
    token_id uuid PRIMARY KEY, token_hash text NOT NULL UNIQUE, connection_id text, scope text NOT NULL,
    note text, created_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz)"""
_ready: set[str] = set()


class TokenNotFoundError(BiconicError):
    """No token has this id."""
    exit_code = 2


@dataclass(frozen=True)
class TokenInfo:
    """Who a request is: the token's id, its connection (``None`` for admin) and its scope."""
    token_id: str
    connection_id: ConnectionId | None
    scope: Scope

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


def _run(dsn: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    return run_with_tables(dsn, [_TABLE], _ready, sql, params)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(dsn: str, *, connection_id: Any = None, scope: str = "write",
                 note: str | None = None) -> dict[str, Any]:
    """Make a token; the returned ``token`` is the only copy there will ever be."""
    if scope not in SCOPES:
        raise SpecError("--scope", f"expected one of {', '.join(SCOPES)}, got {scope!r}")
    if scope == "admin" and connection_id is not None:
        raise SpecError("--connection", "an admin token sees every connection: make it without --connection")
    if scope != "admin" and connection_id is None:
        raise SpecError("--connection", f"a {scope} token belongs to one connection: give --connection ID")
    try:
        connection = None if connection_id is None else parse_connection_id(connection_id)
    except ValueError as exc:
        raise SpecError("--connection", str(exc)) from exc
    token = _PREFIX + secrets.token_urlsafe(32)
    token_id = str(uuid.uuid4())
    _run(dsn, "INSERT INTO biconic.api_tokens (token_id, token_hash, connection_id, scope, note) "
              "VALUES ($1::uuid, $2, $3, $4, $5)",
         [token_id, _digest(token), None if connection is None else str(connection), scope, note])
    return {"token": token, "token_id": token_id, "connection_id": connection, "scope": scope}


def revoke_token(dsn: str, token_id: str) -> bool:
    """Revoke a token by its id (or the token itself); False if it was already revoked."""
    if token_id.startswith(_PREFIX):
        found = _run(dsn, "SELECT token_id::text FROM biconic.api_tokens WHERE token_hash = $1", [_digest(token_id)])
    else:
        try:
            found = _run(dsn, "SELECT token_id::text FROM biconic.api_tokens WHERE token_id = $1::uuid",
                         [str(uuid.UUID(token_id))])
        except ValueError:
            found = []
    if not found:
        raise TokenNotFoundError(f"no token {token_id!r} (biconic tokens list shows their ids)")
    done = _run(dsn, "UPDATE biconic.api_tokens SET revoked_at = now() "
                     "WHERE token_id = $1::uuid AND revoked_at IS NULL RETURNING 1", [found[0][0]])
    return bool(done)


def list_tokens(dsn: str) -> list[dict[str, Any]]:
    """Every token's id, connection, scope, note and dates (never the token)."""
    rows = _run(dsn, "SELECT token_id::text, connection_id, scope, note, created_at, revoked_at "
                     "FROM biconic.api_tokens ORDER BY created_at")
    return [{"token_id": t, "connection_id": c, "scope": s, "note": n, "created_at": _iso(made),
             "revoked_at": _iso(gone)} for t, c, s, n, made, gone in rows]


def verify_token(dsn: str, token: str) -> TokenInfo | None:
    """The token's owner, or None if it is unknown or revoked."""
    if not token.startswith(_PREFIX) or len(token) > 200:
        return None
    rows = _run(dsn, "SELECT token_id::text, connection_id, scope FROM biconic.api_tokens "
                     "WHERE token_hash = $1 AND revoked_at IS NULL", [_digest(token)])
    if not rows:
        return None
    token_id, connection, scope = rows[0]
    return TokenInfo(token_id, None if connection is None else parse_connection_id(connection), scope)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
