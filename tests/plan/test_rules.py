"""Validation rules, the COPY-safety guard and the final split, on small lazy frames (no database)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from engine.plan.columns import COLUMN, REASON, ROW_COLUMN, RULE, SOURCE_PREFIX, STATUS, is_hidden
from engine.plan.frame import Plan
from engine.plan.rules import apply_rules, finish, guard_copy
from engine.plan.steps import compile_steps
from engine.spec.parse import parse_pipeline

LOAD, QUARANTINE, FILTERED = 0, 1, 2


def _run(data: dict[str, Any] | pl.DataFrame, rules: list[Any] | None = None,
         steps: list[Any] | None = None) -> pl.DataFrame:
    df = data if isinstance(data, pl.DataFrame) else pl.DataFrame(data)
    pipeline = parse_pipeline({"steps": steps or [], "rules": rules or []})
    plan = compile_steps(pipeline, df.lazy().with_row_index(ROW_COLUMN, offset=1))
    apply_rules(plan, pipeline)
    guard_copy(plan)
    finish(plan)
    return plan.frame.collect()


def _status(df: pl.DataFrame) -> list[int]:
    return df[STATUS].to_list()


# --- rules --------------------------------------------------------------------------------------------------
def test_not_null() -> None:
    df = _run({"a": [1, None, 3], "b": ["x", "y", None]}, [{"not_null": ["a", "b"]}])
    assert _status(df) == [LOAD, QUARANTINE, QUARANTINE]
    assert df[RULE].to_list() == [None, "not_null", "not_null"]
    assert df[COLUMN].to_list() == [None, "a", "b"]
    assert df[REASON].to_list()[1:] == ["a is null", "b is null"]


def test_not_null_reports_every_null_column() -> None:
    df = _run({"a": [None], "b": [None]}, [{"not_null": ["a", "b"]}])
    assert df[REASON][0] == "a is null; b is null"
    assert df[COLUMN][0] == "a"


def test_unique_single_and_composite() -> None:
    df = _run({"a": [1, 2, 1, 1], "b": ["x", "x", "y", "x"]}, [{"unique": ["a", "b"]}])
    assert _status(df) == [LOAD, LOAD, LOAD, QUARANTINE]
    assert df[RULE][3] == "unique"
    assert df[COLUMN][3] == "a, b"
    assert df[REASON][3] == 'duplicate (a, b) = {"a":1,"b":"x"}'
    single = _run({"a": [5, 5, 5]}, [{"unique": "a"}])
    assert _status(single) == [LOAD, QUARANTINE, QUARANTINE]


def test_unique_ignores_rows_that_will_not_load() -> None:
    """The first row of a key was filtered out (or failed another rule): the next one is not a duplicate."""
    df = _run({"k": [1, 1, 2, 2], "v": [0, 5, None, 7]},
              rules=[{"not_null": "v"}, {"unique": "k"}], steps=[{"filter": "v IS NULL OR v > 0"}])
    assert _status(df) == [FILTERED, LOAD, QUARANTINE, LOAD]
    assert df[RULE].to_list()[2] == "not_null"


@pytest.mark.parametrize(("rule", "status"), [
    ({"min": 2, "max": 9}, [QUARANTINE, LOAD, LOAD, QUARANTINE, LOAD]),
    ({"min": 2}, [QUARANTINE, LOAD, LOAD, LOAD, LOAD]),
    ({"max": 5}, [LOAD, LOAD, LOAD, QUARANTINE, LOAD]),
    ({"min": 2.5, "max": 5.5}, [QUARANTINE, QUARANTINE, LOAD, QUARANTINE, LOAD]),
])
def test_range_numbers_nulls_pass(rule: dict[str, Any], status: list[int]) -> None:
    df = _run({"a": [1, 2, 5, 10, None]}, [{"range": {"column": "a", **rule}}])
    assert _status(df) == status


def test_range_reason_names_the_bounds() -> None:
    df = _run({"a": [10]}, [{"range": {"column": "a", "min": 0, "max": 9}}])
    assert df[RULE][0] == "range"
    assert df[REASON][0] == "10 is outside [0, 9]"
    df = _run({"a": [-1]}, [{"range": {"column": "a", "min": 0}}])
    assert df[REASON][0] == "-1 is outside [0, ]"


def test_range_dates_from_iso_text() -> None:
    df = _run({"d": [dt.date(2023, 12, 31), dt.date(2024, 6, 1), dt.date(2025, 1, 1)]},
              [{"range": {"column": "d", "min": "2024-01-01", "max": "2024-12-31"}}])
    assert _status(df) == [QUARANTINE, LOAD, QUARANTINE]


def test_range_timestamps_from_iso_text() -> None:
    df = _run({"t": [dt.datetime(2024, 1, 1, 0, 0), dt.datetime(2024, 1, 1, 12, 0)]},
              [{"range": {"column": "t", "min": "2024-01-01T06:00:00"}}])
    assert _status(df) == [QUARANTINE, LOAD]


def test_regex_searches_and_skips_nulls() -> None:
    df = _run({"e": ["a@b.com", "nope", None, "x a@b.c"]},
              [{"regex": {"column": "e", "pattern": "^[^@ ]+@[^@]+$"}}])
    assert _status(df) == [LOAD, QUARANTINE, LOAD, QUARANTINE]
    assert df[REASON][1] == "nope does not match ^[^@ ]+@[^@]+$"
    unanchored = _run({"e": ["xx42yy", "none"]}, [{"regex": {"column": "e", "pattern": r"\d+"}}])
    assert _status(unanchored) == [LOAD, QUARANTINE]


def test_regex_unicode_class_and_non_text_column() -> None:
    df = _run({"s": ["Ñandú", "abc1"]}, [{"regex": {"column": "s", "pattern": r"^\p{L}+$"}}])
    assert _status(df) == [LOAD, QUARANTINE]
    nums = _run({"n": [123, 12]}, [{"regex": {"column": "n", "pattern": r"^\d{3}$"}}])
    assert _status(nums) == [LOAD, QUARANTINE]


def test_allowed_values() -> None:
    df = _run({"s": ["a", "b", "c", None]}, [{"allowed": {"column": "s", "values": ["a", "b"]}}])
    assert _status(df) == [LOAD, LOAD, QUARANTINE, LOAD]
    assert df[RULE][2] == "allowed"
    assert df[REASON][2] == "c is not one of the allowed values"
    ints = _run({"n": [1, 2, 3]}, [{"allowed_values": {"column": "n", "values": [1, 3]}}])
    assert _status(ints) == [LOAD, QUARANTINE, LOAD]


def test_castable_leaves_the_column_unchanged() -> None:
    df = _run({"s": ["1", "x", None, "2024-01-01"]}, [{"castable": {"column": "s", "type": "int"}}])
    assert _status(df) == [LOAD, QUARANTINE, LOAD, QUARANTINE]
    assert df.schema["s"] == pl.String
    assert df["s"].to_list() == ["1", "x", None, "2024-01-01"]
    assert df[REASON][1] == "x is not castable to int"
    dates = _run({"s": ["2024-01-01", "2024-13-01"]}, [{"castable": {"column": "s", "type": "date"}}])
    assert _status(dates) == [LOAD, QUARANTINE]


def test_first_failing_rule_wins_and_all_reasons_are_kept() -> None:
    df = _run({"a": [None]}, [{"not_null": "a"}, {"castable": {"column": "a", "type": "int"}}])
    assert df[RULE][0] == "not_null"
    df = _run({"a": [50], "b": ["zz"]}, [{"range": {"column": "a", "max": 9}},
                                         {"regex": {"column": "b", "pattern": "^a"}}])
    assert df[RULE][0] == "range"
    assert df[REASON][0] == "50 is outside [, 9]; zz does not match ^a"


def test_filtered_rows_are_not_quarantined() -> None:
    df = _run({"a": [1, None]}, rules=[{"not_null": "a"}], steps=[{"filter": "a IS NOT NULL"}])
    assert _status(df) == [LOAD, FILTERED]


# --- the COPY-safety guard ----------------------------------------------------------------------------------
def test_guard_nul_bytes() -> None:
    df = _run({"s": ["ok", "a\x00b", None]})
    assert _status(df) == [LOAD, QUARANTINE, LOAD]
    assert df[RULE][1] == "copy_safe"
    assert df[COLUMN][1] == "s"
    assert "NUL" in df[REASON][1]


def test_guard_dates_outside_postgres_range() -> None:
    days = pl.Series("d", [0, -3_000_000, None]).cast(pl.Date)  # 1970-01-01, year -6244
    df = _run(pl.DataFrame([days]))
    assert _status(df) == [LOAD, QUARANTINE, LOAD]
    assert "outside PostgreSQL's date range" in df[REASON][1]


def test_guard_timestamps_outside_postgres_range() -> None:
    micros = pl.Series("t", [0, -3_000_000 * 86_400 * 10**6]).cast(pl.Datetime("us"))
    df = _run(pl.DataFrame([micros]))
    assert _status(df) == [LOAD, QUARANTINE]
    assert "outside PostgreSQL's timestamp range" in df[REASON][1]


def test_guard_uint64_overflow() -> None:
    df = _run(pl.DataFrame({"u": pl.Series([1, 2**63 - 1, 2**63, 2**64 - 1], dtype=pl.UInt64)}))
    assert _status(df) == [LOAD, LOAD, QUARANTINE, QUARANTINE]
    assert df.schema["u"] == pl.Int64
    assert df["u"].to_list()[:2] == [1, 2**63 - 1]
    assert df[REASON][2] == f"{2**63} overflows bigint"


@pytest.mark.parametrize(("dtype", "loadable"), [
    (pl.UInt8, pl.Int16), (pl.Int8, pl.Int16), (pl.UInt16, pl.Int32), (pl.UInt32, pl.Int64),
    (pl.Float32, pl.Float32), (pl.Int32, pl.Int32),
])
def test_guard_casts_to_loadable_types(dtype: pl.DataType, loadable: pl.DataType) -> None:
    df = _run(pl.DataFrame({"n": pl.Series([1, 2], dtype=dtype)}))
    assert df.schema["n"] == loadable
    assert df["n"].to_list() == [1, 2]


def test_guard_categorical_and_nanosecond_timestamps() -> None:
    df = _run(pl.DataFrame({
        "c": pl.Series(["a", "b"], dtype=pl.Categorical),
        "t": pl.Series([dt.datetime(2024, 1, 1, 1, 2, 3, 4), None], dtype=pl.Datetime("ns")),
    }))
    assert df.schema["c"] == pl.String
    assert df.schema["t"] == pl.Datetime("us")
    assert df["c"].to_list() == ["a", "b"]
    assert df["t"].to_list() == [dt.datetime(2024, 1, 1, 1, 2, 3, 4), None]


def test_guard_nested_values_become_json_text() -> None:
    df = _run(pl.DataFrame({
        "l": [[1, 2], None, []],
        "st": [{"x": 1, "y": "q"}, {"x": None, "y": '"z'}, None],
        "ls": [[{"k": "v"}], [], None],
    }))
    assert df.schema["l"] == pl.String and df.schema["st"] == pl.String and df.schema["ls"] == pl.String
    assert df["l"].to_list() == ["[1,2]", None, "[]"]
    assert df["st"].to_list() == ['{"x":1,"y":"q"}', '{"x":null,"y":"\\"z"}', None]
    assert df["ls"].to_list() == ['[{"k":"v"}]', "[]", None]
    assert _status(df) == [LOAD, LOAD, LOAD]


# --- finish -------------------------------------------------------------------------------------------------
def test_finish_without_rejects() -> None:
    df = _run({"a": [1]})
    assert df.row(0, named=True) == {ROW_COLUMN: 1, "a": 1, f"{SOURCE_PREFIX}a": 1, STATUS: 0, RULE: None,
                                     COLUMN: None, REASON: None}


def test_finish_drops_bookkeeping_columns() -> None:
    df = _run({"a": ["1", "x"]}, rules=[{"not_null": "a"}],
              steps=[{"cast": {"a": "int"}}, {"filter": "a > 0"}])
    hidden = [c for c in df.columns if is_hidden(c)]
    # the source values stay (for quarantine's raw column); the per-rule bookkeeping is gone
    assert sorted(hidden) == sorted([ROW_COLUMN, f"{SOURCE_PREFIX}a", STATUS, RULE, COLUMN, REASON])
    assert df.schema[STATUS] == pl.Int8


def test_status_counts_add_up_on_a_mixed_frame() -> None:
    n = 1000
    data = {
        "id": [str(i) if i % 97 else "bad" for i in range(n)],
        "amount": [float(i % 50) - 5 for i in range(n)],
        "kind": ["a" if i % 3 else "b" for i in range(n)],
    }
    df = _run(data, steps=[{"cast": {"id": "int"}}, {"filter": "kind = 'a'"}],
              rules=[{"range": {"column": "amount", "min": 0}}])
    counts = df.group_by(STATUS).len().sort(STATUS)
    assert sum(counts["len"].to_list()) == n
    expected_filtered = sum(1 for i in range(n) if i % 3 == 0)
    expected_bad = sum(1 for i in range(n) if i % 3 and (i % 97 == 0 or (i % 50) - 5 < 0))
    got = dict(zip(counts[STATUS].to_list(), counts["len"].to_list(), strict=True))
    assert got[FILTERED] == expected_filtered
    assert got[QUARANTINE] == expected_bad
    assert got[LOAD] == n - expected_filtered - expected_bad


def test_plan_reject_and_apply_rules_on_a_bare_plan() -> None:
    plan = Plan.start(pl.LazyFrame({"a": [1, 2]}).with_row_index(ROW_COLUMN))
    plan.reject("custom", "a", pl.col("a") > 1, pl.lit("too big"))
    finish(plan)
    df = plan.frame.collect()
    assert _status(df) == [LOAD, QUARANTINE]
    assert df[RULE].to_list() == [None, "custom"]


def test_allowed_fractional_value_on_an_integer_column_is_a_spec_error() -> None:
    from engine.errors import SpecError

    with pytest.raises(SpecError) as info:
        _run({"n": [1, 2]}, [{"allowed": {"column": "n", "values": [1, 2.5]}}])
    assert info.value.path == "rules[0].allowed.values"


def test_range_on_a_time_zone_aware_column() -> None:
    utc = pl.Series([dt.datetime(2024, 1, 1), dt.datetime(2023, 1, 1)]).dt.replace_time_zone("UTC")
    frame = pl.DataFrame({"t": utc})
    naive_bound = _run(frame, [{"range": {"column": "t", "min": "2023-06-01T00:00:00"}}])
    assert _status(naive_bound) == [LOAD, QUARANTINE]
    offset_bound = _run(frame, [{"range": {"column": "t", "max": "2023-06-01T02:00:00+02:00"}}])
    assert _status(offset_bound) == [QUARANTINE, LOAD]
    yaml_datetime = _run(frame, [{"range": {"column": "t", "min": dt.datetime(2023, 6, 1)}}])
    assert _status(yaml_datetime) == [LOAD, QUARANTINE]


def test_range_offset_bound_on_a_naive_column_is_a_spec_error() -> None:
    from engine.errors import SpecError

    with pytest.raises(SpecError) as info:
        _run({"t": [dt.datetime(2024, 1, 1)]},
             [{"range": {"column": "t", "min": "2023-06-01T00:00:00+02:00"}}])
    assert info.value.path == "rules[0].range.min"
