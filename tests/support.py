"""What many test modules share: types of the shared fixtures, small data helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

__all__ = ["FIXTURES", "Sql"]

#: the repository's sample files
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

#: the ``sql`` fixture: run one statement on the test database, get its rows
Sql: TypeAlias = Callable[..., list[tuple[Any, ...]]]
