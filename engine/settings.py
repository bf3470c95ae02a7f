"""Every ``BICONIC_*`` environment variable, in one typed class.

>>> from engine.settings import settings
>>> settings().batch_rows  # doctest: +SKIP
100000

The CLI and the engine's defaults read these; the Python API takes explicit arguments that win over them.
``settings()`` reads the environment again whenever it changed (tests and long-lived workers change it), and a
bad value is a :class:`SpecError` naming the variable, never a traceback. Secrets (the PostgreSQL DSN, the
Redis URL) are :class:`pydantic.SecretStr`: their repr and every dump show ``**********``.

Each field below is ``BICONIC_<FIELD NAME>``; its description is what ``biconic settings`` would print and the
README's table says.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.errors import SpecError

__all__ = ["ARCHIVE_OFF", "Settings", "default_home", "settings"]

#: values of ``BICONIC_ARCHIVE_URL`` / ``--archive`` that turn archiving off
ARCHIVE_OFF = frozenset({"off", "none", "false", "no", "0"})

_PREFIX = "BICONIC_"


def default_home() -> Path:
    """The per-user data folder: ``$XDG_DATA_HOME/biconic``, else ``~/.local/share/biconic``. Per user, not per
    working folder, so a cron job started elsewhere finds the same embedded database and archive."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"  # XDG: relative paths are ignored
    return base / "biconic"


