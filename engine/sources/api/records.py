"""JSON records as APIs return them: values at dotted paths, nested objects flattened, fields holding times.

>>> get_path({"meta": {"next": "c2"}}, "meta.next")
'c2'
>>> flatten({"id": 1, "customer": {"id": 7}}, 1)
{'id': 1, 'customer.id': 7}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import polars as pl

from engine.types import ISO_FORMS

__all__ = ["MISSING", "IsoTimes", "describe", "flatten", "get_path"]

#: what :func:`get_path` returns where the path leads nowhere (a JSON null is None)
MISSING: Any = object()


def get_path(data: Any, path: str) -> Any:
    """The value at a dotted path (``meta.next``, ``data.0.items``, ``$.data``), or :data:`MISSING`."""
    for part in path.removeprefix("$.").split("."):
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return MISSING
    return data


def flatten(record: dict[str, Any], depth: int) -> dict[str, Any]:
    """Nested objects ``depth`` levels deep as ``parent.child`` fields; deeper ones and lists stay nested."""
    if depth <= 0 or not any(isinstance(v, dict) for v in record.values()):
        return record
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):  # an empty object has no values to give: no columns
            for sub, v in flatten(value, depth - 1).items():
                out[f"{key}.{sub}"] = v
        else:
            out[key] = value
    return out


def describe(body: Any) -> str:
    """What a response (or part of one) is, for an error that says what was expected instead."""
    if isinstance(body, Mapping):
        return f"an object with keys {', '.join(map(str, list(body)[:12])) or '(none)'}"
    return f"a {type(body).__name__}"


_TIME_FORMS = [(re.compile(pattern), target) for pattern, target in ISO_FORMS]


class IsoTimes:
    """Fields whose every value is an ISO 8601 date or time of one form (as the CSV source guesses them, but
    over every record): JSON has no time type, and partitioning by ``updated_at`` needs one."""

    def __init__(self) -> None:
        self.forms: dict[str, list[bool]] = {}
        self.other: set[str] = set()

    def add(self, record: Mapping[str, Any]) -> None:
        """Take one record's fields into account."""
        for key, value in record.items():
            if value is None or key in self.other:
                continue
            forms = self.forms.setdefault(key, [True] * len(_TIME_FORMS))
            text = value.strip() if isinstance(value, str) else None
            for i, (pattern, _) in enumerate(_TIME_FORMS):
                forms[i] = forms[i] and text is not None and pattern.match(text) is not None
            if not any(forms):
                self.other.add(key)
                del self.forms[key]

    def result(self) -> dict[str, pl.DataType]:
        """Each time field and the type it converts to."""
        return {key: _TIME_FORMS[forms.index(True)][1] for key, forms in self.forms.items()}
