"""The house rules hold for the whole package: folder layers, no module over 500 lines, no class over 300, no
function over 60 (``python -m engine.tools.imports`` is the same check, for people)."""

from __future__ import annotations

import pytest

from engine.tools import imports


def test_the_package_keeps_its_layers_and_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    status = imports.main([])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "0 finding(s)" in out


def test_a_breach_is_reported(monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """The check can fail: a stricter limit turns today's largest function into a finding."""
    monkeypatch.setattr(imports, "MAX_FUNCTION", 5)
    assert imports.main([]) == 1
    assert "function over 5 lines" in capsys.readouterr().out
