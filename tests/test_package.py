"""The package surface: a sorted, complete __all__, and an import that stays light."""

from __future__ import annotations

import subprocess
import sys

import engine


def test_all_is_sorted_and_resolves() -> None:
    assert engine.__all__ == sorted(engine.__all__)
    for name in engine.__all__:
        assert getattr(engine, name) is not None


def test_import_engine_does_not_load_heavy_libraries() -> None:
    heavy = "('polars', 'adbc_driver_postgresql', 'pyarrow', 'fastexcel')"
    code = f"import sys, engine; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
