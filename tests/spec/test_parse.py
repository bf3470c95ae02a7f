"""The pipeline spec: every step and rule parsed from dicts and YAML; every error names its exact path."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine.errors import SpecError
from engine.plan.columns import ROW_COLUMN
from engine.plan.rules import apply_rules
from engine.plan.steps import compile_steps
from engine.spec.models import (
    Allowed,
    Cast,
    Castable,
    Dedupe,
    Derive,
    FillNull,
    Filter,
    NotNull,
    ParseDate,
    ParseNumber,
    Pipeline,
    Range,
    Regex,
    Rename,
    Select,
    Trim,
    Unique,
    split_partition_by,
)
from engine.spec.parse import load_pipeline_file, make_target, parse_load, parse_pipeline, read_pipeline_spec


def _error(data: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_pipeline(data)
    return info.value


def _target_error(data: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        make_target(data)
    return info.value


# --- steps --------------------------------------------------------------------------------------------------
def test_every_step_parses_from_a_dict() -> None:
    p = parse_pipeline({"steps": [
        {"select": ["a", "b"]},
        {"rename": {"a": "x"}},
        {"cast": {"b": "decimal(12,2)"}},
        {"derive": {"total": "b * 2"}},
        {"filter": "b > 0"},
        {"fill_null": {"x": 0, "c": "unknown"}},
        {"trim": "c"},
        {"normalize": {"columns": ["c"], "case": "lower", "collapse_spaces": True, "unicode": "NFC"}},
        {"parse_date": {"column": "d", "format": "%d/%m/%Y"}},
        {"parse_date": {"column": "d", "format": "%d/%m/%Y %H:%M", "into": "ts", "kind": "datetime"}},
        {"parse_number": {"column": "n", "decimal": ",", "thousands": "."}},
        {"parse_number": {"column": "n", "into": "m", "type": "int64"}},
        {"dedupe": "x"},
        {"dedupe": {"keys": ["x", "c"], "keep": "last"}},
    ]})
    assert p.steps == (
        Select(columns=("a", "b")),
        Rename(mapping={"a": "x"}),
        Cast(types={"b": "decimal(12,2)"}),
        Derive(exprs={"total": "b * 2"}),
        Filter(expr="b > 0"),
        FillNull(values={"x": 0, "c": "unknown"}),
        Trim(columns=("c",)),
        Trim(columns=("c",), case="lower", collapse_spaces=True, unicode="NFC"),
        ParseDate(column="d", format="%d/%m/%Y"),
        ParseDate(column="d", format="%d/%m/%Y %H:%M", into="ts", kind="datetime"),
        ParseNumber(column="n", decimal=",", thousands="."),
        ParseNumber(column="n", into="m", type="int64"),
        Dedupe(keys=("x",)),
        Dedupe(keys=("x", "c"), keep="last"),
    )
    assert p.rules == ()
    assert p.normalize_names is True


def test_every_rule_parses_from_a_dict() -> None:
    p = parse_pipeline({"rules": [
        {"not_null": ["a", "b"]},
        {"not_null": "a"},
        {"unique": ["a", "b"]},
        {"range": {"column": "a", "min": 0}},
        {"range": {"column": "a", "max": 9.5}},
        {"range": {"column": "d", "min": "2024-01-01", "max": "2024-12-31"}},
        {"regex": {"column": "e", "pattern": "^[^@]+@[^@]+$"}},
        {"allowed": {"column": "s", "values": ["a", "b"]}},
        {"allowed_values": {"column": "s", "values": [1, 2]}},
        {"castable": {"column": "s", "type": "int"}},
    ]})
    assert p.rules == (
        NotNull(columns=("a", "b")),
        NotNull(columns=("a",)),
        Unique(columns=("a", "b")),
        Range(column="a", min=0),
        Range(column="a", max=9.5),
        Range(column="d", min="2024-01-01", max="2024-12-31"),
        Regex(column="e", pattern="^[^@]+@[^@]+$"),
        Allowed(column="s", values=("a", "b")),
        Allowed(column="s", values=(1, 2)),
        Castable(column="s", type="int"),
    )


def test_steps_and_rules_parse_from_yaml(tmp_path: Path) -> None:
    file = tmp_path / "spec.yaml"
    file.write_text(textwrap.dedent("""\
        steps:
          - rename: {Fecha: fecha}
          - parse_date: {column: fecha, format: "%d/%m/%Y"}
          - parse_number: {column: importe, decimal: ",", thousands: "."}
          - derive: {total: "importe * 1.21"}
          - filter: "importe > 0"
        rules:
          - not_null: [order_id]
          - range: {column: importe, min: 0}
        normalize_names: false
        """), encoding="utf-8")
    p = read_pipeline_spec(file)
    assert p.steps[0] == Rename(mapping={"Fecha": "fecha"})
    assert p.steps[1] == ParseDate(column="fecha", format="%d/%m/%Y")
    assert p.steps[2] == ParseNumber(column="importe", decimal=",", thousands=".")
    assert p.steps[3] == Derive(exprs={"total": "importe * 1.21"})
    assert p.steps[4] == Filter(expr="importe > 0")
    assert p.rules == (NotNull(columns=("order_id",)), Range(column="importe", min=0))
    assert p.normalize_names is False


def test_empty_pipeline() -> None:
    assert parse_pipeline(None) == Pipeline()
    assert parse_pipeline({}) == Pipeline()
    assert parse_pipeline({"steps": None, "rules": None}) == Pipeline()


@pytest.mark.parametrize(("data", "path", "words"), [
    ({"steps": [{"select": "a"}, {"select": "a"}, {"derive": {"total": 5}}]}, "steps[2].derive.total",
     "text"),
    ({"steps": [{"explode": "a"}]}, "steps[0].explode", "unknown step"),
    ({"steps": [{"select": "a", "rename": {"a": "b"}}]}, "steps[0]", "one key"),
    ({"steps": ["select"]}, "steps[0]", "one key"),
    ({"steps": {"select": "a"}}, "steps", "list"),
    ({"steps": [{"select": []}]}, "steps[0].select", "non-empty list"),
    ({"steps": [{"select": ["a", 3]}]}, "steps[0].select", "column name"),
    ({"steps": [{"rename": {}}]}, "steps[0].rename", "non-empty mapping"),
    ({"steps": [{"rename": {"a": 1}}]}, "steps[0].rename.a", "text"),
    ({"steps": [{"cast": {"a": "int9"}}]}, "steps[0].cast.a", "unknown type 'int9'"),
    ({"steps": [{"cast": {"a": 5}}]}, "steps[0].cast.a", "text"),
    ({"steps": [{"cast": {"a": "decimal(50,2)"}}]}, "steps[0].cast.a", "precision"),
    ({"steps": [{"filter": ""}]}, "steps[0].filter", "SQL predicate"),
    ({"steps": [{"filter": 3}]}, "steps[0].filter", "SQL predicate"),
    ({"steps": [{"fill_null": []}]}, "steps[0].fill_null", "mapping"),
    ({"steps": [{"trim": {"columns": "a", "case": "snake"}}]}, "steps[0].trim.case", "lower, upper, title"),
    ({"steps": [{"trim": {"columns": "a", "unicode": "NFX"}}]}, "steps[0].trim.unicode", "NFC"),
    ({"steps": [{"trim": {"columns": "a", "strip": True}}]}, "steps[0].trim.strip", "unknown option"),
    ({"steps": [{"normalize": {"case": "lower"}}]}, "steps[0].normalize.columns", "required"),
    ({"steps": [{"parse_date": {"column": "a"}}]}, "steps[0].parse_date.format", "required"),
    ({"steps": [{"parse_date": {"column": "a", "format": "%d", "zone": "x"}}]}, "steps[0].parse_date.zone",
     "unknown option"),
    ({"steps": [{"parse_date": {"column": "a", "format": "%d", "kind": "time"}}]}, "steps[0].parse_date.kind",
     "date, datetime"),
    ({"steps": [{"parse_date": "a"}]}, "steps[0].parse_date", "mapping"),
    ({"steps": [{"parse_number": {"column": "a", "type": "int9"}}]}, "steps[0].parse_number.type", "int9"),
    ({"steps": [{"parse_number": {"decimal": ","}}]}, "steps[0].parse_number.column", "required"),
    ({"steps": [{"dedupe": {"keys": "a", "keep": "middle"}}]}, "steps[0].dedupe.keep", "first, last"),
    ({"steps": [{"dedupe": {"keep": "last"}}]}, "steps[0].dedupe.keys", "required"),
    ({"rules": [{"range": {"column": "a"}}]}, "rules[0].range", "min, max"),
    ({"rules": [{"not_null": "a"}, {"range": {"min": 1}}]}, "rules[1].range.column", "required"),
    ({"rules": [{"range": {"column": "a", "min": 1, "low": 0}}]}, "rules[0].range.low", "unknown option"),
    ({"rules": [{"bogus": "a"}]}, "rules[0].bogus", "unknown rule"),
    ({"rules": {"not_null": "a"}}, "rules", "list"),
    ({"rules": [{"not_null": []}]}, "rules[0].not_null", "non-empty list"),
    ({"rules": [{"unique": 5}]}, "rules[0].unique", "column name"),
    ({"rules": [{"regex": {"column": "a", "pattern": "["}}]}, "rules[0].regex.pattern", "regular expression"),
    ({"rules": [{"regex": {"column": "a"}}]}, "rules[0].regex.pattern", "required"),
    ({"rules": [{"allowed": {"column": "a", "values": "x"}}]}, "rules[0].allowed.values", "non-empty list"),
    ({"rules": [{"allowed": {"column": "a", "values": []}}]}, "rules[0].allowed.values", "non-empty list"),
    ({"rules": [{"castable": {"column": "a", "type": "nope"}}]}, "rules[0].castable.type", "unknown type"),
    ({"rules": [{"castable": {"column": "a"}}]}, "rules[0].castable.type", "required"),
])
def test_errors_name_the_exact_path(data: dict[str, Any], path: str, words: str) -> None:
    err = _error(data)
    assert err.path == path
    assert words in err.message
    assert str(err).startswith(f"{path}: ")
    assert err.exit_code == 2


def test_regex_rule_accepts_the_rust_syntax_it_runs_with() -> None:
    """Patterns run in Polars (Rust regex): Unicode classes are valid, look-arounds are not."""
    assert parse_pipeline({"rules": [{"regex": {"column": "a", "pattern": r"^\p{L}+$"}}]}).rules == (
        Regex(column="a", pattern=r"^\p{L}+$"),)
    err = _error({"rules": [{"regex": {"column": "a", "pattern": r"^(?=a)b"}}]})
    assert err.path == "rules[0].regex.pattern"


@pytest.mark.parametrize(("data", "path"), [
    ({"steps": [{"trim": {"columns": "a", "collapse_spaces": "no"}}]}, "steps[0].trim.collapse_spaces"),
    ({"steps": [{"parse_date": {"column": "a", "format": 5}}]}, "steps[0].parse_date.format"),
    ({"steps": [{"parse_date": {"column": ["a"], "format": "%d"}}]}, "steps[0].parse_date.column"),
    ({"steps": [{"parse_number": {"column": "a", "decimal": 5}}]}, "steps[0].parse_number.decimal"),
    ({"steps": [{"parse_number": {"column": "a", "into": 5}}]}, "steps[0].parse_number.into"),
    ({"rules": [{"regex": {"column": "a", "pattern": 5}}]}, "rules[0].regex.pattern"),
    ({"steps": [{"parse_number": {"column": "a", "decimal": ",", "thousands": ","}}]},
     "steps[0].parse_number.thousands"),
    ({"steps": [{"parse_number": {"column": "a", "thousands": "."}}]}, "steps[0].parse_number.thousands"),
    ({"rules": [{"range": {"column": 5, "min": 1}}]}, "rules[0].range.column"),
    ({"normalize_names": "no"}, "normalize_names"),
])
def test_option_types_are_checked(data: dict[str, Any], path: str) -> None:
    assert _error(data).path == path


def test_unknown_top_level_key_in_a_pipeline_dict() -> None:
    """A typo such as ``step:`` must not silently drop every step."""
    err = _error({"step": [{"select": "a"}]})
    assert err.path == "step"


# --- target -------------------------------------------------------------------------------------------------
def test_merge_without_key() -> None:
    err = _target_error({"table": "t", "mode": "merge"})
    assert err.path == "target.key"
    assert "merge" in err.message


@pytest.mark.parametrize(("data", "path"), [
    ({"table": "t", "mode": "upsert"}, "target.mode"),
    ({"table": "t", "hash_partitions": -1}, "target.hash_partitions"),
    ({"table": "t", "hash_partitions": 2000}, "target.hash_partitions"),
    ({"table": "t", "hash_partitions": "4"}, "target.hash_partitions"),
    ({"table": "t", "hash_partitions": True}, "target.hash_partitions"),
    ({"table": "t", "connection_id": "has space"}, "target.connection_id"),
    ({"table": "t", "connection_id": "x" * 65}, "target.connection_id"),
    ({"table": "t", "connection_id": 2**63}, "target.connection_id"),
    ({"table": "t", "connection_id": 7.9}, "target.connection_id"),
    ({"table": "t", "connection_id": True}, "target.connection_id"),
    ({"table": "t", "contract": "loose"}, "target.contract"),
    ({"table": "t", "partition_by": 5}, "target.partition_by"),
    ({"table": "t", "partition_by": "  "}, "target.partition_by"),
    ({"table": "t", "key": [1]}, "target.key"),
])
def test_bad_target_options(data: dict[str, Any], path: str) -> None:
    assert _target_error(data).path == path


def test_target_defaults_and_values() -> None:
    t = make_target({"table": "s.orders", "connection_id": "7", "partition_by": "created_at:week",
                     "hash_partitions": 4, "mode": "merge", "key": "order_id", "contract": "freeze"})
    assert (t.table, t.connection_id, t.partition_by, t.granularity) == ("s.orders", 7, "created_at", "week")
    assert (t.hash_partitions, t.mode, t.key, t.contract) == (4, "merge", ("order_id",), "freeze")
    d = make_target({"table": "t"})
    assert (d.mode, d.granularity, d.hash_partitions) == ("append", "month", 0)
    assert (d.key, d.contract) == ((), "evolve")


@pytest.mark.parametrize(("value", "expected"), [
    (None, (None, "month")),
    ("ts", ("ts", "month")),
    ("ts:day", ("ts", "day")),
    ("ts:week", ("ts", "week")),
    ("ts:month", ("ts", "month")),
    ("ts:year", ("ts", "year")),
    ("a:b:year", ("a:b", "year")),
])
def test_split_partition_by(value: str | None, expected: tuple[str | None, str]) -> None:
    assert split_partition_by(value) == expected


# --- loads --------------------------------------------------------------------------------------------------
def test_parse_load_shorthands_and_options(tmp_path: Path) -> None:
    spec = parse_load({"source": {"path": "data/*.csv", "delimiter": ";", "encoding": "latin-1"},
                       "target": {"table": "orders", "partition_by": "fecha:day"},
                       "steps": [{"select": "a"}]}, base_dir=tmp_path)
    assert spec.source.path == str(tmp_path / "data/*.csv")
    assert dict(spec.source.options) == {"delimiter": ";", "encoding": "latin-1"}
    assert spec.target.granularity == "day"
    assert spec.pipeline.steps == (Select(columns=("a",)),)
    short = parse_load({"source": "/abs/x.csv", "target": "t"}, base_dir=tmp_path)
    assert short.source.path == "/abs/x.csv"
    assert short.target.table == "t"


@pytest.mark.parametrize(("data", "path"), [
    ([], "<root>"),
    ({"target": "t"}, "source.path"),
    ({"source": {"delimiter": ";"}, "target": "t"}, "source.path"),
    ({"source": "a.csv"}, "target.table"),
    ({"source": "a.csv", "target": {"table": " "}}, "target.table"),
    ({"source": "a.csv", "target": "t", "stepz": []}, "stepz"),
    ({"source": "a.csv", "target": {"table": "t", "partitions": 3}}, "target.partitions"),
    ({"source": "a.csv", "target": {"table": "t", "mode": "merge"}}, "target.key"),
    ({"source": "a.csv", "target": "t", "rules": [{"unique": []}]}, "rules[0].unique"),
])
def test_parse_load_errors(data: Any, path: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_load(data)
    assert info.value.path == path


def test_pipeline_file_with_several_loads(tmp_path: Path) -> None:
    file = tmp_path / "pipeline.yaml"
    file.write_text(textwrap.dedent("""\
        loads:
          - source: {path: data/orders_*.csv, delimiter: ";"}
            target: {table: orders, connection_id: 7, partition_by: "fecha:month", mode: merge,
                     key: [order_id]}
            steps:
              - parse_date: {column: fecha, format: "%d/%m/%Y"}
            rules:
              - not_null: [order_id]
          - source: customers.parquet
            target: customers
        """), encoding="utf-8")
    loads = load_pipeline_file(file)
    assert len(loads) == 2
    first, second = loads
    assert first.source.path == str(tmp_path.resolve() / "data/orders_*.csv")
    assert first.target.mode == "merge" and first.target.key == ("order_id",)
    assert first.target.connection_id == 7
    assert first.pipeline.steps == (ParseDate(column="fecha", format="%d/%m/%Y"),)
    assert second.target.table == "customers"
    assert second.pipeline == Pipeline()


def test_pipeline_file_errors_name_the_load(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("loads:\n  - {source: a.csv, target: t}\n"
                    "  - {source: b.csv, target: t, steps: [{nope: 1}]}\n")
    with pytest.raises(SpecError) as info:
        load_pipeline_file(file)
    assert info.value.path == "loads[1].steps[0].nope"
    file.write_text("loads: []\n")
    with pytest.raises(SpecError, match="non-empty list"):
        load_pipeline_file(file)
    file.write_text("source: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_pipeline_file(file)
    with pytest.raises(SpecError, match="not found"):
        load_pipeline_file(tmp_path / "missing.yaml")


def test_spec_file_rejects_unknown_keys(tmp_path: Path) -> None:
    file = tmp_path / "spec.yaml"
    file.write_text("steps: []\ntarget: t\n")
    with pytest.raises(SpecError) as info:
        read_pipeline_spec(file)
    assert info.value.path == "target"


def test_fingerprint_changes_with_the_pipeline() -> None:
    a = parse_pipeline({"steps": [{"filter": "a > 1"}]})
    b = parse_pipeline({"steps": [{"filter": "a > 2"}]})
    c = parse_pipeline({"steps": [{"filter": "a > 1"}], "normalize_names": False})
    assert a.fingerprint() == parse_pipeline({"steps": [{"filter": "a > 1"}]}).fingerprint()
    assert len({a.fingerprint(), b.fingerprint(), c.fingerprint()}) == 3


# --- compile-time checks against the data -------------------------------------------------------------------
def _frame() -> pl.LazyFrame:
    return pl.LazyFrame({"Fecha": ["01/02/2024"], "importe": ["1,5"], "qty": [3]}).with_row_index(ROW_COLUMN)


@pytest.mark.parametrize(("spec", "path"), [
    ({"steps": [{"parse_date": {"column": "fecha", "format": "%d/%m/%Y"}}]}, "steps[0].parse_date.column"),
    ({"steps": [{"select": ["fecha"]}]}, "steps[0].select"),
    ({"steps": [{"rename": {"fecha": "f"}}]}, "steps[0].rename.fecha"),
    ({"steps": [{"cast": {"fecha": "date"}}]}, "steps[0].cast.fecha"),
    ({"steps": [{"select": "Fecha"}, {"select": "Fecha"}, {"derive": {"total": "fecha || 'x'"}}]},
     "steps[2].derive.total"),
    ({"steps": [{"filter": "fecha IS NOT NULL"}]}, "steps[0].filter"),
    ({"steps": [{"fill_null": {"fecha": "x"}}]}, "steps[0].fill_null.fecha"),
    ({"steps": [{"dedupe": "fecha"}]}, "steps[0].dedupe.keys"),
    ({"steps": [{"trim": "fecha"}]}, "steps[0].trim.columns"),
])
def test_unknown_column_did_you_mean(spec: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as info:
        compile_steps(parse_pipeline(spec), _frame())
    assert info.value.path == path
    assert "unknown column 'fecha'; did you mean 'Fecha'?" in info.value.message


@pytest.mark.parametrize(("spec", "path"), [
    ({"rules": [{"not_null": "fecha"}]}, "rules[0].not_null"),
    ({"rules": [{"range": {"column": "fecha", "min": 1}}]}, "rules[0].range.column"),
    ({"rules": [{"regex": {"column": "fecha", "pattern": "x"}}]}, "rules[0].regex.column"),
    ({"rules": [{"allowed": {"column": "fecha", "values": ["x"]}}]}, "rules[0].allowed.column"),
    ({"rules": [{"castable": {"column": "fecha", "type": "date"}}]}, "rules[0].castable.column"),
    ({"rules": [{"unique": ["qty", "fecha"]}]}, "rules[0].unique"),
])
def test_unknown_column_in_rules_did_you_mean(spec: dict[str, Any], path: str) -> None:
    pipeline = parse_pipeline(spec)
    plan = compile_steps(pipeline, _frame())
    with pytest.raises(SpecError) as info:
        apply_rules(plan, pipeline)
    assert info.value.path == path
    assert "did you mean 'Fecha'?" in info.value.message


def test_unknown_column_without_a_close_match_lists_columns() -> None:
    with pytest.raises(SpecError, match=r"unknown column 'zzz'; columns are 'Fecha', 'importe', 'qty'"):
        compile_steps(parse_pipeline({"steps": [{"select": "zzz"}]}), _frame())


@pytest.mark.parametrize(("spec", "path", "words"), [
    ({"steps": [{"derive": {"x": "qty +* 2"}}]}, "steps[0].derive.x", "invalid SQL"),
    ({"steps": [{"rename": {"qty": "importe"}}]}, "steps[0].rename.qty", "already exists"),
    ({"steps": [{"trim": "qty"}]}, "steps[0].trim.columns", "not text"),
    ({"steps": [{"parse_date": {"column": "qty", "format": "%Y"}}]}, "steps[0].parse_date.column",
     "not text"),
    ({"steps": [{"parse_number": {"column": "qty"}}]}, "steps[0].parse_number.column", "not text"),
    ({"steps": [{"fill_null": {"qty": "many"}}]}, "steps[0].fill_null.qty", "does not fit"),
])
def test_compile_errors_point_at_the_step(spec: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        compile_steps(parse_pipeline(spec), _frame())
    assert info.value.path == path
    assert words in info.value.message


@pytest.mark.parametrize(("rule", "path"), [
    ({"range": {"column": "qty", "min": "lots"}}, "rules[0].range.min"),
    ({"range": {"column": "qty", "max": "lots"}}, "rules[0].range.max"),
    ({"allowed": {"column": "qty", "values": [1, "two"]}}, "rules[0].allowed.values"),
])
def test_rule_bounds_must_fit_the_column(rule: dict[str, Any], path: str) -> None:
    pipeline = parse_pipeline({"rules": [rule]})
    plan = compile_steps(pipeline, _frame())
    with pytest.raises(SpecError) as info:
        apply_rules(plan, pipeline)
    assert info.value.path == path


@pytest.mark.parametrize(("given", "stored"), [
    (7, 7), ("7", 7), (7.0, 7),
    ("3F2504E0-4F89-11D3-9A0C-0305E82C3301", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
    (uuid.UUID("3f2504e0-4f89-11d3-9a0c-0305e82c3301"), "3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
    ("tenant-a.eu:1", "tenant-a.eu:1"),
])
def test_connection_id_takes_an_integer_a_uuid_or_a_text_id(given: Any, stored: Any) -> None:
    """Issue 11: the platform keys connections by UUID; a UUID is kept in canonical form."""
    assert make_target({"table": "t", "connection_id": given}).connection_id == stored


def test_connection_override_is_a_target_option() -> None:
    assert make_target({"table": "t", "connection_override": True}).connection_override
    assert not make_target({"table": "t"}).connection_override
