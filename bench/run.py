"""The speed bar: the engine (with its default archive copy, and with ``--no-archive``) beside ``psql \\copy``,
a bare ADBC ingest, dlt and pandas, on the same data and the same month-partitioned, indexed table, in one run;
then the query benchmark (``bench/query.py``) on the engine-loaded CSV.

Every figure is the median of several runs (order alternated between runs); each run is its own process,
measured from outside by ``/usr/bin/time -f "%e %M %U %S"`` (wall seconds, peak RSS, CPU-seconds). Results: a
terminal table, the Speed bar II table (``bench/bars.py``), ``bench/results/latest.json`` (with the machine and
versions) and ``bench/results/latest.png`` (``bench/figure.py``).

    python bench/run.py                         # 1M rows, what `just bench` runs
    python bench/run.py --rows 10000000 --rows 100000000 --runs 3 --peer-runs 3   # `just bench-full` (long)

See bench/README.md for what each line means.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bars import SHARED_TOOLS, bar_rows, clear_own, earlier_rss, fill_shared, own_rows, print_bars, rss_ratio  # noqa: E402
from figure import plot  # noqa: E402
from generate import write  # noqa: E402
from machine import machine, versions  # noqa: E402

SCHEMA = "bench"
SPEC = HERE / "spec.yaml"
COLUMNS = "id,connection_id,created_at,order_date,amount,unit_price,quantity,customer,city,status,note,is_paid"
XLSX_MAX_ROWS = 1_048_575
#: what the harness keeps from the engine's --json report (its own "seconds" stays out: the wall is measured)
REPORT_KEYS = ("rows_loaded", "rows_quarantined", "rows_filtered", "peak_child_rss_mb", "archive_bytes",
               "archive_files", "compression_ratio")


@dataclass
class Line:
    """One row of the result table: a tool loading one file (or part of it) into one table."""

    scenario: str  # "CSV", "Parquet", "xlsx"
    # engine, engine-noarchive, engine+spec, engine+spec-noarchive, engine-append, engine-append-shared, psql,
    # psql-shared, adbc, dlt-fast, dlt-default, pandas, fastexcel
    tool: str
    label: str
    path: Path
    table: str | None
    rows: int
    runs: int
    note: str = ""
    capped: bool = False  # loads only the first ``rows`` rows of the file
    samples: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None

    @property
    def key(self) -> str:
        return f"{self.scenario}/{self.tool}"

    @property
    def engine(self) -> bool:
        return self.tool.startswith("engine")

    @property
    def archives(self) -> bool:
        """The engine's default: every load also writes its Parquet+ZSTD archive copy."""
        return self.engine and not self.tool.endswith("-noarchive")


# --- running one measured process --------------------------------------------------------------------------
class Measured(NamedTuple):
    wall: float
    rss_mb: float
    cpu_s: float  # user + sys of the process, every thread, and every child it waited for
    stdout: str


