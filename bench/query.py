"""The query benchmark: ``biconic query`` (DuckDB over hot PostgreSQL + the cold archive) on the engine-loaded
CSV, without the result cache and with it, before and after part of the data is tiered out of PostgreSQL.

    python bench/query.py                          # 1M rows, 5 runs per figure (run.py calls it at the end)
    python bench/query.py --rows 1000000 --runs 9

1. ``biconic load orders_<rows>.csv --into bench.query_csv_<rows> --archive bench/data/archive`` (one measured
   process, like the load lines of run.py; the table, its ledger and manifest rows and its archive are cleared
   first).
2. Phase ``hot``: every query once with ``cache=True`` on a cache that does not hold it (``first``: a miss, the
   result is stored), then ``--runs`` rounds of one ``cache=False`` run (``uncached``) and one ``cache=True``
   run (``cached``: a hit, checked). All in this one process, through ``engine.reads.duck.run_query``: the in-process
   cache unless ``BICONIC_REDIS_URL`` is set.
3. ``engine.archive.tiering.tier(now=2026-06-30, archive_days=90, datasets=[table], uploads=False)``: January to March
   (about half the rows) leave PostgreSQL; their archive files become the only copy (state ``cold``).
4. Phase ``hot + cold``: the same queries, now over 4 PostgreSQL partitions UNION ALL the cold files; their
   answers must equal phase 1's.

Each phase's SQL ends with a comment naming the run and the phase: tiering does not change a dataset's
version, so without it phase 1's cached results would answer phase 2's first runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import Db, data_file, last_json, machine, timed  # noqa: E402

SCHEMA = "bench"
#: partitions whose month ends on or before this day go cold: 2026-01..03 of the generator's 2026-01..07
COLD_BEFORE = dt.date(2026, 4, 1)
ARCHIVE_DAYS = 90


def queries(table: str, point_id: int) -> dict[str, str]:
    """The typical questions: a dashboard count, a monthly report over a time window, a point lookup."""
    return {
        "count by connection": f"SELECT connection_id, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1",
        "sum by month, Feb 15 - May 15": (
            f"SELECT date_trunc('month', created_at) AS month, sum(amount) AS amount, count(*) AS n FROM {table} "
            "WHERE created_at >= TIMESTAMP '2026-02-15' AND created_at < TIMESTAMP '2026-05-15' GROUP BY 1 ORDER BY 1"),
        "point lookup by id (a January row)": f"SELECT * FROM {table} WHERE id = {point_id}",
    }


def measure(sql: str, *, dsn: str, archive: str, runs: int) -> dict[str, Any]:
    """first (a miss), then ``runs`` rounds of uncached + cached; wall seconds of each ``run_query`` call."""
    from engine.reads.duck import run_query

    def once(cache: bool) -> tuple[float, Any]:
        started = time.perf_counter()
        result = run_query(sql, dsn=dsn, archive=archive, cache=cache)
        return time.perf_counter() - started, result

    first_s, first = once(True)
    if first.cached:
        raise RuntimeError(f"the first run was answered by the cache: {sql[:60]}")
    uncached: list[float] = []
    cached: list[float] = []
    for _ in range(runs):
        secs, result = once(False)
        if result.cached or not same(result.frame, first.frame):
            raise RuntimeError(f"an uncached run differs from the first: {sql[:60]}")
        uncached.append(secs)
        secs, result = once(True)
        if not result.cached or not same(result.frame, first.frame):
            raise RuntimeError(f"a cached run was not a cache hit, or differs: {sql[:60]}")
        cached.append(secs)
    return {"first_s": round(first_s, 4), "uncached_s": round(statistics.median(uncached), 4),
            "cached_s": round(statistics.median(cached), 4), "rows_out": first.frame.height,
            "runs": {"uncached": [round(s, 4) for s in uncached], "cached": [round(s, 4) for s in cached]},
            "frame": first.frame}


def scanner() -> str | None:
    """The DuckDB postgres scanner wheel's version: without it the engine reads whole tables through ADBC."""
    try:
        return version("duckdb-ext-postgres")
    except PackageNotFoundError:
        return None


