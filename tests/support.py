"""What many test modules share: types of the shared fixtures, small data helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

__all__ = ["Sql"]

#: the ``sql`` fixture: run one statement on the test database, get its rows
Sql: TypeAlias = Callable[..., list[tuple[Any, ...]]]
