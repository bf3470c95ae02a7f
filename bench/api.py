"""The HTTP service under load: a real ``biconic serve`` answering 50 concurrent clients, and a big tus upload.

1. Latency of ``GET /v1/imports/{id}`` (a job row read, with the token check) and of ``POST
   /v1/datasets/{name}/query`` answered from the cache (the same query each time) and computed (a different
   filter value each time, so every one misses), ``--clients`` clients at once, ``--requests`` requests per
   case, ``--runs`` interleaved rounds: p50 / p95 / p99 and requests/s of the round of median throughput.
2. A ``--upload-mb`` upload through tus in ``--chunk-mb`` chunks (what tus-js-client sends), with the server's RSS
   sampled every 0.1 s: MB/s and RSS before / peak.

The dataset is ``--rows`` generated rows (bench/generate.py) of ``--connections`` connections, one of which the
token reads. The server uses a dedicated Redis database (``--redis``, checked empty, emptied at the end) and is
stopped on any exit. Results: a terminal table and ``bench/results/api-latest.json``.

    python bench/api.py --runs 1 --requests 500 --upload-mb 100     # a quick check, ~1 min
    python bench/api.py                                              # 3 rounds of 2000 requests a case, a 1 GB upload
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from generate import write  # noqa: E402

TABLE = "bench_api_orders"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(env: dict[str, str], log: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(port), "--workers",
                                 str(workers), "--log-level", "warning"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        time.sleep(0.2)
    raise RuntimeError(f"biconic serve did not start: {log.read_text()[-2000:]}")


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2), "p99_ms": round(q[98], 2)}


async def hammer(url: str, token: str, clients: int, requests: int, make: Any) -> dict[str, Any]:
    """``requests`` requests from ``clients`` concurrent clients; ``make(i)`` gives (method, path, json)."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=120) as client:
        async def one_client() -> None:
            nonlocal errors
            for i in counter:
                method, path, body = make(i)
                started = time.perf_counter()
                answer = await client.request(method, path, json=body)
                latencies.append(time.perf_counter() - started)
                errors += answer.status_code >= 400
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - started
    return {**percentiles(latencies), "requests": len(latencies), "errors": errors,
            "per_s": round(len(latencies) / wall, 1)}


def upload(url: str, token: str, path: Path, chunk: int, pid: int) -> dict[str, Any]:
    """One tus upload of ``path`` in ``chunk``-byte PATCHes, the server's RSS sampled meanwhile."""
    server = psutil.Process(pid)
    family = [server, *server.children(recursive=True)]
    before = sum(p.memory_info().rss for p in family)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                peak = max(peak, sum(p.memory_info().rss for p in family))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    size = path.stat().st_size
    tus = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers=tus, timeout=300) as client, path.open("rb") as data:
        made = client.post("/v1/uploads", headers={
            "Upload-Length": str(size), "Upload-Metadata": "filename " + base64.b64encode(path.name.encode()).decode()})
        made.raise_for_status()
        where = made.headers["Location"]
        offset = 0
        while offset < size:
            block = data.read(chunk)
            answer = client.patch(where, content=block, headers={
                "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
            answer.raise_for_status()
            offset = int(answer.headers["Upload-Offset"])
        info = client.get(where).json() if client.get(where).status_code == 200 else {}
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return {"mb": round(size / 2**20), "chunk_mb": round(chunk / 2**20, 1), "seconds": round(seconds, 2),
            "mb_per_s": round(size / 2**20 / seconds, 1), "rss_before_mb": round(before / 2**20, 1),
            "rss_peak_mb": round(peak / 2**20, 1), "sha256_recorded": bool(info.get("sha256"))}


def big_file(folder: Path, mb: int) -> Path:
    path = folder / f"upload-{mb}mb.bin"
    if not path.exists() or path.stat().st_size != mb * 2**20:
        block = os.urandom(2**20)
        with path.open("wb") as out:
            for _ in range(mb):
                out.write(block)
    return path


def cases(job_id: str) -> dict[str, Any]:
    """What each latency case sends for its i-th request."""
    cached = {"group_by": ["status"], "aggregates": [{"fn": "count", "as": "n"}]}
    return {
        "GET /v1/imports/{id}": lambda i: ("GET", f"/v1/imports/{job_id}", None),
        "query, cached": lambda i: ("POST", f"/v1/datasets/{TABLE}/query", cached),
        "query, computed": lambda i: ("POST", f"/v1/datasets/{TABLE}/query", {
            "filters": [{"column": "amount", "op": ">=", "value": round(i * 0.01, 2)}],
            "group_by": ["status"], "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "amount",
                                                                                 "as": "total"}]}),
    }


