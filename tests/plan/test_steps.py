"""Transform steps on small lazy frames: every step, and what each row's status, rule and reason become."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from engine.errors import SpecError
from engine.plan.columns import COLUMN, DROP_COLUMN, REASON, ROW_COLUMN, RULE, STATUS, is_hidden
from engine.plan.frame import Plan, did_you_mean
from engine.plan.rules import apply_rules, finish, guard_copy
from engine.plan.steps import compile_steps, normalize
from engine.spec.parse import parse_pipeline

LOAD, QUARANTINE, FILTERED = 0, 1, 2


def _frame(data: dict[str, Any]) -> pl.LazyFrame:
    return pl.DataFrame(data).lazy().with_row_index(ROW_COLUMN, offset=1)


def _run(data: dict[str, Any], steps: list[Any] | None = None, rules: list[Any] | None = None,
         *, names: bool = False) -> pl.DataFrame:
    pipeline = parse_pipeline({"steps": steps or [], "rules": rules or []})
    plan = compile_steps(pipeline, _frame(data))
    apply_rules(plan, pipeline)
    guard_copy(plan)
    if names:
        normalize(plan)
    finish(plan)
    return plan.frame.collect()


def _status(df: pl.DataFrame) -> list[int]:
    return df[STATUS].to_list()


def _visible(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if not is_hidden(c)]


def test_no_steps_loads_everything_and_keeps_row_numbers() -> None:
    df = _run({"a": [1, 2], "b": ["x", None]})
    assert _status(df) == [LOAD, LOAD]
    assert df[ROW_COLUMN].to_list() == [1, 2]
    assert df[RULE].to_list() == [None, None]
    assert _visible(df) == ["a", "b"]


def test_select_keeps_only_named_columns_in_order() -> None:
    df = _run({"a": [1], "b": [2], "c": [3]}, [{"select": ["c", "a"]}])
    assert _visible(df) == ["c", "a"]
    assert ROW_COLUMN in df.columns


def test_rename() -> None:
    df = _run({"Fecha": ["x"], "b": [1]}, [{"rename": {"Fecha": "fecha", "b": "importe"}}])
    assert _visible(df) == ["fecha", "importe"]


def test_rename_swap_is_allowed() -> None:
    df = _run({"a": [1], "b": [2]}, [{"rename": {"a": "b", "b": "a"}}])
    assert df.select("a", "b").row(0) == (2, 1)


def test_cast_bad_values_are_rejected_nulls_are_not() -> None:
    df = _run({"n": ["1", "x", " 3 ", None, "4.5"]}, [{"cast": {"n": "int"}}])
    assert _status(df) == [LOAD, QUARANTINE, LOAD, LOAD, QUARANTINE]
    assert df["n"].to_list() == [1, None, 3, None, None]
    assert df[RULE].to_list()[1] == "cast"
    assert df[COLUMN].to_list()[1] == "n"
    assert df[REASON].to_list()[1] == "x is not a valid int64"
    assert df.schema["n"] == pl.Int64


@pytest.mark.parametrize(("values", "type_name", "dtype", "expected", "status"), [
    (["true", "No", "maybe"], "bool", pl.Boolean, [True, False, None], [LOAD, LOAD, QUARANTINE]),
    (["2024-02-29", "2024-02-30", None], "date", pl.Date, [dt.date(2024, 2, 29), None, None],
     [LOAD, QUARANTINE, LOAD]),
    (["2024-01-01 10:30:00", "soon"], "timestamp", pl.Datetime("us"), [dt.datetime(2024, 1, 1, 10, 30), None],
     [LOAD, QUARANTINE]),
    (["12.345", "abc"], "decimal(10,2)", pl.Decimal(10, 2), [Decimal("12.34"), None], [LOAD, QUARANTINE]),
    (["1.5", "1e3", "x"], "float", pl.Float64, [1.5, 1000.0, None], [LOAD, LOAD, QUARANTINE]),
    (["300", "100"], "int8", pl.Int16, [None, 100], [QUARANTINE, LOAD]),  # int8 is loaded as smallint
])
def test_cast_types(values: list[Any], type_name: str, dtype: pl.DataType, expected: list[Any],
                    status: list[int]) -> None:
    df = _run({"v": values}, [{"cast": {"v": type_name}}])
    assert df.schema["v"] == dtype
    assert _status(df) == status
    got = df["v"].to_list()
    if dtype == pl.Decimal(10, 2):  # rounding vs truncation is Polars' choice; the type and null are ours
        assert got[1] is None and got[0] in (Decimal("12.34"), Decimal("12.35"))
    else:
        assert got == expected


def test_cast_non_text_column() -> None:
    df = _run({"v": [1, 70000]}, [{"cast": {"v": "int16"}}])
    assert _status(df) == [LOAD, QUARANTINE]
    assert "70000 is not a valid int16" in df[REASON][1]


def test_derive_with_sql() -> None:
    df = _run({"price": [2.0, 3.0], "qty": [3, 4], "name": ["a", "b"]}, [{"derive": {
        "total": "price * qty",
        "big": "CASE WHEN qty > 3 THEN 'yes' ELSE 'no' END",
        "up": "upper(name)",
        "price": "price + 1",
    }}])
    assert df["total"].to_list() == [6.0, 12.0]
    assert df["big"].to_list() == ["no", "yes"]
    assert df["up"].to_list() == ["A", "B"]
    assert df["price"].to_list() == [3.0, 4.0]
    assert _status(df) == [LOAD, LOAD]


def test_derive_sees_earlier_steps() -> None:
    df = _run({"a": ["1", "2"]}, [{"cast": {"a": "int"}}, {"derive": {"b": "a * 10"}}])
    assert df["b"].to_list() == [10, 20]


def test_filter_marks_rows_filtered_not_quarantined() -> None:
    df = _run({"a": [1, 5, None, 10]}, [{"filter": "a > 2"}])
    assert _status(df) == [FILTERED, LOAD, FILTERED, LOAD]
    assert df[RULE].to_list() == [None, None, None, None]
    assert df.height == 4  # never dropped inside the plan


def test_two_filters_combine() -> None:
    df = _run({"a": [1, 5, 10]}, [{"filter": "a > 2"}, {"filter": "a < 8"}])
    assert _status(df) == [FILTERED, LOAD, FILTERED]


def test_fill_null() -> None:
    df = _run({"a": [1, None], "s": [None, "x"], "f": [None, 1.5]},
              [{"fill_null": {"a": 0, "s": "unknown", "f": 2}}])
    assert df["a"].to_list() == [1, 0]
    assert df["s"].to_list() == ["unknown", "x"]
    assert df["f"].to_list() == [2.0, 1.5]


def test_trim_and_normalize() -> None:
    df = _run({"s": ["  Hello   World ", "ÉCOLE\t", None, "cafe\u0301"]}, [
        {"trim": "s"},
        {"normalize": {"columns": "s", "case": "lower", "collapse_spaces": True, "unicode": "NFC"}},
    ])
    assert df["s"].to_list() == ["hello world", "école", None, "café"]


def test_trim_only_strips_ends() -> None:
    df = _run({"s": ["  a  b  "]}, [{"trim": {"columns": ["s"], "case": "upper"}}])
    assert df["s"].to_list() == ["A  B"]


def test_normalize_title_case_nfkc() -> None:
    df = _run({"s": ["ｍａｄｒｉｄ spain"]},
              [{"normalize": {"columns": "s", "unicode": "NFKC", "case": "title"}}])
    assert df["s"].to_list() == ["Madrid Spain"]


def test_parse_date_day_month_year() -> None:
    df = _run({"d": ["01/02/2024", " 31/12/2023 ", "2024-01-01", None, "32/01/2024"]},
              [{"parse_date": {"column": "d", "format": "%d/%m/%Y"}}])
    assert df.schema["d"] == pl.Date
    assert df["d"].to_list() == [dt.date(2024, 2, 1), dt.date(2023, 12, 31), None, None, None]
    assert _status(df) == [LOAD, LOAD, QUARANTINE, LOAD, QUARANTINE]
    assert df[RULE][2] == "parse_date"
    assert df[REASON][2] == "2024-01-01 does not match the date format %d/%m/%Y"


def test_parse_date_datetime_into_new_column() -> None:
    df = _run({"d": ["01/02/2024 13:45", "bad"]},
              [{"parse_date": {"column": "d", "format": "%d/%m/%Y %H:%M", "into": "ts", "kind": "datetime"}}])
    assert df["ts"].to_list() == [dt.datetime(2024, 2, 1, 13, 45), None]
    assert df["d"].to_list() == ["01/02/2024 13:45", "bad"]  # source kept
    assert _status(df) == [LOAD, QUARANTINE]


def test_parse_number_spanish() -> None:
    df = _run({"n": ["1.234,56", "12,5", "abc", None, "1.000.000", " -3,25 ", "1 234,5"]},
              [{"parse_number": {"column": "n", "decimal": ",", "thousands": "."}}])
    assert df["n"].to_list() == [1234.56, 12.5, None, None, 1_000_000.0, -3.25, 1234.5]
    assert _status(df) == [LOAD, LOAD, QUARANTINE, LOAD, LOAD, LOAD, LOAD]
    assert df[RULE][2] == "parse_number"
    assert df[REASON][2] == "abc is not a number (decimal ',', thousands '.')"


def test_parse_number_us_into_integer() -> None:
    df = _run({"n": ["1,234", "7", "2.5"]},
              [{"parse_number": {"column": "n", "thousands": ",", "type": "int64", "into": "m"}}])
    assert df["m"].to_list() == [1234, 7, None]
    assert _status(df) == [LOAD, LOAD, QUARANTINE]


def test_parse_number_decimal_type() -> None:
    df = _run({"n": ["1.234,56"]}, [{"parse_number": {"column": "n", "decimal": ",", "thousands": ".",
                                                      "type": "decimal(12,2)"}}])
    assert df["n"].to_list() == [Decimal("1234.56")]


def test_parse_number_into_numeric_quarantines_what_it_cannot_keep_exactly() -> None:
    """numeric(p,s) is exact: a value with more decimals than s is quarantined, not rounded (Polars rounds
    half to even, PostgreSQL half away from zero: either would change the number silently), and one too
    big for p says so."""
    df = _run({"n": ["1.234,56", "0,125", "1,500", "123.456.789.012,00", "-7", "x"]},
              [{"parse_number": {"column": "n", "decimal": ",", "thousands": ".", "type": "numeric(12,2)"}}])
    assert df.schema["n"] == pl.Decimal(12, 2)
    assert _status(df) == [LOAD, QUARANTINE, LOAD, QUARANTINE, LOAD, QUARANTINE]
    assert df["n"].to_list()[:3:2] == [Decimal("1234.56"), Decimal("1.50")]
    assert df[REASON].to_list()[1] == "0,125 has more decimals than numeric(12,2) keeps"
    assert df[REASON].to_list()[3] == "123.456.789.012,00 does not fit numeric(12,2)"
    assert df[REASON].to_list()[5] == "x is not a number (decimal ',', thousands '.')"


def test_dedupe_first_and_last() -> None:
    data = {"k": [1, 2, 1, 2, 3], "v": ["a", "b", "c", "d", "e"]}
    first = _run(data, [{"dedupe": "k"}])
    assert _status(first) == [LOAD, LOAD, FILTERED, FILTERED, LOAD]
    last = _run(data, [{"dedupe": {"keys": ["k"], "keep": "last"}}])
    assert _status(last) == [FILTERED, FILTERED, LOAD, LOAD, LOAD]


def test_dedupe_on_several_keys() -> None:
    df = _run({"a": [1, 1, 1], "b": ["x", "y", "x"]}, [{"dedupe": ["a", "b"]}])
    assert _status(df) == [LOAD, LOAD, FILTERED]


def test_dedupe_ignores_rows_already_filtered() -> None:
    """A row dropped by a filter is not the 'first' of its key: the surviving row must still load."""
    df = _run({"k": [1, 1, 2], "v": [0, 5, 7]}, [{"filter": "v > 0"}, {"dedupe": "k"}])
    assert _status(df) == [FILTERED, LOAD, LOAD]
    last = _run({"k": [1, 1], "v": [5, 0]}, [{"filter": "v > 0"}, {"dedupe": {"keys": "k", "keep": "last"}}])
    assert _status(last) == [LOAD, FILTERED]


def test_dedupe_ignores_rows_already_rejected() -> None:
    """The last row of a key failed its cast: the earlier valid row is the one to keep."""
    df = _run({"k": [1, 1], "v": ["5", "oops"]},
              [{"cast": {"v": "int"}}, {"dedupe": {"keys": "k", "keep": "last"}}])
    assert _status(df) == [LOAD, QUARANTINE]


def test_steps_chain_like_the_spec_example() -> None:
    df = _run({"Fecha": ["01/02/2024", "02/02/2024", "xx"], "importe": ["1.000,50", "-5,00", "3,00"]}, [
        {"rename": {"Fecha": "fecha"}},
        {"parse_date": {"column": "fecha", "format": "%d/%m/%Y"}},
        {"parse_number": {"column": "importe", "decimal": ",", "thousands": "."}},
        {"derive": {"total": "importe * 2"}},
        {"filter": "importe > 0"},
    ])
    assert _status(df) == [LOAD, FILTERED, QUARANTINE]
    assert df.row(0, named=True)["total"] == 2001.0
    assert df[RULE][2] == "parse_date"


def test_reasons_are_previewed_not_huge() -> None:
    df = _run({"n": ["x" * 5000]}, [{"cast": {"n": "int"}}])
    reason = df[REASON][0]
    assert len(reason) < 200
    assert reason.startswith("x" * 80 + "…")


def test_several_failures_on_one_row_are_all_reported() -> None:
    df = _run({"a": ["x"], "b": ["y"]}, [{"cast": {"a": "int", "b": "date"}}])
    assert df[RULE][0] == "cast"
    assert df[COLUMN][0] == "a"
    assert df[REASON][0] == "x is not a valid int64; y is not a valid date"


def test_normalize_renames_and_remembers_source_names() -> None:
    pipeline = parse_pipeline({})
    plan = compile_steps(pipeline, _frame({"Fecha Pedido": [1], '"; DROP TABLE x; --': [2], "": [3]}))
    normalize(plan)
    assert plan.columns == ["fecha_pedido", "drop_table_x", "column_3"]
    assert plan.renamed_from == {"fecha_pedido": "Fecha Pedido", "drop_table_x": '"; DROP TABLE x; --',
                                 "column_3": ""}
    assert plan.frame.collect().columns[0] == ROW_COLUMN


def test_plan_start_counts_source_rejects() -> None:
    frame = _frame({"a": [1]}).with_columns(pl.lit(None, dtype=pl.String).alias("__biconic_reject:0:type:a"))
    plan = Plan.start(frame)
    assert plan.columns == ["a"]
    assert plan.rejects == 1
    plan.reject("x", "a", pl.lit(True), pl.lit("r"))
    assert "__biconic_reject:1:x:a" in plan.frame.collect_schema()


def test_drop_flag_is_hidden() -> None:
    pipeline = parse_pipeline({"steps": [{"filter": "a > 1"}]})
    plan = compile_steps(pipeline, _frame({"a": [1, 2]}))
    assert DROP_COLUMN in plan.frame.collect_schema()
    assert plan.columns == ["a"]


def test_did_you_mean() -> None:
    assert did_you_mean("fecha", ["Fecha", "importe"]) == "; did you mean 'Fecha'?"
    assert did_you_mean("importes", ["Fecha", "importe"]) == "; did you mean 'importe'?"
    assert did_you_mean("zzz", ["a", "b"]) == "; columns are 'a', 'b'"
    many = [f"c{i}" for i in range(20)]
    assert did_you_mean("zzz", many).endswith(", ...")


def test_type_error_in_derive_points_at_the_step() -> None:
    with pytest.raises(SpecError) as info:
        _run({"d": [dt.date(2024, 1, 1)]}, [{"derive": {"x": "d + 'text'"}}])
    assert info.value.path == "steps[0].derive.x" or info.value.path.startswith("steps[0].derive")


def test_filter_must_be_a_predicate() -> None:
    with pytest.raises(SpecError) as info:
        _run({"a": [1, 2]}, [{"filter": "a + 1"}])
    assert info.value.path == "steps[0].filter"
    assert "true/false" in info.value.message


def test_cast_text_to_time() -> None:
    df = _run({"t": ["10:30:00", "x", None]}, [{"cast": {"t": "time"}}])
    assert df["t"].to_list() == [dt.time(10, 30), None, None]
    assert _status(df) == [LOAD, QUARANTINE, LOAD]


def test_cast_text_to_timestamptz_with_offsets() -> None:
    df = _run({"t": ["2024-01-01T10:00:00+02:00", "soon"]}, [{"cast": {"t": "timestamptz"}}])
    assert df.schema["t"] == pl.Datetime("us", "UTC")
    assert df["t"][0] == dt.datetime(2024, 1, 1, 8, 0, tzinfo=dt.UTC)
    assert _status(df) == [LOAD, QUARANTINE]


def test_parse_number_french_with_non_breaking_spaces() -> None:
    df = _run({"n": ["1\u00a0234,5", "12\u202f345\u202f678,25", "1 000"]},
              [{"parse_number": {"column": "n", "decimal": ","}}])
    assert df["n"].to_list() == [1234.5, 12345678.25, 1000.0]
    assert _status(df) == [LOAD, LOAD, LOAD]



def test_a_number_past_the_float_range_is_rejected_not_turned_into_infinity() -> None:
    """``1e400`` read into a double cast to Infinity and loaded so; a value written as infinity stays one."""
    frame = pl.LazyFrame({"x": ["1.5", "1e400", "-1E+400", "inf", "-Infinity", " 2 "]})
    plan = Plan.start(frame)
    plan.convert_columns({"x": pl.Float64()}, rule="type")
    finish(plan)
    got = plan.frame.collect()
    values = got["x"].to_list()
    assert values[0] == 1.5 and values[5] == 2.0
    assert values[3] == float("inf") and values[4] == float("-inf")
    assert values[1] is None and values[2] is None
    flagged = got.filter(pl.col(REASON) != "")
    assert sorted(flagged[REASON].to_list()) == ["-1E+400 is not a valid float64", "1e400 is not a valid float64"]
