"""The options of REST and GraphQL sources, as pydantic models: what a spec may say, checked once.

>>> parse(RestOptions, {"records": "data", "pagination": {"style": "cursor", "cursor_path": "meta.next"}})
... # doctest: +SKIP

Every check says what is wrong in the words a spec writer uses, and :func:`parse` turns pydantic's first error
into a :class:`SpecError` at the option's dotted path (``source.pagination.cursor_path``,
``source.auth.token_env``, ``source.auth.in``). Unknown options are refused with a guess at the one meant.
A pagination style or auth type takes only its own settings (a ``limit`` under ``style: page`` is unknown).
Secrets are never options: ``auth`` names the environment variables holding them, checked to be set.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from engine.errors import SpecError
from engine.redact import redact
from engine.sources.incremental import lag_units

__all__ = ["AUTH_TYPES", "COMMON_OPTIONS", "STYLES", "ApiKeyAuth", "Auth", "BasicAuth", "BearerAuth", "CursorPaging",
           "EndpointOptions", "GraphQLOptions", "LinkPaging", "NextUrlPaging", "NoPaging", "OffsetPaging",
           "PagePaging", "Pagination", "RestOptions", "check_url", "pagination_text", "parse", "spec_error"]

#: what REST and GraphQL share (``biconic sources``): option -> one-line description
COMMON_OPTIONS: dict[str, str] = {
    "headers": "extra request headers (not secrets: use auth)",
    "auth.type": "bearer | basic | api_key",
    "auth.token_env": "bearer: environment variable holding the token",
    "auth.username": "basic: the user name (or auth.username_env)",
    "auth.password_env": "basic: environment variable holding the password",
    "auth.key_env": "api_key: environment variable holding the key",
    "auth.name": "api_key: header or query parameter name (default X-API-Key)",
    "auth.in": "api_key: header (default) or query",
    "flatten": "levels of nested objects turned into parent.child columns (default 1; 0 keeps them nested)",
    "cursor": "incremental: record field holding the change time or number (dotted path)",
    "lag": "incremental: re-read this far behind the watermark: seconds (or 15m, 2h, 1d) for times, units for "
           "numbers (needs mode merge)",
    "max_pages": "stop after this many pages (a safety cap; default none)",
    "timeout": "seconds to wait for an answer (default BICONIC_READ_TIMEOUT, 60; connecting: at most "
               "BICONIC_CONNECT_TIMEOUT, 10)",
    "retries": "attempts per page on 429/5xx/timeouts (default 5)",
    "backoff": "first retry wait in seconds, doubled each attempt (default 1)",
    "max_wait": "longest wait between attempts, Retry-After included (default 60)",
}

M = TypeVar("M", bound=BaseModel)


# --- checks of single values: each raises the message a spec writer sees -----------------------------------
def _wrong(message: str, option: str | None = None) -> PydanticCustomError:
    """An error with our wording; ``option`` names the key below the one being checked (added to the path)."""
    return PydanticCustomError("biconic", message, {"option": option} if option is not None else None)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _wrong(f"must be a non-empty string, not {value!r}")
    return value


def _number(*, integer: bool = False, minimum: float = 0) -> BeforeValidator:
    def check(value: Any) -> Any:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok or isinstance(value, bool) or value < minimum:
            raise _wrong(f"must be {'an integer' if integer else 'a number'} >= {minimum:g}, not {value!r}")
        return value
    return BeforeValidator(check)


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _wrong(f"must be a mapping, not {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _headers(value: Any) -> dict[str, str]:
    headers = _mapping(value)
    for name, v in headers.items():
        if not isinstance(v, str) or not v:
            raise _wrong(f"must be a non-empty string, not {v!r}", name)
    return headers


def _params(value: Any) -> dict[str, Any]:
    params = _mapping(value)
    for name, v in params.items():
        if not all(isinstance(x, (str, int, float, bool)) for x in (v if isinstance(v, list) else [v])):
            raise _wrong(f"must be a string, number or boolean (or a list of them), not {v!r}", name)
    return params


def _env(name: Any) -> str:
    _text(name)
    if name not in os.environ:
        raise _wrong(f"environment variable {name} is not set; export it before the load")
    return str(name)


def _lag(value: Any) -> float:
    try:
        return lag_units(value)
    except SpecError as exc:
        raise _wrong(exc.message) from exc


def _one_of(*choices: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if value not in choices:
            listed = " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices)}"
            raise _wrong(f"must be {listed}, not {value!r}")
        return value
    return BeforeValidator(check)


def _tagged(key: str, tags: tuple[str, ...], default: str | None = None) -> BeforeValidator:
    """A mapping whose ``key`` (a pagination style, an auth type) picks the model that checks the rest."""
    def check(value: Any) -> Any:
        data = _mapping(value)
        tag = data.get(key, default)
        if tag not in tags:
            raise _wrong(f"must be one of {', '.join(tags)}, not {data.get(key)!r}", key)
        return {**data, key: tag}
    return BeforeValidator(check)


_TEXT = BeforeValidator(_text)
_ENV = BeforeValidator(_env)


class _Options(BaseModel):
    """Frozen, closed to unknown keys; an unknown key is refused before any value is checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = sorted(f.alias or name for name, f in cls.model_fields.items())
            for name in data:
                if name not in known:
                    close = difflib.get_close_matches(str(name), known, n=1)
                    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known) or '(none)'}"
                    raise _wrong(f"unknown option; {hint}", str(name))
        return data


