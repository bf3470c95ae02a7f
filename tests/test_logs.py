"""Structured logs: JSON lines off a terminal, text on one, the ids of the job, connection and load on every line,
no secret anywhere."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import SpecError
from engine.logs import LogHandler, configure_logging, current_ids, log_context, uvicorn_log_config, wants_json


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger, put back as it was (handlers and level) after the test."""
    logger = logging.getLogger()
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _logger(stream: io.StringIO, json_format: bool = True) -> logging.Logger:
    """A logger of its own writing to ``stream`` through a LogHandler (the root's handlers untouched)."""
    logger = logging.getLogger(f"biconic.test.{id(stream)}")
    logger.handlers[:] = [LogHandler(json_format, stream)]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_a_json_line_carries_the_ids_of_nested_contexts() -> None:
    out = io.StringIO()
    log = _logger(out)
    with log_context(job_id="j-1", connection_id=7):
        log.info("planned %d partitions", 3)
        with log_context(load_id="abc", dataset="sales.orders", connection_id=8):
            log.warning("inside", extra={"rows": 12})
        log.info("after")
    log.info("outside")
    first, inner, after, outside = _lines(out)
    assert first["message"] == "planned 3 partitions" and first["level"] == "INFO"
    assert first["logger"] == log.name and str(first["ts"]).endswith("Z") and "T" in str(first["ts"])
    assert (first["job_id"], first["connection_id"]) == ("j-1", "7") and "load_id" not in first
    assert {k: inner[k] for k in ("job_id", "connection_id", "load_id", "dataset", "rows")} == {
        "job_id": "j-1", "connection_id": "8", "load_id": "abc", "dataset": "sales.orders", "rows": 12}
    assert after["connection_id"] == "7" and "load_id" not in after
    assert not {"job_id", "connection_id", "load_id", "dataset"} & set(outside)
    assert current_ids() == {}


def test_each_thread_sees_only_its_own_context() -> None:
    out = io.StringIO()
    log = _logger(out)
    ready = threading.Barrier(2)

    def work(job: str) -> None:
        with log_context(job_id=job):
            ready.wait(5)  # both contexts are set at once
            log.info("from %s", job)
            ready.wait(5)

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
    with log_context(job_id="main"):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log.info("from main")
    found = {line["message"]: line["job_id"] for line in _lines(out)}
    assert found == {"from a": "a", "from b": "b", "from main": "main"}


def test_secrets_are_redacted_in_message_arguments_fields_and_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AKsecretvalue42")
    out = io.StringIO()
    log = _logger(out)
    with log_context(dataset="orders"):
        log.info("connecting to %s", "postgresql://app:s3cret@db:5432/shop",
                 extra={"url": "https://api.example.com/v1?api_key=k3yk3y&page=2"})
        log.warning("host=db password=hunter22 sslmode=require; Authorization: Bearer tok.en-123")
        log.info("token=abcdef99 and the AWS key AKsecretvalue42 echoed by a driver; aws_secret_access_key=zzz999")
        try:
            raise RuntimeError("could not connect to postgresql://u:pw0rd99@h/db\nDETAIL: more")
        except RuntimeError:
            log.exception("load failed")
    text = out.getvalue()
    for secret in ("s3cret", "k3yk3y", "hunter22", "tok.en-123", "abcdef99", "AKsecretvalue42", "pw0rd99", "zzz999"):
        assert secret not in text, secret
    lines = _lines(out)
    assert len(lines) == 4  # one line each: the exception's second line is not printed
    assert lines[0]["message"] == "connecting to postgresql://app:***@db:5432/shop"
    assert lines[0]["url"] == "https://api.example.com/v1?api_key=***&page=2"
    assert lines[3]["error"] == "RuntimeError: could not connect to postgresql://u:***@h/db"
    assert "traceback" not in lines[3]


