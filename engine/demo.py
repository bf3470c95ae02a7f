"""``biconic demo``: a realistic little import (a Spanish-style CSV and a two-sheet workbook), loaded end to end.

It writes the sample files and a pipeline YAML into a folder, then runs that pipeline, so the demo also shows
what a pipeline file looks like.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import polars as pl

from engine.pipeline import run
from engine.progress import Progress
from engine.report import LoadReport

__all__ = ["DEMO_FOLDER", "DEMO_QUERY", "run_demo", "write_sample_csv", "write_sample_workbook"]

#: what the demo asks after loading: DuckDB over the loaded dataset (hot rows in PostgreSQL, cold in the archive)
DEMO_QUERY = ("SELECT estado, count(*) AS orders, CAST(sum(importe) AS DECIMAL(18, 2)) AS total, "
              "count(DISTINCT connection_id) AS connections FROM demo_orders GROUP BY estado ORDER BY estado")

PIPELINE = """\
# Written by `biconic demo`: two loads, run in order by `biconic run {folder}/pipeline.yaml`.
# mode replace: the database is per user (BICONIC_HOME), so the demo run from another folder (new sample files)
# replaces the demo tables instead of adding the same orders twice; run again here, it loads nothing.
loads:
  - source: {{path: {orders}, delimiter: ";"}}
    target: {{table: demo_orders, partition_by: "created_at:month", hash_partitions: 2, mode: replace}}
    steps:
      - rename: {{"Fecha Entrega": fecha_entrega}}
      - parse_number: {{column: Importe, decimal: ",", thousands: "."}}
      - parse_date: {{column: fecha_entrega, format: "%d/%m/%Y"}}
      - trim: {{columns: [Cliente, Ciudad], case: title, collapse_spaces: true}}
      - derive: {{importe_iva: "Importe * 1.21"}}
      - dedupe: [order_id]
    rules:
      - not_null: [order_id, Cliente]
      - range: {{column: Importe, min: 0}}
      - allowed: {{column: Estado, values: [pendiente, enviado, entregado, cancelado]}}
  - source: {{path: customers.xlsx, sheet: "*"}}
    target: {{table: demo_customers, partition_by: "signup_date:year", connection_id: 1, mode: replace}}
    rules:
      - regex: {{column: email, pattern: "^[^@ ]+@[^@ ]+$"}}
"""


def write_sample_csv(path: Path, rows: int, *, seed: int = 7) -> None:
    """A semicolon CSV with Spanish number/date formats and a handful of deliberately bad rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    start = dt.datetime(2026, 1, 1)
    cities = np.array(["madrid", "  barcelona ", "sevilla", "valencia", "bilbao", "málaga"])
    names = np.array(["ana garcía", "luis  pérez", "marta ruiz", "jorge lópez", "sofía díaz", "iván gómez"])
    status = np.array(["pendiente", "enviado", "entregado", "cancelado"])
    amount = rng.gamma(2.0, 400.0, rows).round(2)
    seconds = rng.integers(0, 180 * 86400, rows)
    frame = pl.DataFrame({
        "order_id": np.arange(1, rows + 1),
        "connection_id": rng.integers(1, 4, rows),
        "created_at": [start + dt.timedelta(seconds=int(s)) for s in seconds],
        "Cliente": names[rng.integers(0, len(names), rows)],
        "Ciudad": cities[rng.integers(0, len(cities), rows)],
        "Importe": amount,
        "Estado": status[rng.integers(0, len(status), rows)],
    }).with_columns(
        (pl.col("created_at") + pl.duration(days=3)).dt.strftime("%d/%m/%Y").alias("Fecha Entrega"),
        pl.col("Importe").map_elements(lambda v: f"{v:,.2f}".replace(",", "X").replace(".", ",").replace("X", "."),
                                       return_dtype=pl.String),
    )
    if rows >= 10:
        bad = pl.DataFrame({
            "order_id": [None, 5, rows + 1, rows + 2], "connection_id": [1, 1, 2, 3],
            "created_at": [start] * 4, "Cliente": ["x", "dup", "y", "z"], "Ciudad": ["madrid"] * 4,
            "Importe": ["10,00", "10,00", "-5,00", "abc"], "Estado": ["enviado", "enviado", "perdido", "enviado"],
            "Fecha Entrega": ["01/01/2026", "01/01/2026", "31/02/2026", "01/01/2026"],
        }, schema=frame.schema)
        frame = pl.concat([frame, bad])
    frame.write_csv(path, separator=";")


def write_sample_workbook(path: Path, *, rows_per_sheet: int = 2_000, seed: int = 11) -> None:
    """A workbook with two regional sheets of customers (one bad e-mail each)."""
    import numpy as np
    import xlsxwriter

    rng = np.random.default_rng(seed)
    with xlsxwriter.Workbook(str(path)) as book:
        date_fmt = book.add_format({"num_format": "yyyy-mm-dd"})
        for sheet_no, region in enumerate(["Norte", "Sur"]):
            sheet = book.add_worksheet(region)
            sheet.write_row(0, 0, ["customer_id", "name", "email", "signup_date", "credit"])
            for i in range(rows_per_sheet):
                cid = sheet_no * rows_per_sheet + i + 1
                email = f"c{cid}@example.com" if i != 7 else "not-an-email"
                sheet.write_number(i + 1, 0, cid)
                sheet.write_string(i + 1, 1, f"Customer {cid}")
                sheet.write_string(i + 1, 2, email)
                signup = dt.datetime(2020, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))
                sheet.write_datetime(i + 1, 3, signup, date_fmt)
                sheet.write_number(i + 1, 4, float(rng.integers(0, 50_000)) / 10)


#: where the sample files go by default: the working folder, where the user looks at them (the database and
#: the archive live in the data folder, BICONIC_HOME)
DEMO_FOLDER = Path("biconic-demo")


def run_demo(*, rows: int = 200_000, folder: Path | None = None, dsn: str | None = None,
             progress: Progress | None = None,
             on_report: Callable[[LoadReport], None] | None = None) -> list[LoadReport]:
    """Write the samples and the pipeline file, run it, and return the reports (each also handed to
    ``on_report`` as its load commits)."""
    folder = (folder or DEMO_FOLDER).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # Written once: a second demo run then finds every file already loaded and adds nothing.
    orders = folder / f"orders_{rows}.csv"
    if not orders.exists():
        write_sample_csv(orders, rows)
    if not (folder / "customers.xlsx").exists():
        write_sample_workbook(folder / "customers.xlsx")
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text(PIPELINE.format(folder=folder, orders=orders.name), encoding="utf-8")
    return run(pipeline, dsn=dsn, progress=progress, on_report=on_report)