# --- auth ----------------------------------------------------------------------------------------------------
class BearerAuth(_Options):
    """``Authorization: Bearer $TOKEN_ENV``."""

    type: Literal["bearer"]
    token_env: Annotated[str, _ENV]


class BasicAuth(_Options):
    """HTTP basic auth; the user name as text or from an environment variable, the password from one."""

    type: Literal["basic"]
    username: Annotated[str | None, _TEXT] = None
    username_env: Annotated[str | None, _ENV] = None
    password_env: Annotated[str, _ENV]

    @model_validator(mode="after")
    def _one_user(self) -> BasicAuth:
        if (self.username is None) == (self.username_env is None):
            raise _wrong("set exactly one of username and username_env", "username")
        return self


class ApiKeyAuth(_Options):
    """An API key in a header (default ``X-API-Key``) or a query parameter."""

    type: Literal["api_key"]
    key_env: Annotated[str, _ENV]
    name: Annotated[str, _TEXT] = "X-API-Key"
    #: where the key goes (option ``auth.in``)
    location: Annotated[Literal["header", "query"], _one_of("header", "query")] = Field("header", alias="in")


AUTH_TYPES = ("bearer", "basic", "api_key")
#: how requests authenticate; secrets are named by environment variable, never held
Auth = Annotated[BearerAuth | BasicAuth | ApiKeyAuth, Field(discriminator="type"), _tagged("type", AUTH_TYPES)]


# --- pagination ----------------------------------------------------------------------------------------------
class NoPaging(_Options):
    """One request."""

    style: Literal["none"] = "none"


class PagePaging(_Options):
    """A page number parameter, until an empty page or the total page count."""

    style: Literal["page"]
    page_param: Annotated[str, _TEXT] = "page"
    start: Annotated[int | None, _number(integer=True)] = None
    size_param: Annotated[str | None, _TEXT] = None
    size: Annotated[int | None, _number(integer=True, minimum=1)] = None
    total_pages_path: Annotated[str | None, _TEXT] = None

    @model_validator(mode="after")
    def _size_needs_a_param(self) -> PagePaging:
        if self.size is not None and self.size_param is None:
            raise _wrong("is required with size (the parameter to send it in)", "size_param")
        return self


class OffsetPaging(_Options):
    """An offset and a limit parameter, until an empty page or the total record count."""

    style: Literal["offset"]
    offset_param: Annotated[str, _TEXT] = "offset"
    limit_param: Annotated[str, _TEXT] = "limit"
    limit: Annotated[int, _number(integer=True, minimum=1)] = 100
    start: Annotated[int | None, _number(integer=True)] = None
    total_path: Annotated[str | None, _TEXT] = None


class CursorPaging(_Options):
    """A cursor read from the body, sent back in a parameter."""

    style: Literal["cursor"]
    cursor_path: Annotated[str, _TEXT]
    cursor_param: Annotated[str, _TEXT] = "cursor"


class LinkPaging(_Options):
    """The ``Link: <...>; rel="next"`` header."""

    style: Literal["link"]


class NextUrlPaging(_Options):
    """The next page's URL read from the body."""

    style: Literal["next_url"]
    next_path: Annotated[str, _TEXT]


STYLES = ("none", "page", "offset", "cursor", "link", "next_url")
#: how a REST endpoint pages (see ``rest.OPTIONS`` for each style's settings)
Pagination = Annotated[NoPaging | PagePaging | OffsetPaging | CursorPaging | LinkPaging | NextUrlPaging,
                       Field(discriminator="style"), _tagged("style", STYLES, "none")]