def test_a_traceback_is_a_field_only_at_debug(root: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("DEBUG", json_format=True, stream=out)
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("biconic.test").exception("failed")
    line, = _lines(out)
    assert line["error"] == "ValueError: bad"
    assert "Traceback (most recent call last)" in str(line["traceback"])
    assert "test_a_traceback_is_a_field_only_at_debug" in str(line["traceback"])


def test_text_on_a_terminal_json_elsewhere(root: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal, pipe = _Terminal(), io.StringIO()
    configure_logging("INFO", stream=terminal)
    with log_context(job_id="j-9"):
        logging.getLogger("biconic.jobs").info("hello %s", "there")
    line = terminal.getvalue()
    assert line.endswith("INFO    biconic.jobs: hello there [job_id=j-9]\n"), line
    configure_logging("INFO", stream=pipe)  # replaces the first handler: one line, in JSON
    logging.getLogger("biconic.jobs").info("again")
    assert terminal.getvalue() == line
    assert _lines(pipe)[0]["message"] == "again"
    assert sum(isinstance(h, LogHandler) for h in root.handlers) == 1


@pytest.mark.parametrize(("setting", "terminal", "expected"),
                         [("auto", True, False), ("auto", False, True), ("json", True, True),
                          ("text", False, False), ("JSON", True, True)])
def test_biconic_log_format_is_honoured(monkeypatch: pytest.MonkeyPatch, setting: str, terminal: bool,
                                        expected: bool) -> None:
    monkeypatch.setenv("BICONIC_LOG_FORMAT", setting)
    assert wants_json(stream=_Terminal() if terminal else io.StringIO()) is expected
    assert wants_json(False, stream=io.StringIO()) is False  # an explicit choice wins


def test_log_settings_are_checked(monkeypatch: pytest.MonkeyPatch, root: logging.Logger) -> None:
    monkeypatch.setenv("BICONIC_LOG_FORMAT", "xml")
    with pytest.raises(SpecError, match="BICONIC_LOG_FORMAT"):
        wants_json()
    monkeypatch.setenv("BICONIC_LOG_FORMAT", "json")
    monkeypatch.setenv("BICONIC_LOG_LEVEL", "loud")
    with pytest.raises(SpecError, match="BICONIC_LOG_LEVEL"):
        configure_logging()
    monkeypatch.setenv("BICONIC_LOG_LEVEL", "debug")
    configure_logging(stream=io.StringIO())
    assert root.level == logging.DEBUG
    monkeypatch.delenv("BICONIC_LOG_LEVEL")
    configure_logging(stream=io.StringIO())
    assert root.level == logging.WARNING


def test_uvicorn_lines_go_through_the_handler(root: logging.Logger) -> None:
    import logging.config

    config = uvicorn_log_config("info", json_format=True)
    logging.config.dictConfig(config)
    handler, = [h for h in root.handlers if isinstance(h, LogHandler)]
    out = io.StringIO()
    handler.stream = out
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/v1/datasets?access_token=t0k3n", "1.1", 200)
    line, = _lines(out)
    assert line["logger"] == "uvicorn.access" and "t0k3n" not in str(line["message"]) and "200" in str(line["message"])
    assert not access.handlers


@pytest.mark.postgres
def test_a_load_logs_json_lines_with_its_ids(tmp_path: Path, pg_dsn: str, table: str) -> None:
    data = tmp_path / "orders.csv"
    data.write_text("day,qty\n2026-01-01,1\n2026-02-01,2\n")
    dsn = pg_dsn.replace("postgresql://postgres@", "postgresql://postgres:pw-s3cret@")  # trust: ignored
    assert "pw-s3cret" in dsn
    env = {**os.environ, "BICONIC_LOG_LEVEL": "INFO", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("BICONIC_LOG_FORMAT", None)
    result = subprocess.run([sys.executable, "-m", "engine", "load", str(data), "--into", table, "--connection", "7",
                             "--partition-by", "day:month", "--dsn", dsn, "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is the report alone, as before
    assert report["rows_loaded"] == 2
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines, "no log line at INFO"
    assert "pw-s3cret" not in result.stderr
    loads = [line for line in lines if line.get("logger") == "biconic.load"]
    assert [line["message"] for line in loads][0] == f"load of {data} into {table} started (mode append)"
    assert loads[-1]["message"].startswith(f"load of {data} into {table} done: 2 rows loaded, 0 partitions")
    for line in loads:
        assert (line["load_id"], line["dataset"], line["connection_id"]) == (report["load_id"], table, "7")


def test_a_failed_load_is_still_one_plain_error_line(tmp_path: Path) -> None:
    env = {**os.environ, "BICONIC_LOG_LEVEL": "WARNING", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-m", "engine", "load", str(tmp_path / "nope.csv"), "--into", "t",
                             "--dsn", "postgresql://postgres@127.0.0.1:1/none"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 3
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


def test_an_api_request_about_an_import_carries_its_job_id() -> None:
    import asyncio

    from engine.service.app import _ImportIds

    seen: list[dict[str, str]] = []

    async def inner(scope: object, receive: object, send: object) -> None:
        seen.append(current_ids())

    async def nothing() -> dict[str, str]:
        return {}

    async def ignore(message: object) -> None:
        return None

    ids = _ImportIds(inner)
    for path in ("/v1/imports/3f2a9c1e-0000/events", "/v1/imports", "/v1/uploads/x"):
        asyncio.run(ids({"type": "http", "path": path}, nothing, ignore))
    assert seen == [{"job_id": "3f2a9c1e-0000"}, {}, {}]
    assert current_ids() == {}


@pytest.mark.postgres
def test_serve_writes_uvicorns_lines_as_json(tmp_path: Path, pg_dsn: str) -> None:
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "BICONIC_PG_DSN": pg_dsn}
    env.pop("BICONIC_LOG_FORMAT", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?api_key=k3y-k3y", timeout=2) as r:
                    assert r.status == 200
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = log.read_text()
    first, *rest = text.splitlines()
    assert first.startswith("biconic serve: http://")  # the user's line, as before
    lines = [json.loads(line) for line in rest]
    assert any(line["logger"] == "uvicorn.error" and "Uvicorn running" in line["message"] for line in lines), text
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert access and "/healthz?api_key=***" in access[0]["message"] and "k3y-k3y" not in text


def test_a_bad_log_setting_is_one_line_and_another_bad_setting_still_shows_help(root: logging.Logger) -> None:
    from click.testing import CliRunner

    from engine.cli import cli

    bad = CliRunner().invoke(cli, ["sources"], env={"BICONIC_LOG_LEVEL": "loud"})
    assert bad.exit_code == 2 and bad.stderr.startswith("error: BICONIC_LOG_LEVEL: ") and bad.stderr.count("\n") == 1
    helped = CliRunner().invoke(cli, ["load", "--help"], env={"BICONIC_BATCH_ROWS": "lots"})
    assert helped.exit_code == 0 and "Usage:" in helped.output


def test_the_engines_helper_threads_carry_the_callers_ids() -> None:
    from engine.handoff import Prefetch, Worker

    seen: list[dict[str, str]] = []
    with log_context(load_id="L-1", dataset="orders"):
        with Prefetch(iter([1]), iter([2])) as items:
            got = sorted(items)
        helper: Worker[int] = Worker(lambda item: seen.append(current_ids()))
        helper.put(1)
        helper.call(lambda: None).result(5)
        helper.close()

    def produced() -> Iterator[dict[str, str]]:
        yield current_ids()

    with log_context(job_id="j-2"), Prefetch(produced()) as found:
        [in_thread] = list(found)
    assert got == [1, 2] and seen == [{"load_id": "L-1", "dataset": "orders"}] and in_thread == {"job_id": "j-2"}