def same(a: Any, b: Any) -> bool:
    """The same rows, columns in any order (UNION ALL BY NAME may reorder them), floats to 1e-9 relative."""
    import polars as pl
    from polars.testing import assert_frame_equal

    if sorted(a.columns) != sorted(b.columns) or a.height != b.height:
        return False
    cols = sorted(a.columns)
    try:
        assert_frame_equal(a.select(cols).sort(cols), b.select(cols).sort(cols), rel_tol=1e-9, check_dtypes=False)
    except (AssertionError, pl.exceptions.PolarsError):
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="input size (bench/data/orders_<rows>.csv)")
    parser.add_argument("--runs", type=int, default=5, help="uncached and cached runs per query and phase (median)")
    parser.add_argument("--dsn", default=os.environ.get("BICONIC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed to the load")
    args = parser.parse_args()
    os.environ["BICONIC_PG_DSN"] = args.dsn
    started = time.perf_counter()

    from engine.archive.tiering import TierPolicy, tier
    from engine.reads.cache import get_cache

    db = Db(args.dsn, args.data / "archive")
    db.sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    table = f"{SCHEMA}.query_csv_{args.rows}"
    path = data_file(args.data, args.rows, "csv")
    db.drop(table)
    print(f"query benchmark: loading {path.name} into {table} (archive on) ...", flush=True)
    cmd = [sys.executable, "-m", "engine", "load", str(path), "--into", table, "--partition-by", "created_at:month",
           "--dsn", args.dsn, "--archive", str(db.archive), "--json"]
    wall, rss, out = timed(cmd, timeout=args.timeout)
    report = last_json(out)
    if db.count(table) != args.rows or not report.get("archive_bytes"):
        raise SystemExit(f"the load left {db.count(table):,} rows and {report.get('archive_bytes')} archive bytes")
    load = {"seconds": wall, "engine_s": report.get("seconds"), "peak_rss_mb": round(rss), "rows": args.rows,
            "rows_per_s": round(args.rows / wall), "archive_bytes": report["archive_bytes"],
            "archive_files": report["archive_files"], "compression_ratio": report["compression_ratio"]}
    point_id = int(db.sql(f"SELECT min(id) FROM {table} WHERE created_at >= '2026-01-10' "
                          "AND created_at < '2026-01-11'"))
    qs = queries(table, point_id)
    run_id = uuid.uuid4().hex[:8]
    archive = str(db.archive)
    phases: list[dict[str, Any]] = []
    tiering: dict[str, Any] = {}
    for phase in ("hot", "hot + cold"):
        if phase == "hot + cold":
            now = dt.datetime.combine(COLD_BEFORE + dt.timedelta(days=ARCHIVE_DAYS), dt.time(), dt.UTC)
            t = time.perf_counter()
            moved = tier(dsn=args.dsn, archive=archive, policy=TierPolicy(archive_days=ARCHIVE_DAYS), now=now,
                         datasets=[table], uploads=False)
            tiering = {"seconds": round(time.perf_counter() - t, 2), "now": now.isoformat(), "cutoff": moved.cutoff,
                       "partitions": [p.partition for p in moved.partitions],
                       "rows": sum(p.rows for p in moved.partitions), "how": sorted({p.how for p in moved.partitions}),
                       "cold_files": int(db.sql(f"SELECT count(*) FROM biconic.archive_files WHERE dataset = '{table}' "
                                                "AND state = 'cold'")),
                       "rows_left_in_postgresql": db.count(table)}
            print(f"tiered {len(moved.partitions)} partitions ({tiering['rows']:,} rows, {tiering['cold_files']} "
                  f"cold files) in {tiering['seconds']:.2f} s; {tiering['rows_left_in_postgresql']:,} rows stay hot",
                  flush=True)
            if not moved.partitions:
                raise SystemExit("tiering moved nothing: the query would not span hot and cold")
        entries = []
        for name, sql in qs.items():
            text = f"{sql} /* bench {run_id}: {phase} */"
            figures = measure(text, dsn=args.dsn, archive=archive, runs=args.runs)
            entries.append({"query": name, "sql": sql, **figures})
            print(f"  {phase:<11}{name:<38}first {figures['first_s'] * 1000:7.0f} ms  uncached "
                  f"{figures['uncached_s'] * 1000:7.0f} ms  cached {figures['cached_s'] * 1000:6.0f} ms", flush=True)
        phases.append({"phase": phase, "queries": entries})
    checks = {e["query"]: same(e["frame"], f["frame"])
              for e, f in zip(phases[0]["queries"], phases[1]["queries"], strict=True)}
    for done in phases:
        for e in done["queries"]:
            del e["frame"]
    doc = {"machine": machine(), "config": {"rows": args.rows, "runs": args.runs, "table": table,
                                            "cache_backend": get_cache().backend,
                                            "postgres_scanner": scanner()},
           "load": load, "tiering": tiering, "phases": phases, "same_answers_after_tiering": checks,
           "elapsed_s": round(time.perf_counter() - started)}
    print_table(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "query.json").write_text(json.dumps(doc, indent=2, default=str))
    print(f"wrote {args.out / 'query.json'} ({doc['elapsed_s']} s)")
    if not all(checks.values()):
        raise SystemExit(f"answers changed after tiering: {checks}")


def print_table(doc: dict[str, Any]) -> None:
    load, tiering = doc["load"], doc["tiering"]
    print(f"\nqueries on {doc['config']['table']} ({load['rows']:,} rows; archive {load['archive_bytes'] / 1e6:.1f} MB "
          f"in {load['archive_files']} files); median of {doc['config']['runs']} runs; wall ms of one "
          f"run_query call in one process; cache: {doc['config']['cache_backend']}")
    print(f"hot + cold: {len(tiering['partitions'])} of 7 monthly partitions ({tiering['rows']:,} rows) tiered out "
          f"(tier() {tiering['seconds']:.2f} s), {tiering['rows_left_in_postgresql']:,} rows stay in PostgreSQL")
    head = f"{'query':<38}{'phase':<12}{'first':>8}{'uncached':>10}{'cached':>8}{'x faster':>10}{'rows':>6}  same"
    print(head)
    print("-" * len(head))
    for phase in doc["phases"]:
        for e in phase["queries"]:
            ok = "" if phase["phase"] == "hot" else ("yes" if doc["same_answers_after_tiering"][e["query"]] else "NO")
            print(f"{e['query']:<38}{phase['phase']:<12}{e['first_s'] * 1000:>8.0f}{e['uncached_s'] * 1000:>10.0f}"
                  f"{e['cached_s'] * 1000:>8.0f}{e['uncached_s'] / e['cached_s']:>10.1f}{e['rows_out']:>6}  {ok}")


if __name__ == "__main__":
    main()
