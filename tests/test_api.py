"""The public API: a sorted ``__all__`` that resolves, one error tree, and a light ``import engine``."""

from __future__ import annotations

import subprocess
import sys

import engine
from engine import errors


def test_all_is_sorted_and_resolves() -> None:
    assert engine.__all__ == sorted(engine.__all__)
    for name in engine.__all__:
        assert hasattr(engine, name), name


def test_every_error_has_one_root_and_an_exit_code() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        if cls is errors.TransientError or not isinstance(cls, type):  # the marker, and first_line()
            continue
        assert issubclass(cls, errors.BiconicError)
        assert isinstance(cls.exit_code, int)
    assert issubclass(errors.SinkUnavailableError, errors.TransientError)
    assert errors.SpecError("steps[1].cast.a", "bad").path == "steps[1].cast.a"
    assert str(errors.SpecError("steps[1].cast.a", "bad")) == "steps[1].cast.a: bad"
    src = errors.SourceError("a.csv", "broken", row=3, column="x")
    assert str(src) == "a.csv, row 3, column 'x': broken"
    drift = errors.SchemaDriftError("t", "n", "bigint", "boolean", "hint")
    assert (drift.column, drift.existing, drift.incoming) == ("n", "bigint", "boolean")


def test_import_engine_stays_light() -> None:
    code = ("import sys, engine; heavy = ['adbc_driver_postgresql', 'adbc_driver_manager', 'fastexcel', "
            "'duckdb', 'redis', 'pgserver', 'yaml']; print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
