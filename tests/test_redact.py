"""Passwords never reach a printed DSN or an error message (no database needed)."""

from __future__ import annotations

import pytest

from engine.errors import SinkError
from engine.postgres.connection import wrap_error
from engine.redact import redact, secret_of

# (dsn, the secret, pieces of it that must not appear either, text that must survive)
CASES = [
    ("postgresql://u:p@ssS3cret@127.0.0.1:5999/db", "p@ssS3cret", ["ssS3cret", "S3cret"], ["127.0.0.1:5999/db"]),
    ("host=h password = S3cret dbname=x", "S3cret", [], ["host=h", "dbname=x"]),
    ("host=h password='my S3cret' dbname=x", "my S3cret", ["S3cret", "'my"], ["host=h", "dbname=x"]),
    ("postgresql://u@127.0.0.1:5432/db?password=zz&sslmode=require", "zz", [], ["sslmode=require",
                                                                                "127.0.0.1:5432/db"]),
]
IDS = ["unencoded-at", "keyword-spaces", "keyword-quoted", "query-param"]


@pytest.mark.parametrize(("dsn", "secret", "pieces", "kept"), CASES, ids=IDS)
def test_redact_hides_the_password(dsn: str, secret: str, pieces: list[str], kept: list[str]) -> None:
    out = redact(dsn)
    for leaked in (secret, *pieces):
        assert leaked not in out, out
    assert "***" in out
    for part in kept:
        assert part in out, out


@pytest.mark.parametrize(("dsn", "secret", "pieces", "kept"), CASES, ids=IDS)
def test_redact_inside_longer_text(dsn: str, secret: str, pieces: list[str], kept: list[str]) -> None:
    out = redact(f'connecting to "{dsn}" failed\nretry with {dsn}')
    for leaked in (secret, *pieces):
        assert leaked not in out, out


def _messages(dsn: str, secret: str) -> list[str]:
    """Texts a driver may raise: the DSN verbatim, libpq echoing a mis-parsed host, the keyword pair."""
    host = secret.split("@")[-1] + "@127.0.0.1"
    return [
        f"IO: [libpq] Failed to connect: could not connect to {dsn}",
        f'IO: [libpq] Failed to connect: could not translate host name "{host}" to address: '
        "Name or service not known",
        f"ADBC error: invalid connection option: password={secret}\nDETAIL: in {dsn}",
        f"ERROR:  something failed for {dsn}\nDETAIL:  password = '{secret}'",
    ]


@pytest.mark.parametrize(("dsn", "secret", "pieces", "kept"), CASES, ids=IDS)
def test_wrap_never_lets_the_password_through(dsn: str, secret: str, pieces: list[str], kept: list[str]) -> None:
    for text in _messages(dsn, secret):
        err = wrap_error(RuntimeError(text), "connect", dsn)
        assert isinstance(err, SinkError)
        message = str(err)
        for leaked in (secret, *pieces):
            assert leaked not in message, (text, message)


@pytest.mark.parametrize("dsn", ["postgresql://u@127.0.0.1:5432/db", "postgresql://127.0.0.1/db?sslmode=disable",
                                 "host=h user=u dbname=x", "postgresql://u@h:5432/db?application_name=etl"])
def test_dsn_without_password_is_unchanged(dsn: str) -> None:
    assert redact(dsn) == dsn
    err = wrap_error(RuntimeError(f"IO: [libpq] Failed to connect: could not connect to {dsn}"), "connect", dsn)
    assert dsn in str(err)


@pytest.mark.parametrize("url", ["redis://:s3cret@127.0.0.1:6379/0", "rediss://:s3cret@cache.example:6380"])
def test_password_without_user_is_redacted(url: str) -> None:
    """Redis URLs carry the password with no user name (``redis://:pw@host``)."""
    assert "s3cret" not in redact(url)
    assert secret_of(url) == "s3cret"


@pytest.mark.parametrize("url", ["https://api.example.com/v1/orders?api_key=s3cret&page=2",
                                 "https://api.example.com/v1/orders?page=2&access_token=s3cret",
                                 "https://files.example.com/x.csv?X-Amz-Signature=s3cret&sig=s3cret",
                                 "https://api.example.com/q?apikey=s3cret#frag"])
def test_api_keys_in_query_strings_are_redacted(url: str) -> None:
    shown = redact(url)
    assert "s3cret" not in shown
    assert "page=2" in shown or "page" not in url  # other parameters stay readable
