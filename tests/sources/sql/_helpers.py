"""Helpers shared by the database-source tests: URLs, the MariaDB runner, reading back what a load wrote."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tests.support import Sql

#: the MariaDB test database (root, no password)
MYSQL = "mysql://root@127.0.0.1:3306/test"


class MariaDb:
    """Runs statements on the MariaDB test database."""

    def __init__(self) -> None:
        import pymysql

        self.conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", autocommit=True,
                                    charset="utf8mb4", init_command="SET time_zone = '+00:00'")

    def __call__(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description else []


def with_params(dsn: str, **params: str) -> str:
    """The DSN with query parameters added (it may already have some)."""
    parts = urlsplit(dsn)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def column_types(sql: Sql, table: str) -> dict[str, str]:
    """Each column of a PostgreSQL table with its type as ``format_type`` spells it."""
    rows = sql("SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
               "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped", [f'"{table}"'])
    return {str(r[0]): str(r[1]) for r in rows}


def dec(value: Any) -> Decimal:
    """A numeric as ADBC returns it (text) or as PyMySQL does (Decimal)."""
    return Decimal(str(value))


def row_count(sql: Sql, table: str) -> int:
    """The rows of a PostgreSQL table (0 when it was never created)."""
    if sql("SELECT to_regclass($1)::text", [f'"{table}"'])[0][0] is None:
        return 0
    return int(sql(f'SELECT count(*) FROM "{table}"')[0][0])


def server_settles(still_busy: Callable[[], object], *, within: float = 5.0) -> bool:
    """Whether ``still_busy()`` turns falsy within ``within`` seconds.

    For state the database server changes on its own time -- a cancelled or killed statement leaving
    ``pg_stat_activity`` or the process list after its client has gone -- which no event of ours announces:
    the source has already returned, so there is nothing to wait on but the server.
    """
    deadline = time.monotonic() + within
    while still_busy():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def loaded_rows(sql: Sql, table: str) -> list[tuple[Any, ...]]:
    """The rows the partitioned-read tests load (``id, k, created_at, v, amount``), in id order."""
    return sorted(sql(f'SELECT id, k, created_at, v, amount FROM "{table}"'), key=lambda r: r[0])


class KillAfterFirstRows:
    """A progress receiver that kills the source's server session once rows have reached the target."""

    def __init__(self, kill: Callable[[], bool]) -> None:
        self.kill = kill
        self.killed = False

    def update(self, *, label: str, rows: int, done: int, total: int) -> None:
        if rows and not self.killed:
            self.killed = self.kill()
