"""Paging through an endpoint: one small paginator per style, and the loop that drives any of them.

A :class:`Paginator` says which request comes next and, shown the page that came back, whether there is
another. It does no I/O, so each style is a few lines that can be read (and tested) on their own:

=========  ==========================================================================================
style      the next page
=========  ==========================================================================================
none       there is none: one request
page       page number + 1, until an empty page or ``total_pages_path``
offset     offset + the records received, until an empty page or ``total_path``
cursor     the body's ``cursor_path`` sent back in ``cursor_param``, until it is empty
link       the ``Link: <...>; rel="next"`` header's URL
next_url   the URL at the body's ``next_path`` (relative ones resolve against the page's URL)
GraphQL    ``pageInfo.endCursor`` in the cursor variable while ``pageInfo.hasNextPage``
=========  ==========================================================================================

A cursor or next URL seen before stops the fetch with an error instead of looping forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from engine.sources.api.options import (
    CursorPaging,
    LinkPaging,
    NextUrlPaging,
    NoPaging,
    OffsetPaging,
    PagePaging,
    Pagination,
)
from engine.sources.api.records import MISSING, get_path

if TYPE_CHECKING:
    import httpx
    from pydantic import BaseModel

    from engine.sources.api.http import HttpClient

__all__ = ["Connections", "Cursors", "NextLinks", "Offsets", "Page", "PageNumbers", "Paginator", "PagingLoop",
           "Request", "Single", "pages", "paginator"]


@dataclass(frozen=True, kw_only=True)
class Request:
    """What to ask the server for next."""

    url: str
    params: dict[str, Any] = field(default_factory=dict)
    method: Literal["GET", "POST"] = "GET"
    #: the JSON body (GraphQL's query and variables)
    body: Any = None


@dataclass(frozen=True, kw_only=True)
class Page:
    """One page as a paginator sees it."""

    #: the URL it came from, after redirects (relative next links resolve against it)
    url: str
    #: the URL as errors show it (no secrets)
    shown: str
    records: list[Any]
    #: what the paginator reads: the response body (REST) or the connection object (GraphQL)
    body: Any
    #: the ``Link`` header's ``rel="next"`` URL
    next_link: str | None = None


class PagingLoop(Exception):
    """The next page points back to one already read."""


class Paginator(Protocol):
    """Which request comes next, page after page."""

    def request(self) -> Request:
        """The next page's request."""
        ...

    def advance(self, page: Page) -> bool:
        """Move past ``page``; False when it was the last. Raises :class:`PagingLoop` on a repeat."""
        ...


class _Seen:
    """Cursors or URLs already followed."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.keys: set[str] = set()

    def add(self, key: str) -> None:
        if key in self.keys:
            raise PagingLoop(self.message)
        self.keys.add(key)


_LOOP = "the next page points back to a page already read; stopping to avoid a loop (check the pagination settings)"


class Single:
    """Style ``none``: one request."""

    def __init__(self, url: str, params: dict[str, Any], style: NoPaging | LinkPaging | None = None) -> None:
        self._request = Request(url=url, params=params)

    def request(self) -> Request:
        return self._request

    def advance(self, page: Page) -> bool:
        return False


class _Numbered:
    """Page numbers or offsets: on until an empty page, or until the count the body gives is reached."""

    def __init__(self, url: str, params: dict[str, Any], *, start: int, total_path: str | None) -> None:
        self.url = url
        self.params = params
        self.start = self.number = start
        self.total_path = total_path

    def _step(self, page: Page) -> int:
        raise NotImplementedError

    def advance(self, page: Page) -> bool:
        if not page.records:
            return False
        self.number += self._step(page)
        total = get_path(page.body, self.total_path) if self.total_path else None
        reached = isinstance(total, (int, float)) and not isinstance(total, bool) and self.number - self.start >= total
        return not reached


class PageNumbers(_Numbered):
    """Style ``page``: ``?page=1``, ``?page=2``, ... (and the page size, when set)."""

    def __init__(self, url: str, params: dict[str, Any], style: PagePaging) -> None:
        super().__init__(url, params, start=1 if style.start is None else style.start,
                         total_path=style.total_pages_path)
        self.style = style

    def request(self) -> Request:
        query = {**self.params, self.style.page_param: self.number}
        if self.style.size_param and self.style.size:
            query[self.style.size_param] = self.style.size
        return Request(url=self.url, params=query)

    def _step(self, page: Page) -> int:
        return 1


class Offsets(_Numbered):
    """Style ``offset``: ``?offset=0&limit=100``, ``?offset=100&limit=100``, ..."""

    def __init__(self, url: str, params: dict[str, Any], style: OffsetPaging) -> None:
        super().__init__(url, params, start=0 if style.start is None else style.start, total_path=style.total_path)
        self.style = style

    def request(self) -> Request:
        return Request(url=self.url, params={**self.params, self.style.offset_param: self.number,
                                             self.style.limit_param: self.style.limit})

    def _step(self, page: Page) -> int:
        return len(page.records)


class Cursors:
    """Style ``cursor``: the body's next cursor, sent back as a parameter."""

    def __init__(self, url: str, params: dict[str, Any], style: CursorPaging) -> None:
        self.url = url
        self.params = params
        self.style = style
        self.cursor: Any = None
        self.seen = _Seen(_LOOP)

    def request(self) -> Request:
        query = dict(self.params)
        if self.cursor is not None:
            query[self.style.cursor_param] = self.cursor
        return Request(url=self.url, params=query)

    def advance(self, page: Page) -> bool:
        nxt = get_path(page.body, self.style.cursor_path)
        if nxt is None or nxt is MISSING or nxt is False or nxt == "" or not page.records:
            return False
        self.seen.add(str(nxt))
        self.cursor = nxt
        return True