class Settings(BaseSettings):
    """The engine's settings; each field is ``BICONIC_<NAME>`` (see the module docstring for the table)."""

    model_config = SettingsConfigDict(env_prefix=_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    pg_dsn: SecretStr | None = Field(default=None, description="PostgreSQL URL; unset: the embedded server")
    home: Path = Field(default_factory=default_home, validation_alias=AliasChoices("BICONIC_HOME", "BICONIC_DATA_DIR"),
                       description="data folder: embedded PostgreSQL, archive, uploads, temp files")
    batch_rows: int = Field(default=100_000, ge=1, description="rows per batch handed to COPY")
    chunk_mb: float = Field(default=16.0, gt=0, description="MB per text chunk (CSV, NDJSON)")
    max_record_mb: float = Field(default=50.0, gt=0, description="MB one CSV record / NDJSON line may take")
    excel_max_unzipped_mb: int = Field(default=1024, ge=1, description="MB one workbook part may inflate to")
    excel_max_ratio: int = Field(default=100, ge=0, description="times a workbook part may inflate (0: no limit)")
    excel_max_shared_strings: int = Field(default=10_000_000, ge=0, description="shared strings a workbook may hold")
    chunk_rows: int = Field(default=500_000, ge=1, description="rows per chunk (Parquet, sheets, databases)")
    copy_streams: int = Field(default=2, ge=0, le=64, description="helper connections for new partitions")
    archive_url: str | None = Field(default=None, description="archive folder or s3://bucket/prefix; off = none")
    archive_level: int = Field(default=3, description="ZSTD level of archive files, clamped to 1..22")
    redis_url: SecretStr | None = Field(default=None, description="Redis for the cache; unset: in-process")
    query_ttl: float = Field(default=300.0, ge=0, description="seconds a cached query result lives")
    tier_archive_days: int = Field(default=90, ge=0, description="partitions older than this are tiered out")
    uploads_dir: Path | None = Field(default=None, description="raw uploads folder; unset: {data dir}/uploads")
    uploads_keep_days: int = Field(default=7, ge=0, description="raw uploads untouched at least this long")
    uploads_compress_days: int = Field(default=30, ge=0, description="raw uploads compressed after this")
    uploads_archive_days: int = Field(default=90, ge=0, description="raw uploads archived after this")
    connect_timeout: float = Field(default=10.0, gt=0, description="seconds to open a network connection (S3, "
                                   "databases, HTTP APIs, PostgreSQL)")
    read_timeout: float = Field(default=60.0, gt=0, description="seconds to wait for an answer on an open "
                                "connection (S3, MySQL, HTTP APIs) before the attempt fails, and "
                                "for a lock on a PostgreSQL source's table")
    network_retries: int = Field(default=3, ge=1, le=20, description="attempts per S3 call, or per "
                                 "connect to a PostgreSQL or MySQL source, before it fails")
    upload_deadline: float = Field(default=300.0, gt=0, description="seconds an archive upload may take across "
                                   "all its attempts, inside the load's open transaction")
    idle_in_transaction_timeout: float | None = Field(
        default=None, ge=0, description="seconds PostgreSQL lets a load's transaction sit idle before ending it "
                                        "(a backstop); unset: an hour, or upload deadline + read timeout + 300 "
                                        "if longer; 0 = off")
    cache_timeout: float = Field(default=0.5, gt=0, description="seconds per Redis connect or answer; a mute "
                                 "Redis costs this once, then is skipped for a second")
    broker_url: SecretStr | None = Field(default=None, description="Celery broker for jobs (redis://, amqp://); "
                                         "unset: BICONIC_REDIS_URL, else an embedded Redis in the data dir")
    result_url: SecretStr | None = Field(default=None, description="Redis for Celery's task results; unset: the "
                                         "broker if it is Redis, else BICONIC_REDIS_URL, else the embedded one")
    job_time_limit: float = Field(default=1800.0, gt=0, description="seconds a job task may run before it is "
                                  "killed (a soft limit, recorded as a timeout, comes a minute earlier)")
    job_retries: int = Field(default=3, ge=0, le=20, description="retries of a task that failed transiently")
    job_backoff: float = Field(default=10.0, ge=0, description="seconds before the first retry; doubled each "
                               "time (at most 600), with jitter")
    connection_limit: int = Field(default=4, ge=1, description="partitions of one connection running at once, "
                                  "across every worker")
    autoscale_grow_above: int = Field(default=100, ge=0, description="queued tasks above which workers grow")
    autoscale_shrink_below: int = Field(default=10, ge=0, description="queued tasks below which workers shrink")
    api_root_path: str = Field(default="", description="path the API is served under behind a reverse proxy")
    api_cors_origins: str = Field(default="", description="browser origins allowed to call the API, comma-"
                                  "separated (e.g. https://app.example.com); empty: none")
    api_threads: int = Field(default=8, ge=1, le=256, description="threads per server process answering "
                             "requests that read PostgreSQL (each keeps one connection)")
    api_max_body_kb: int = Field(default=1024, ge=1, description="KB a JSON request body to the API may take")
    api_page_max: int = Field(default=1000, ge=1, description="rows one API page (quarantine, query) may hold")
    upload_max_mb: int = Field(default=20480, ge=1, description="MB one tus upload may declare")
    upload_expiry_hours: float = Field(default=24.0, gt=0, description="hours an unfinished upload lives after "
                                       "its last chunk before the sweep deletes it")
    uploads_per_token: int = Field(default=20, ge=1, description="unfinished uploads one API token may hold")
    pushgateway_url: str | None = Field(default=None, description="Prometheus Pushgateway a one-shot `biconic load`"
                                        " or `run` pushes its metrics to when it ends; unset: no push")
    log_level: str | None = Field(default=None, description="DEBUG, INFO, WARNING, ERROR or CRITICAL; unset: "
                                  "WARNING for commands, INFO for worker, beat and serve")
    log_format: str = Field(default="auto", description="json, text, or auto: JSON lines unless stderr is a "
                            "terminal")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value.lower() not in ("auto", "json", "text"):
            raise ValueError("expected auto, json or text")
        return value.lower()

    @field_validator("archive_level")
    @classmethod
    def _clamp_level(cls, value: int) -> int:
        return min(max(value, 1), 22)

    @property
    def data_path(self) -> Path:
        """``home`` as an absolute path."""
        return self.home.expanduser().resolve()

    @property
    def chunk_bytes(self) -> int:
        """Target bytes per text chunk."""
        return int(self.chunk_mb * (1 << 20))

    @property
    def max_record_bytes(self) -> int:
        """Bytes one text record may take (a 50 MB cell costs about 700 MB while it is parsed)."""
        return int(self.max_record_mb * (1 << 20))

    @property
    def uploads_path(self) -> Path:
        """The raw uploads folder: ``uploads_dir``, else ``{data dir}/uploads``."""
        return self.uploads_dir.resolve() if self.uploads_dir is not None else self.data_path / "uploads"

    @property
    def idle_in_transaction_seconds(self) -> float:
        """The server-side bound on a load's idle open transaction: generous, longer than any wait the engine
        itself allows inside one (an upload and a last read), so only a client that hangs anyway meets it. At
        least an hour: while helper connections fill new partitions, the load's own transaction waits quietly."""
        if self.idle_in_transaction_timeout is not None:
            return self.idle_in_transaction_timeout
        return max(3600.0, self.upload_deadline + self.read_timeout + 300.0)

    def archive(self, explicit: str | None = None) -> str | None:
        """The archive location: ``explicit``, else ``archive_url``, else ``{data dir}/archive``; None when
        archiving is turned off (``off``)."""
        chosen = explicit or self.archive_url or str(self.data_path / "archive")
        return None if chosen.strip().lower() in ARCHIVE_OFF else chosen

    def dsn(self) -> str | None:
        """The PostgreSQL DSN from the environment (None: use the embedded server)."""
        return self.pg_dsn.get_secret_value() if self.pg_dsn is not None else None

    def broker(self) -> str | None:
        """The jobs' broker URL from the environment: ``broker_url``, else ``redis_url`` (None: embedded)."""
        chosen = self.broker_url or self.redis_url
        return chosen.get_secret_value() if chosen is not None else None

    def redis(self) -> str | None:
        """The Redis URL from the environment (None: the in-process cache)."""
        return self.redis_url.get_secret_value() if self.redis_url is not None else None


_cache: dict[str, tuple[tuple[object, ...], Settings]] = {}
_lock = threading.Lock()


def settings() -> Settings:
    """The current settings, read from the environment (again only when a ``BICONIC_*`` variable, the home
    folder or the working folder changed since the last call)."""
    key = (os.getcwd(), os.environ.get("HOME"), os.environ.get("XDG_DATA_HOME"),
           *sorted((k, v) for k, v in os.environ.items() if k.startswith(_PREFIX)))
    with _lock:
        held = _cache.get("current")
        if held is not None and held[0] == key:
            return held[1]
    try:
        current = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = _PREFIX + str(first["loc"][0]).upper() if first["loc"] else _PREFIX.rstrip("_")
        raise SpecError(name, f"{first['msg']}, got {first.get('input')!r}") from exc
    with _lock:
        _cache["current"] = (key, current)
    return current
