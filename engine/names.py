"""SQL identifiers: normalising column names and quoting every identifier we send to PostgreSQL."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence

__all__ = [
    "MAX_IDENTIFIER_BYTES", "canonical_table", "child_base", "normalize_names", "qualified", "quote_ident",
    "shorten", "unique_names", "unusable_characters",
]

MAX_IDENTIFIER_BYTES = 63
_NOT_WORD = re.compile(r"[^\w]+", re.UNICODE)
_RESERVED = "__biconic_"  # prefix of the engine's bookkeeping columns (row number, rejects, status)


def quote_ident(name: str) -> str:
    """Quote one identifier for PostgreSQL: ``quote_ident('a"b') == '"a""b"'``."""
    if "\x00" in name:
        raise ValueError("identifiers cannot contain NUL bytes")
    return '"' + name.replace('"', '""') + '"'


def qualified(name: str) -> str:
    """Quote a possibly schema-qualified table name: ``qualified('s.t') == '"s"."t"'``."""
    schema, _, table = name.rpartition(".")
    return f"{quote_ident(schema)}.{quote_ident(table)}" if schema else quote_ident(table)


def canonical_table(name: str) -> str:
    """One spelling per table: ``public.orders`` and ``orders`` are the same table (``orders``)."""
    schema, _, table = name.rpartition(".")
    return table if schema in ("", "public") else name


def shorten(name: str, limit: int = MAX_IDENTIFIER_BYTES) -> str:
    """Fit ``name`` in ``limit`` UTF-8 bytes; longer names keep a prefix and an 8-hex hash of the whole name.

    PostgreSQL silently truncates identifiers at 63 bytes, which would make two long names collide.
    """
    encoded = name.encode("utf-8")
    if len(encoded) <= limit:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:8]
    prefix = encoded[: limit - 9].decode("utf-8", errors="ignore")
    return f"{prefix}_{digest}"


def unique_names(names: Sequence[str]) -> list[str]:
    """Make names unique and non-blank, deterministically: blanks become ``column_<position>`` and
    repeats get ``_2``, ``_3``... in order of appearance (``['a', '', 'a'] -> ['a', 'column_2', 'a_2']``).

    A source column named like the engine's hidden ones (``__biconic_row``) loses one leading underscore, or
    it would collide with the row number or be dropped as bookkeeping.
    """
    out: list[str] = []
    seen: set[str] = set()
    for position, raw in enumerate(names, start=1):
        base = raw if raw.strip() else f"column_{position}"
        if base.startswith(_RESERVED):
            base = base[1:]
        candidate, n = base, 1
        while candidate in seen:
            n += 1
            candidate = shorten(f"{base}_{n}")
        seen.add(candidate)
        out.append(candidate)
    return out


def _normalize_one(name: str) -> str:
    text = unicodedata.normalize("NFKC", name).strip().lower()
    text = _NOT_WORD.sub("_", text).strip("_")
    if text and text[0].isdigit():
        text = f"c_{text}"
    return text


def normalize_names(names: Iterable[str]) -> list[str]:
    """Column names as safe, readable SQL identifiers, unique and at most 63 bytes.

    ``normalize_names(['Fecha Pedido', 'Importe (€)', '', 'Fecha Pedido'])``
    gives ``['fecha_pedido', 'importe', 'column_3', 'fecha_pedido_2']``.
    """
    cleaned = [shorten(_normalize_one(n)) for n in names]
    return unique_names(cleaned)


#: characters a table name may not hold: quoting makes them safe, but nobody means them
_REFUSED = {"'": "a quote (')", '"': 'a double quote (")', "`": "a backquote (`)", ";": "a semicolon (;)",
            "\\": "a backslash (\\)"}


def unusable_characters(name: str) -> str:
    """What a table name holds that we refuse, said for a message (``'a semicolon (;)'``), or ``''``."""
    found = [_REFUSED[c] for c in dict.fromkeys(name) if c in _REFUSED]
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):  # tabs, newlines, NUL, zero-width ones
        found.append("a control character")
    return ", ".join(found)


def child_base(table: str) -> str:
    """The readable stem of a table's child partitions: every run of non-word characters becomes one ``_``
    (``'orders-eu' -> 'orders_eu'``, ``'Ventas año' -> 'Ventas_año'``)."""
    return _NOT_WORD.sub("_", table) or "t"
