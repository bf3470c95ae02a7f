"""Fixtures of the database-source tests: unique source tables on PostgreSQL and MariaDB.

PostgreSQL: the session's test database is both the source (tables ``s_*``) and the target. MariaDB/MySQL:
``root@127.0.0.1:3306``, database ``test``, no password; tests using the ``mariadb`` fixture are marked
``mariadb``. Outside CI a missing MariaDB skips its tests; in CI (``CI`` set) it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.sources.sql._helpers import MariaDb
from tests.support import Sql


@pytest.fixture
def src(sql: Sql) -> Iterator[str]:
    """A unique PostgreSQL source table name (dropped afterwards)."""
    name = f"s_{uuid.uuid4().hex[:10]}"
    yield name
    sql(f'DROP TABLE IF EXISTS "{name}"')


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDb]:
    """Run statements on the MariaDB test database."""
    import pymysql

    try:
        runner = MariaDb()
    except pymysql.Error as exc:
        if os.environ.get("CI"):
            pytest.fail(f"MariaDB is not running on 127.0.0.1:3306 (CI must start it): {exc}")
        pytest.skip(f"MariaDB is not running on 127.0.0.1:3306: {exc}")
    yield runner
    runner.conn.close()


@pytest.fixture
def my_src(mariadb: MariaDb) -> Iterator[str]:
    """A unique MariaDB table name in ``test`` (dropped afterwards)."""
    name = f"s_{uuid.uuid4().hex[:10]}"
    yield name
    mariadb(f"DROP TABLE IF EXISTS `{name}`")
