"""REST endpoints (JSON over HTTP) as sources: every page of one, spooled, as one partition.

>>> engine.load("https://api.example.com/v1/orders", into="orders", partition_by="updated_at:month",
...             options={"records": "data", "auth": {"type": "bearer", "token_env": "ORDERS_TOKEN"},
...                      "pagination": {"style": "cursor", "cursor_path": "meta.next"}})  # doctest: +SKIP

``records`` points at the list of records in each response (the body itself when it is a list); ``pagination``
says how to get the next page (:mod:`~engine.sources.api.paginate`); auth, retries and secrets are the HTTP
client's (:mod:`~engine.sources.api.http`); spooling, flattening, time fields and watermarks are shared with
GraphQL (:mod:`~engine.sources.api.endpoint`). Options are checked by :class:`~engine.sources.api.options.RestOptions`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.sources.api.endpoint import EndpointSource
from engine.sources.api.http import HttpClient
from engine.sources.api.options import COMMON_OPTIONS, RestOptions, check_url, pagination_text, parse
from engine.sources.api.paginate import Page, Paginator, paginator
from engine.sources.api.records import MISSING, describe, get_path

if TYPE_CHECKING:
    import httpx

__all__ = ["OPTIONS", "RestSource", "open_rest"]

#: ``rest`` options (``biconic sources``): option -> one-line description
OPTIONS: dict[str, str] = {
    "records": "dotted path to the list of records in each response (e.g. data.items; default: the body)",
    "params": "query parameters sent with every request",
    "pagination.style": "none | page | offset | cursor | link | next_url (default none)",
    "pagination.page_param": "page: page number parameter (default page)",
    "pagination.start": "page: first page number (default 1); offset: first offset (default 0)",
    "pagination.size_param": "page: page size parameter (optional)",
    "pagination.size": "page: page size sent in size_param",
    "pagination.total_pages_path": "page: dotted path to the total page count (else stop on an empty page)",
    "pagination.offset_param": "offset: offset parameter (default offset)",
    "pagination.limit_param": "offset: limit parameter (default limit)",
    "pagination.limit": "offset: records per page (default 100)",
    "pagination.total_path": "offset: dotted path to the total record count (else stop on an empty page)",
    "pagination.cursor_path": "cursor: dotted path to the next cursor in the body (required)",
    "pagination.cursor_param": "cursor: parameter the cursor is sent in (default cursor)",
    "pagination.next_path": "next_url: dotted path to the next page's URL in the body (required)",
    "incremental_param": "incremental: query parameter receiving the stored watermark (e.g. updated_since)",
    **COMMON_OPTIONS,
}


@dataclass(frozen=True, kw_only=True, repr=False)
class RestSource(EndpointSource):
    """A JSON REST endpoint, every page of it, as one partition (see the module docstring and ``OPTIONS``).

    >>> src = open_rest("https://api.example.com/v1/orders", {"records": "data.items",
    ...                 "pagination": {"style": "page", "total_pages_path": "meta.pages"}})  # doctest: +SKIP
    >>> src.scan(src.partitions()[0]).collect()  # doctest: +SKIP
    """

    options: RestOptions

    def _identity(self) -> list[str]:
        o = self.options
        return [self.url, o.records or "", json.dumps(o.params, sort_keys=True, default=str),
                pagination_text(o.pagination), o.incremental_param or "", str(o.flatten)]

    def _paginator(self, sent: str | None) -> Paginator:
        params: dict[str, Any] = dict(self.options.params)
        if self.options.incremental_param and sent is not None:
            params[self.options.incremental_param] = sent
        return paginator(self.options.pagination, self.url, params)

    def _page(self, http: HttpClient, response: httpx.Response, number: int) -> Page:
        shown = http.secrets.url(response.request.url)
        body = http.json(response, number)
        return Page(url=str(response.url), shown=shown, body=body, records=self._records_of(http, body, number, shown),
                    next_link=response.links.get("next", {}).get("url"))

    def _records_of(self, http: HttpClient, body: Any, page: int, url: str) -> list[Any]:
        records = self.options.records
        if records is None:
            if isinstance(body, list):
                return body
            lists = [k for k, v in body.items() if isinstance(v, list)] if isinstance(body, Mapping) else []
            hint = f"set records to {' or '.join(map(repr, lists))}" if lists else "set records to its path"
            raise http.fail(page, url, f"the response is {describe(body)}, not a list of records; {hint}")
        found = get_path(body, records)
        if found is None:
            return []
        if found is MISSING:
            raise http.fail(page, url, f"no {records!r} in the response ({describe(body)}); check records")
        if not isinstance(found, list):
            raise http.fail(page, url, f"{records!r} is {describe(found)}, not a list of records")
        return found


def open_rest(url: str, options: Mapping[str, Any]) -> RestSource:
    """A :class:`RestSource` from a URL and spec options (unknown or wrong options raise :class:`SpecError`).

    >>> open_rest("https://api.example.com/v1/orders", {"records": "data"})  # doctest: +SKIP
    """
    checked = parse(RestOptions, options)
    return RestSource(url=check_url(url), options=checked)
