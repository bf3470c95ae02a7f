"""Database passwords kept out of URLs, pipeline files, errors, reports and the ledger: ``password_env``,
``env:NAME`` as the source, and ``${VAR}`` in a pipeline file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

import engine
from engine.errors import SourceError, SpecError
from engine.sources import open_source
from engine.sources.sql import PostgresSource
from tests.sources.sql._helpers import with_params
from tests.support import Sql

SECRET = "S3cr#t-Pw/x@y"


def _with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{parts.hostname}:{parts.port or 5432}"))


def _ledger_sources(sql: Sql, table: str) -> list[str]:
    return [str(r[0]) for r in sql("SELECT source FROM biconic.loads WHERE dataset = $1", [table])]


def test_password_env_puts_the_password_in_the_url_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_PW", SECRET)
    source = open_source("postgresql://app@db:5432/shop?table=orders", options={"password_env": "SHOP_PW"})
    assert isinstance(source, PostgresSource)
    assert urlsplit(source.url).password == "S3cr%23t-Pw%2Fx%40y"
    assert "S3cr" not in source.label and "S3cr" not in repr(source)


def test_password_env_refusals_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    with pytest.raises(SpecError, match=r"^source.password_env: environment variable NO_SUCH_PW is not set$"):
        open_source("postgresql://app@db/shop?table=t", options={"password_env": "NO_SUCH_PW"})
    monkeypatch.setenv("SHOP_PW", SECRET)
    with pytest.raises(SpecError, match="holds a password too") as caught:
        open_source("postgresql://app:other@db/shop?table=t", options={"password_env": "SHOP_PW"})
    assert "other" not in str(caught.value)
    with pytest.raises(SpecError, match="names no user"):
        open_source("postgresql://db/shop?table=t", options={"password_env": "SHOP_PW"})


def test_password_env_loads_and_never_shows_the_password(pg_dsn: str, sql: Sql, src: str, table: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_PW", SECRET)
    sql(f'CREATE TABLE "{src}" (id int8, created_at timestamptz)')
    sql(f"INSERT INTO \"{src}\" VALUES (1, '2024-01-02T00:00:00Z'), (2, '2024-02-03T00:00:00Z')")
    report = engine.load(with_params(pg_dsn, table=src), into=table, dsn=pg_dsn, options={"password_env": "SHOP_PW"})
    assert report.rows_loaded == 2
    shown = [report.to_json(), report.summary(), *_ledger_sources(sql, table)]
    assert all("S3cr" not in text for text in shown), shown
    with pytest.raises(SourceError) as caught:
        engine.load(with_params(pg_dsn, table="no_such_table"), into=table, dsn=pg_dsn,
                    options={"password_env": "SHOP_PW"})
    assert "not found" in str(caught.value) and "S3cr" not in str(caught.value)
    with pytest.raises(SourceError) as caught:  # a server that is not there: libpq's words, scrubbed
        engine.load("postgresql://app@127.0.0.1:1/shop?table=orders", into=table, dsn=pg_dsn,
                    options={"password_env": "SHOP_PW"})
    assert "127.0.0.1" in str(caught.value) and "S3cr" not in str(caught.value)


def test_env_source_reads_the_url_from_the_environment(pg_dsn: str, sql: Sql, src: str, table: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sql(f'CREATE TABLE "{src}" (id int8, created_at timestamptz)')
    sql(f"INSERT INTO \"{src}\" VALUES (1, '2024-01-02T00:00:00Z')")
    monkeypatch.setenv("SHOP_URL", with_params(_with_password(pg_dsn, "S3cr%23t"), table=src))
    report = engine.load("env:SHOP_URL", into=table, dsn=pg_dsn)
    assert report.rows_loaded == 1 and report.source == "env:SHOP_URL"
    assert all("S3cr" not in s for s in _ledger_sources(sql, table))
    monkeypatch.delenv("SHOP_URL")
    with pytest.raises(SpecError, match=r"^source.path: environment variable SHOP_URL is not set$"):
        engine.load("env:SHOP_URL", into=table, dsn=pg_dsn)


def test_pipeline_file_password_from_the_environment(tmp_path: Path, pg_dsn: str, sql: Sql, src: str,
                                                     table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sql(f'CREATE TABLE "{src}" (id int8, created_at timestamptz)')
    sql(f"INSERT INTO \"{src}\" VALUES (1, '2024-01-02T00:00:00Z')")
    monkeypatch.setenv("SHOP_PW", "S3cretPw")
    monkeypatch.setenv("SHOP_TABLE", src)
    parts = urlsplit(pg_dsn)
    url = f"postgresql://{parts.username}:${{SHOP_PW}}@{parts.hostname}:{parts.port or 5432}{parts.path}"
    file = tmp_path / "p.yaml"
    file.write_text(f"source: {{path: '{url}?table=${{SHOP_TABLE}}'}}\ntarget: {{table: {table}, dsn: '{pg_dsn}'}}\n")
    [report] = engine.run(file)
    assert report.rows_loaded == 1 and "S3cretPw" not in report.to_json()
    file.write_text(f"source: {{path: 'postgresql://app:${{SHOP_PW}}@127.0.0.1:1/shop?table=orders'}}\n"
                    f"target: {{table: {table}, dsn: '{pg_dsn}'}}\n")
    with pytest.raises(SourceError) as caught:
        engine.run(file)
    assert "127.0.0.1" in str(caught.value) and "S3cretPw" not in str(caught.value)
