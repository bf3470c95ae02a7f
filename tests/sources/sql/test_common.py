"""What the database sources share: options checked and parsed from the URL and the options mapping, and the
subclass picked by the URL's scheme (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import SpecError
from engine.sources.sql import OPTIONS, DatabaseSource, MySqlSource, PostgresSource, open_database


@pytest.mark.parametrize(("url", "options", "error"), [
    ("postgresql://h/db", {}, "what to read"),
    ("postgresql://h/db?table=t", {"query": "SELECT 1"}, "not both"),
    ("postgresql://h/db?table=t", {"table": "u"}, "different values"),
    ("postgresql://h/db?table=t", {"lag": "soon"}, "duration"),
    ("postgresql://h/db?table=t", {"partition_num": 4}, "needs partition_on"),
    ("postgresql://h/db?table=t", {"partition_on": "id", "partition_num": 0}, ">= 1"),
    ("postgresql://h/db?table=t", {"batch_rows": "many"}, "whole number"),
    ("mysql://h?table=t", {}, "which database"),
])
def test_options_are_checked(url: str, options: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError, match=error):
        open_database(url, options)


def test_options_parse_and_list() -> None:
    source = open_database("mariadb://app:pw@db/shop?table=orders&lag=15m&partition_on=id&partition_num=4&ssl=1",
                           {"cursor": "updated_at", "batch_rows": "1000"})
    assert isinstance(source, MySqlSource)
    assert (source.dialect, source.table, source.cursor, source.lag, source.partition_on, source.partition_num,
            source.batch_rows) == ("mysql", "orders", "updated_at", 900.0, "id", 4, 1000)
    assert "pw" not in repr(source) and source.label == "mysql://app@db:3306/shop?table=orders"
    assert "table=" not in source.url and "ssl=1" in source.url  # driver parameters stay
    assert set(OPTIONS) == {"table", "query", "cursor", "lag", "partition_on", "partition_num", "batch_rows",
                            "password_env",
                            "connection_from_name", "connection_column"}


@pytest.mark.parametrize(("url", "kind"), [
    ("postgresql://h/db?table=t", PostgresSource), ("postgres://h/db?table=t", PostgresSource),
    ("mysql://h/db?table=t", MySqlSource), ("mariadb://h/db?table=t", MySqlSource),
])
def test_the_url_scheme_picks_the_dialect(url: str, kind: type[DatabaseSource]) -> None:
    source = open_database(url, {})
    assert type(source) is kind and isinstance(source, DatabaseSource)
    assert source.server.startswith(f"{source.dialect}://h:{source.default_port}/db")


def test_not_a_database_url() -> None:
    with pytest.raises(SpecError, match="not a database URL"):
        open_database("mongodb://h/db?table=t", {})