class NextLinks:
    """Styles ``link`` and ``next_url``: the next page's whole URL (which carries its own query)."""

    def __init__(self, url: str, params: dict[str, Any], style: LinkPaging | NextUrlPaging) -> None:
        self.next = Request(url=url, params=params)
        self.next_path = style.next_path if isinstance(style, NextUrlPaging) else None
        self.seen = _Seen(_LOOP)

    def request(self) -> Request:
        return self.next

    def advance(self, page: Page) -> bool:
        import httpx

        nxt = page.next_link if self.next_path is None else get_path(page.body, self.next_path)
        if not isinstance(nxt, str) or not nxt:
            return False
        nxt = str(httpx.URL(page.url).join(nxt))
        self.seen.add(nxt)
        self.next = Request(url=nxt)
        return True


class Connections:
    """GraphQL: ``pageInfo { hasNextPage endCursor }`` feeds the cursor variable of the next request."""

    def __init__(self, url: str, query: str, variables: dict[str, Any], *, cursor_variable: str) -> None:
        self.url = url
        self.query = query
        self.variables = variables
        self.cursor_variable = cursor_variable
        self.seen = _Seen("pageInfo.endCursor repeats an earlier page's; stopping to avoid a loop")

    def request(self) -> Request:
        return Request(url=self.url, method="POST", body={"query": self.query, "variables": dict(self.variables)})

    def advance(self, page: Page) -> bool:
        info = page.body.get("pageInfo") if isinstance(page.body, Mapping) else None
        if not isinstance(info, Mapping) or not info.get("hasNextPage") or not info.get("endCursor"):
            return False
        self.seen.add(str(info["endCursor"]))
        self.variables = {**self.variables, self.cursor_variable: info["endCursor"]}
        return True


_STYLES: dict[type[BaseModel], Callable[[str, dict[str, Any], Any], Paginator]] = {
    NoPaging: Single, PagePaging: PageNumbers, OffsetPaging: Offsets, CursorPaging: Cursors, LinkPaging: NextLinks,
    NextUrlPaging: NextLinks}


def paginator(style: Pagination, url: str, params: dict[str, Any]) -> Paginator:
    """The paginator of a REST pagination style (the ``pagination`` option)."""
    return _STYLES[type(style)](url, params, style)


def pages(http: HttpClient, paginator: Paginator, read: Callable[[httpx.Response, int], Page], *,
          max_pages: int | None) -> Iterator[list[Any]]:
    """The records of every page: ``read(response, number)`` makes each response a :class:`Page`."""
    number = 0
    while True:
        number += 1
        request = paginator.request()
        response = http.send(request.method, request.url, page=number, params=request.params, body=request.body)
        page = read(response, number)
        yield page.records
        if max_pages is not None and number >= max_pages:
            return
        try:
            if not paginator.advance(page):
                return
        except PagingLoop as exc:
            raise http.fail(number, page.shown, str(exc)) from exc
