"""The fast ISO path for dates and timestamps gives what Polars' general parser gives, value for value, with
the general parser's guess of the batch's form (engine.plan.iso_text)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from engine.plan.iso_text import _dates, _iso_datetimes, _naive_datetimes, to_naive_datetime

TIMESTAMPS = ["2026-01-17T05:50:53", "2026-01-17 05:50:53", "2026-01-17T05:50:53.5", "2026-01-17T05:50:53.123456789",
              "2026-02-30T00:00:00", "2026-01-17T24:00:00", "2026-01-17T05:50:60", "2026-13-01T00:00:00", None,
              "2026-01-17T05:50:53Z", "2026-01-17T05:50:53+02:00", "2026-01-17T05:50", "2026-1-7T5:50:53", "x",
              "2026-01-17T05:50:53.", "2026-01-17T05:50:53.12a", "0001-01-01T00:00:00", "9999-12-31T23:59:59.999999"]
FIRSTS = ["2026-01-17T05:50:53", "2026-01-17 05:50:53", "2026-01-17T05:50:53.000001", "2026/01/17 05:50:53"]
DATES = ["2026-01-07", "2026-02-30", "2026-1-7", "20260107", "2026/01/07", "2026-01-07T00:00:00", "x", None,
         "0001-01-01", "+2026-01-07", "2026-01-07x"]


def _general(values: pl.Series, date: bool) -> list[object]:
    try:
        parsed = values.str.to_date(strict=False) if date else values.str.to_datetime(time_unit="us", strict=False)
    except pl.exceptions.ComputeError:  # no value to guess a form from: every value is one that does not fit
        return [None] * values.len()
    return parsed.to_list()


def _ours(values: pl.Series, date: bool) -> list[object]:
    return (_dates(values) if date else _naive_datetimes(values)).to_list()


@pytest.mark.parametrize("value", TIMESTAMPS)
@pytest.mark.parametrize("first", [None, *FIRSTS])
def test_timestamps_parse_as_the_general_parser_does(first: str | None, value: str | None) -> None:
    values = pl.Series([value] if first is None else [first, value], dtype=pl.String)
    assert _ours(values, date=False) == _general(values, date=False)


@pytest.mark.parametrize("value", DATES)
@pytest.mark.parametrize("first", [None, "2026-01-08", "2026/01/08"])
def test_dates_parse_as_the_general_parser_does(first: str | None, value: str | None) -> None:
    values = pl.Series([value] if first is None else [first, value], dtype=pl.String)
    assert _ours(values, date=True) == _general(values, date=True)


def test_the_fast_path_takes_fractions_of_any_length_and_leaves_other_forms_to_the_general_parser() -> None:
    fast = _iso_datetimes(pl.Series(["2026-01-17T05:50:53.5", "2026-01-17T05:50:53.000123999", None]))
    assert fast is not None and fast.to_list() == [dt.datetime(2026, 1, 17, 5, 50, 53, 500_000),
                                                   dt.datetime(2026, 1, 17, 5, 50, 53, 123), None]
    assert _iso_datetimes(pl.Series(["2026-01-17T05:50:53Z"])) is None
    assert _iso_datetimes(pl.Series(["17/01/2026 05:50:53"])) is None


def test_a_slice_with_nothing_to_guess_a_form_from_is_nulls_not_an_error() -> None:
    assert _naive_datetimes(pl.Series("t", ["soon", None])).to_list() == [None, None]
    assert _dates(pl.Series("d", ["later"])).dtype == pl.Date


def test_in_a_lazy_plan_read_in_batches() -> None:
    frame = pl.LazyFrame({"t": [f"2026-01-{1 + i % 28:02d}T10:00:0{i % 10}.25" for i in range(50_000)]})
    parsed = pl.concat(list(frame.select(to_naive_datetime(pl.col("t"))).collect_batches(chunk_size=7_000)))
    assert parsed.schema["t"] == pl.Datetime("us") and parsed["t"].null_count() == 0
    assert parsed["t"][3] == dt.datetime(2026, 1, 4, 10, 0, 3, 250_000)