def measured(cmd: list[str], *, timeout: float) -> Measured:
    """A command's wall seconds, peak RSS and CPU-seconds, measured by GNU time.

    GNU time reports the largest RSS of the process or of any child it waited for (the max, not the sum), and
    CPU time summed over them (the xlsx parser child counts: it is part of the load).
    """
    out = subprocess.run(["/usr/bin/time", "-f", "__TIME__ %e %M %U %S", *cmd], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = out.stderr.splitlines()
    mark = next((ln for ln in reversed(lines) if ln.startswith("__TIME__")), None)
    if out.returncode != 0 or mark is None:
        tail = [ln for ln in lines if not ln.startswith("__TIME__") and ln.strip()][-3:]
        raise RuntimeError(" | ".join(tail)[-400:] or f"exit {out.returncode}")
    _, wall, kb, user, system = mark.split()
    return Measured(float(wall), int(kb) / 1024, float(user) + float(system), out.stdout)


def timed(cmd: list[str], *, timeout: float) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout): ``measured`` for the callers that need no CPU figure."""
    run = measured(cmd, timeout=timeout)
    return run.wall, run.rss_mb, run.stdout


def last_json(stdout: str) -> dict[str, Any]:
    for ln in reversed(stdout.splitlines()):
        if ln.startswith("{"):
            return dict(json.loads(ln))
    return {}


class Db:
    """Setup and checks (never timed): PostgreSQL through psql, and the engine's archive folder."""

    def __init__(self, dsn: str, archive: Path) -> None:
        self.dsn = dsn
        self.archive = archive.resolve()

    def sql(self, command: str) -> str:
        out = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", self.dsn, "-c", command],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"psql: {out.stderr.strip()[-300:]}")
        return out.stdout.strip()

    def exists(self, table: str) -> bool:
        return self.sql(f"SELECT to_regclass('{table}') IS NOT NULL") == "t"

    def count(self, table: str) -> int:
        return int(self.sql(f"SELECT count(*) FROM {table}"))

    def drop(self, table: str) -> None:
        """Drop the table and its ledger rows, so the engine loads the file again instead of skipping it."""
        self.sql(f"DROP TABLE IF EXISTS {table}")
        self.forget(table)

    def forget(self, table: str) -> None:
        """Delete the table's ledger and archive-manifest rows and its archive folder (the table stays)."""
        self.sql(f"DO $$ BEGIN IF to_regclass('biconic.loads') IS NOT NULL THEN "
                 f"DELETE FROM biconic.loads WHERE dataset = '{table}'; END IF; "
                 f"IF to_regclass('biconic.archive_files') IS NOT NULL THEN "
                 f"DELETE FROM biconic.archive_files WHERE dataset = '{table}'; END IF; END $$")
        shutil.rmtree(self.archive / table.removeprefix("public."), ignore_errors=True)

    def drop_dlt_state(self) -> None:
        self.sql(f"DROP TABLE IF EXISTS {SCHEMA}._dlt_loads, {SCHEMA}._dlt_version, {SCHEMA}._dlt_pipeline_state")


def engine_cmd(line: Line, db: Db, *, archive: bool) -> list[str]:
    """``biconic load``; the archive goes to ``bench/data/archive`` (the engine's default is a folder under
    its data folder; only the place differs)."""
    cmd = [sys.executable, "-m", "engine", "load", str(line.path), "--into", str(line.table),
           "--partition-by", "created_at:month", "--dsn", db.dsn, "--json"]
    if line.tool.startswith("engine+spec"):
        cmd += ["--spec", str(SPEC)]
    return [*cmd, "--archive", str(db.archive)] if archive else [*cmd, "--no-archive"]


def peer_cmd(line: Line) -> list[str]:
    peers = [sys.executable, str(HERE / "peers.py")]
    cap = ["--rows", str(line.rows)] if line.capped else []
    if line.tool == "adbc":
        return [*peers, "adbc", str(line.path), "--table", str(line.table), *cap]
    if line.tool in ("dlt-fast", "dlt-default"):
        return [*peers, "dlt", str(line.path), "--table", str(line.table), *cap,
                "--path-kind", line.tool.removeprefix("dlt-")]
    if line.tool == "pandas":
        return [*peers, "pandas", str(line.path), "--table", str(line.table), *cap]
    if line.tool == "fastexcel":
        code = ("import fastexcel,sys; r=fastexcel.read_excel(sys.argv[1]); "
                "print(sum(r.load_sheet(n).to_arrow().num_rows for n in r.sheet_names))")
        return [sys.executable, "-c", code, str(line.path)]
    if line.tool in ("psql", "psql-shared"):
        copy = f"\\copy {line.table} ({COLUMNS}) FROM '{line.path}' WITH (FORMAT csv, HEADER true)"
        return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", os.environ["BICONIC_PG_DSN"], "-c", copy]
    raise ValueError(line.tool)


