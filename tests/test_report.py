"""LoadReport: where the rows went (database with its password masked, archive) in the summary and the JSON."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import engine
from engine.report import LoadReport


def test_summary_names_the_database_and_the_archive() -> None:
    report = LoadReport(load_id="x", table="orders", source="a.csv", mode="append",
                        database="postgresql://app:***@db:5432/shop", archive="s3://bucket/biconic")
    assert "  into: postgresql://app:***@db:5432/shop; archive: s3://bucket/biconic" in report.summary()
    off = LoadReport(load_id="x", table="orders", source="a.csv", mode="append",
                     database="embedded PostgreSQL in /home/me/.local/share/biconic/pg")
    assert "into: embedded PostgreSQL in /home/me/.local/share/biconic/pg; archive: off" in off.summary()


def test_a_load_reports_its_database_with_the_password_masked(tmp_path: Path, pg_dsn: str, table: str) -> None:
    parts = urlsplit(pg_dsn)  # the test server trusts local users, so a password is accepted and ignored
    netloc = f"{parts.username or 'postgres'}:s3cret-pw@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    dsn = urlunsplit(parts._replace(netloc=netloc))
    (tmp_path / "a.csv").write_text("day,qty\n2026-01-01,1\n")
    report = engine.load(tmp_path / "a.csv", into=table, dsn=dsn)
    assert report.database == f"postgresql://{parts.username or 'postgres'}:***@{parts.hostname}" \
                              f"{f':{parts.port}' if parts.port else ''}{parts.path}"
    assert report.archive == str(tmp_path / ".biconic" / "archive")  # BICONIC_HOME (tests/conftest.py)
    shown = report.summary() + report.to_json()
    assert "s3cret-pw" not in shown and report.database in report.summary()
    assert json.loads(report.to_json())["database"] == report.database


def test_the_terminal_names_the_database_and_the_archive(tmp_path: Path, pg_dsn: str, table: str) -> None:
    """Issue 11: ``biconic load`` without --json says where the rows went, the password masked."""
    from click.testing import CliRunner

    from engine.cli import cli

    parts = urlsplit(pg_dsn)
    netloc = f"{parts.username or 'postgres'}:s3cret-pw@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    dsn = urlunsplit(parts._replace(netloc=netloc))
    (tmp_path / "a.csv").write_text("day,qty\n2026-01-01,1\n")
    (tmp_path / "b.csv").write_text("day,qty\n2026-01-02,2\n")
    masked = urlunsplit(parts._replace(netloc=netloc.replace("s3cret-pw", "***")))
    result = CliRunner().invoke(cli, ["load", str(tmp_path / "a.csv"), "--into", table, "--dsn", dsn])
    assert result.exit_code == 0, result.output
    assert f"  into: {masked}; archive: {tmp_path / '.biconic' / 'archive'}\n" in result.stdout
    off = CliRunner().invoke(cli, ["load", str(tmp_path / "b.csv"), "--into", table, "--dsn", dsn, "--no-archive"])
    assert off.exit_code == 0, off.output
    assert f"  into: {masked}; archive: off" in off.stdout
    assert "s3cret" not in result.output + off.output
