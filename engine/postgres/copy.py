"""Rows into PostgreSQL: ADBC binary COPY in small record batches, and the merge (upsert) from a staged table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from engine.names import qualified, quote_ident
from engine.postgres.connection import Session, wrap_error

__all__ = ["COPY_BATCH_BYTES", "copy", "ingest", "merge", "small_batches", "uuid_bytes", "uuid_text"]

#: bytes per record batch handed to COPY (see :func:`small_batches`)
COPY_BATCH_BYTES = 256 * 1024


def small_batches(table: pa.Table) -> pa.RecordBatchReader:
    """The table as a stream of ~256 KB record batches. The ADBC driver encodes one batch, sends it, then
    encodes the next: small batches let the server insert batch k while this process encodes batch k+1.
    One big batch serialises the two (measured: 1M rows in 70 COPYs took 1.20 s as whole tables, 0.68 s in
    ~256 KB batches, with the same CPU on both sides)."""
    per_row = max(table.nbytes // max(table.num_rows, 1), 1)
    rows = max(COPY_BATCH_BYTES // per_row, 64)
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=rows))


def uuid_bytes(df: pl.DataFrame, column: str) -> pl.DataFrame:
    """``column``'s canonical UUID text as the 16 bytes binary COPY sends for a ``uuid`` column (the ADBC
    driver sends text as text, which the server's uuid reader refuses)."""
    return df.with_columns(pl.col(column).str.replace_all("-", "", literal=True).str.decode("hex"))


def uuid_text(df: pl.DataFrame, column: str) -> pl.DataFrame:
    """``column`` as canonical UUID text when PostgreSQL handed it over as a uuid (16 bytes in Polars)."""
    if df.schema.get(column) != pl.Binary:
        return df
    hexed = pl.col(column).bin.encode("hex")
    parts = [hexed.str.slice(a, b - a) for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))]
    return df.with_columns(pl.concat_str(parts, separator="-").alias(column))


def ingest(conn: Any, schema: str | None, table: str, data: pa.Table | pa.RecordBatchReader, dsn: str) -> None:
    """Binary COPY of ``data`` into ``schema.table`` on ``conn`` (a temporary table when ``schema`` is None),
    inside the connection's open transaction."""
    if isinstance(data, pa.Table):
        data = small_batches(data)
    try:
        with conn.cursor() as cur:
            if schema is None:
                cur.adbc_ingest(table, data, mode="append", temporary=True)
            else:
                cur.adbc_ingest(table, data, mode="append", db_schema_name=schema)
    except Exception as exc:
        raise wrap_error(exc, f"COPY into {table if schema is None else f'{schema}.{table}'}", dsn) from exc


def copy(session: Session, table: str, data: pa.Table | pa.RecordBatchReader, *, temporary: bool = False) -> None:
    """Binary COPY into ``table`` (``schema.name``, or a temporary table) in the open data transaction."""
    schema, _, base = table.rpartition(".")
    ingest(session.data, None if temporary else (schema or "public"), base, data, session.dsn)


def merge(session: Session, table: str, staging: str, columns: Sequence[str], conflict: Sequence[str],
          identity: Sequence[str], time_column: str) -> int:
    """Upsert the staged rows and return how many were written.

    A row's identity is its connection and keys. Within the staged rows the last one of each identity wins
    (``DISTINCT ON ... ORDER BY ctid DESC``: COPY appends in order). Target rows whose identity moved to another
    time are deleted first, then ``INSERT ... ON CONFLICT (connection, keys, time) DO UPDATE``.
    """
    ident = [quote_ident(c) for c in identity]
    t = quote_ident(time_column)
    stage = f"pg_temp.{quote_ident(staging)}"
    match = " AND ".join(f"t.{c} = s.{c}" for c in ident)
    if time_column not in identity:
        session.run(f"DELETE FROM {qualified(table)} t USING {stage} s WHERE {match} "
                    f"AND t.{t} IS DISTINCT FROM s.{t}")
    cols = ", ".join(quote_ident(c) for c in columns)
    updates = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in columns if c not in conflict)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    latest = f"SELECT DISTINCT ON ({', '.join(ident)}) {cols} FROM {stage} ORDER BY {', '.join(ident)}, ctid DESC"
    rows = session.run(
        f"WITH written AS (INSERT INTO {qualified(table)} ({cols}) {latest} "
        f"ON CONFLICT ({', '.join(quote_ident(c) for c in conflict)}) {action} RETURNING 1) "
        "SELECT count(*) FROM written")
    return int(rows[0][0])