def prepare(line: Line, db: Db, *, timeout: float) -> None:
    """Make the line's table ready for one run (untimed)."""
    table = str(line.table)
    if line.tool in SHARED_TOOLS:
        clear_own(db.sql, table)  # the other connections' rows stay
        if line.engine:
            db.forget(table)
    elif line.engine and line.tool != "engine-append":
        db.drop(table)  # with its ledger rows, manifest rows and archive folder
    else:
        if not db.exists(table):  # the engine makes the table every tool loads into
            db.drop(table)
            timed(engine_cmd(line, db, archive=False), timeout=timeout)
        # the partitions stay (empty): a load appends into existing, indexed children
        db.sql(f"TRUNCATE {table}")
        if line.engine:
            db.forget(table)
        if line.tool.startswith("dlt"):
            db.drop_dlt_state()


def run_once(line: Line, db: Db, *, timeout: float) -> dict[str, Any]:
    """Prepare the table (untimed), run the tool in its own measured process, check what landed."""
    if line.table is not None:
        prepare(line, db, timeout=timeout)
    run = measured(engine_cmd(line, db, archive=line.archives) if line.engine else peer_cmd(line), timeout=timeout)
    if line.engine:
        report = last_json(run.stdout)
        extra = {k: report.get(k) for k in REPORT_KEYS}
        extra["engine_s"] = report.get("seconds")  # the engine's own clock: no interpreter start, no imports
        expected = int(report.get("rows_loaded") or 0)
        if line.archives and not report.get("archive_bytes"):
            raise RuntimeError("the engine wrote no archive copy (archive_bytes 0)")
    elif line.tool == "fastexcel":
        extra, expected = {}, int(run.stdout.strip().splitlines()[-1])
    else:
        extra, expected = last_json(run.stdout), line.rows
        if line.tool.startswith("dlt"):
            db.drop_dlt_state()
    if line.table is None:
        landed = expected
    else:
        landed = own_rows(db.sql, line.table) if line.tool in SHARED_TOOLS else db.count(line.table)
    if landed != line.rows or expected != line.rows:
        raise RuntimeError(f"expected {line.rows:,} rows, the table holds {landed:,} (tool said {expected:,})")
    return {**extra, "seconds": run.wall, "peak_rss_mb": round(run.rss_mb, 1), "cpu_s": round(run.cpu_s, 2)}


def prepare_shared(lines: list[Line], db: Db, *, timeout: float, others: int) -> None:
    """Untimed, once per bench run: the shared table made by the engine, then filled with >= ``others`` rows of
    other connections in the same month partitions (``bars.fill_shared``)."""
    line = next((ln for ln in lines if ln.tool in SHARED_TOOLS), None)
    if line is None:
        return
    t = time.perf_counter()
    db.drop(str(line.table))
    timed(engine_cmd(line, db, archive=False), timeout=timeout)
    held = fill_shared(db.sql, str(line.table), COLUMNS, line.rows, others)
    print(f"  shared table {line.table}: {held:,} rows of other connections, set up in "
          f"{time.perf_counter() - t:.0f} s", flush=True)


# --- the plan ----------------------------------------------------------------------------------------------
def data_file(data: Path, rows: int, fmt: str) -> Path:
    path = data / f"orders_{rows}.{fmt}"
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        t = time.perf_counter()
        write(path, rows)
        print(f"  {time.perf_counter() - t:.0f} s", flush=True)
    return path


