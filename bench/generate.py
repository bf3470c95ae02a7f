"""A deterministic, realistic business import: 12 columns, seeded, any size, written as CSV/Parquet/NDJSON/xlsx."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

FIRST = ["Ana", "Luis", "Marta", "Jorge", "Sofía", "Iván", "Lucía", "Pablo", "Elena", "Diego", "Carmen", "Raúl"]
LAST = ["García", "Pérez", "Ruiz", "López", "Díaz", "Gómez", "Martín", "Sánchez", "Romero", "Navarro"]
CITIES = ["Madrid", "Barcelona", "Sevilla", "Valencia", "Bilbao", "Málaga", "Zaragoza", "Murcia", "Palma", "Vigo"]
STATUS = ["pending", "shipped", "delivered", "cancelled", "returned"]


def frame(rows: int, *, seed: int = 42, offset: int = 0) -> pl.DataFrame:
    """``rows`` rows; ``offset`` shifts ids so that chunks of a big file do not repeat."""
    rng = np.random.default_rng(seed + offset)
    start = np.datetime64("2026-01-01T00:00:00", "us")
    created = start + rng.integers(0, 182 * 86400, rows).astype("timedelta64[s]").astype("timedelta64[us]")
    # ~10% nulls, set through Polars: a numpy object array with None made Polars infer Object on some chunks
    notes = pl.Series(np.array([f"note {i}" for i in range(997)])[rng.integers(0, 997, rows)])
    note = pl.select(pl.when(pl.Series(rng.random(rows) < 0.1)).then(None).otherwise(notes)).to_series()
    first = np.array(FIRST)[rng.integers(0, len(FIRST), rows)]
    last = np.array(LAST)[rng.integers(0, len(LAST), rows)]
    return pl.DataFrame({
        "id": np.arange(offset + 1, offset + rows + 1, dtype=np.int64),
        "connection_id": rng.integers(1, 21, rows),
        "created_at": created,
        "order_date": (created.astype("datetime64[D]") - rng.integers(0, 30, rows).astype("timedelta64[D]")),
        "amount": rng.gamma(2.0, 150.0, rows).round(2),
        "unit_price": (rng.integers(100, 100_000, rows) / 100),
        "quantity": rng.integers(1, 50, rows, dtype=np.int32),
        "customer": np.char.add(np.char.add(first, " "), last),
        "city": np.array(CITIES)[rng.integers(0, len(CITIES), rows)],
        "status": np.array(STATUS)[rng.integers(0, len(STATUS), rows)],
        "note": note,
        "is_paid": rng.random(rows) < 0.7,
    }).with_columns(pl.col("unit_price").cast(pl.Decimal(10, 2)), pl.col("order_date").cast(pl.Date))


def write(path: Path, rows: int, *, seed: int = 42, chunk: int = 1_000_000, offset: int = 0,
          connection_id: int | None = None) -> Path:
    """Write ``rows`` rows in the format given by the extension, in chunks so memory stays flat.

    ``offset`` shifts the ids (files of one set then hold different rows, so the engine's ledger, which keys a
    file by its bytes, loads each); ``connection_id`` gives every row that one connection (CSV, NDJSON)."""
    fmt = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == ".xlsx":
        return _write_xlsx(path, rows, seed=seed)
    if fmt == ".parquet":
        return _write_parquet(path, rows, seed=seed, chunk=chunk)
    with open(path, "wb") as out:
        for i, done in enumerate(range(0, rows, chunk)):
            part = frame(min(chunk, rows - done), seed=seed, offset=offset + done)
            if connection_id is not None:
                part = part.with_columns(pl.lit(connection_id, pl.Int64).alias("connection_id"))
            if fmt == ".csv":
                part.write_csv(out, include_header=(i == 0))
            elif fmt in (".ndjson", ".jsonl"):
                part.write_ndjson(out)
            else:
                raise ValueError(f"unknown format {fmt}")
    return path


def _write_parquet(path: Path, rows: int, *, seed: int, chunk: int) -> Path:
    """One zstd Parquet file of any size: each chunk of ``chunk`` rows is written as its own row groups."""
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    try:
        for done in range(0, rows, chunk):
            table = frame(min(chunk, rows - done), seed=seed, offset=done).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema, compression="zstd")
            writer.write_table(table, row_group_size=256 * 1024)
    finally:
        if writer is not None:
            writer.close()
    return path


def _write_xlsx(path: Path, rows: int, *, seed: int) -> Path:
    """xlsx holds 1,048,576 rows per sheet: more rows go to further sheets (constant-memory writer)."""
    import xlsxwriter

    per_sheet = 1_048_575
    with xlsxwriter.Workbook(str(path), {"constant_memory": True}) as book:
        date_fmt = book.add_format({"num_format": "yyyy-mm-dd"})
        ts_fmt = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        for sheet_no, done in enumerate(range(0, rows, per_sheet)):
            part = frame(min(per_sheet, rows - done), seed=seed, offset=done)
            sheet = book.add_worksheet(f"data{sheet_no + 1}")
            sheet.write_row(0, 0, part.columns)
            for r, row in enumerate(part.iter_rows(), start=1):
                for c, value in enumerate(row):
                    if isinstance(value, dt.datetime):
                        sheet.write_datetime(r, c, value, ts_fmt)
                    elif isinstance(value, dt.date):
                        sheet.write_datetime(r, c, dt.datetime(value.year, value.month, value.day), date_fmt)
                    elif value is None:
                        continue
                    elif isinstance(value, bool):
                        sheet.write_boolean(r, c, value)
                    elif isinstance(value, (int, float)):
                        sheet.write_number(r, c, value)
                    else:
                        sheet.write(r, c, value if not hasattr(value, "as_tuple") else float(value))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path, help="output file; the extension picks the format")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    write(args.path, args.rows, seed=args.seed)


if __name__ == "__main__":
    main()
