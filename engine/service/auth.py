"""Who is calling: a bearer token, checked on every request, and the connection it may touch.

The connection a call reads or writes comes from the token, never from the request: a connection's token that
names another connection is refused (403); only an admin token may pick a connection (``?connection_id=``) or
see all of them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from engine.ids import ConnectionId, parse_connection_id
from engine.service.problems import ProblemError
from engine.service.tokens import TokenInfo, verify_token

__all__ = ["Admin", "Caller", "Writer", "dsn_of", "scoped_connection"]

_bearer = HTTPBearer(auto_error=False, description="an API token made by `biconic tokens create`")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="biconic"'}


def dsn_of(request: Request) -> str:
    """The warehouse the service runs on (resolved once, when the app was made)."""
    return str(request.app.state.dsn)


def _caller(request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> TokenInfo:
    if credentials is None or not credentials.credentials:
        raise ProblemError(401, "a bearer token is required (Authorization: Bearer bic_...; "
                                "biconic tokens create makes one)", headers=_CHALLENGE)
    info = verify_token(dsn_of(request), credentials.credentials)
    if info is None:
        raise ProblemError(401, "the token is unknown or revoked", headers=_CHALLENGE)
    request.state.caller = info
    return info


def _writer(caller: Annotated[TokenInfo, Depends(_caller)]) -> TokenInfo:
    if caller.scope == "read":
        raise ProblemError(403, "this token may only read: uploads and imports need a write token")
    return caller


def _admin(caller: Annotated[TokenInfo, Depends(_caller)]) -> TokenInfo:
    if not caller.is_admin:
        raise ProblemError(403, "only an admin token may do this")
    return caller


#: any valid token
Caller = Annotated[TokenInfo, Depends(_caller)]
#: a write or admin token
Writer = Annotated[TokenInfo, Depends(_writer)]
#: an admin token
Admin = Annotated[TokenInfo, Depends(_admin)]


def scoped_connection(caller: TokenInfo, asked: Any = None) -> ConnectionId | None:
    """The connection a call may touch: the token's own; for an admin token the one asked for, or ``None`` (all).
    A connection's token that asks for another connection is refused."""
    if asked is None or asked == "":
        return None if caller.is_admin else caller.connection_id
    try:
        wanted = parse_connection_id(asked)
    except ValueError as exc:
        if not caller.is_admin:  # not its own id, whatever else it is
            raise ProblemError(403, "this token belongs to another connection") from exc
        raise ProblemError(400, f"connection_id: {exc}") from exc
    if not caller.is_admin and str(wanted) != str(caller.connection_id):
        raise ProblemError(403, "this token belongs to another connection")
    return wanted