def plan(rows: int, args: argparse.Namespace) -> list[Line]:
    """The lines for one input size. Above ``--parquet-max-rows`` only CSV runs; xlsx only up to one sheet."""
    formats = [f for f in args.formats if not (f == "parquet" and rows > args.parquet_max_rows)]
    formats = [f for f in formats if not (f == "xlsx" and rows > XLSX_MAX_ROWS)]
    peer_rows = min(rows, args.peer_max_rows)
    out: list[Line] = []
    for fmt in formats:
        path = data_file(args.data, rows, fmt)
        scen = {"csv": "CSV", "parquet": "Parquet", "xlsx": "xlsx"}[fmt]
        t = f"{SCHEMA}.{fmt}_{rows}"
        # the engine's default writes the archive copy; --no-archive is the same load without it (in --lean:
        # CSV only)
        bare = fmt == "csv" or not args.lean
        out.append(Line(scen, "engine", f"biconic load {fmt}", path, t, rows, args.runs))
        if bare:
            out.append(Line(scen, "engine-noarchive", f"biconic load {fmt} --no-archive", path, t, rows, args.runs))
        out.append(Line(scen, "engine+spec", f"biconic load {fmt} --spec", path, f"{t}_spec", rows, args.runs))
        if not args.lean:
            out.append(Line(scen, "engine+spec-noarchive", f"biconic load {fmt} --spec --no-archive", path,
                            f"{t}_spec", rows, args.runs))
        if fmt == "csv":
            out.append(Line(scen, "psql", "psql \\copy (physical limit)", path, t, rows, args.runs))
            if not args.lean:
                out.append(Line(scen, "engine-append", "biconic load csv, into existing partitions", path, t,
                                rows, args.runs, note="table TRUNCATEd, not dropped"))
            if args.shared_rows:
                note = f"beside {args.shared_rows:,}+ rows of other connections; x copy: vs psql-shared"
                out.append(Line(scen, "engine-append-shared", f"biconic load csv, append beside "
                                f"{args.shared_rows / 1e6:g}M rows of other connections", path, f"{t}_shared", rows,
                                args.runs, note=note))
                out.append(Line(scen, "psql-shared", "psql \\copy, same shared table", path, f"{t}_shared", rows,
                                args.runs, note=note))
        if fmt in ("csv", "parquet"):
            out.append(Line(scen, "adbc", "bare ADBC adbc_ingest, end to end", path, t, peer_rows,
                            max(args.peer_runs, args.adbc_runs)))
            if fmt == "csv" or not args.lean:
                out.append(Line(scen, "dlt-fast", "dlt, Arrow -> parquet -> ADBC", path, t, peer_rows,
                                args.peer_runs))
        if fmt == "csv":
            n = min(rows, args.dlt_default_rows)
            out.append(Line(scen, "dlt-default", "dlt default (Arrow -> CSV -> COPY)", path, t, n, args.peer_runs,
                            note="" if n == rows else f"first {n:,} rows"))
            n = min(rows, args.pandas_rows)
            out.append(Line(scen, "pandas", "pandas read_csv + to_sql(multi, 10k)", path, t, n, args.peer_runs,
                            note="" if n == rows else f"first {n:,} rows"))
        if fmt == "xlsx":
            out.append(Line(scen, "fastexcel", "fastexcel read only (no load)", path, None, rows, args.peer_runs))
    for line in out:
        line.capped = line.rows != rows
        if line.capped and not line.note:
            line.note = f"first {line.rows:,} rows"
    return out


def measure(lines: list[Line], db: Db, *, timeout: float, shared_rows: int) -> None:
    prepare_shared(lines, db, timeout=timeout, others=shared_rows)
    alternate_rounds(lines, lambda line: run_once(line, db, timeout=timeout), name=lambda line: line.key)


def alternate_rounds(lines: list[Any], run: Callable[[Any], dict[str, Any]], *, name: Callable[[Any], str],
                     show: Callable[[Any, dict[str, Any]], None] | None = None) -> None:
    """Every line's runs, round by round, in reversed order on odd rounds (neither end of the list always warms
    the caches for the other); a line that fails once is not run again and reports its failure."""
    rounds = max(line.runs for line in lines)
    for r in range(rounds):
        order = lines if r % 2 == 0 else lines[::-1]
        t = time.perf_counter()
        for line in order:
            if r >= line.runs or line.failure:
                continue
            try:
                sample = run(line)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                line.failure = str(exc)
                print(f"  FAILED {name(line)}: {exc}", flush=True)
                continue
            line.samples.append(sample)
            if show is not None:
                show(line, sample)
        print(f"  round {r + 1}/{rounds}: {time.perf_counter() - t:.0f} s", flush=True)


