"""``GET /metrics`` on the API: for an admin token only (labels carry connection ids), not in the OpenAPI
document; ``biconic metrics serve``: an exporter that answers until SIGTERM and then exits cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import Api, free_port, service_env, start_server, stop
from tests.service.test_imports import uploaded

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_metrics_answer_an_admin_token_in_the_text_format(api: Api) -> None:
    with api.client(api.token(scope="admin")) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    for family in ("biconic_jobs_total", "biconic_build_info", "biconic_host_cpu_ratio",
                   'biconic_disk_free_bytes{folder="data"}'):
        assert family in answer.text, family


def test_metrics_refuse_a_connection_token_and_no_token(api: Api, connection: str) -> None:
    with api.client(api.token(connection, scope="read")) as client:
        refused = client.get("/metrics")
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    with api.client() as client:
        anonymous = client.get("/metrics")
        assert anonymous.status_code == 401 and "biconic_" not in anonymous.text
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_server_processes_share_their_counts(pg_dsn: str, spare_db: int, tmp_path: Path, table: str,
                                             connection: str) -> None:
    """``--workers 2``: an import cancelled in one server process is counted in every process's answer."""
    api = start_server(service_env(pg_dsn, f"redis://127.0.0.1:6379/{spare_db}", tmp_path), tmp_path,
                       "--workers", "2")
    try:
        with api.client(api.token(connection)) as client:  # no worker: the import stays queued
            job = client.post("/v1/imports", json={"upload_id": uploaded(client, b"id\n1\n"), "into": table})
            assert job.status_code == 202, job.text
            assert client.delete(f"/v1/imports/{job.json()['job_id']}").json()["cancelled"] is True
        admin = api.token(scope="admin")
        for _ in range(8):  # a new connection each time: answered by either process, each time the same
            with api.client(admin) as client:
                answer = client.get("/metrics")
            assert answer.status_code == 200, answer.text
            assert 'biconic_jobs_total{outcome="cancelled"} 1.0' in answer.text
        assert list((tmp_path / "metrics").glob("serve-*/counter_*.db"))
    finally:
        stop(api.proc)


def test_biconic_metrics_serve_answers_a_scrape_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BICONIC_")}
    env.update(BICONIC_HOME=str(tmp_path / "home"), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-m", "engine", "metrics", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                break
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the exporter did not answer within 30 s"
            time.sleep(0.2)
        assert answer.status_code == 200
        assert 'biconic_disk_used_ratio{folder="data"}' in answer.text
        assert "biconic_queue_depth{" not in answer.text  # no broker configured: none is started, none read
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err.decode()
        assert "stopped" in err.decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
