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


def test_the_package_ships_py_typed() -> None:
    """PEP 561: ``engine/py.typed`` exists and is package data of the wheel (as setuptools' build_py, which
    builds the wheel, resolves it from pyproject.toml: not through a MANIFEST that a build might lack)."""
    import os
    import warnings
    from importlib.resources import files
    from pathlib import Path

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    assert files("engine").joinpath("py.typed").is_file()
    root = Path(engine.__file__).resolve().parent.parent
    here = os.getcwd()
    try:
        os.chdir(root)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dist = apply_configuration(Distribution(), root / "pyproject.toml")
        dist.include_package_data = False  # only what pyproject.toml declares
        build = dist.get_command_obj("build_py")
        build.ensure_finalized()
        build.manifest_files = {}
        assert "engine/py.typed" in build.find_data_files("engine", "engine")
    finally:
        os.chdir(here)
