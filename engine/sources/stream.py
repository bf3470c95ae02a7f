"""Sources that arrive as a stream of Arrow record batches (database cursors, drivers): cut into chunks of about
``BICONIC_CHUNK_ROWS`` rows, each held in memory only while it is loaded.

A chunk's rows are materialised once (a cursor cannot be re-read), so its factory can be called again, as
the pipeline does for a partition's first chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import polars as pl
import pyarrow as pa

from engine.names import unique_names
from engine.plan.columns import ROW_COLUMN
from engine.settings import settings
from engine.sources.chunks import ChunkFactory

__all__ = ["frame_chunks", "stream_chunks"]


def _factory(df: pl.DataFrame) -> ChunkFactory:
    def chunk(rows_before: int) -> pl.LazyFrame:
        return df.lazy().with_row_index(ROW_COLUMN, offset=rows_before + 1)
    return chunk


def _fixed_names(df: pl.DataFrame) -> pl.DataFrame:
    fixed = unique_names(df.columns)
    return df if fixed == df.columns else df.rename(dict(zip(df.columns, fixed, strict=True)))


def frame_chunks(frames: Iterable[pl.DataFrame], *, rows: int | None = None) -> Iterator[ChunkFactory]:
    """Frames of any size regrouped into chunks of about ``rows`` rows (the last may be smaller); an empty
    stream still yields one empty chunk, so the table can be planned from its columns."""
    rows = rows or settings().chunk_rows
    pending: list[pl.DataFrame] = []
    held = 0
    empty: pl.DataFrame | None = None
    for df in frames:
        df = _fixed_names(df)
        if not df.height:
            empty = df if empty is None else empty
            continue
        pending.append(df)
        held += df.height
        while held >= rows:
            whole = pl.concat(pending, how="diagonal_relaxed") if len(pending) > 1 else pending[0]
            yield _factory(whole.head(rows))
            rest = whole.slice(rows)
            pending, held = ([rest] if rest.height else []), rest.height
    if pending:
        yield _factory(pl.concat(pending, how="diagonal_relaxed") if len(pending) > 1 else pending[0])
    elif held == 0 and empty is not None:
        yield _factory(empty)


def stream_chunks(batches: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema | None = None, *,
                  rows: int | None = None) -> Iterator[ChunkFactory]:
    """Arrow batches (a cursor's ``fetch_record_batch()``, a driver's stream) as chunks."""
    seen = False

    def frames() -> Iterator[pl.DataFrame]:
        nonlocal seen
        for batch in batches:
            seen = True
            yield pl.from_arrow(batch)  # type: ignore[misc]
        if not seen and schema is not None:
            yield pl.from_arrow(schema.empty_table())  # type: ignore[misc]

    yield from frame_chunks(frames(), rows=rows)
