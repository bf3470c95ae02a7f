"""The package surface: a sorted, complete ``__all__``, and an ``import engine`` that stays light."""

from __future__ import annotations

import subprocess
import sys

import engine

#: what ``import engine`` must not load: each is imported where it is used
HEAVY = ("adbc_driver_manager", "adbc_driver_postgresql", "duckdb", "fastexcel", "pgserver", "polars", "pyarrow",
         "redis", "yaml")


def test_all_is_sorted_and_resolves() -> None:
    assert engine.__all__ == sorted(engine.__all__)
    for name in engine.__all__:
        assert hasattr(engine, name), name
        assert getattr(engine, name) is not None, name


def test_import_engine_does_not_load_heavy_libraries() -> None:
    code = f"import sys, engine; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
