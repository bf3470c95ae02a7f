"""Databases as sources: ``biconic load`` copying a PostgreSQL table and a MariaDB table of N rows into a
month-partitioned PostgreSQL table, with rows/s, peak RSS and how the peak grows with N.

The source tables are made once (seeded, in SQL on the server: ``generate_series`` in PostgreSQL, the
``seq_1_to_N`` sequence engine in MariaDB) and reused; both servers hold the same rows (every value is drawn
from ``md5('<seed>:<id>')``). Each run is its own process under ``/usr/bin/time`` (wall, peak RSS, CPU), the
target table and its ledger rows are dropped first, the rows are counted after. Medians of ``--runs`` runs,
order alternated between rounds. Results: a terminal table and ``bench/results/db_sources.json`` (sizes
measured by earlier runs are kept).

    python bench/db_sources.py                              # 1M and 5M rows, 3 runs each
    python bench/db_sources.py --rows 1000000 --runs 5      # one size
    python bench/db_sources.py --runs 3 --big-runs 2        # 2 runs above 1M rows

See bench/README.md ("Databases as sources") for what each line means.
"""

from __future__ import annotations

import argparse
import decimal
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import Db, alternate_rounds, last_json, machine  # noqa: E402

SCHEMA = "bench"
SRC_SCHEMA = "bench_src"  # PostgreSQL source tables (database of --dsn)
MY_PREFIX = "bench_src_"  # MariaDB source tables (database of --mysql)
COLUMNS = ["id", "connection_id", "created_at", "order_date", "amount", "unit_price", "quantity", "customer",
           "city", "status", "note", "is_paid"]
#: bump when the generated rows change, so stale source tables are made again
GENERATOR = "v1"
CHUNK = 1_000_000  # rows per INSERT ... SELECT while generating

FIRST = ["Ana", "Luis", "Marta", "Jorge", "Sofía", "Iván", "Lucía", "Pablo", "Elena", "Diego", "Carmen", "Raúl"]
LAST = ["García", "Pérez", "Ruiz", "López", "Díaz", "Gómez", "Martín", "Sánchez", "Romero", "Navarro"]
CITIES = ["Madrid", "Barcelona", "Sevilla", "Valencia", "Bilbao", "Málaga", "Zaragoza", "Murcia", "Palma", "Vigo"]
STATUS = ["pending", "shipped", "delivered", "cancelled", "returned"]
SECONDS = 182 * 86400  # created_at: 2026-01-01 plus up to 182 days (7 monthly partitions)


# --- the rows, as SQL ---------------------------------------------------------------------------------------
def _words(h: str, hexint: str) -> dict[str, str]:
    """Four unsigned 32-bit draws from ``h`` (32 hex digits of md5('<seed>:<id>')); ``hexint`` turns 8 hex
    digits into an integer in the dialect at hand. The rows below use the same arithmetic in both dialects;
    small draws share one word as mixed-radix digits (20 x 49 x 5 x 10 x 12 x 10 x 10 x 30 < 2^32)."""
    return {w: hexint.format(f"substr({h}, {1 + 8 * k}, 8)") for k, w in enumerate("abcd")}


def _quoted(words: list[str]) -> str:
    return ", ".join(f"'{w}'" for w in words)


def _arr(words: list[str]) -> str:
    return f"(ARRAY[{_quoted(words)}])"


def _elt(index: str, words: list[str]) -> str:
    return f"ELT({index}, {_quoted(words)})"


