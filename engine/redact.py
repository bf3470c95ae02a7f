"""Keeping secrets out of text: DSNs, URLs and driver messages made safe to print or log.

>>> redact("postgresql://app:s3cret@db:5432/shop")
'postgresql://app:***@db:5432/shop'
>>> scrub("login failed for s3cret", ["s3cret"])
'login failed for ***'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit

__all__ = ["redact", "safe_url", "scrub", "secret_of", "unexpand", "url_secrets"]

_KEYS = r"[a-z_-]*token|api[_-]?key|apikey|key|[a-z_-]*secret|sig|[a-z_-]*signature|auth|pwd"


def redact(dsn: str) -> str:
    """A DSN (or any text holding one) safe to print: passwords become ``***``.

    Handles ``user:secret@host`` (even with an unencoded ``@`` in the secret: the authority ends at the last
    ``@`` before the host), ``?password=...``, keyword form ``password = 'a b'``, and API keys in a query
    string (``?api_key=...``, ``&access_token=...``, ``&sig=...``).
    """
    dsn = re.sub(r"(://[^:/@\s]*:)[^/\s]*@(?=[^@/\s]*(?:[/?\s]|$))", r"\1***@", dsn)
    dsn = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^&\s]+)", r"\1***", dsn, flags=re.IGNORECASE)
    return re.sub(rf"([?&](?:{_KEYS})=)[^&\s#]+", r"\1***", dsn, flags=re.IGNORECASE)


def secret_of(dsn: str) -> str | None:
    """The password inside a DSN, so error texts that echo it (libpq does, on bad host names) can be scrubbed."""
    m = re.search(r"://[^:/@\s]*:([^/\s]*)@[^@/\s]*(?:[/?\s]|$)", dsn)
    if m and m.group(1):
        return m.group(1)
    m = re.search(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^&\s]+)", dsn, flags=re.IGNORECASE)
    return m.group(1).strip("'\"") if m else None


def url_secrets(url: str) -> list[str]:
    """Every spelling of a URL's password that a driver might echo: as written and %-decoded."""
    found: set[str] = set()
    secret = secret_of(url)
    try:
        password = urlsplit(url).password
    except ValueError:  # a malformed port: the authority is still scanned by secret_of
        password = None
    for value in (secret, password):
        if value:
            found.update({value, unquote(value)})
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret replaced by ``***``; a very short one only where it stands alone, so a
    one-letter password does not mangle every word that holds the letter."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
        elif secret:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def unexpand(text: str, used: Mapping[str, str]) -> str:
    """``text`` with every value read from the environment put back as its ``${VAR}`` (``used`` maps value
    -> ``${VAR}``, see :func:`engine.spec.env.interpolate`), %-encoded spellings too: a pipeline file's
    secrets never come back in an error or a report. Values shorter than 4 characters are no secret (a
    connection id, a mode) and are left alone: replacing them would garble the text around them."""
    for value, name in sorted(used.items(), key=lambda item: len(item[0]), reverse=True):
        for spelling in sorted({value, quote(value, safe=""), quote(value, safe="@:/")}, key=len, reverse=True):
            if len(spelling) >= 4:
                text = text.replace(spelling, name)
    return text


def safe_url(url: str) -> str:
    """``url`` without user, password or query (``redis://:secret@host`` has no user for :func:`redact`)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
