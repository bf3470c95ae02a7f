"""``${VAR}`` in pipeline files: string values read from the environment after the YAML is parsed (so a
value can never change the file's structure), ``$${VAR}`` for a literal ``${VAR}``.

>>> import os; os.environ["SHOP_PW"] = "s3cret"
>>> interpolate({"source": {"path": "postgresql://app:${SHOP_PW}@db/shop"}})
({'source': {'path': 'postgresql://app:s3cret@db/shop'}}, {'s3cret': '${SHOP_PW}'})

The second value maps each substituted value back to its ``${VAR}``: errors and reports show the name, never
the value (see :func:`engine.redact.unexpand`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from engine.errors import SpecError

__all__ = ["interpolate"]

#: ``$${NAME}`` (a literal, kept as ``${NAME}``) or ``${NAME}``
_REFERENCE = re.compile(r"\$(\$?)\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _field(path: str, key: int | str) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _expand(text: str, path: str, used: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        escaped, name = m.group(1), m.group(2)
        if escaped:
            return "${" + name + "}"
        if not _NAME.fullmatch(name):
            raise SpecError(path or "<root>", f"${{{name}}} is not an environment variable name "
                                              "(letters, digits, _); write $${...} for a literal")
        value = os.environ.get(name)
        if value is None:
            raise SpecError(path or "<root>", f"environment variable {name} is not set")
        if value:
            used[value] = "${" + name + "}"
        return value

    return _REFERENCE.sub(one, text)


def _walk(value: Any, path: str, used: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _expand(value, path, used) if "${" in value else value
    if isinstance(value, Mapping):
        return {k: _walk(v, _field(path, str(k)), used) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, _field(path, i), used) for i, v in enumerate(value)]
    return value


def interpolate(data: Any, path: str = "") -> tuple[Any, dict[str, str]]:
    """``data`` with ``${VAR}`` replaced in every string value (keys are left alone), and the values used,
    each mapped to its ``${VAR}``. An unset variable is a :class:`SpecError` naming it and the field."""
    used: dict[str, str] = {}
    return _walk(data, path, used), used
