"""The tools the engine is measured against, one per subcommand, each meant to run in its own process.

Every subcommand loads one file into an existing table and prints one JSON line last: ``{"rows": N, ...}``
plus the phases it timed itself (``read_s``, ``ingest_s``, ...). The harness (``bench/run.py``) measures the
whole process from outside with ``/usr/bin/time``; the phases only split that figure.

    python bench/peers.py adbc bench/data/orders_1000000.csv --table bench_csv
    python bench/peers.py dlt bench/data/orders_1000000.parquet --table bench_parquet --path-kind fast
    python bench/peers.py pandas bench/data/orders_1000000.csv --table bench_csv --rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DSN = os.environ.get("BICONIC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def read_arrow(path: Path, *, rows: int | None = None) -> Any:
    """The whole file as one Arrow table (pyarrow's multi-threaded readers); with ``rows``, only the first
    ``rows`` rows, read batch by batch so a capped run does not hold the whole file in memory."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix not in (".csv", ".parquet"):
        raise SystemExit(f"peers: no reader for {path.suffix}")
    if rows is None:
        return pacsv.read_csv(path) if path.suffix == ".csv" else pq.read_table(path)
    if path.suffix == ".csv":
        batches: Any = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=16 << 20))
    else:
        batches = pq.ParquetFile(path).iter_batches(batch_size=65_536)
    kept, have = [], 0
    for batch in batches:
        kept.append(batch.slice(0, rows - have))
        have += len(kept[-1])
        if have >= rows:
            break
    return pa.Table.from_batches(kept)


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    return schema or "public", name


def target_schema(cur: Any, table: str) -> Any:
    """The table's columns as an Arrow schema, in table order (binary COPY needs exact types)."""
    import pyarrow as pa

    schema, name = _split(table)
    cur.execute(
        "SELECT column_name, udt_name, numeric_precision, numeric_scale FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position", parameters=(schema, name))
    simple = {"int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "float4": pa.float32(),
              "float8": pa.float64(), "text": pa.string(), "varchar": pa.string(), "bool": pa.bool_(),
              "date": pa.date32(), "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", "UTC")}
    fields = []
    for col, udt, precision, scale in cur.fetchall():
        if udt == "numeric":
            fields.append(pa.field(col, pa.decimal128(precision or 38, scale if scale is not None else 9)))
        else:
            fields.append(pa.field(col, simple[udt]))
    if not fields:
        raise SystemExit(f"peers: table {table} does not exist (the harness creates it with the engine)")
    return pa.schema(fields)


def fit(table: Any, schema: Any) -> Any:
    """``table`` cast to ``schema``: the table's column order and types; columns the file lacks stay null."""
    import pyarrow as pa

    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def run_adbc(path: Path, table: str, rows: int | None) -> dict[str, Any]:
    """Bare ADBC: read the whole file into Arrow, cast it to the table's types, one ``adbc_ingest`` call."""
    import adbc_driver_postgresql.dbapi as pgdb

    t0 = time.perf_counter()
    data = read_arrow(path, rows=rows)
    t1 = time.perf_counter()
    with pgdb.connect(DSN) as conn, conn.cursor() as cur:
        data = fit(data, target_schema(cur, table))
        t2 = time.perf_counter()
        schema, name = _split(table)
        loaded = cur.adbc_ingest(name, data, mode="append", db_schema_name=schema)
        conn.commit()
    t3 = time.perf_counter()
    return {"rows": len(data), "rows_reported": loaded, "read_s": t1 - t0, "cast_s": t2 - t1, "ingest_s": t3 - t2}


def run_dlt(path: Path, table: str, rows: int | None, kind: str) -> dict[str, Any]:
    """dlt loading the file (read into Arrow by pyarrow) into the table.

    ``fast``: ``loader_file_format="parquet"``: dlt writes the Arrow table to Parquet and loads it with
    ``adbc_ingest`` (ADBC binary COPY), its documented fast path for postgres when adbc-driver-postgresql is
    installed. ``csv``: dlt writes CSV and runs ``COPY ... FROM STDIN`` through psycopg2. ``default``: no
    format given, so dlt uses postgres' preferred format, ``insert_values`` (multi-row INSERT statements).
    """
    import dlt

    t0 = time.perf_counter()
    data = read_arrow(path, rows=rows)
    t1 = time.perf_counter()
    schema, name = _split(table)
    # dlt insists on a password even where the server trusts the client: give it a placeholder
    url = urlsplit(DSN)
    dsn = DSN if url.password or "@" not in url.netloc else urlunsplit(
        url._replace(netloc=url.netloc.replace("@", ":unused@", 1)))
    work = Path(tempfile.mkdtemp(prefix="bench_dlt_"))
    try:
        pipeline = dlt.pipeline(pipeline_name=f"bench_{kind}", pipelines_dir=str(work),
                                destination=dlt.destinations.postgres(dsn), dataset_name=schema)
        fmt: Any = {"fast": "parquet", "csv": "csv", "default": None}[kind]  # None: dlt decides
        info = pipeline.run(data, table_name=name, write_disposition="append", loader_file_format=fmt)
        t2 = time.perf_counter()
        formats = sorted({job.job_file_info.file_format for package in info.load_packages
                          for job in package.jobs["completed_jobs"] if job.job_file_info.table_name == name})
        failed = [job.failed_message for package in info.load_packages for job in package.jobs["failed_jobs"]]
        if failed:
            raise SystemExit(f"dlt: failed jobs: {failed[:2]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"rows": len(data), "read_s": t1 - t0, "dlt_s": t2 - t1, "loader_file_formats": formats}


def run_pandas(path: Path, table: str, rows: int | None, driver: str) -> dict[str, Any]:
    """pandas ``read_csv`` + ``DataFrame.to_sql(method="multi")`` through SQLAlchemy.

    ``psycopg2`` (SQLAlchemy's default PostgreSQL driver) takes ``chunksize=10_000``: it interpolates the
    values client-side. ``psycopg`` (3) binds them server-side, where one statement may carry at most 65,535
    parameters, so 10,000 rows of 12 columns fail; it gets the largest chunk that fits (5,461 rows here).
    """
    import pandas as pd
    import sqlalchemy as sa

    t0 = time.perf_counter()
    frame = pd.read_csv(path, nrows=rows, parse_dates=["created_at", "order_date"])
    t1 = time.perf_counter()
    chunk = 10_000 if driver == "psycopg2" else min(10_000, 65_535 // len(frame.columns))
    engine = sa.create_engine(DSN.replace("postgresql://", f"postgresql+{driver}://", 1))
    schema, name = _split(table)
    frame.to_sql(name, engine, schema=schema, if_exists="append", index=False, method="multi", chunksize=chunk)
    engine.dispose()
    t2 = time.perf_counter()
    return {"rows": len(frame), "read_s": t1 - t0, "to_sql_s": t2 - t1, "driver": driver, "chunksize": chunk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tool", choices=["adbc", "dlt", "pandas"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--table", required=True)
    parser.add_argument("--rows", type=int, default=None, help="load only the first ROWS rows")
    parser.add_argument("--path-kind", choices=["fast", "csv", "default"], default="fast", help="dlt only")
    parser.add_argument("--driver", choices=["psycopg2", "psycopg"], default="psycopg2", help="pandas only")
    args = parser.parse_args()
    if args.tool == "adbc":
        out = run_adbc(args.path, args.table, args.rows)
    elif args.tool == "dlt":
        out = run_dlt(args.path, args.table, args.rows, args.path_kind)
    else:
        out = run_pandas(args.path, args.table, args.rows, args.driver)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