def pg_insert(table: str, lo: int, hi: int, seed: int) -> str:
    """``INSERT ... SELECT`` of ids ``lo..hi`` in PostgreSQL (integer ``/`` truncates on bigint)."""
    w = _words("h", "('x' || {})::bit(32)::bigint")
    return f"""
INSERT INTO {table} ({", ".join(COLUMNS)})
SELECT i, b % 20 + 1, ts, (ts::date - ((b / 58800000) % 30)::int), round((-150 * ln(u1 * u2))::numeric, 2)::float8,
       ((d % 99900 + 100) / 100.0)::numeric(10, 2), ((b / 20) % 49 + 1)::int,
       {_arr(FIRST)}[(b / 49000) % 12 + 1] || ' ' || {_arr(LAST)}[(b / 588000) % 10 + 1],
       {_arr(CITIES)}[(b / 4900) % 10 + 1], {_arr(STATUS)}[(b / 980) % 5 + 1],
       CASE WHEN (d / 99900) % 10 <> 0 THEN 'note ' || ((d / 999000) % 997) END, (b / 5880000) % 10 < 7
FROM (SELECT i, b, d, timestamp '2026-01-01' + make_interval(secs => a % {SECONDS}) AS ts,
             ((c >> 16) + 0.5::float8) / 65536 AS u1, ((c & 65535) + 0.5::float8) / 65536 AS u2
      FROM (SELECT i, {w["a"]} AS a, {w["b"]} AS b, {w["c"]} AS c, {w["d"]} AS d
            FROM (SELECT i, md5('{seed}:' || i) AS h FROM generate_series({lo}::bigint, {hi}::bigint) AS i) s0) s1
     ) s2"""


def my_insert(table: str, lo: int, hi: int, seed: int) -> str:
    """The same rows in MariaDB, from the sequence engine's ``seq_LO_to_HI`` table."""
    w = _words("h", "CAST(CONV({}, 16, 10) AS UNSIGNED)")
    return f"""
INSERT INTO {table} ({", ".join(COLUMNS)})
SELECT i, b MOD 20 + 1, ts, DATE_SUB(DATE(ts), INTERVAL ((b DIV 58800000) MOD 30) DAY),
       ROUND(-150 * LN(u1 * u2), 2), (d MOD 99900 + 100) / 100, (b DIV 20) MOD 49 + 1,
       CONCAT({_elt("(b DIV 49000) MOD 12 + 1", FIRST)}, ' ', {_elt("(b DIV 588000) MOD 10 + 1", LAST)}),
       {_elt("(b DIV 4900) MOD 10 + 1", CITIES)}, {_elt("(b DIV 980) MOD 5 + 1", STATUS)},
       CASE WHEN (d DIV 99900) MOD 10 <> 0 THEN CONCAT('note ', (d DIV 999000) MOD 997) END,
       (b DIV 5880000) MOD 10 < 7
FROM (SELECT i, b, d, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL (a MOD {SECONDS}) SECOND AS ts,
             ((c >> 16) + 0.5e0) / 65536 AS u1, ((c & 65535) + 0.5e0) / 65536 AS u2
      FROM (SELECT i, {w["a"]} AS a, {w["b"]} AS b, {w["c"]} AS c, {w["d"]} AS d
            FROM (SELECT seq AS i, MD5(CONCAT('{seed}:', seq)) AS h FROM seq_{lo}_to_{hi}) s0) s1
     ) s2"""


PG_COLUMNS = """id bigint NOT NULL, connection_id bigint NOT NULL, created_at timestamp NOT NULL,
  order_date date NOT NULL, amount double precision NOT NULL, unit_price numeric(10,2) NOT NULL,
  quantity integer NOT NULL, customer text NOT NULL, city text NOT NULL, status text NOT NULL, note text,
  is_paid boolean NOT NULL"""
MY_COLUMNS = """id BIGINT NOT NULL PRIMARY KEY, connection_id BIGINT NOT NULL, created_at DATETIME NOT NULL,
  order_date DATE NOT NULL, amount DOUBLE NOT NULL, unit_price DECIMAL(10,2) NOT NULL, quantity INT NOT NULL,
  customer VARCHAR(40) NOT NULL, city VARCHAR(20) NOT NULL, status VARCHAR(12) NOT NULL, note VARCHAR(20) NULL,
  is_paid BOOLEAN NOT NULL"""


