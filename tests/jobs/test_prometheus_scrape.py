"""A real Prometheus (``prometheus`` 2.x on the PATH or in /usr/bin) scrapes a real worker's metrics port and the
API's ``/metrics`` with an admin bearer token, every second: the job the worker ran is in Prometheus.

In CI (``CI`` set) a missing ``prometheus`` binary fails the test; elsewhere it is skipped."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.jobs.conftest import Worker
from tests.jobs.test_metrics_worker import run_import
from tests.service.conftest import free_port, service_env, start_server, stop

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

#: how long Prometheus may take to start and scrape a value (scrapes every second)
SCRAPED_TIMEOUT = 20.0


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (apt-get install prometheus)")
        pytest.skip("prometheus is not installed")
    return found


def _config(worker_port: int, api_port: int, token: str) -> str:
    """Prometheus's configuration (YAML is a superset of JSON): the worker, and the API with a bearer token."""
    return json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
            {"job_name": "api", "authorization": {"credentials": token},
             "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
        ]})


@contextlib.contextmanager
def _prometheus(binary: str, config: str, folder: Path) -> Iterator[str]:
    """A Prometheus on a free port with ``config``; its URL. Stopped (SIGTERM, then SIGKILL) at the end."""
    (folder / "prometheus.yml").write_text(config)
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={folder / 'prometheus.yml'}",
                             f"--storage.tsdb.path={folder / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _query(url: str, promql: str) -> list[tuple[dict[str, str], float]]:
    """An instant query's samples, [] while Prometheus is not up yet."""
    with contextlib.suppress(httpx.HTTPError):
        answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
        if answer.status_code == 200:
            return [(r["metric"], float(r["value"][1])) for r in answer.json()["data"]["result"]]
    return []


def _until_value(url: str, promql: str, expected: float, log: Path) -> None:
    deadline = time.monotonic() + SCRAPED_TIMEOUT
    while [v for _, v in _query(url, promql)] != [expected]:
        if time.monotonic() > deadline:
            pytest.fail(f"{promql}: {_query(url, promql)}, not [{expected}] after {SCRAPED_TIMEOUT:g} s\n"
                        f"{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.25)


def test_prometheus_scrapes_the_worker_and_the_api(
        tmp_path: Path, prometheus_binary: str, start_worker: Callable[..., Worker], worker_env: dict[str, str],
        pg_dsn: str, broker_url: str, table: str) -> None:
    from engine.service.tokens import create_token

    worker_port = free_port()
    worker = start_worker(concurrency=1, args=("--metrics-port", str(worker_port)))
    (tmp_path / "api").mkdir()
    api = start_server(service_env(pg_dsn, broker_url, tmp_path / "api"), tmp_path / "api")
    try:
        run_import(tmp_path, worker_env, table, worker, rows=50)
        token = str(create_token(pg_dsn, scope="admin")["token"])
        folder = tmp_path / "prometheus"
        folder.mkdir()
        with _prometheus(prometheus_binary, _config(worker_port, int(api.url.rsplit(":", 1)[1]), token),
                         folder) as url:
            log = folder / "prometheus.log"
            _until_value(url, 'biconic_jobs_total{job="worker",outcome="succeeded"}', 1, log)
            _until_value(url, 'up{job="api"}', 1, log)  # the bearer token was taken: a 401 would be up 0
            _until_value(url, 'count(biconic_build_info{job="api"})', 1, log)
            _until_value(url, 'biconic_queue_depth{job="worker",queue="biconic"}', 0, log)
            _until_value(url, 'sum(biconic_rows_loaded_total{job="worker"})', 50, log)  # the PromQL
    finally:
        stop(api.proc)
