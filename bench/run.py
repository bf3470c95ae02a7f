"""The speed bar: the engine (with its default archive copy, and with ``--no-archive``) beside ``psql \\copy``,
a bare ADBC ingest, dlt and pandas, on the same data and the same month-partitioned, indexed table, in one run;
then the query benchmark (``bench/query.py``) on the engine-loaded CSV.

Every figure is the median of several runs (order alternated between runs); each run is its own process,
measured from outside by ``/usr/bin/time -f "%e %M"`` (wall seconds, peak RSS). Results: a terminal table,
``bench/results/latest.json`` (with the machine and versions) and ``bench/results/latest.png``.

    python bench/run.py                         # 1M rows, what `just bench` runs
    python bench/run.py --rows 10000000 --rows 100000000 --runs 3 --peer-runs 3   # `just bench-full` (long)

See bench/README.md for what each line means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from generate import write  # noqa: E402

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
    # engine, engine-noarchive, engine+spec, engine+spec-noarchive, engine-append, psql, adbc, dlt-fast,
    # dlt-default, pandas, fastexcel
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
def timed(cmd: list[str], *, timeout: float) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of a command, measured by GNU time.

    GNU time reports the largest RSS of the process or of any child it waited for (the max, not the sum).
    """
    out = subprocess.run(["/usr/bin/time", "-f", "__TIME__ %e %M", *cmd], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = out.stderr.splitlines()
    mark = next((ln for ln in reversed(lines) if ln.startswith("__TIME__")), None)
    if out.returncode != 0 or mark is None:
        tail = [ln for ln in lines if not ln.startswith("__TIME__") and ln.strip()][-3:]
        raise RuntimeError(" | ".join(tail)[-400:] or f"exit {out.returncode}")
    _, wall, kb = mark.split()
    return float(wall), int(kb) / 1024, out.stdout


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
    if line.tool == "psql":
        copy = f"\\copy {line.table} ({COLUMNS}) FROM '{line.path}' WITH (FORMAT csv, HEADER true)"
        return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", os.environ["BICONIC_PG_DSN"], "-c", copy]
    raise ValueError(line.tool)


def run_once(line: Line, db: Db, *, timeout: float) -> dict[str, Any]:
    """Prepare the table (untimed), run the tool in its own measured process, check what landed."""
    if line.engine:
        if line.tool == "engine-append":
            if not db.exists(str(line.table)):
                db.drop(str(line.table))
                timed(engine_cmd(line, db, archive=False), timeout=timeout)
            # the partitions stay (empty): the load appends into existing, indexed children, as psql \copy does
            db.sql(f"TRUNCATE {line.table}")
            db.forget(str(line.table))
        else:
            db.drop(str(line.table))  # with its ledger rows, manifest rows and archive folder
        wall, rss, out = timed(engine_cmd(line, db, archive=line.archives), timeout=timeout)
        report = last_json(out)
        landed = db.count(str(line.table))
        extra = {k: report.get(k) for k in REPORT_KEYS}
        extra["engine_s"] = report.get("seconds")  # the engine's own clock: no interpreter start, no imports
        expected = int(report.get("rows_loaded") or 0)
        if line.archives and not report.get("archive_bytes"):
            raise RuntimeError("the engine wrote no archive copy (archive_bytes 0)")
    elif line.tool == "fastexcel":
        wall, rss, out = timed(peer_cmd(line), timeout=timeout)
        landed = expected = int(out.strip().splitlines()[-1])
        extra = {}
    else:
        if not db.exists(str(line.table)):  # the engine makes the table every tool loads into
            db.drop(str(line.table))
            timed(engine_cmd(line, db, archive=False), timeout=timeout)
        db.sql(f"TRUNCATE {line.table}")
        if line.tool.startswith("dlt"):
            db.drop_dlt_state()
        wall, rss, out = timed(peer_cmd(line), timeout=timeout)
        extra = last_json(out)
        landed = db.count(str(line.table))
        expected = line.rows
        if line.tool.startswith("dlt"):
            db.drop_dlt_state()
    if landed != line.rows or expected != line.rows:
        raise RuntimeError(f"expected {line.rows:,} rows, the table holds {landed:,} (tool said {expected:,})")
    return {**extra, "seconds": wall, "peak_rss_mb": round(rss, 1)}


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
        if fmt == "xlsx" and not args.lean:
            out.append(Line(scen, "fastexcel", "fastexcel read only (no load)", path, None, rows, args.peer_runs))
    for line in out:
        line.capped = line.rows != rows
        if line.capped and not line.note:
            line.note = f"first {line.rows:,} rows"
    return out


def measure(lines: list[Line], db: Db, *, timeout: float) -> None:
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

    psql = next((ln for ln in lines if ln.tool == "psql" and ln.samples), None)
    base = psql.rows / med(psql, "seconds") if psql else None
    out: list[dict[str, Any]] = []
    for line in lines:
        entry: dict[str, Any] = {"scenario": line.scenario, "tool": line.tool, "label": line.label,
                                 "rows": line.rows, "input_rows": rows, "file": line.path.name,
                                 "file_mb": round(line.path.stat().st_size / 1e6, 1), "note": line.note,
                                 "runs": line.samples, "failure": line.failure}
        if line.samples:
            secs = med(line, "seconds")
            size = line.path.stat().st_size * line.rows / rows / 1e6  # a capped run reads only its rows
            entry.update(seconds=round(secs, 2), rows_per_s=round(line.rows / secs),
                         mb_per_s=round(size / secs, 1), peak_rss_mb=round(med(line, "peak_rss_mb")),
                         vs_psql_copy=round(line.rows / secs / base, 2) if base else None)
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
                        "rows_per_s": round(line.rows / secs), "mb_per_s": None,
                        "vs_psql_copy": round(line.rows / secs / base, 2) if base else None})
    return out


