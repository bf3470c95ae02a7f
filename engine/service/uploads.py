"""Resumable uploads: the tus 1.0 protocol (core, creation, checksum, termination, expiration) at ``/v1/uploads``.

Any tus client (tus-js-client, Uppy, tuspy) works as it is: ``POST`` makes an upload (``Upload-Length``,
``Upload-Metadata`` with ``filename``) and answers its ``Location``, whose last segment is the upload id that
``POST /v1/imports`` takes; ``PATCH`` appends a chunk at ``Upload-Offset``; ``HEAD`` says how much arrived. A
chunk is streamed to the data file as it arrives (at most 1 MB of it in memory), so a cut connection keeps what
reached the disk and the client resumes from there. Who owns an upload is in :mod:`engine.service.upload_store`.

>>> from tusclient import client  # doctest: +SKIP
>>> auth = {"Authorization": "Bearer bic_..."}
>>> tus = client.TusClient("http://localhost:8000/v1/uploads", headers=auth)  # doctest: +SKIP
>>> tus.uploader("orders.csv", chunk_size=6 << 20, metadata={"filename": "orders.csv"}).upload()  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email.utils
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from engine.service import upload_store as store
from engine.service.auth import Caller, Writer, dsn_of
from engine.service.problems import ProblemError, problem_responses
from engine.service.tokens import TokenInfo
from engine.settings import settings

__all__ = ["TUS_VERSION", "UploadInfo", "router"]

TUS_VERSION = "1.0.0"
_EXTENSIONS = "creation,checksum,termination,expiration"
#: the Upload-Checksum algorithms (hashlib's fixed-size ones)
CHECKSUMS = tuple(sorted(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake_")))
_CHUNK_TYPE = "application/offset+octet-stream"
#: bytes of a chunk held in memory before they are written
_FLUSH = 1 << 20
_MAX_BYTES = settings().upload_max_mb * (1 << 20)
_DIGITS = re.compile(r"0|[1-9][0-9]{0,18}")
_METADATA_MAX = 8192
_CHECKSUM_PATTERN = f"^({'|'.join(CHECKSUMS)}) [A-Za-z0-9+/]+={{0,2}}$"
_B64 = "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
_PAIR = rf"[A-Za-z0-9!#$%&'*+.^_`|~-]+(?: {_B64})?"
#: Upload-Metadata: comma-separated ``key`` or ``key base64-value`` (keys: HTTP token characters)
METADATA = re.compile(rf"(?:{_PAIR}(?:,{_PAIR})*)?")


def up_to(largest: int) -> str:
    """A regular expression of the decimal integers 0 to ``largest`` (no leading zeros): how OpenAPI can say
    a header's number has a maximum (a header is text; ``maximum`` applies to numbers only).

    >>> up_to(250)
    '0|[1-9][0-9]{0,1}|1[0-9]{2}|2[0-4][0-9]{1}|250'
    """
    text = str(largest)
    parts = ["0"] + ([f"[1-9][0-9]{{0,{len(text) - 2}}}"] if len(text) > 1 else [])
    for i, digit in enumerate(text):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            rest = len(text) - i - 1
            below = str(low) if low == int(digit) - 1 else f"[{low}-{int(digit) - 1}]"
            parts.append(text[:i] + below + (f"[0-9]{{{rest}}}" if rest else ""))
    return "|".join(dict.fromkeys([*parts, text]))


def _header(name: str, description: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    """A header parameter for the OpenAPI document (tus headers are read and checked by the handlers, which
    answer the protocol's statuses rather than FastAPI's 422)."""
    return {"name": name, "in": "header", "required": required, "description": description, "schema": schema}


_CREATE_DOC = {"parameters": [
    _header("Upload-Length", f"bytes the upload will hold, at most {_MAX_BYTES} (Tus-Max-Size; 413 above)",
            {"type": "string", "pattern": f"^(?:{up_to(_MAX_BYTES)})$"}, required=True),
    _header("Upload-Metadata", "`key base64-value` pairs, comma-separated: `filename` names the file, `filetype` "
            "its media type", {"type": "string", "pattern": f"^{METADATA.pattern}$", "maxLength": _METADATA_MAX})]}
_PATCH_DOC = {"parameters": [
    _header("Upload-Offset", "where this chunk starts: the upload's offset (HEAD gives it; 409 otherwise)",
            {"type": "string", "pattern": f"^(?:{up_to(_MAX_BYTES)})$"}, required=True),
    _header("Upload-Checksum", "`algorithm base64-digest` of this chunk (Tus-Checksum-Algorithm lists them); a "
            "mismatch discards the chunk (460)", {"type": "string", "pattern": _CHECKSUM_PATTERN})],
    "description": "The body is the chunk's raw bytes, sent with `Content-Type: application/offset+octet-stream` "
                   "(415 otherwise), written at `Upload-Offset` as they arrive. A cut connection keeps what reached "
                   "the disk; HEAD says where to resume. Answers the new `Upload-Offset`."}


class _TusRoute(APIRoute):
    """Every answer of the router, problems included, carries ``Tus-Resumable``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def tus_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except ProblemError as exc:
                exc.headers.setdefault("Tus-Resumable", TUS_VERSION)
                raise
            response.headers.setdefault("Tus-Resumable", TUS_VERSION)
            return response

        return tus_handler