def prepare(args: argparse.Namespace, folder: Path) -> Path:
    import engine

    data = write(folder / "orders.csv", args.rows)
    engine.load(data, into=TABLE, partition_by="created_at:month", dsn=args.dsn, archive="off", mode="replace")
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/8", help="an empty Redis db for broker and cache")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--computed-requests", type=int, default=300,
                   help="requests of the computed query (each runs DuckDB over PostgreSQL: ~0.2 s of CPU)")
    p.add_argument("--server-workers", type=int, default=2)
    p.add_argument("--runs", type=int, default=3, help="rounds of the latency cases (the median is kept)")
    p.add_argument("--upload-mb", type=int, default=1024)
    p.add_argument("--chunk-mb", type=float, default=6.0)
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "biconic-bench-api")
    args = p.parse_args()
    import redis

    broker = redis.Redis.from_url(args.redis)
    if broker.dbsize():
        sys.exit(f"{args.redis} holds {broker.dbsize()} keys: give --redis a database nobody uses")
    args.data.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BICONIC_")}
    env.update(PYTHONPATH=str(ROOT), BICONIC_PG_DSN=args.dsn, BICONIC_BROKER_URL=args.redis,
               BICONIC_REDIS_URL=args.redis, BICONIC_HOME=str(args.data / "home"))
    os.environ.update({k: v for k, v in env.items() if k.startswith("BICONIC_")})
    from engine.service.tokens import create_token, revoke_token

    source = prepare(args, args.data)
    reader = create_token(args.dsn, connection_id=7, scope="read")
    admin = create_token(args.dsn, scope="admin")
    writer = create_token(args.dsn, connection_id=7, scope="write")
    proc, url = start_server(env, args.data / "serve.log", args.server_workers)
    results: dict[str, Any] = {"rows": args.rows, "clients": args.clients, "server_workers": args.server_workers,
                               "cpus": os.cpu_count(), "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        made = httpx.post(f"{url}/v1/imports", headers={"Authorization": f"Bearer {admin['token']}"},
                          json={"source": str(source), "into": TABLE, "connection_id": "7"}, timeout=60)
        made.raise_for_status()
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_ in range(args.runs):  # the cases interleaved, round after round
            for name, make in cases(made.json()["job_id"]).items():
                if round_ == 0:
                    asyncio.run(hammer(url, reader["token"], args.clients, min(100, args.requests), make))  # warm-up
                count = args.computed_requests if name == "query, computed" else args.requests
                runs.setdefault(name, []).append(asyncio.run(hammer(url, reader["token"], args.clients, count,
                                                                    make)))
                print(f"{name:<24} {runs[name][-1]}", flush=True)
        for name, done in runs.items():  # the run of median throughput, with the spread of the others
            done.sort(key=lambda r: r["per_s"])
            results[name] = {**done[len(done) // 2], "runs": len(done), "per_s_all": [r["per_s"] for r in done]}
        if args.upload_mb:
            big = big_file(args.data, args.upload_mb)
            results["upload"] = upload(url, writer["token"], big, int(args.chunk_mb * 2**20), proc.pid)
            print(f"{'upload':<24} {results['upload']}", flush=True)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for made_token in (reader, admin, writer):
            revoke_token(args.dsn, made_token["token_id"])
        broker.flushdb()
    out = HERE / "results" / "api-latest.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