def print_table(rows: int, table: list[dict[str, Any]], runs: int) -> None:
    print(f"\n{rows:,} rows; median of runs (engine and psql: {runs}); wall and peak RSS of the whole process; "
          "arch MB / src/arch: the engine's archive copy and source bytes / archive bytes")
    head = (f"{'scenario':<9}{'tool':<44}{'rows':>12}{'s':>8}{'rows/s':>11}{'MB/s':>7}{'RSS MB':>8}{'x copy':>8}"
            f"{'arch MB':>9}{'src/arch':>9}  note")
    print(head)
    print("-" * len(head))
    for e in table:
        if e.get("failure"):
            print(f"{e['scenario']:<9}{e['label']:<44}{e['rows']:>12,}  FAILED: {e['failure'][:90]}")
            continue
        mbs = f"{e['mb_per_s']:.1f}" if e.get("mb_per_s") is not None else "-"
        ratio = f"{e['vs_psql_copy']:.2f}" if e.get("vs_psql_copy") is not None else "-"
        note = e["note"] + (f" ({len(e['runs'])} run{'s' if len(e['runs']) != 1 else ''})"
                            if len(e["runs"]) != runs else "")
        arch = f"{e['archive_mb']:.1f}" if e.get("archive_mb") is not None else "-"
        squeeze = f"{e['compression_ratio']:.2f}" if e.get("compression_ratio") is not None else "-"
        print(f"{e['scenario']:<9}{e['label']:<44}{e['rows']:>12,}{e['seconds']:>8.2f}{e['rows_per_s']:>11,}"
              f"{mbs:>7}{e['peak_rss_mb']:>8,}{ratio:>8}{arch:>9}{squeeze:>9}  {note}")


