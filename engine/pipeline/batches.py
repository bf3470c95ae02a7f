"""A partition's rows as batches of the finished plan, chunk after chunk, and what each batch splits into:
rows for their time partitions, quarantine rows with their raw values."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from engine.errors import SourceError, first_line
from engine.pipeline.context import LoadState
from engine.pipeline.fit import Prepared, build
from engine.plan.columns import COLUMN, REASON, ROW_COLUMN, RULE, SOURCE_PREFIX
from engine.plan.rules import as_text
from engine.postgres.ddl import CONNECTION_COLUMN
from engine.postgres.periods import Period, period_of, truncate_every
from engine.settings import settings
from engine.sources.base import Partition
from engine.sources.chunks import ChunkFactory

__all__ = ["batches", "by_period", "periods", "quarantine_rows"]


def batches(state: LoadState, chunks: Iterator[ChunkFactory], prepared: Prepared, label: str) -> Iterator[pl.DataFrame]:
    """Every batch of the partition, chunk after chunk; a chunk's query starts only when the previous chunk
    has been handed over, which is what keeps memory bounded. A chunk Polars cannot parse is located (halved
    until the failing record is found) so the error names its row."""
    rows_before = 0
    for factory in chunks:
        plan = build(state, factory(rows_before), prepared)
        start = rows_before
        try:
            for df in plan.frame.collect_batches(chunk_size=settings().batch_rows):
                rows_before += df.height
                yield df
        except pl.exceptions.PolarsError as exc:
            locate = getattr(factory, "locate", None)
            if locate is None or "utf-8" in str(exc).lower():
                raise
            row = locate(start)
            if row is None:
                raise
            raise SourceError(label, f"cannot read: {first_line(exc)}", row=row) from exc


def _period_start(df: pl.DataFrame, prepared: Prepared) -> pl.Expr:
    """Each row's period start (UTC for timestamps with a time zone)."""
    col = pl.col(prepared.time_column)
    dtype = df.schema[prepared.time_column]
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        col = col.dt.date()
    return col.dt.truncate(truncate_every[prepared.info.granularity])


def periods(df: pl.DataFrame, prepared: Prepared) -> list[Period]:
    """The periods a batch's rows fall in."""
    starts = df.select(_period_start(df, prepared).unique().alias("p")).to_series().to_list()
    return [period_of(s, prepared.info.granularity) for s in starts if s is not None]


def by_period(df: pl.DataFrame, prepared: Prepared) -> Iterator[tuple[Period, pl.DataFrame]]:
    """The batch split by target child: COPY straight into children skips PostgreSQL's row routing."""
    key = "__biconic_period"
    parts = df.with_columns(_period_start(df, prepared).alias(key)).partition_by(key, as_dict=True,
                                                                                include_key=False)
    for (start,), part in parts.items():
        yield period_of(start, prepared.info.granularity), part


def quarantine_rows(state: LoadState, bad: pl.DataFrame, prepared: Prepared, partition: Partition) -> pl.DataFrame:
    """Rejected rows as ``biconic.quarantine`` holds them: rule, column, reason, row number and the row as
    read from the source (the plan's hidden copies), else as it stands now."""
    sources = {c[len(SOURCE_PREFIX):]: c for c in bad.columns if c.startswith(SOURCE_PREFIX)}
    fields = sources or {c: c for c in prepared.columns}
    values = [as_text(col, bad.schema[col]).alias(name) for name, col in fields.items()]
    raw = bad.select(pl.struct(values).struct.json_encode().alias("raw"))["raw"]
    return pl.DataFrame({
        "load_id": pl.Series([state.report.load_id] * bad.height, dtype=pl.String),
        "dataset": pl.Series([state.target.table] * bad.height, dtype=pl.String),
        "connection_id": bad[CONNECTION_COLUMN].cast(pl.String),
        "source": pl.Series([partition.label] * bad.height, dtype=pl.String),
        "row_number": bad[ROW_COLUMN].cast(pl.Int64),
        "rule": bad[RULE],
        "column_name": bad[COLUMN],
        "reason": bad[REASON].str.replace_all("\x00", "\\0", literal=True),
        "raw": raw,
        "partition_key": pl.Series([partition.origin] * bad.height, dtype=pl.String),
    })
