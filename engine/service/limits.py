"""The cap on a request body, answered as a problem: a declared ``Content-Length`` past it is refused before a
byte is read, and a body that grows past it (chunked) stops being read there.

Starlette's own limit answers in plain text, so the API keeps this one. Upload chunks (``/v1/uploads``) are
exempt: the tus router streams them to disk and checks them against the upload's declared length.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.service.problems import ProblemError, problem

__all__ = ["BodyLimit"]

_EXEMPT = "/v1/uploads"


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of body per request outside the upload routes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes // 1024} KB (BICONIC_API_MAX_BODY_KB)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        route = path[len(root):] if root and path.startswith(root) else path
        if scope["type"] != "http" or route.startswith(_EXEMPT):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await problem(413, self._detail())(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ProblemError(413, self._detail())
            return message

        await self.app(scope, counted, send)
