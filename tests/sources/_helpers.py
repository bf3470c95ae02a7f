"""Helpers shared by the source tests: read a path through ``open_source`` and collect its partitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from engine.plan.columns import is_hidden
from engine.sources import open_source


def frames(path: Path | str, **options: Any) -> list[pl.DataFrame]:
    source = open_source(path, options=options)
    return [source.scan(p).collect() for p in source.partitions()]


def chunked(source: Any) -> pl.DataFrame:
    """Every chunk of the source's first partition, as the pipeline reads them (rows numbered on)."""
    frames, before = [], 0
    for factory in source.chunks(source.partitions()[0]):
        df = factory(before).collect()
        before += df.height
        frames.append(df)
    return pl.concat(frames, how="diagonal_relaxed")


def one(path: Path | str, **options: Any) -> pl.DataFrame:
    found = frames(path, **options)
    assert len(found) == 1
    return found[0]


def visible(df: pl.DataFrame) -> pl.DataFrame:
    return df.select([c for c in df.columns if not is_hidden(c)])
