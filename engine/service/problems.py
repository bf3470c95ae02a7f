"""Errors as RFC 9457 problem details (``application/problem+json``): a status, a short title and one clear
``detail`` line; never a stack trace or a secret.

Every way a request can fail goes through :func:`problem`: the engine's own errors (by class), FastAPI's
validation errors, Starlette's HTTP errors (404 of an unknown path, 405, 413 of an oversized body) and, last,
anything unexpected (:class:`_LastResort`), which is logged as one line (class and scrubbed message) and
answered with a generic 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.errors import BiconicError, QueryError, SourceError, SpecError, StorageError, TransientError
from engine.redact import redact

__all__ = ["COMMON_PROBLEMS", "PROBLEM_JSON", "Problem", "ProblemError", "install_handlers", "problem",
           "problem_responses"]

log = logging.getLogger("biconic.service")

PROBLEM_JSON = "application/problem+json"
_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
           409: "Conflict", 410: "Gone", 412: "Precondition failed", 413: "Content too large",
           415: "Unsupported media type", 422: "Unprocessable content", 423: "Locked", 429: "Too many requests",
           460: "Checksum mismatch", 500: "Internal server error", 503: "Service unavailable"}


class Problem(BaseModel):
    """RFC 9457 problem details."""
    type: str = "about:blank"
    title: str
    status: int
    detail: str


class ProblemError(Exception):
    """Raised by an endpoint to answer with a problem (and optional headers, e.g. tus's ``Tus-Resumable``)."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The problem+json response of ``status`` with ``detail`` (made one line and stripped of URL passwords)."""
    line = redact(_one_line(detail) or _TITLES.get(status, "Error"))
    body = Problem(title=_TITLES.get(status, "Error"), status=status, detail=line)
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry documenting ``statuses`` as problem details."""
    return {s: {"model": Problem, "description": _TITLES.get(s, "Error"),
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}} for s in statuses}


#: the problems any endpoint may answer (documented on every route, so clients and fuzzers expect them)
COMMON_PROBLEMS = problem_responses(400, 401, 403, 404, 413, 415, 422, 500, 503)


def _status_of(exc: BiconicError) -> int:
    from engine.jobs.client import JobNotFoundError

    if isinstance(exc, JobNotFoundError):
        return 404
    if isinstance(exc, SpecError | QueryError):
        return 400
    if isinstance(exc, TransientError):
        return 503
    if isinstance(exc, SourceError):
        return 422
    if isinstance(exc, StorageError):
        return 507 if "space" in str(exc) else 500
    return 500


def install_handlers(app: FastAPI) -> None:
    """Answer every failure of ``app`` with a problem."""

    @app.exception_handler(ProblemError)
    async def _own(request: Request, exc: ProblemError) -> JSONResponse:
        return problem(exc.status, exc.detail, exc.headers)

    @app.exception_handler(BiconicError)
    async def _engine(request: Request, exc: BiconicError) -> JSONResponse:
        status = _status_of(exc)
        if status >= 500:
            log.warning("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__,
                        redact(_one_line(str(exc))))
        return problem(status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(400 if _is_body_syntax(exc) else 422, _validation_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(request)
        return problem(exc.status_code, detail, headers)

    app.add_middleware(_LastResort)


class _LastResort:
    """Anything no handler answered: one log line (class and scrubbed message, no trace) and a 500 problem.

    A middleware rather than an ``Exception`` handler: Starlette re-raises after such a handler answers, and
    uvicorn then logs the whole traceback (and may cut the connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.error("%s %s failed unexpectedly: %s: %s", scope.get("method"), scope.get("path"),
                      type(exc).__name__, redact(_one_line(str(exc))))
            if not started:
                await problem(500, "the server failed to answer this request; the failure is logged")(
                    scope, receive, send)


def _is_body_syntax(exc: RequestValidationError) -> bool:
    return any(e.get("type") == "json_invalid" for e in exc.errors())


def _validation_line(exc: RequestValidationError) -> str:
    """The first problem of a request, as ``body.into: Field required``."""
    errors = exc.errors()
    if not errors:
        return "the request is not valid"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = str(first.get("msg", "invalid"))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else message + more


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0][:2000] if lines else ""


def _allowed(request: Request) -> str:
    """Every method some route of the app takes at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\x00"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))
