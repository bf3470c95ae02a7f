"""Foundation benchmark: 1M-row CSV and xlsx loads beside ``psql \\copy`` of the same CSV into the same table.

Each figure is the median of ``--runs`` runs (order alternated), wall seconds and peak RSS of the whole
process measured by ``/usr/bin/time``. Results go to the terminal and ``bench/results/foundation.json``.

    python bench/foundation.py --rows 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import write  # noqa: E402

TABLE = "bench_orders"
COLUMNS = "id,connection_id,created_at,order_date,amount,unit_price,quantity,customer,city,status,note,is_paid"


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of a command, via GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "__TIME__ %e %M", *cmd], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    line = next(ln for ln in out.stderr.splitlines()[::-1] if ln.startswith("__TIME__"))
    _, wall, kb = line.split()
    return float(wall), int(kb) / 1024


def psql(dsn: str, command: str) -> list[str]:
    return ["psql", "-q", "-X", dsn, "-c", command]


def reset(dsn: str, table: str) -> None:
    subprocess.run(psql(dsn, f"DROP TABLE IF EXISTS {table}; DO $$ BEGIN IF to_regclass('biconic.loads') "
                             f"IS NOT NULL THEN DELETE FROM biconic.loads WHERE dataset = '{table}'; END IF; END $$"),
                   check=True, capture_output=True)


def engine_load(dsn: str, path: Path, table: str) -> tuple[float, float]:
    reset(dsn, table)
    return timed([sys.executable, "-m", "engine", "load", str(path), "--into", table,
                  "--partition-by", "created_at:month", "--dsn", dsn, "--json"])


def psql_copy(dsn: str, path: Path, table: str) -> tuple[float, float]:
    subprocess.run(psql(dsn, f"TRUNCATE {table}"), check=True, capture_output=True)
    return timed(psql(dsn, f"\\copy {table} ({COLUMNS}) FROM '{path}' WITH (FORMAT csv, HEADER true)"))


def fastexcel_read(path: Path) -> tuple[float, float]:
    code = ("import fastexcel,sys; r=fastexcel.read_excel(sys.argv[1]); "
            "[r.load_sheet(n).to_arrow() for n in r.sheet_names]")
    return timed([sys.executable, "-c", code, str(path)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dsn", default=os.environ.get("BICONIC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--no-xlsx", action="store_true", help="skip the xlsx scenario (its file takes ~1 min to make)")
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "foundation.json")
    args = parser.parse_args()

    csv = args.data / f"orders_{args.rows}.csv"
    if not csv.exists():
        print(f"generating {csv} ...", flush=True)
        write(csv, args.rows)
    xlsx = args.data / f"orders_{min(args.rows, 1_048_575)}.xlsx"
    if not args.no_xlsx and not xlsx.exists():
        print(f"generating {xlsx} (slow: xlsxwriter) ...", flush=True)
        write(xlsx, min(args.rows, 1_048_575))

    results: dict[str, list[tuple[float, float]]] = {"engine csv": [], "psql \\copy csv": []}
    if not args.no_xlsx:
        results.update({"engine xlsx": [], "fastexcel read xlsx": []})
    engine_load(args.dsn, csv, TABLE)  # creates the partitioned, indexed table both tools load into
    for run in range(args.runs):
        order = ["engine", "psql"] if run % 2 == 0 else ["psql", "engine"]
        for tool in order:
            if tool == "engine":
                results["engine csv"].append(engine_load(args.dsn, csv, TABLE))
            else:
                results["psql \\copy csv"].append(psql_copy(args.dsn, csv, TABLE))
        if not args.no_xlsx:
            results["engine xlsx"].append(engine_load(args.dsn, xlsx, TABLE + "_xlsx"))
            results["fastexcel read xlsx"].append(fastexcel_read(xlsx))
        print(f"run {run + 1}/{args.runs} done", flush=True)

    sizes = {"csv": csv.stat().st_size, "xlsx": xlsx.stat().st_size if xlsx.exists() else 0}
    copy_s = statistics.median(s for s, _ in results["psql \\copy csv"])
    rows_xlsx = min(args.rows, 1_048_575)
    table = []
    for name, runs in results.items():
        secs = statistics.median(s for s, _ in runs)
        rss = statistics.median(m for _, m in runs)
        rows = rows_xlsx if "xlsx" in name else args.rows
        size = sizes["xlsx" if "xlsx" in name else "csv"]
        table.append({"tool": name, "rows": rows, "seconds": secs, "rows_per_s": rows / secs,
                      "mb_per_s": size / 1e6 / secs, "peak_rss_mb": rss,
                      "speed_vs_psql_copy": copy_s / secs * (rows / args.rows), "runs": runs})
    print(f"\n{args.rows:,} rows, median of {args.runs} runs, {platform.node()} "
          f"({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}")
    print(f"{'tool':<22}{'seconds':>9}{'rows/s':>12}{'MB/s':>8}{'peak RSS MB':>13}{'x psql copy':>14}")
    for row in table:
        print(f"{row['tool']:<22}{row['seconds']:>9.2f}{row['rows_per_s']:>12,.0f}{row['mb_per_s']:>8.1f}"
              f"{row['peak_rss_mb']:>13,.0f}{row['speed_vs_psql_copy']:>14.2f}")
    if not args.no_xlsx:
        e = next(r for r in table if r["tool"] == "engine xlsx")["seconds"]
        f = next(r for r in table if r["tool"] == "fastexcel read xlsx")["seconds"]
        print(f"xlsx load time / fastexcel read time: {e / f:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": args.rows, "runs": args.runs, "machine": platform.node(),
                                    "cores": os.cpu_count(), "results": table}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
