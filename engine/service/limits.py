"""What a JSON request body must be: JSON (415 otherwise) and at most ``BICONIC_API_MAX_BODY_KB`` (413), both
answered as problems before the application sees the request.

A declared ``Content-Length`` past the cap is refused before a byte is read; a chunked body is read up to the
cap and refused there (so memory stays bounded by the cap), else handed on whole. Starlette's own limit answers
in plain text, and an error raised while FastAPI reads the body becomes a 400, hence this middleware. Upload
chunks (``/v1/uploads``) are exempt: the tus router streams them to disk against the upload's declared length.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.service.problems import problem

__all__ = ["BodyLimit"]

_EXEMPT = "/v1/uploads"
_WITH_BODY = ("POST", "PUT", "PATCH")


class BodyLimit:
    """ASGI middleware: JSON bodies of at most ``max_bytes`` outside the upload routes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes // 1024} KB (BICONIC_API_MAX_BODY_KB)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route(scope).startswith(_EXEMPT):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if not (declared not in (None, b"0") or b"transfer-encoding" in headers):
            await self.app(scope, receive, send)
            return
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope.get("method") in _WITH_BODY and kind != b"application/json" and not kind.endswith(b"+json"):
            await problem(415, f"the request body must be application/json, not {kind.decode('latin-1') or 'untyped'}"
                          )(scope, receive, send)
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await problem(413, self._too_large())(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await problem(413, self._too_large())(scope, receive, send)
                return
            more = bool(message.get("more_body", False))
        await self.app(scope, _replay(bytes(body), receive), send)


def _route(scope: Scope) -> str:
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return path[len(root):] if root and path.startswith(root) else path


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
