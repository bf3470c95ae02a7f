"""A small Server-Sent Events reader for the tests (httpx streams the lines)."""

from __future__ import annotations

import json
from typing import Any

import httpx


def events(client: httpx.Client, path: str, *, limit: int = 10_000) -> list[tuple[str, Any]]:
    """Every (event, data) of the stream at ``path`` until the server ends it."""
    out: list[tuple[str, Any]] = []
    event, data = "message", []
    with client.stream("GET", path, headers={"Accept": "text/event-stream"}) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                out.append((event, json.loads("\n".join(data))))
                event, data = "message", []
                if len(out) >= limit:
                    break
    return out