#: every pagination setting and its default, in the order fingerprints have always written them
_PAGINATION_TEXT: dict[str, Any] = {
    "style": "none", "page_param": "page", "start": None, "size_param": None, "size": None,
    "total_pages_path": None, "offset_param": "offset", "limit_param": "limit", "limit": 100, "total_path": None,
    "cursor_path": None, "cursor_param": "cursor", "next_path": None}


def pagination_text(pagination: BaseModel) -> str:
    """The pagination as partition fingerprints hash it: the same text as before the options were models, so a
    re-run after an upgrade still finds its ledger rows."""
    values = {**_PAGINATION_TEXT, **pagination.model_dump()}
    return f"Pagination({', '.join(f'{k}={values[k]!r}' for k in _PAGINATION_TEXT)})"


# --- the sources' options ------------------------------------------------------------------------------------
class EndpointOptions(_Options):
    """What REST and GraphQL share: HTTP settings, auth, flattening, the incremental cursor."""

    headers: Annotated[dict[str, str], BeforeValidator(_headers)] = Field(default_factory=dict)
    auth: Auth | None = None
    flatten: Annotated[int, _number(integer=True)] = 1
    cursor: Annotated[str | None, _TEXT] = None
    lag: Annotated[float, BeforeValidator(_lag)] = 0.0
    max_pages: Annotated[int | None, _number(integer=True, minimum=1)] = None
    timeout: Annotated[float | None, _number()] = None  # None: the settings' read timeout
    backoff: Annotated[float, _number()] = 1.0
    max_wait: Annotated[float, _number()] = 60.0
    retries: Annotated[int, _number(integer=True, minimum=1)] = 5

    #: the option that sends the watermark to the server, and an example cursor field for the error
    _incremental: ClassVar[tuple[str, str] | None] = None

    @model_validator(mode="after")
    def _incremental_needs_a_cursor(self) -> EndpointOptions:
        if self._incremental is not None and getattr(self, self._incremental[0]) and not self.cursor:
            option, example = self._incremental
            raise _wrong(f"is required with {option} (the record field the watermark comes from, e.g. {example})",
                         "cursor")
        return self


class RestOptions(EndpointOptions):
    """A REST endpoint's options (``rest.OPTIONS``)."""

    records: Annotated[str | None, _TEXT] = None
    params: Annotated[dict[str, Any], BeforeValidator(_params)] = Field(default_factory=dict)
    pagination: Pagination = Field(default_factory=NoPaging)
    incremental_param: Annotated[str | None, _TEXT] = None

    _incremental: ClassVar[tuple[str, str]] = ("incremental_param", "updated_at")


class GraphQLOptions(EndpointOptions):
    """A GraphQL connection's options (``graphql.OPTIONS``)."""

    query: Annotated[str, _TEXT]
    connection_path: Annotated[str | None, _TEXT] = None
    variables: Annotated[dict[str, Any], BeforeValidator(_mapping)] = Field(default_factory=dict)
    cursor_variable: Annotated[str, _TEXT] = "after"
    incremental_variable: Annotated[str | None, _TEXT] = None

    _incremental: ClassVar[tuple[str, str]] = ("incremental_variable", "updatedAt")


# --- from pydantic's error to ours ---------------------------------------------------------------------------
#: what a missing required option is for
_REQUIRED = {
    "source.query": "is required for a GraphQL source (a query taking $after and returning a connection with "
                    "pageInfo { hasNextPage endCursor })",
    "source.pagination.cursor_path": "is required for style cursor (e.g. meta.next)",
    "source.pagination.next_path": "is required for style next_url (e.g. links.next)",
}
#: options holding a tagged model: pydantic's error paths name the tag after them (``pagination.cursor.x``)
_TAGGED = frozenset({"auth", "pagination"})


def spec_error(exc: ValidationError) -> SpecError:
    """pydantic's first error as a :class:`SpecError` at the option's dotted path."""
    error = exc.errors()[0]
    loc = error["loc"]
    parts = ["source", *(str(p) for i, p in enumerate(loc) if not (i == 1 and loc[0] in _TAGGED))]
    option = (error.get("ctx") or {}).get("option")
    if option is not None:
        parts.append(str(option))
    path = ".".join(parts)
    return SpecError(path, _REQUIRED.get(path, "is required") if error["type"] == "missing" else error["msg"])


def parse(model: type[M], options: Mapping[str, Any]) -> M:
    """``options`` checked by ``model`` (unknown or wrong options raise :class:`SpecError`)."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise spec_error(exc) from exc


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.split("/")[0]:
        raise SpecError("source.path", f"{redact(url)!r} is not an http(s) URL")
    return url