# --- summarising -------------------------------------------------------------------------------------------
def summarise(lines: list[Line], rows: int) -> list[dict[str, Any]]:
    def med(line: Line, key: str) -> float:
        return statistics.median(float(s[key]) for s in line.samples)

    def rate(tool: str) -> float | None:
        ref = next((ln for ln in lines if ln.tool == tool and ln.samples), None)
        return ref.rows / med(ref, "seconds") if ref else None

    psql, psql_shared = rate("psql"), rate("psql-shared")
    out: list[dict[str, Any]] = []
    for line in lines:
        base = psql_shared if line.tool in SHARED_TOOLS else psql  # the shared lines: against the same table
        entry: dict[str, Any] = {"scenario": line.scenario, "tool": line.tool, "label": line.label,
                                 "rows": line.rows, "input_rows": rows, "file": line.path.name,
                                 "file_mb": round(line.path.stat().st_size / 1e6, 1), "note": line.note,
                                 "runs": line.samples, "failure": line.failure}
        if line.samples:
            secs = med(line, "seconds")
            size = line.path.stat().st_size * line.rows / rows / 1e6  # a capped run reads only its rows
            entry.update(seconds=round(secs, 2), rows_per_s=round(line.rows / secs),
                         mb_per_s=round(size / secs, 1), peak_rss_mb=round(med(line, "peak_rss_mb")),
                         vs_psql_copy=round(line.rows / secs / base, 2) if base else None,
                         cpu_s=round(med(line, "cpu_s"), 2))
            if line.engine and line.samples[0].get("engine_s") is not None:
                entry["engine_s"] = round(med(line, "engine_s"), 2)
            if line.archives:
                entry.update(archive_mb=round(med(line, "archive_bytes") / 1e6, 1),
                             archive_files=round(med(line, "archive_files")),
                             compression_ratio=round(med(line, "compression_ratio"), 2))
                bare = next((b for b in lines if b.tool == f"{line.tool}-noarchive" and b.scenario == line.scenario
                             and b.samples), None)
                if bare is not None:
                    # what the archive copy costs: the median of run-by-run differences from the --no-archive
                    # twin, which runs right beside it in every round (steadier than a difference of medians
                    # on a noisy machine)
                    pairs = list(zip(line.samples, bare.samples, strict=False))  # a failed line has fewer
                    extra_s = statistics.median(a["seconds"] - b["seconds"] for a, b in pairs)
                    extra_mb = statistics.median(a["peak_rss_mb"] - b["peak_rss_mb"] for a, b in pairs)
                    entry["archive_cost"] = {"seconds": round(extra_s, 2),
                                             "percent": round(100 * extra_s / med(bare, "seconds"), 1),
                                             "peak_rss_mb": round(extra_mb)}
                    entry["note"] = (f"{entry['note']}; " if entry["note"] else "") + \
                        f"archive {extra_s:+.2f} s, {extra_mb:+.0f} MB RSS vs --no-archive"
        out.append(entry)
        if line.tool == "adbc" and line.samples and "ingest_s" in line.samples[0]:
            secs = med(line, "ingest_s")
            read = med(line, "read_s") + med(line, "cast_s")
            out.append({**entry, "tool": "adbc-ingest", "label": "bare ADBC adbc_ingest only (table in memory)",
                        "note": f"read + cast {read:.2f} s not counted", "seconds": round(secs, 2),
                        "rows_per_s": round(line.rows / secs), "mb_per_s": None, "cpu_s": None,
                        "vs_psql_copy": round(line.rows / secs / base, 2) if base else None})
    return out


