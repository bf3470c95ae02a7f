"""Where the jobs' broker and result store are (placeholder until the embedded broker lands)."""

from __future__ import annotations

from engine.errors import SpecError
from engine.settings import settings

__all__ = ["broker_url", "result_url"]


def broker_url() -> str:
    """BICONIC_BROKER_URL, else BICONIC_REDIS_URL."""
    found = settings().broker()
    if found is None:
        raise SpecError("BICONIC_BROKER_URL", "no broker configured")
    return found


def result_url() -> str:
    """BICONIC_RESULT_URL, else the broker when it is Redis, else BICONIC_REDIS_URL."""
    s = settings()
    if s.result_url is not None:
        return s.result_url.get_secret_value()
    broker = broker_url()
    if broker.startswith(("redis://", "rediss://", "redis+socket://")):
        return broker
    redis = s.redis()
    if redis is None:
        raise SpecError("BICONIC_RESULT_URL", "no result store configured")
    return redis
