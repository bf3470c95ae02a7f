"""The error tree (``engine/errors.py``): one root, an exit code on every error, and messages built from the
inputs each error keeps as attributes."""

from __future__ import annotations

from engine import errors


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
