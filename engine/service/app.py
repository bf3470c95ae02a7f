"""The FastAPI application of ``biconic serve``.

>>> app = create_app()  # doctest: +SKIP

Made by a factory, so each uvicorn worker process builds its own (``uvicorn --factory``). JSON bodies are capped
at ``BICONIC_API_MAX_BODY_KB`` (:mod:`engine.service.limits`); upload chunks are checked by the tus router.
Behind a reverse proxy that serves the API under a path (``/biconic``), pass that path as ``root_path``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.logs import log_context
from engine.metrics import package_version
from engine.postgres.pool import keep_idle
from engine.postgres.server import resolve_dsn
from engine.service.limits import BodyLimit
from engine.service.problems import install_handlers
from engine.settings import settings

__all__ = ["TUS_EXPOSED", "create_app"]

#: the headers a browser client must read from tus answers
TUS_EXPOSED = ("Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Upload-Metadata",
               "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm")

_DESCRIPTION = """Uploads (tus 1.0), imports (jobs), and reads of the datasets they fill.

Every call takes `Authorization: Bearer <token>` (made by `biconic tokens create`). A read or write token
belongs to one connection: it sees and touches only that connection's uploads, imports, quarantined rows and
rows. Errors are RFC 9457 `application/problem+json`."""


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Bound the threads that answer blocking requests, and keep as many pooled connections: each thread
    holds at most one job connection and one pooled one, so a server process uses at most twice
    ``BICONIC_API_THREADS`` PostgreSQL connections however many clients call at once."""
    threads = settings().api_threads
    anyio.to_thread.current_default_thread_limiter().total_tokens = threads
    keep_idle(threads)
    yield


_IMPORT_PATH = re.compile(r"/imports/([A-Za-z0-9-]{1,64})(?:/|$)")


class _ImportIds:
    """A request about one import (``/imports/{job_id}...``): its log lines carry that job id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _IMPORT_PATH.search(scope.get("path", "")) if scope["type"] == "http" else None
        with log_context(job_id=found.group(1) if found else None):
            await self.app(scope, receive, send)


def create_app(dsn: str | None = None, *, root_path: str | None = None) -> FastAPI:
    """The service on the warehouse ``dsn`` (default: ``BICONIC_PG_DSN``, else the embedded server)."""
    from engine.service import datasets, imports, metrics, uploads

    app = FastAPI(title="Biconic Engine", version=package_version(), description=_DESCRIPTION, lifespan=_lifespan,
                  root_path=root_path if root_path is not None else settings().api_root_path)
    app.state.dsn = resolve_dsn(dsn)
    install_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings().api_max_body_kb * 1024)
    origins = [o.strip() for o in settings().api_cors_origins.split(",") if o.strip()]
    if origins:  # the platform's UI in a browser (tus-js-client, Uppy) on another origin
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                           expose_headers=list(TUS_EXPOSED), max_age=600)
    app.add_middleware(_ImportIds)
    app.include_router(imports.router)
    app.include_router(datasets.router)
    app.include_router(uploads.router)
    app.include_router(metrics.router)

    @app.get("/healthz", tags=["service"], summary="Liveness: the service answers")
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    return app
