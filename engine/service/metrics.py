"""``GET /metrics``: the Prometheus scrape of the API's processes, for an admin token only.

Admin only because labels carry connection ids (``biconic_running_jobs{connection=...}``): a connection's token
must not learn which other connections exist. Left out of the OpenAPI document: it is for Prometheus, not for
the platform's clients. With ``biconic serve --workers N`` every server process records into one shared folder
(see :func:`engine.metrics.use_multiprocess`), so whichever process answers shows them all.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from engine.metrics import exposition, multiprocess_folder
from engine.service.auth import Admin

__all__ = ["router"]

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def scrape(caller: Admin) -> Response:
    """The text exposition format (``text/plain; version=0.0.4``)."""
    if multiprocess_folder() is not None:
        from engine.metrics_http import forget_dead

        forget_dead()  # a server process that died (uvicorn started another) holds no live gauge
    body, content_type = exposition()
    return Response(body, media_type=content_type)
