"""Connection ids: the tenant key every row carries. The platform keys connections by UUID, older callers by
integer, some by a short text name; all three are accepted everywhere an id is taken.

An id is held in one canonical form (:data:`ConnectionId`): an ``int`` (a bigint), or a ``str`` that is either a
UUID in its canonical spelling (lowercase, hyphenated) or a text id of at most 64 characters of
``[A-Za-z0-9_.:-]``. A dataset's ``connection_id`` column type is fixed by the kind of its first id
(:func:`kind_of`): ``bigint``, ``uuid`` or ``text``; a text column takes any id (its text form).

>>> parse_connection_id("3F2504E0-4F89-11D3-9A0C-0305E82C3301")
'3f2504e0-4f89-11d3-9a0c-0305e82c3301'
>>> kind_of(parse_connection_id("42")), kind_of("tenant-a")
('bigint', 'text')
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal, TypeAlias

__all__ = ["TEXT_ID", "UUID_TEXT", "ConnectionId", "IdKind", "describe", "equals_sql", "fits", "kind_mismatch",
           "kind_of", "parse_connection_id"]

#: a connection id in canonical form: an integer, or a canonical UUID / text id as a string
ConnectionId: TypeAlias = int | str
#: the column type an id of each kind needs
IdKind = Literal["bigint", "uuid", "text"]

#: a UUID as written (any case, hyphenated); its canonical form is lowercase
UUID_TEXT = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
#: a text id: short, and safe in a path, a cache key and a shell
TEXT_ID = r"[A-Za-z0-9_.:-]{1,64}"
_INT = re.compile(r"[+-]?[0-9]+")


def parse_connection_id(value: Any) -> ConnectionId:
    """``value`` (an int, a :class:`uuid.UUID`, or their text, or a text id) in canonical form; a
    :class:`ValueError` that says what is accepted otherwise."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):  # True is not connection 1
        return _bigint(value)
    if isinstance(value, str):
        text = value.strip()
        if _INT.fullmatch(text):
            return _bigint(int(text))
        if re.fullmatch(UUID_TEXT, text):
            return text.lower()
        if re.fullmatch(TEXT_ID, text):
            return text
    raise ValueError(f"expected a connection id: an integer, a UUID, or text of at most 64 characters of "
                     f"[A-Za-z0-9_.:-]; got {value!r}")


def _bigint(number: int) -> int:
    if not -(2**63) <= number < 2**63:
        raise ValueError(f"connection id {number} does not fit a bigint; give a UUID or a text id instead")
    return number


def kind_of(connection_id: ConnectionId) -> IdKind:
    """The column type a (canonical) id needs."""
    if isinstance(connection_id, int):
        return "bigint"
    return "uuid" if re.fullmatch(UUID_TEXT, connection_id) else "text"


def describe(connection_id: ConnectionId) -> str:
    """``42 is an integer`` / ``'3f25...' is a UUID`` / ``'tenant-a' is text``, for error messages."""
    kind = kind_of(connection_id)
    word = {"bigint": "an integer", "uuid": "a UUID", "text": "text"}[kind]
    return f"{connection_id if kind == 'bigint' else repr(connection_id)} is {word}"


def fits(column_type: str, connection_id: ConnectionId) -> bool:
    """Whether an id can be stored in (and compared with) a ``connection_id`` column of ``column_type``."""
    if column_type in ("bigint", "integer", "smallint"):
        return isinstance(connection_id, int)
    if column_type == "uuid":
        return kind_of(connection_id) == "uuid"
    return True  # text takes any id's text form


def kind_mismatch(dataset: str, column_type: str, connection_id: ConnectionId) -> str | None:
    """The one-line error when the id cannot go into the dataset's column, else None."""
    if fits(column_type, connection_id):
        return None
    return f"{dataset}.connection_id is {column_type}; connection id {describe(connection_id)}"


def equals_sql(column: str, column_type: str) -> str:
    """``column = $1`` for an id passed as its text (``str(id)``), cast to the column's type so the column's
    index serves it; ``column`` is already quoted."""
    if column_type in ("bigint", "uuid", "text"):
        return f"{column} = $1::{column_type}"
    return f"{column}::text = $1"