def print_table(rows: int, table: list[dict[str, Any]], runs: int) -> None:
    print(f"\n{rows:,} rows; median of runs (engine and psql: {runs}); wall, peak RSS and CPU s (user + sys) of "
          "the whole process; arch MB / src/arch: the engine's archive copy and source bytes / archive bytes")
    head = (f"{'scenario':<9}{'tool':<62}{'rows':>12}{'s':>8}{'rows/s':>11}{'MB/s':>7}{'RSS MB':>8}{'CPU s':>7}"
            f"{'x copy':>8}{'arch MB':>9}{'src/arch':>9}  note")
    print(head)
    print("-" * len(head))
    for e in table:
        if e.get("failure"):
            print(f"{e['scenario']:<9}{e['label']:<62}{e['rows']:>12,}  FAILED: {e['failure'][:90]}")
            continue
        mbs = f"{e['mb_per_s']:.1f}" if e.get("mb_per_s") is not None else "-"
        ratio = f"{e['vs_psql_copy']:.2f}" if e.get("vs_psql_copy") is not None else "-"
        note = e["note"] + (f" ({len(e['runs'])} run{'s' if len(e['runs']) != 1 else ''})"
                            if len(e["runs"]) != runs else "")
        arch = f"{e['archive_mb']:.1f}" if e.get("archive_mb") is not None else "-"
        squeeze = f"{e['compression_ratio']:.2f}" if e.get("compression_ratio") is not None else "-"
        cpu = f"{e['cpu_s']:.1f}" if e.get("cpu_s") is not None else "-"
        print(f"{e['scenario']:<9}{e['label']:<62}{e['rows']:>12,}{e['seconds']:>8.2f}{e['rows_per_s']:>11,}"
              f"{mbs:>7}{e['peak_rss_mb']:>8,}{cpu:>7}{ratio:>8}{arch:>9}{squeeze:>9}  {note}")


def run_query_bench(args: argparse.Namespace, rows: int) -> dict[str, Any]:
    """bench/query.py in its own process (it prints its own progress and table); its JSON, or the failure."""
    cmd = [sys.executable, str(HERE / "query.py"), "--rows", str(rows), "--runs", str(args.query_runs),
           "--dsn", args.dsn, "--data", str(args.data), "--out", str(args.out), "--timeout", str(args.timeout)]
    found = args.out / "query.json"
    found.unlink(missing_ok=True)  # an earlier run's file must not pass for this one's
    print(flush=True)
    done = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0 or not found.exists():
        print(f"  FAILED query benchmark (exit {done.returncode})", flush=True)
        return {"failure": f"bench/query.py exited {done.returncode}"}
    doc = dict(json.loads(found.read_text()))
    doc.pop("machine", None)  # the same machine as the load lines
    return doc