def versions(db: Db) -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version()}
    for name in ("polars", "pyarrow", "adbc-driver-postgresql", "adbc-driver-manager", "dlt", "pandas",
                 "sqlalchemy", "psycopg2-binary", "fastexcel", "numpy", "duckdb", "duckdb-ext-postgres"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["postgresql"] = db.sql("SHOW server_version")
    out["psql"] = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return out


def machine() -> dict[str, Any]:
    import psutil

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    engine_at = subprocess.run([sys.executable, "-c", "import engine; print(engine.__file__)"],
                               capture_output=True, text=True).stdout.strip()
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    return {"cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "cpu": cpu,
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "engine_commit": git,
            "engine_module": engine_at}


def plot(results: dict[str, list[dict[str, Any]]], out: Path, *, title: str) -> None:
    """rows/s and peak RSS against input size, one line per tool (sizes from earlier runs fill the gaps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    series: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    labels: dict[tuple[str, str], str] = {}
    for entries in results.values():
        for e in entries:
            if e.get("rows_per_s") and e["tool"] != "fastexcel":
                key = (e["scenario"], e["tool"])
                series.setdefault(key, []).append((e["input_rows"], e["rows_per_s"], e["peak_rss_mb"]))
                capped = " [capped rows]" if e["rows"] != e["input_rows"] else ""
                labels[key] = f"{e['scenario']}: {e['label']}{capped}"
    tools = ["engine", "engine-noarchive", "engine+spec", "engine+spec-noarchive", "psql", "adbc", "adbc-ingest",
             "dlt-fast", "dlt-default", "pandas", "engine-append"]
    # tab20 comes in pairs (dark, light): a line with the archive and its --no-archive twin share a hue
    cmap = plt.get_cmap("tab20")
    slots = [0, 1, 2, 3, 4, 6, 7, 8, 10, 12, 14]
    colors = {tool: cmap(slot) for tool, slot in zip(tools, slots, strict=True)}
    marks = {"CSV": ("o", "-"), "Parquet": ("s", "--"), "xlsx": ("^", ":")}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 7))
    ordered = sorted(series.items(), key=lambda kv: (kv[0][0], tools.index(kv[0][1]) if kv[0][1] in tools else 99))
    for i, ((scenario, tool), pts) in enumerate(ordered):
        pts.sort()
        # each series is nudged sideways (a few % of a decade) so that tools at one size do not hide each other
        xs = [p[0] * 10 ** (0.02 * (i - len(ordered) / 2)) for p in pts]
        marker, ls = marks.get(scenario, ("o", "-"))
        style = {"color": colors.get(tool), "marker": marker, "linestyle": ls, "label": labels[(scenario, tool)]}
        ax1.plot(xs, [p[1] for p in pts], **style)
        ax2.plot(xs, [p[2] for p in pts], **style)
        for x, (_, rps, rss) in zip(xs, pts, strict=True):
            ax1.annotate(f"{rps / 1000:,.0f}k", (x, rps), fontsize=6, xytext=(4, 0), textcoords="offset points",
                         va="center", color=colors.get(tool))
            ax2.annotate(f"{rss:,.0f}", (x, rss), fontsize=6, xytext=(4, 0), textcoords="offset points",
                         va="center", color=colors.get(tool))
    sizes = sorted({p[0] for pts in series.values() for p in pts})

    def short(n: int) -> str:
        return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"

    for ax, name in ((ax1, "rows/s (median)"), (ax2, "peak RSS MB (median)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        if sizes:
            ax.set_xlim(sizes[0] / 2.5, sizes[-1] * 2.5)
            ax.set_xticks(sizes, [short(n) for n in sizes])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("input size (rows); the tools at one size are drawn side by side")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_title("throughput")
    ax2.set_title("memory")
    handles, names = ax1.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.2, 1, 0.95))
    fig.savefig(out, dpi=110)
    plt.close(fig)


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


def main() -> None:
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
    parser.add_argument("--lean", action=argparse.BooleanOptionalAction, default=False,
                        help="skip the engine append line, the --no-archive twins of all engine lines but "
                             "plain CSV, dlt on Parquet and the fastexcel reference (keeps `just bench` near 3.5 "
                             "minutes on 2 quiet cores); --no-lean puts them back")
    parser.add_argument("--query", action=argparse.BooleanOptionalAction, default=True,
                        help="end with the query benchmark (bench/query.py) at the smallest --rows")
    parser.add_argument("--query-runs", type=int, default=None,
                        help="runs per query figure (median; default 3 with --lean, else 5)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one measured process")
    parser.add_argument("--dsn", default=os.environ.get("BICONIC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    sizes = args.rows or [1_000_000]
    args.query_runs = args.query_runs or (3 if args.lean else 5)
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
        measure(lines, db, timeout=args.timeout)
        results[str(rows)] = summarise(lines, rows)
    for rows in sizes:
        print_table(rows, results[str(rows)], args.runs)
    loads_s = time.perf_counter() - measured_at
    query: dict[str, Any] | None = None
    if args.query:
        query = run_query_bench(args, min(sizes))
    elapsed = time.perf_counter() - started
    info["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\nmeasuring took {time.perf_counter() - measured_at:.0f} s (loads {loads_s:.0f} s; {elapsed:.0f} s with "
          f"setup); {info['machine']['cores']} cores, {info['machine']['ram_gb']} GiB, {info['machine']['date']}")

    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "dsn"}
    doc = {**info, "config": config, "elapsed_s": round(elapsed), "results": results, "query": query}
    for rows in sizes:  # per size, so that a later run of other sizes still plots these
        (args.out / f"rows_{rows}.json").write_text(json.dumps({**doc, "results": {str(rows): results[str(rows)]}},
                                                               indent=2, default=str))
    (args.out / "latest.json").write_text(json.dumps(doc, indent=2, default=str))
    every = dict(results)
    for other in sorted(args.out.glob("rows_*.json")):
        key = re.sub(r"\D", "", other.stem)
        if key not in every:
            every.update(json.loads(other.read_text())["results"])
    m = info["machine"]
    plot(every, args.out / "latest.png",
         title=f"Biconic Engine beside psql \\copy, ADBC, dlt, pandas; {m['cores']} cores, {m['ram_gb']} GiB, "
               f"{m['date']}; median of runs; sizes: {', '.join(f'{int(k):,}' for k in sorted(every, key=int))}")
    print(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.png'}")


if __name__ == "__main__":
    main()