router = APIRouter(prefix="/v1/uploads", tags=["uploads"], route_class=_TusRoute)


class UploadInfo(BaseModel):
    """An upload as ``GET /v1/uploads/{id}`` shows it."""
    id: str
    filename: str
    length: int
    offset: int
    complete: bool
    sha256: str | None
    expires_at: str | None
    metadata: dict[str, str]


def _tus_version(tus_resumable: Annotated[str | None, Header(include_in_schema=False)] = None) -> None:
    """A request naming another tus version is refused (412); one naming none is taken as 1.0.0."""
    if tus_resumable is not None and tus_resumable != TUS_VERSION:
        raise ProblemError(412, f"Tus-Resumable {TUS_VERSION} is required (got {str(tus_resumable)[:20]!r})",
                           headers={"Tus-Version": TUS_VERSION})


_TUS = [Depends(_tus_version)]


def _http_date(when: dt.datetime) -> str:
    return email.utils.format_datetime(when.astimezone(dt.UTC), usegmt=True)


def _count(raw: str | None, header: str) -> int:
    """A header holding a non-negative integer; 400 otherwise."""
    if raw is None or not _DIGITS.fullmatch(raw.strip()):
        raise ProblemError(400, f"{header} must be a non-negative integer (got {str(raw)[:30]!r})")
    return int(raw)


def parse_metadata(raw: str | None) -> dict[str, str]:
    """``Upload-Metadata`` (``key base64,key2 base64,flag``) as a dict of text; 400 when malformed.

    >>> parse_metadata("filename b3JkZXJzLmNzdg==,private")
    {'filename': 'orders.csv', 'private': ''}
    """
    if raw is not None and len(raw) > _METADATA_MAX:
        raise ProblemError(400, f"Upload-Metadata is longer than {_METADATA_MAX} characters")
    if raw is not None and not METADATA.fullmatch(raw):
        raise ProblemError(400, f"Upload-Metadata: {raw[:60]!r} is not comma-separated 'key base64-value' pairs")
    found: dict[str, str] = {}
    for pair in (raw or "").split(","):
        key, _, encoded = pair.partition(" ")
        if not key:
            continue
        value = base64.b64decode(encoded) if encoded else b""  # a repeated key: the last one holds
        # PostgreSQL's jsonb takes no NUL: a hostile name's NUL becomes a replacement character
        found[key] = value.decode("utf-8", "replace").replace("\x00", "\ufffd")
    return found


def _encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" if v else k for k, v in metadata.items())