def rss_run(args: argparse.Namespace, db: Db, main: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Speed bar II RSS figure: the CSV engine line (archive on) once at ``--rss-rows``, after the main
    rounds, its peak RSS over ``main``'s (the main size's median); with ``--rss-rows 0``, an earlier
    ``rows_10000000.json``'s figure if there is one."""
    if not args.rss_rows or main is None:
        return earlier_rss(args.out, main)
    line = Line("CSV", "engine", "biconic load csv", data_file(args.data, args.rss_rows, "csv"),
                f"{SCHEMA}.csv_{args.rss_rows}", args.rss_rows, 1)
    print(f"peak RSS run: {line.label} at {line.rows:,} rows (archive on) ...", flush=True)
    try:
        sample = run_once(line, db, timeout=args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"  FAILED peak RSS run: {exc}", flush=True)
        return None
    finally:
        db.drop(str(line.table))  # the big table and its archive are not kept
    print(f"  {sample['seconds']:.0f} s, {sample['cpu_s']:.0f} CPU-s, peak RSS {sample['peak_rss_mb']:,.0f} MB")
    return rss_ratio(main, {**sample, "rows": line.rows}, source="measured in this run")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append", help="input size; repeat for several (default 1M)")
    parser.add_argument("--runs", type=int, default=3, help="runs per engine and psql line (median)")
    parser.add_argument("--peer-runs", type=int, default=1, help="runs per dlt/pandas/fastexcel line")
    parser.add_argument("--adbc-runs", type=int, default=1, help="runs per bare ADBC line")
    parser.add_argument("--formats", type=lambda s: s.split(","), default=["csv", "parquet", "xlsx"])
    parser.add_argument("--pandas-rows", type=int, default=10_000, help="pandas.to_sql loads only this many rows")
    parser.add_argument("--dlt-default-rows", type=int, default=100_000, help="cap for dlt's default path")
    parser.add_argument("--peer-max-rows", type=int, default=10_000_000,
                        help="cap for the in-memory peers (bare ADBC, dlt fast): they hold the whole table")
    parser.add_argument("--parquet-max-rows", type=int, default=10_000_000, help="above this, CSV only")
    parser.add_argument("--shared-rows", type=int, default=5_000_000,
                        help="rows of other connections the shared table holds before the shared-append lines "
                             "load into it (0: no shared lines)")
    parser.add_argument("--rss-rows", type=int, default=0,
                        help="after the main rounds, one CSV engine run (archive on) at this size for the peak RSS "
                             "bar (`just bench`: 10M; 0: take it from an earlier rows_10000000.json, if any)")
    parser.add_argument("--lean", action=argparse.BooleanOptionalAction, default=False,
                        help="skip the engine append line, the --no-archive twins of all engine lines but "
                             "plain CSV and dlt on Parquet; --no-lean puts them back")
    parser.add_argument("--query", action=argparse.BooleanOptionalAction, default=True,
                        help="end with the query benchmark (bench/query.py) at the smallest --rows")
    parser.add_argument("--query-runs", type=int, default=None,
                        help="runs per query figure (median; default 3 with --lean, else 5)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one measured process")
    parser.add_argument("--dsn", default=os.environ.get("BICONIC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.rows = args.rows or [1_000_000]
    args.query_runs = args.query_runs or (3 if args.lean else 5)
    return args


def write_results(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    """latest.json, one rows_<N>.json per size (so that a later run of other sizes still plots these), and
    latest.png."""
    args.out.mkdir(parents=True, exist_ok=True)
    results = doc["results"]
    for rows in args.rows:
        (args.out / f"rows_{rows}.json").write_text(json.dumps({**doc, "results": {str(rows): results[str(rows)]}},
                                                               indent=2, default=str))
    (args.out / "latest.json").write_text(json.dumps(doc, indent=2, default=str))
    every = dict(results)
    for other in sorted(args.out.glob("rows_*.json")):
        key = re.sub(r"\D", "", other.stem)
        if key not in every:
            every.update(json.loads(other.read_text())["results"])
    m = doc["machine"]
    plot(every, results[str(min(args.rows))], doc["bars"], args.out / "latest.png",
         title=f"Biconic Engine beside psql \\copy, ADBC, dlt, pandas; {m['cores']} cores, {m['ram_gb']} GiB, "
               f"{m['date']}; median of runs")
    print(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.png'}")


def main() -> None:
    args = parse_args()
    sizes, smallest = args.rows, min(args.rows)
    os.environ["BICONIC_PG_DSN"] = args.dsn
    if args.runs < 3:
        print("note: fewer than 3 runs per line; medians of 1-2 runs are noisy", flush=True)

    started = time.perf_counter()
    db = Db(args.dsn, args.data / "archive")
    db.sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    info = {"machine": machine(), "versions": versions(db)}
    plans = {rows: plan(rows, args) for rows in sizes}
    measured_at = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    for rows, lines in plans.items():
        print(f"{rows:,} rows: {len(lines)} lines", flush=True)
        measure(lines, db, timeout=args.timeout, shared_rows=args.shared_rows)
        results[str(rows)] = summarise(lines, rows)
    main_csv = next((e for e in results[str(smallest)] if (e["scenario"], e["tool"]) == ("CSV", "engine")
                     and e.get("peak_rss_mb")), None)
    rss = rss_run(args, db, main_csv)
    for rows in sizes:
        print_table(rows, results[str(rows)], args.runs)
    bars = bar_rows(smallest, results[str(smallest)], rss, args.shared_rows)
    print_bars(smallest, bars)
    loads_s = time.perf_counter() - measured_at
    query = run_query_bench(args, smallest) if args.query else None
    elapsed = time.perf_counter() - started
    info["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\nmeasuring took {time.perf_counter() - measured_at:.0f} s (loads {loads_s:.0f} s; {elapsed:.0f} s with "
          f"setup); {info['machine']['cores']} cores, {info['machine']['ram_gb']} GiB, {info['machine']['date']}")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "dsn"}
    write_results(args, {**info, "config": config, "elapsed_s": round(elapsed), "results": results, "bars": bars,
                         "rss_run": rss, "query": query})


if __name__ == "__main__":
    main()
