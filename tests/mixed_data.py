"""The mixed-type dataset that the archive and query tests load, and what the engine makes of it."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import polars as pl

#: the source's columns after the engine's type mapping (the CSV's decimal-ish text is inferred as a float)
TYPES = {"id": pl.Int64, "connection_id": pl.Int64, "created_at": pl.Datetime("us"), "qty": pl.Int64,
         "price": pl.Float64, "amount": pl.Float64, "day": pl.Date, "active": pl.Boolean, "note": pl.String}


def make_source(n: int = 20_000, *, seed: int = 7, first_id: int = 1, start: dt.datetime = dt.datetime(2024, 1, 1),
                days: int = 90) -> pl.DataFrame:
    """``n`` rows over 3 connections and ``days`` days from ``start`` (3 months by default), mixed types."""
    rng = random.Random(seed)
    step = days * 86_400 / n
    return pl.DataFrame({
        "id": range(first_id, first_id + n),
        "connection_id": [rng.randint(1, 3) for _ in range(n)],
        "created_at": [start + dt.timedelta(seconds=int(i * step), microseconds=rng.randint(0, 999_999))
                       for i in range(n)],
        "qty": [rng.randint(-10**12, 10**12) for _ in range(n)],
        "price": [rng.uniform(-1e6, 1e6) for _ in range(n)],
        "amount": [f"{rng.randint(0, 999_999)}.{rng.randint(0, 99):02d}" for _ in range(n)],
        "day": [dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 3000)) for _ in range(n)],
        "active": [rng.random() < 0.5 for _ in range(n)],
        "note": [None if rng.random() < 0.2 else f"nota {i} ñ, \"q\"" for i in range(n)],
    }, schema_overrides={"id": pl.Int64})


def expected(source: pl.DataFrame) -> pl.DataFrame:
    """The source as the engine stores it."""
    return source.with_columns(pl.col("amount").cast(pl.Float64)).select(
        [pl.col(c).cast(t) for c, t in TYPES.items()]).sort("id")


def write_csv(df: pl.DataFrame, path: Path) -> Path:
    df.write_csv(path)
    return path
