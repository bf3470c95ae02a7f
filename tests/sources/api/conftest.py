"""Fixtures of the API-source tests (the loopback HTTP server and the manual clock are the root conftest's)."""

from __future__ import annotations

import pytest

from tests.sources.api._helpers import SECRET


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every credential variable the tests name holds :data:`SECRET`."""
    for name in ("T_TOKEN", "T_PASSWORD", "T_KEY"):
        monkeypatch.setenv(name, SECRET)
