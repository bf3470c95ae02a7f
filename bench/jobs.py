"""The job queue under load: many imports submitted at once to a real ``biconic worker``, beside the same loads
run one after the other with ``biconic load`` and with ``psql \\copy``; then one big import fanned out over 1
and over 2 worker processes, with where the CPU goes.

1. ``--imports`` CSVs of ``--rows`` rows from ``--connections`` connections (each file's rows carry its
   connection id, and the load names it with ``--connection``), all submitted at once (``engine.submit``, what
   ``biconic submit`` calls) to ``biconic worker --concurrency 2``: total wall, rows/s, job latency (submit ->
   done, from ``biconic.jobs``), peak RSS and CPU of the worker's processes, PostgreSQL and Redis CPU. Beside
   it, the same files through ``biconic load`` one after the other, and through ``psql \\copy``.
2. A folder of 10 CSVs (``--fanout-rows`` in all) submitted as one job (one task per file) to a worker of
   ``--concurrency 1`` and of 2, runs interleaved; rows/s and the CPU of worker, PostgreSQL and Redis.

The broker and result store are a dedicated Redis database (``--redis``, checked empty, emptied at the end); a
worker started here is stopped on any exit (Ctrl-C too); the tables, ledger rows and job rows made here are
removed at the end (``--keep`` keeps the tables). Results: a terminal table and ``bench/results/jobs-latest.json``.

    python bench/jobs.py --imports 10 --rows 10000 --fanout-rows 200000   # a quick check, ~2 min
    python bench/jobs.py                                                  # 100 x 100k rows, 10M fan-out
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _jobs_probe import Sampler, Worker  # noqa: E402
from generate import write  # noqa: E402
from run import SCHEMA, Db, Line, alternate_rounds, engine_cmd, machine, peer_cmd, timed, versions  # noqa: E402

FAN_FILES = 10
WARMUP_ROWS = 100


@dataclass
class Phase:
    """One measured line: its runs (median over them) and how to run one (the shape ``alternate_rounds`` takes)."""

    key: str
    runs: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None


@dataclass
class Bench:
    args: argparse.Namespace
    db: Db
    env: dict[str, str]
    logs: Path
    worker: Worker | None = None
    tables: set[str] = field(default_factory=set)
    job_ids: list[str] = field(default_factory=list)

    # --- the worker ---------------------------------------------------------------------------------------
    def start_worker(self, concurrency: int) -> Worker:
        self.stop_worker()
        log = self.logs / f"worker-c{concurrency}-{len(self.job_ids)}.log"
        self.worker = Worker(sys.executable, concurrency, env=self.env, cwd=ROOT, log=log)
        self.worker.wait_ready(self.args.timeout)
        # both pool processes import Polars, PyArrow and the engine on their first task: not part of the figures
        table = f"{SCHEMA}.jobs_warmup"
        self.fresh(table)
        files = [self.file(f"warmup_{i}.csv", WARMUP_ROWS, offset=10**9 + i * WARMUP_ROWS, connection=99)
                 for i in range(concurrency)]
        self.wait([self.submit(f, table, 99) for f in files])
        self.fresh(table)
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    # --- data, tables, jobs -------------------------------------------------------------------------------
    def file(self, name: str, rows: int, *, offset: int, connection: int | None) -> Path:
        path: Path = self.args.data / "jobs" / name
        if not path.exists():
            write(path, rows, offset=offset, connection_id=connection)
        return path

    def fresh(self, table: str) -> None:
        """Drop the table with its ledger, manifest rows and archive folder (the engine would skip the files)."""
        self.tables.add(table)
        self.db.drop(table)

    def submit(self, path: Path | str, table: str, connection: int | None,
               options: dict[str, Any] | None = None) -> str:
        from engine.jobs.client import submit

        archive: str | bool = str(self.db.archive) if self.args.archive else False
        job = submit(str(path), into=table, connection_id=connection, partition_by="created_at:month",
                     archive=archive, dsn=self.db.dsn, options=options or {})
        self.job_ids.append(job.job_id)
        return job.job_id

    def wait(self, ids: list[str]) -> list[dict[str, Any]]:
        """Poll ``biconic.jobs`` until every job has finished; their states and server-side times (epoch s)."""
        deadline = time.monotonic() + self.args.timeout
        listed = "'{" + ",".join(ids) + "}'::uuid[]"
        while True:
            left = int(self.db.sql(f"SELECT count(*) FROM biconic.jobs WHERE job_id = ANY({listed}) "
                                   "AND state NOT IN ('done', 'failed', 'cancelled')"))
            if left == 0:
                break
            if self.worker is None or not self.worker.alive():
                raise RuntimeError(f"the worker died with {left} job(s) unfinished")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{left} of {len(ids)} job(s) unfinished after {self.args.timeout:g} s")
            time.sleep(0.5)
        out: list[dict[str, Any]] = []
        # "committed": when the job's last partition task committed its rows (the job is marked done later, by
        # the chord's final task)
        for line in self.db.sql(
                f"SELECT job_id, state, extract(epoch FROM submitted_at), extract(epoch FROM started_at), "
                f"extract(epoch FROM finished_at), (SELECT extract(epoch FROM max(t.finished_at)) FROM "
                f"biconic.job_tasks t WHERE t.job_id = j.job_id), coalesce(error, '') FROM biconic.jobs j "
                f"WHERE job_id = ANY({listed})").splitlines():
            job_id, state, sub, start, end, committed, error = line.split("|", 6)
            out.append({"job_id": job_id, "state": state, "submitted": float(sub), "finished": float(end),
                        "started": float(start) if start else None,
                        "committed": float(committed) if committed else None, "error": error})
        bad = [j for j in out if j["state"] != "done"]
        if bad:
            raise RuntimeError(f"{len(bad)} job(s) not done, e.g. {bad[0]['state']}: {bad[0]['error'][:200]}")
        return out

    def check(self, table: str, rows: int) -> None:
        landed = self.db.count(table)
        if landed != rows:
            raise RuntimeError(f"{table}: expected {rows:,} rows, found {landed:,}")

    # --- the lines ----------------------------------------------------------------------------------------
    def imports(self) -> list[tuple[Path, int]]:
        """(file, connection) of the many-imports case, connections taken in turn (as they would arrive)."""
        a = self.args
        out: list[tuple[Path, int]] = []
        for k in range(a.imports):
            conn = k % a.connections + 1
            out.append((self.file(f"c{conn}_{k}_{a.rows}.csv", a.rows, offset=k * a.rows, connection=conn), conn))
        return out

    def queued(self) -> dict[str, Any]:
        table = f"{SCHEMA}.jobs_queued"
        self.fresh(table)
        files = self.imports()
        self.start_worker(2)
        assert self.worker is not None
        probe = Sampler(self.worker.proc.pid).start()
        t = time.perf_counter()
        ids = [self.submit(path, table, conn) for path, conn in files]
        submit_s = time.perf_counter() - t
        jobs = self.wait(ids)
        usage = probe.stop()
        self.stop_worker()
        self.check(table, len(files) * self.args.rows)
        wall = max(j["finished"] for j in jobs) - min(j["submitted"] for j in jobs)
        latency = [j["finished"] - j["submitted"] for j in jobs]
        queue = [j["started"] - j["submitted"] for j in jobs if j["started"] is not None]
        committed = [j["committed"] - j["submitted"] for j in jobs if j["committed"] is not None]
        return {**usage, "seconds": round(wall, 2), "rows_per_s": round(len(files) * self.args.rows / wall),
                "submit_s": round(submit_s, 2), "latency_s": pcts(latency), "queue_wait_s": pcts(queue),
                "committed_latency_s": pcts(committed)}

    def sequential(self) -> dict[str, Any]:
        table = f"{SCHEMA}.jobs_sequential"
        self.fresh(table)
        files = self.imports()
        return self.one_by_one(table, [self.load_cmd(path, table, conn) for path, conn in files], len(files))

    def copy(self) -> dict[str, Any]:
        table = f"{SCHEMA}.jobs_copy"
        files = self.imports()
        if not self.db.exists(table):  # the engine makes the table, as run.py does for its \copy line
            self.fresh(table)
            timed(self.load_cmd(files[0][0], table, files[0][1]), timeout=self.args.timeout)
        self.tables.add(table)
        self.db.sql(f"TRUNCATE {table}")
        cmds = [peer_cmd(Line("CSV", "psql", "", path, table, self.args.rows, 1)) for path, _ in files]
        return self.one_by_one(table, cmds, len(files))

    def load_cmd(self, path: Path, table: str, conn: int) -> list[str]:
        line = Line("CSV", "engine", "", path, table, self.args.rows, 1)
        return [*engine_cmd(line, self.db, archive=self.args.archive), "--connection", str(conn)]

    def one_by_one(self, table: str, cmds: list[list[str]], files: int) -> dict[str, Any]:
        """Each command in its own measured process, one after the other; CPU of them all from getrusage."""
        probe = Sampler(os.getpid(), include_root=False).start()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        each = [timed(cmd, timeout=self.args.timeout) for cmd in cmds]
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        usage = probe.stop()
        self.check(table, files * self.args.rows)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return {**usage, "seconds": round(wall, 2), "rows_per_s": round(files * self.args.rows / wall),
                "latency_s": pcts([w for w, _, _ in each]), "peak_rss_mb": round(max(r for _, r, _ in each)),
                "cpu_main_s": 0.0, "cpu_children_s": round(cpu, 1)}

    def fanout(self, concurrency: int) -> dict[str, Any]:
        a = self.args
        per = a.fanout_rows // FAN_FILES
        folder = f"fan_{a.fanout_rows}"
        options: dict[str, Any] = {}
        if a.fanout_split:  # one file, cut into byte ranges of about fanout_split MiB (one task per range)
            source: Path | str = self.file(f"{folder}/whole.csv", per * FAN_FILES, offset=0, connection=None)
            options = {"split_mb": a.fanout_split}
        else:
            for i in range(FAN_FILES):  # rows carry connections 1..20 of their own
                self.file(f"{folder}/part_{i:02d}.csv", per, offset=i * per, connection=None)
            source = a.data / "jobs" / folder / "*.csv"
        table = f"{SCHEMA}.jobs_fanout_c{concurrency}"
        self.fresh(table)
        self.start_worker(concurrency)
        assert self.worker is not None
        probe = Sampler(self.worker.proc.pid).start()
        [job] = self.wait([self.submit(source, table, None, options)])
        usage = probe.stop()
        self.stop_worker()
        self.check(table, per * FAN_FILES)
        wall = job["finished"] - job["submitted"]
        return {**usage, "seconds": round(wall, 2), "rows_per_s": round(per * FAN_FILES / wall)}

    def cleanup(self) -> None:
        self.stop_worker()
        if self.job_ids:
            self.db.sql("DELETE FROM biconic.jobs WHERE job_id = ANY('{" + ",".join(self.job_ids) + "}'::uuid[])")
        for table in sorted(self.tables):
            if self.args.keep and "warmup" not in table:
                continue
            self.db.drop(table)


def pcts(values: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max (inclusive quantiles: with few values the top ones are the largest)."""
    if len(values) < 2:
        return {"p50": round(values[0], 2), "p95": round(values[0], 2), "p99": round(values[0], 2),
                "max": round(values[0], 2)} if values else {}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 2), "p95": round(q[94], 2), "p99": round(q[98], 2), "max": round(max(values), 2)}


