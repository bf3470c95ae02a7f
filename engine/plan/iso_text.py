"""Text to dates and naive timestamps, with a fast path for the ISO forms exports use.

Polars parses ``str.to_date()`` and ``str.to_datetime()`` with no format by guessing one from the batch's first
value and running chrono's general parser on every value: 0.25 CPU-s per 1M timestamps, the largest single
cost of reading the bench CSV. Given the exact forms ``%Y-%m-%d`` and ``%Y-%m-%dT%H:%M:%S`` (or with a space)
it takes a fixed-width parser that is five times faster. So each slice Polars hands over (a few thousand
rows; the plan streams) is first parsed that way (the fraction of a second, ``.f`` to ``.fffffffff``, added
separately); when that parses every value, it is the answer, and otherwise the slice goes through the general
parser as before (``tests/plan/test_iso_text.py`` checks the two side by side). A slice in which the general
parser finds no form to guess from gives nulls, so its rows are quarantined as values that do not fit,
instead of failing the load.
"""

from __future__ import annotations

import polars as pl

__all__ = ["to_date", "to_naive_datetime"]

_SECONDS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")
#: what may follow the seconds in the fast path: nothing, or a fraction of 1 to 9 digits
_FRACTION = r"^(\.[0-9]{1,9})?$"


def to_date(text: pl.Expr) -> pl.Expr:
    """Dates from text (already stripped); values that do not parse become null."""
    return text.map_batches(_dates, return_dtype=pl.Date, is_elementwise=True)


def to_naive_datetime(text: pl.Expr) -> pl.Expr:
    """Microsecond timestamps without a time zone from text (already stripped); values that do not parse
    become null."""
    return text.map_batches(_naive_datetimes, return_dtype=pl.Datetime("us"), is_elementwise=True)


def _dates(text: pl.Series) -> pl.Series:
    fast = text.str.to_date("%Y-%m-%d", strict=False, cache=False)
    if fast.null_count() == text.null_count():
        return fast
    try:
        return text.str.to_date(strict=False)
    except pl.exceptions.ComputeError:  # no value it could guess a form from
        return pl.Series(text.name, [None] * text.len(), dtype=pl.Date)


def _naive_datetimes(text: pl.Series) -> pl.Series:
    fast = _iso_datetimes(text)
    if fast is not None:
        return fast
    try:
        return text.str.to_datetime(time_unit="us", strict=False)
    except pl.exceptions.ComputeError:  # no value it could guess a form from
        return pl.Series(text.name, [None] * text.len(), dtype=pl.Datetime("us"))


def _iso_datetimes(text: pl.Series) -> pl.Series | None:
    """Every value as ``YYYY-MM-DD[T ]HH:MM:SS[.fraction]``, or None when one is not."""
    nulls = text.null_count()
    seconds = text.str.slice(0, 19)
    parsed = None
    for form in _SECONDS:
        attempt = seconds.str.to_datetime(form, time_unit="us", strict=False, cache=False)
        if attempt.null_count() == nulls:
            parsed = attempt
            break
    if parsed is None:
        return None
    rest = text.str.slice(19)
    if not rest.str.contains(_FRACTION).fill_null(True).all():
        return None
    micros = rest.str.slice(1, 6).str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0)
    return (parsed + micros.cast(pl.Duration("us"))).alias(text.name)
