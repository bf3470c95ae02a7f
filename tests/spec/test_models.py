"""The spec models: what a pipeline file may say, and hashes that stay put across versions (a changed
fingerprint would make every file a new load, and re-runs would duplicate rows)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.errors import SpecError
from engine.spec.models import ParseNumber, Pipeline, Select, TargetSpec
from engine.spec.parse import load_pipeline_file, parse_load, parse_pipeline

#: every step and rule kind with non-default options (the same pipeline the previous release hashed)
ALL_KINDS = {
    "steps": [{"select": ["a", "b", "fecha"]}, {"rename": {"a": "x"}}, {"cast": {"b": "decimal(12,2)"}},
              {"derive": {"t": "x * 2"}}, {"filter": "x > 1"}, {"fill_null": {"x": 0}},
              {"trim": {"columns": ["b"], "case": "lower"}}, {"parse_date": {"column": "fecha", "format": "%d/%m/%Y"}},
              {"parse_number": {"column": "x", "decimal": ",", "thousands": "."}},
              {"dedupe": {"keys": ["x"], "keep": "last"}}],
    "rules": [{"not_null": ["x"]}, {"unique": "x"}, {"range": {"column": "x", "min": 0, "max": 10.5}},
              {"regex": {"column": "b", "pattern": "^a"}}, {"allowed": {"column": "b", "values": ["a", 1]}},
              {"castable": {"column": "b", "type": "int"}}],
}


def test_fingerprints_are_those_of_the_previous_release() -> None:
    """Pinned: computed with the release before the spec moved to pydantic (dataclasses)."""
    assert parse_pipeline(ALL_KINDS).fingerprint() == "0a39cb9f9af386f4"
    assert Pipeline().fingerprint() == "ee1d26347c1caac4"


def test_models_are_frozen_and_forbid_unknown_fields() -> None:
    step = Select(columns=("a",))
    with pytest.raises(Exception, match="frozen"):
        step.columns = ("b",)  # type: ignore[misc]
    with pytest.raises(Exception, match="Extra inputs"):
        Select(columns=("a",), nope=1)  # type: ignore[call-arg]


def test_pipeline_yaml_takes_every_target_key_the_api_takes(tmp_path: Path) -> None:
    """The bug: ``archive`` and ``layout`` worked from the Python API and the CLI but a pipeline file refused
    them as unknown keys."""
    file = tmp_path / "p.yaml"
    file.write_text(textwrap.dedent("""\
        loads:
          - source: a.json
            target: {table: docs, layout: document, archive: false}
          - source: b.csv
            target: {table: t, archive: s3://bucket/prefix, allow_empty: true, indexes: ["gist(area)"]}
        """))
    first, second = load_pipeline_file(file)
    assert (first.target.layout, first.target.archive, first.target.allow_empty) == ("document", "off", False)
    assert (second.target.layout, second.target.archive) == ("table", "s3://bucket/prefix")
    assert second.target.allow_empty and second.target.indexes == ("gist(area)",)
    allowed = set(TargetSpec.model_fields) - {"granularity"}  # written as partition_by: COLUMN:week
    for key in allowed:
        assert key in {"table", "connection_id", "connection_override", "partition_by", "hash_partitions", "mode",
                       "key", "contract", "dsn", "archive", "layout", "max_rejected", "allow_empty", "indexes"}


@pytest.mark.parametrize(("target", "path"), [
    ({"table": "t", "layout": "tree"}, "target.layout"),
    ({"table": "t", "layout": "document", "mode": "merge", "key": "id"}, "target.layout"),
    ({"table": "t", "archive": 3}, "target.archive"),
    ({"table": "t", "granularity": "week"}, "target.granularity"),
])
def test_bad_target_keys_in_a_file_name_their_path(target: dict[str, object], path: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_load({"source": "a.csv", "target": target})
    assert info.value.path == path


@pytest.mark.parametrize(("spec_type", "hint"), [
    ("date", "parse_number makes numbers: use an integer, float or decimal(p,s) type, got 'date'"),
    ("text", "parse_number makes numbers"),
    ("decimal", "give the digits kept, e.g. decimal(12,2)"),
    ("numeric", "give the digits kept"),
])
def test_parse_number_type_must_be_a_number_with_its_digits(spec_type: str, hint: str) -> None:
    """A bare decimal would silently drop every fraction (decimal(38,0)); a date type is not a number."""
    with pytest.raises(SpecError) as info:
        parse_pipeline({"steps": [{"parse_number": {"column": "x", "decimal": ",", "type": spec_type}}]})
    assert info.value.path == "steps[0].parse_number.type"
    assert hint in str(info.value)


def test_parse_number_takes_numeric_with_digits() -> None:
    pipeline = parse_pipeline({"steps": [{"parse_number": {"column": "x", "decimal": ",", "type": "numeric(12,2)"}}]})
    step = pipeline.steps[0]
    assert isinstance(step, ParseNumber) and step.type == "numeric(12,2)"
