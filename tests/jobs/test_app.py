"""The Celery app's configuration, without servers (nothing connects to the made-up URLs below)."""

from __future__ import annotations

import pytest


def test_configure_again_sends_to_the_new_broker_and_result_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test or a long-lived process that changes BICONIC_BROKER_URL and calls configure() again: Celery's
    pooled connection to the old broker must not be used for the tasks sent after the change."""
    seen = []
    for db in (1, 2):
        monkeypatch.setenv("BICONIC_BROKER_URL", f"redis://127.0.0.1:6399/{db}")
        from engine.jobs.app import app, configure

        configure()
        with app.producer_or_acquire() as producer:
            seen.append((producer.connection.as_uri(), app.backend.url))
    assert seen == [("redis://:**@127.0.0.1:6399/1", "redis://127.0.0.1:6399/1"),
                    ("redis://:**@127.0.0.1:6399/2", "redis://127.0.0.1:6399/2")]