def _checksum(raw: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum`` (``sha1 base64-digest``) as (algorithm, digest); 400 when unknown or malformed."""
    if raw is None:
        return None
    name, _, encoded = raw.strip().partition(" ")
    if name not in CHECKSUMS:
        raise ProblemError(400, f"Upload-Checksum: algorithm {name[:20]!r} is not one of {', '.join(CHECKSUMS)}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:  # binascii.Error included
        raise ProblemError(400, "Upload-Checksum: the digest is not base64") from None
    if len(digest) != hashlib.new(name).digest_size:
        raise ProblemError(400, f"Upload-Checksum: a {name} digest has {hashlib.new(name).digest_size} bytes")
    return name, digest


@router.options("", status_code=204, summary="tus discovery: the version, extensions, size and checksum limits")
def discover() -> Response:
    return Response(status_code=204, headers={
        "Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION, "Tus-Extension": _EXTENSIONS,
        "Tus-Max-Size": str(settings().upload_max_mb * (1 << 20)), "Tus-Checksum-Algorithm": ",".join(CHECKSUMS)})


@router.post("", status_code=201, dependencies=_TUS, summary="Create an upload (tus creation)",
             openapi_extra=_CREATE_DOC, response_class=Response,
             responses=problem_responses(400, 401, 403, 412, 413, 429))
def create(request: Request, caller: Writer) -> Response:
    """A new upload of ``Upload-Length`` bytes; its URL is in ``Location`` (the id is its last segment)."""
    if "upload-length" not in request.headers and "upload-defer-length" in request.headers:
        raise ProblemError(400, "Upload-Defer-Length is not supported: give Upload-Length")
    length = _count(request.headers.get("upload-length"), "Upload-Length")
    metadata = parse_metadata(request.headers.get("upload-metadata"))
    upload = store.create_upload(dsn_of(request), caller, length=length, metadata=metadata)
    if length == 0:  # nothing to send: complete at once
        with store.locked(upload) as fd:
            upload = store.finish(dsn_of(request), upload, fd)
    headers = {"Location": str(request.url_for("describe_upload", upload_id=upload.upload_id))}
    if not upload.complete:
        headers["Upload-Expires"] = _http_date(upload.expires_at)
    return Response(status_code=201, headers=headers)


def _head(request: Request, upload_id: str, caller: TokenInfo) -> Response:
    upload = store.find_upload(dsn_of(request), upload_id, caller)
    headers = {"Upload-Offset": str(upload.offset()), "Upload-Length": str(upload.length),
               "Cache-Control": "no-store"}
    if upload.metadata:
        headers["Upload-Metadata"] = _encode_metadata(upload.metadata)
    if not upload.complete:
        headers["Upload-Expires"] = _http_date(upload.expires_at)
    return Response(status_code=200, headers=headers)


@router.head("/{upload_id}", dependencies=_TUS, response_class=Response,
             summary="How much of an upload arrived (Upload-Offset)", responses=problem_responses(401, 403, 404, 412))
def head(request: Request, upload_id: str, caller: Writer) -> Response:
    return _head(request, upload_id, caller)


@router.get("/{upload_id}", summary="An upload's state: offset, completeness, SHA-256, expiry",
            responses=problem_responses(401, 404))
def describe_upload(request: Request, upload_id: str, caller: Caller) -> UploadInfo:
    upload = store.find_upload(dsn_of(request), upload_id, caller)
    return UploadInfo(id=upload.upload_id, filename=upload.filename, length=upload.length, offset=upload.offset(),
                      complete=upload.complete, sha256=upload.sha256, metadata=upload.metadata,
                      expires_at=None if upload.complete else upload.expires_at.isoformat())


def _delete(request: Request, upload_id: str, caller: TokenInfo) -> Response:
    dsn = dsn_of(request)
    store.remove_upload(dsn, store.find_upload(dsn, upload_id, caller))
    return Response(status_code=204)


@router.delete("/{upload_id}", status_code=204, dependencies=_TUS, summary="Delete an upload (tus termination)",
               responses=problem_responses(401, 403, 404, 412))
def terminate(request: Request, upload_id: str, caller: Writer) -> Response:
    return _delete(request, upload_id, caller)


@router.patch("/{upload_id}", status_code=204, dependencies=_TUS, max_body_size=_MAX_BYTES,
              openapi_extra=_PATCH_DOC, summary="Append a chunk at Upload-Offset (streamed to disk)",
              responses=problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 423, 460))
async def append(request: Request, upload_id: str, caller: Writer) -> Response:
    """Write the body at ``Upload-Offset`` as it arrives; ``Upload-Checksum`` (optional) is verified once it
    has all arrived and a mismatch discards the chunk (460). Answers the new ``Upload-Offset``."""
    return await _append(request, upload_id, caller)


def _overridden_method(x_http_method_override: Annotated[str | None, Header()] = None) -> str:
    method = (x_http_method_override or "").upper()
    if method not in ("PATCH", "HEAD", "DELETE"):
        raise ProblemError(405, "POST to an upload needs X-HTTP-Method-Override: PATCH, HEAD or DELETE",
                           headers={"Allow": "GET, HEAD, PATCH, DELETE"})
    return method


@router.post("/{upload_id}", max_body_size=_MAX_BYTES, include_in_schema=False)
async def overridden(request: Request, upload_id: str, method: Annotated[str, Depends(_overridden_method)],
                     version: Annotated[None, Depends(_tus_version)], caller: Writer) -> Response:
    """tus's ``X-HTTP-Method-Override``, for clients behind proxies that pass only GET and POST (the method is
    checked first: a plain POST is 405, as for any method an upload does not take)."""
    if method == "PATCH":
        return await _append(request, upload_id, caller)
    return await anyio.to_thread.run_sync(_head if method == "HEAD" else _delete, request, upload_id, caller)


async def _append(request: Request, upload_id: str, caller: TokenInfo) -> Response:
    offset = _count(request.headers.get("upload-offset"), "Upload-Offset")
    dsn = dsn_of(request)
    upload = await anyio.to_thread.run_sync(store.find_upload, dsn, upload_id, caller)
    checksum = _checksum(request.headers.get("upload-checksum"))
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != _CHUNK_TYPE:
        raise ProblemError(415, f"a chunk's Content-Type must be {_CHUNK_TYPE} (got {media[:60]!r})")
    declared = request.headers.get("content-length")
    if declared is not None and _DIGITS.fullmatch(declared) and offset + int(declared) > upload.length:
        raise ProblemError(413, f"the chunk would end at byte {offset + int(declared)}, past Upload-Length "
                                f"{upload.length}; nothing was kept")
    with store.locked(upload) as fd:  # non-blocking: open and flock return at once
        on_disk = os.fstat(fd).st_size
        if offset != on_disk:
            raise ProblemError(409, f"Upload-Offset {offset} does not match the {on_disk} bytes received (HEAD "
                                    "gives the offset to resume from)")
        if not upload.complete:
            await anyio.to_thread.run_sync(store.extend_expiry, dsn, upload)
        received = await _receive(request, fd, offset, upload.length - offset, checksum)
        if offset + received == upload.length and not upload.complete:
            upload = await anyio.to_thread.run_sync(store.finish, dsn, upload, fd)
        elif received:
            expires = await anyio.to_thread.run_sync(store.extend_expiry, dsn, upload)
            upload = dataclasses.replace(upload, expires_at=expires)
    headers = {"Upload-Offset": str(offset + received)}
    if not upload.complete:
        headers["Upload-Expires"] = _http_date(upload.expires_at)
    return Response(status_code=204, headers=headers)


async def _receive(request: Request, fd: int, offset: int, room: int, checksum: tuple[str, bytes] | None) -> int:
    """Stream the body to ``fd`` from ``offset``; the bytes kept. What a cut connection delivered is kept (unless
    a checksum was given: it cannot be verified); a chunk past ``room`` or failing its checksum is discarded.
    (Truncating is a metadata change: done inline, also while the task is being cancelled.)"""
    hasher = hashlib.new(checksum[0]) if checksum else None
    buffer = bytearray()
    written = 0
    try:
        try:
            async for part in _parts(request, settings().read_timeout):
                if written + len(buffer) + len(part) > room:
                    raise ProblemError(413, f"the chunk goes past Upload-Length ({room} bytes were left); nothing "
                                            "was kept")
                buffer += part
                if len(buffer) >= _FLUSH:
                    written += await anyio.to_thread.run_sync(_write, fd, buffer, offset + written, hasher)
                    buffer = bytearray()
        except ClientDisconnect:
            if hasher is not None:  # a partial chunk cannot match its checksum: none of it is kept
                await anyio.to_thread.run_sync(os.ftruncate, fd, offset)
                return 0
        if buffer:
            written += await anyio.to_thread.run_sync(_write, fd, buffer, offset + written, hasher)
    except ProblemError:
        os.ftruncate(fd, offset)
        raise
    except OSError as exc:
        os.ftruncate(fd, offset)
        raise store.storage_problem(exc) from exc
    except BaseException:  # cancelled (the server stops): what was written stays, as after a cut
        if hasher is not None:
            os.ftruncate(fd, offset)
        raise
    if checksum is not None and hasher is not None and hasher.digest() != checksum[1]:
        await anyio.to_thread.run_sync(os.ftruncate, fd, offset)
        raise ProblemError(460, f"the chunk does not match its {checksum[0]} Upload-Checksum; it was discarded "
                                f"and the offset stays {offset}")
    return written


async def _parts(request: Request, idle: float) -> AsyncIterator[bytes]:
    """The body's parts; a client silent for ``idle`` seconds counts as cut (a half-open connection would
    otherwise hold the upload's lock, and refuse its resume with 423, until the kernel gives up on it)."""
    parts = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(idle):
                part = await parts.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise ClientDisconnect() from exc
        yield part


def _write(fd: int, data: bytearray, position: int, hasher: Any) -> int:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], position + done)
    if hasher is not None:
        hasher.update(data)
    return done