def median_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall (its other figures kept together), plus every run's wall."""
    ordered = sorted(samples, key=lambda s: s["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "runs": len(samples), "all_seconds": [s["seconds"] for s in samples]}


def verdict(fig: dict[str, Any]) -> str:
    """Where the CPU went in a window, in cores (CPU seconds / wall), and whether the machine was saturated."""
    wall, cores = fig["window_s"], fig["machine_cores"] or 1
    worker = (fig["cpu_main_s"] + fig["cpu_children_s"]) / wall
    pg, pg_all, redis = fig["pg_cpu_ours_s"] / wall, fig["pg_cpu_all_s"] / wall, fig["redis_cpu_s"] / wall
    busy = fig["machine_busy_s"] / wall
    others = max(0.0, busy - worker - pg_all - redis)
    said = (f"machine {busy:.2f} of {cores} cores busy: worker processes {worker:.2f}, PostgreSQL backends of the "
            f"worker {pg:.2f} (every postgres process {pg_all:.2f}), redis-server {redis:.3f}, everything else "
            f"(other users, this script) {others:.2f}")
    if busy < 0.9 * cores:
        return f"{said}; the cores are not saturated (waiting on locks, I/O or the queue)"
    top = max((worker, "the worker processes (reading, converting, archiving)"),
              (pg_all, "PostgreSQL (COPY, index builds, WAL)"), (others, "other processes"))
    return f"{said}; CPU-bound: the cores are saturated, the largest share by {top[1]}"


def print_tables(doc: dict[str, Any]) -> None:
    a = doc["config"]
    print(f"\n{a['imports']} imports of {a['rows']:,} rows from {a['connections']} connections; "
          f"{doc['machine']['cores']} cores; archive {'on' if a['archive'] else 'off'}")
    print("| line | wall s | rows/s | x `\\copy` | latency p50 / p95 / p99 s | peak RSS MB main / largest child / "
          "children | CPU s main + children | PostgreSQL CPU s worker's / all | Redis CPU s | machine busy s |")
    print("|---|---:|---:|---:|---|---|---|---|---:|---:|")
    base = doc["imports"].get("copy", {}).get("rows_per_s")
    for key, label in (("queued", "`biconic submit` x N, `worker --concurrency 2`"),
                       ("sequential", "`biconic load` x N, one after the other"), ("copy", "`psql \\copy` x N")):
        f = doc["imports"].get(key)
        if not f or "seconds" not in f:
            print(f"| {label} | FAILED: {(f or {}).get('failure', 'not run')} |")
            continue
        lat = f["latency_s"]
        rss = (f"{f['peak_main_rss_mb']:,} / {f['peak_child_rss_mb']:,} / {f['peak_children_rss_mb']:,}"
               if key == "queued" else f"- / {f['peak_rss_mb']:,} / -")
        ratio = f"{f['rows_per_s'] / base:.2f}" if base else "-"
        print(f"| {label} | {f['seconds']:.1f} | {f['rows_per_s']:,} | {ratio} | {lat['p50']:.2f} / {lat['p95']:.2f} "
              f"/ {lat['p99']:.2f} | {rss} | {f['cpu_main_s']:.1f} + {f['cpu_children_s']:.1f} | "
              f"{f['pg_cpu_ours_s']:.1f} / {f['pg_cpu_all_s']:.1f} | {f['redis_cpu_s']:.2f} | "
              f"{f['machine_busy_s']:.1f} |")
    shape = f"one file, split_mb={a['fanout_split']:g}" if a.get("fanout_split") else f"{FAN_FILES} files"
    print(f"\nfan-out: {a['fanout_rows']:,} rows in {shape}, one job")
    print("| worker processes | wall s | rows/s | peak RSS MB main / children | CPU s main + children | "
          "PostgreSQL CPU s worker's / all | Redis CPU s | machine busy s |")
    print("|---:|---:|---:|---|---|---|---:|---:|")
    for conc, f in sorted(doc["fanout"].items()):
        if "seconds" not in f:
            print(f"| {conc} | FAILED: {f.get('failure')} |")
            continue
        print(f"| {conc} | {f['seconds']:.1f} | {f['rows_per_s']:,} | {f['peak_main_rss_mb']:,} / "
              f"{f['peak_children_rss_mb']:,} | {f['cpu_main_s']:.1f} + {f['cpu_children_s']:.1f} | "
              f"{f['pg_cpu_ours_s']:.1f} / {f['pg_cpu_all_s']:.1f} | {f['redis_cpu_s']:.2f} | "
              f"{f['machine_busy_s']:.1f} |")
    queued = doc["imports"].get("queued", {})
    if "committed_latency_s" in queued:
        c, q = queued["committed_latency_s"], queued["queue_wait_s"]
        print(f"  queued: submit -> rows committed p50 / p95 / p99 {c['p50']:.2f} / {c['p95']:.2f} / {c['p99']:.2f} s;"
              f" submit -> running {q['p50']:.2f} / {q['p95']:.2f} / {q['p99']:.2f} s; submitting took "
              f"{queued['submit_s']:.2f} s")
    for conc, f in sorted(doc["fanout"].items()):
        if "seconds" in f:
            print(f"  concurrency {conc}: {f['verdict']}")
    if "seconds" in doc["imports"].get("queued", {}):
        print(f"  queued imports: {doc['imports']['queued']['verdict']}")


def measure(bench: Bench) -> dict[str, Any]:
    a = bench.args
    lines = [Phase("queued", a.runs), Phase("sequential", a.runs), Phase("copy", a.runs)]
    runners = {"queued": bench.queued, "sequential": bench.sequential, "copy": bench.copy}
    if a.imports:
        print(f"{a.imports} imports x {a.rows:,} rows: queued, sequential, \\copy", flush=True)
        alternate_rounds(lines, lambda p: runners[p.key](), name=lambda p: p.key,
                         show=lambda p, s: print(f"  {p.key}: {s['seconds']:.1f} s, {s['rows_per_s']:,} rows/s",
                                                 flush=True))
    fans = [Phase(str(c), a.fanout_runs) for c in (1, 2)] if a.fanout_rows else []
    if fans:
        print(f"fan-out of {a.fanout_rows:,} rows over 1 and 2 worker processes", flush=True)
        alternate_rounds(fans, lambda p: bench.fanout(int(p.key)), name=lambda p: f"concurrency {p.key}",
                         show=lambda p, s: print(f"  concurrency {p.key}: {s['seconds']:.1f} s, "
                                                 f"{s['rows_per_s']:,} rows/s", flush=True))

    def summary(p: Phase) -> dict[str, Any]:
        if not p.samples:
            return {"failure": p.failure or "not run"}
        med = median_of(p.samples)
        return {**med, "verdict": verdict(med), "samples": p.samples, "failure": p.failure}

    return {"imports": {p.key: summary(p) for p in lines if a.imports},
            "fanout": {p.key: summary(p) for p in fans}}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imports", type=int, default=100, help="files submitted at once (0: skip this part)")
    p.add_argument("--rows", type=int, default=100_000, help="rows per file of the many-imports case")
    p.add_argument("--connections", type=int, default=10, help="connections the files belong to")
    p.add_argument("--runs", type=int, default=1, help="runs of the many-imports lines (median)")
    p.add_argument("--fanout-rows", type=int, default=10_000_000,
                   help=f"rows of the fanned-out import, in {FAN_FILES} files (0: skip this part)")
    p.add_argument("--fanout-split", type=float, default=0.0, metavar="MB",
                   help="fan out ONE file of --fanout-rows rows cut into byte ranges of MB MiB (split_mb) "
                        "instead of 10 files")
    p.add_argument("--fanout-runs", type=int, default=1, help="runs per concurrency, interleaved (median)")
    p.add_argument("--archive", action=argparse.BooleanOptionalAction, default=True,
                   help="engine loads write their archive copy (the engine's default) to bench/data/archive")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/9",
                   help="broker and result store: a Redis database nobody else uses (must be empty)")
    p.add_argument("--dsn", default=os.environ.get("BICONIC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one wait or one process")
    p.add_argument("--keep", action="store_true", help="keep the loaded tables")
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--out", type=Path, default=HERE / "results" / "jobs-latest.json")
    return p.parse_args()


def main() -> None:
    args = parse()
    import redis

    broker = redis.Redis.from_url(args.redis)
    if broker.dbsize():
        sys.exit(f"{args.redis} holds {broker.dbsize()} keys: give --redis a database nobody uses")
    os.environ.update(BICONIC_PG_DSN=args.dsn, BICONIC_BROKER_URL=args.redis, BICONIC_RESULT_URL=args.redis,
                      PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    sys.path.insert(0, str(ROOT))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through the finally below
    db = Db(args.dsn, args.data / "archive")
    db.sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    logs = Path(tempfile.mkdtemp(prefix="biconic-jobs-bench-"))
    bench = Bench(args, db, dict(os.environ), logs)
    info = {"machine": machine(), "versions": versions(db)}
    started = time.perf_counter()
    try:
        found = measure(bench)
    finally:
        bench.cleanup()
        broker.flushdb()
        broker.close()
    info["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "dsn"}
    doc = {**info, "config": config, "elapsed_s": round(time.perf_counter() - started), **found,
           "worker_logs": str(logs)}
    print_tables(doc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str))
    print(f"\n{time.perf_counter() - started:.0f} s; wrote {args.out}; worker logs in {logs}")


if __name__ == "__main__":
    main()