class My:
    """Setup and checks in MariaDB through the ``mysql`` client (never timed)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 3306
        self.user, self.password = parts.username or "root", parts.password
        self.database = parts.path.strip("/") or "test"

    def argv(self) -> list[str]:
        cmd = ["mysql", "-h", self.host, "-P", str(self.port), "-u", self.user, "--default-character-set=utf8mb4",
               "-N", "-B"]
        return [*cmd, f"-p{self.password}"] if self.password else cmd

    def sql(self, command: str) -> str:
        out = subprocess.run([*self.argv(), self.database, "-e", command], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"mysql: {out.stderr.strip()[-300:]}")
        return out.stdout.strip()


# --- source tables ------------------------------------------------------------------------------------------
def stamp(rows: int, seed: int) -> str:
    return f"bench/db_sources.py {GENERATOR} seed={seed} rows={rows}"


def pg_source(db: Db, rows: int, seed: int) -> str:
    """``bench_src.orders_<rows>``, made unless a complete one (its comment is set last) is there."""
    table = f"{SRC_SCHEMA}.orders_{rows}"
    if db.sql(f"SELECT obj_description(to_regclass('{table}'), 'pg_class')") == stamp(rows, seed):
        return table
    print(f"generating {table} in PostgreSQL ...", flush=True)
    t = time.perf_counter()
    db.sql(f"CREATE SCHEMA IF NOT EXISTS {SRC_SCHEMA}")
    db.sql(f"DROP TABLE IF EXISTS {table}")
    db.sql(f"CREATE TABLE {table} ({PG_COLUMNS})")
    for lo in range(1, rows + 1, CHUNK):
        db.sql(pg_insert(table, lo, min(lo + CHUNK - 1, rows), seed))
    db.sql(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
    db.sql(f"VACUUM (ANALYZE) {table}")  # hint bits and visibility map set now, not by the first measured read
    db.sql(f"COMMENT ON TABLE {table} IS '{stamp(rows, seed)}'")
    print(f"  {time.perf_counter() - t:.0f} s", flush=True)
    return table


def my_source(my: My, rows: int, seed: int) -> str:
    """``<database>.bench_src_orders_<rows>`` in MariaDB (InnoDB), made unless complete (comment + count)."""
    table = f"{MY_PREFIX}orders_{rows}"
    found = my.sql(f"SELECT table_comment FROM information_schema.tables WHERE table_schema = DATABASE() "
                   f"AND table_name = '{table}'")
    if found == stamp(rows, seed) and int(my.sql(f"SELECT count(*) FROM {table}")) == rows:
        return table
    print(f"generating {my.database}.{table} in MariaDB ...", flush=True)
    t = time.perf_counter()
    my.sql(f"DROP TABLE IF EXISTS {table}")
    my.sql(f"CREATE TABLE {table} ({MY_COLUMNS}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 "
           f"COMMENT='{stamp(rows, seed)}'")
    for lo in range(1, rows + 1, CHUNK):
        my.sql(my_insert(table, lo, min(lo + CHUNK - 1, rows), seed))
    my.sql(f"ANALYZE TABLE {table}")
    print(f"  {time.perf_counter() - t:.0f} s", flush=True)
    return table


# --- lines --------------------------------------------------------------------------------------------------
@dataclass
class Line:
    """One row of the result table: one way of copying one source table into PostgreSQL."""

    source: str  # "PostgreSQL", "MariaDB"
    tool: str  # engine, engine-p2, reference
    label: str
    rows: int
    runs: int
    table: str  # the PostgreSQL target
    src: str  # the source table (in its server)
    samples: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None


def plan(rows: int, runs: int, args: argparse.Namespace, pg_src: str, my_src: str) -> list[Line]:
    out = []
    for source, src, kind in (("PostgreSQL", pg_src, "pg"), ("MariaDB", my_src, "mariadb")):
        out.append(Line(source, "engine", "biconic load", rows, runs, f"{SCHEMA}.dbsrc_{kind}_{rows}", src))
        if args.parallel:
            out.append(Line(source, "engine-p2", "biconic load, partition_on=id, partition_num=2", rows, runs,
                            f"{SCHEMA}.dbsrc_{kind}_p2_{rows}", src))
        if args.reference:
            label = "INSERT ... SELECT in the server" if kind == "pg" else "mysql -B | psql \\copy (text pipe)"
            out.append(Line(source, "reference", label, rows, runs, f"{SCHEMA}.dbsrc_{kind}_{rows}", src))
    return out


def source_url(line: Line, args: argparse.Namespace) -> str:
    if line.source == "PostgreSQL":
        return f"{args.dsn}?table={line.src}"
    return f"{args.mysql}?table={line.src}"


def engine_cmd(line: Line, args: argparse.Namespace) -> list[str]:
    """``biconic load URL --into TABLE --partition-by created_at:month --no-archive --json`` (+ the parallel
    read options for the ``engine-p2`` lines)."""
    script = Path(sys.executable).parent / "biconic"
    biconic = [str(script)] if script.exists() else [sys.executable, "-m", "engine"]
    cmd = [*biconic, "load", source_url(line, args), "--into", line.table,
           "--partition-by", "created_at:month", "--no-archive", "--dsn", args.dsn, "--json"]
    if line.tool == "engine-p2":
        cmd += ["--option", "partition_on=id", "--option", "partition_num=2"]
    return cmd


def reference_cmd(line: Line, args: argparse.Namespace, my: My) -> list[str]:
    cols = ", ".join(COLUMNS)
    psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", args.dsn]
    if line.source == "PostgreSQL":
        return [*psql, "-c", f"INSERT INTO {line.table} ({cols}) SELECT {cols} FROM {line.src}"]
    # mysql --batch writes PostgreSQL's text COPY format (tab-separated, \t \n \\ escaped) with NULL as "NULL"
    dump = shlex.join([*my.argv(), "--quick", my.database, "-e", f"SELECT {cols} FROM {line.src}"])
    load = shlex.join([*psql, "-c", f"\\copy {line.table} ({cols}) FROM STDIN WITH (FORMAT text, NULL 'NULL')"])
    return ["bash", "-o", "pipefail", "-c", f"{dump} | {load}"]


def cpu_busy() -> float:
    """Seconds of CPU the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], *, timeout: float) -> dict[str, Any]:
    """Wall s, peak RSS MB, the process tree's user+sys CPU s (GNU time), the machine's busy CPU s, stdout."""
    busy = cpu_busy()
    out = subprocess.run(["/usr/bin/time", "-f", "__TIME__ %e %M %U %S", *cmd], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    busy = cpu_busy() - busy
    lines = out.stderr.splitlines()
    mark = next((ln for ln in reversed(lines) if ln.startswith("__TIME__")), None)
    if out.returncode != 0 or mark is None:
        tail = [ln for ln in lines if not ln.startswith("__TIME__") and ln.strip()][-3:]
        raise RuntimeError(" | ".join(tail)[-400:] or f"exit {out.returncode}")
    _, wall, kb, user, sys_ = mark.split()
    return {"seconds": float(wall), "peak_rss_mb": round(int(kb) / 1024, 1),
            "cpu_s": round(float(user) + float(sys_), 2), "machine_busy_s": round(busy, 2), "stdout": out.stdout}


def forget(db: Db, table: str) -> None:
    """Drop the target and every row the engine keeps about it, so the next load starts from nothing."""
    db.sql(f"DROP TABLE IF EXISTS {table}")
    db.sql(f"DO $$ BEGIN IF to_regclass('biconic.loads') IS NOT NULL THEN "
           f"DELETE FROM biconic.loads WHERE dataset = '{table}'; "
           f"DELETE FROM biconic.watermarks WHERE dataset = '{table}'; "
           f"DELETE FROM biconic.archive_files WHERE dataset = '{table}'; "
           f"DELETE FROM biconic.datasets WHERE dataset = '{table}'; END IF; END $$")


#: what must match between the source and the target after a copy (checked on each line's first run)
CHECK = ("count(*), count(note), sum(quantity), sum(unit_price), sum(connection_id), min(created_at), "
         "max(created_at), min(order_date), max(order_date), count(DISTINCT customer), round(sum(amount))")


def check_content(line: Line, db: Db, my: My) -> None:
    got = db.sql(f"SELECT {CHECK} FROM {line.table}").split("|")
    if line.source == "PostgreSQL":
        want = db.sql(f"SELECT {CHECK} FROM {line.src}").split("|")
    else:
        want = my.sql(f"SELECT {CHECK} FROM {line.src}").split("\t")
    def norm(value: str) -> str:  # 250.00 (numeric) and 250 (bigint sum) are the same sum
        try:
            return str(decimal.Decimal(value).normalize())
        except decimal.InvalidOperation:
            return value

    if [norm(w) for w in want] != [norm(g) for g in got]:
        raise RuntimeError(f"content differs: source {want} vs target {got}")


def run_once(line: Line, db: Db, my: My, args: argparse.Namespace) -> dict[str, Any]:
    """Prepare the target (untimed), run the copy in its own measured process, count what landed."""
    if line.tool == "reference":
        base = Line(line.source, "engine", "", line.rows, 1, line.table, line.src)
        if not db.exists(line.table):  # the engine makes the (partitioned, indexed) table the reference fills
            forget(db, line.table)
            timed(engine_cmd(base, args), timeout=args.timeout)
        db.sql(f"TRUNCATE {line.table}")
        sample = timed(reference_cmd(line, args, my), timeout=args.timeout)
        expected = line.rows
        sample.pop("stdout")
    else:
        forget(db, line.table)
        sample = timed(engine_cmd(line, args), timeout=args.timeout)
        report = last_json(sample.pop("stdout"))
        expected = int(report.get("rows_loaded") or 0)
        sample["engine_s"] = report.get("seconds")
        sample["engine_peak_rss_mb"] = report.get("peak_rss_mb")
    landed = db.count(line.table)
    if landed != line.rows or expected != line.rows:
        raise RuntimeError(f"expected {line.rows:,} rows, the table holds {landed:,} (tool said {expected:,})")
    if not line.samples:
        check_content(line, db, my)
    return sample


def measure(lines: list[Line], db: Db, my: My, args: argparse.Namespace) -> None:
    def show(line: Line, s: dict[str, Any]) -> None:
        print(f"    {line.source:<11}{line.label:<48}{s['seconds']:>8.2f} s{s['peak_rss_mb']:>8.0f} MB", flush=True)

    alternate_rounds(lines, lambda line: run_once(line, db, my, args), name=lambda line: f"{line.source} {line.label}",
                     show=show)


# --- summarising --------------------------------------------------------------------------------------------
def summarise(lines: list[Line]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        entry: dict[str, Any] = {"source": line.source, "tool": line.tool, "label": line.label, "rows": line.rows,
                                 "source_table": line.src, "target": line.table, "runs": line.samples,
                                 "failure": line.failure}
        if line.samples:
            def med(key: str, samples: list[dict[str, Any]] = line.samples) -> float:
                return statistics.median(float(s[key]) for s in samples if s.get(key) is not None)

            secs = med("seconds")
            entry.update(seconds=round(secs, 2), rows_per_s=round(line.rows / secs),
                         peak_rss_mb=round(med("peak_rss_mb")), cpu_s=round(med("cpu_s"), 1),
                         machine_busy_s=round(med("machine_busy_s"), 1))
            if line.tool != "reference":
                entry["engine_s"] = round(med("engine_s"), 2)
        out.append(entry)
    return out


def base_rows(results: dict[str, list[dict[str, Any]]]) -> int:
    return 1_000_000 if "1000000" in results else min(int(k) for k in results)


def rss_ratio(results: dict[str, list[dict[str, Any]]], entry: dict[str, Any]) -> float | None:
    """Peak RSS of this line over the same line's at 1M rows (else at the smallest size measured)."""
    small = base_rows(results)
    if entry["rows"] == small or not entry.get("peak_rss_mb"):
        return None
    base = next((e for e in results[str(small)] if e["source"] == entry["source"] and e["tool"] == entry["tool"]
                 and e.get("peak_rss_mb")), None)
    return round(entry["peak_rss_mb"] / base["peak_rss_mb"], 2) if base else None


def print_table(results: dict[str, list[dict[str, Any]]]) -> None:
    smallest = base_rows(results)
    print(f"\nmedians; wall and peak RSS of the whole process tree; CPU: user+sys of that tree; busy: the machine's "
          f"busy CPU seconds during the run (all cores; the servers' share is busy - CPU); x RSS: peak RSS over the "
          f"same line's at {smallest:,} rows")
    head = (f"{'source':<11}{'line':<48}{'rows':>11}{'runs':>5}{'s':>8}{'rows/s':>10}{'RSS MB':>8}{'x RSS':>7}"
            f"{'CPU s':>7}{'busy s':>8}")
    print(head)
    print("-" * len(head))
    for key in sorted(results, key=int):
        for e in results[key]:
            if e.get("failure") and not e.get("seconds"):
                print(f"{e['source']:<11}{e['label']:<48}{e['rows']:>11,}  FAILED: {e['failure'][:90]}")
                continue
            ratio = rss_ratio(results, e)
            print(f"{e['source']:<11}{e['label']:<48}{e['rows']:>11,}{len(e['runs']):>5}{e['seconds']:>8.2f}"
                  f"{e['rows_per_s']:>10,}{e['peak_rss_mb']:>8,}{'-' if ratio is None else f'{ratio:.2f}':>7}"
                  f"{e['cpu_s']:>7.1f}{e['machine_busy_s']:>8.1f}")


def versions(db: Db, my: My) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("polars", "pyarrow", "adbc-driver-postgresql", "connectorx", "pymysql"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["postgresql"] = db.sql("SHOW server_version")
    out["mariadb"] = my.sql("SELECT VERSION()")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append", help="source size; repeat for several (default 1M, 5M)")
    parser.add_argument("--runs", type=int, default=3, help="runs per line (median)")
    parser.add_argument("--big-runs", type=int, default=None, help="runs per line above 1M rows (default --runs)")
    parser.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=True,
                        help="also the lines with --option partition_on=id --option partition_num=2")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also the references: INSERT ... SELECT in PostgreSQL, mysql | psql \\copy")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to one measured process")
    parser.add_argument("--dsn", default=os.environ.get("BICONIC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--mysql", default=os.environ.get("BICONIC_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--keep", action="store_true", help="keep the target tables (default: dropped at the end)")
    args = parser.parse_args()
    sizes = sorted(args.rows or [1_000_000, 5_000_000])
    os.environ["BICONIC_PG_DSN"] = args.dsn

    started = time.perf_counter()
    db, my = Db(args.dsn, args.out / "no-archive"), My(args.mysql)
    db.sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    info = {"machine": machine(), "versions": versions(db, my)}
    sources = {rows: (pg_source(db, rows, args.seed), my_source(my, rows, args.seed)) for rows in sizes}
    generated_s = time.perf_counter() - started

    path = args.out / "db_sources.json"
    results: dict[str, list[dict[str, Any]]] = {}
    if path.exists():  # sizes measured earlier stay (their lines give the RSS ratio a base)
        results = {k: v for k, v in json.loads(path.read_text()).get("results", {}).items() if int(k) not in sizes}
    for rows in sizes:
        runs = args.big_runs if args.big_runs and rows > 1_000_000 else args.runs
        lines = plan(rows, runs, args, *sources[rows])
        print(f"{rows:,} rows: {len(lines)} lines x {runs} runs", flush=True)
        measure(lines, db, my, args)
        results[str(rows)] = summarise(lines)
        if not args.keep:
            for table in {line.table for line in lines}:
                forget(db, table)
    print_table(results)
    elapsed = time.perf_counter() - started
    info["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\ntook {elapsed:.0f} s ({generated_s:.0f} s making or checking the source tables); "
          f"{info['machine']['cores']} cores, {info['machine']['date']}")
    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("dsn", "mysql")}
    path.write_text(json.dumps({**info, "config": config, "elapsed_s": round(elapsed), "results": results},
                               indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
