"""PostgreSQL and MySQL/MariaDB as sources, end to end through the pipeline against real servers.

PostgreSQL: the session's test database is both the source (tables ``s_*``) and the target. MariaDB/MySQL:
``root@127.0.0.1:3306``, database ``test``, no password; tables are uniquely named and dropped afterwards.
Outside CI a missing MariaDB skips its tests; in CI (``CI`` set) it fails them.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pytest

import engine
from engine.errors import SourceError, SpecError
from engine.plan.columns import ROW_COLUMN
from engine.sources import open_source
from engine.sources.base import IncrementalSource, Source
from engine.sources.sql.database import OPTIONS, DatabaseSource, open_database

Sql = Callable[..., list[tuple[Any, ...]]]
MYSQL = "mysql://root@127.0.0.1:3306/test"


def _url(dsn: str, **params: str) -> str:
    """The DSN with query parameters added (it may already have some)."""
    parts = urlsplit(dsn)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _types(sql: Sql, table: str) -> dict[str, str]:
    rows = sql("SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
               "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped", [f'"{table}"'])
    return {str(r[0]): str(r[1]) for r in rows}


def _dec(value: Any) -> Decimal:
    """A numeric as ADBC returns it (text) or as PyMySQL does (Decimal)."""
    return Decimal(str(value))


def _count(sql: Sql, table: str) -> int:
    if sql("SELECT to_regclass($1)::text", [f'"{table}"'])[0][0] is None:
        return 0
    return int(sql(f'SELECT count(*) FROM "{table}"')[0][0])


@pytest.fixture
def src(sql: Sql) -> Iterator[str]:
    """A unique PostgreSQL source table name (dropped afterwards)."""
    name = f"s_{uuid.uuid4().hex[:10]}"
    yield name
    sql(f'DROP TABLE IF EXISTS "{name}"')


# --- MariaDB ----------------------------------------------------------------------------------------------
class _My:
    """Runs statements on the MariaDB test database."""

    def __init__(self) -> None:
        import pymysql

        self.conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", autocommit=True,
                                    charset="utf8mb4", init_command="SET time_zone = '+00:00'")

    def __call__(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description else []


@pytest.fixture(scope="module")
def my() -> Iterator[_My]:
    import pymysql

    try:
        runner = _My()
    except pymysql.Error as exc:
        if os.environ.get("CI"):
            pytest.fail(f"MariaDB is not running on 127.0.0.1:3306 (CI must start it): {exc}")
        pytest.skip(f"MariaDB is not running on 127.0.0.1:3306: {exc}")
    yield runner
    runner.conn.close()


@pytest.fixture
def my_src(my: _My) -> Iterator[str]:
    """A unique MariaDB table name in ``test`` (dropped afterwards)."""
    name = f"s_{uuid.uuid4().hex[:10]}"
    yield name
    my(f"DROP TABLE IF EXISTS `{name}`")


# --- types ------------------------------------------------------------------------------------------------
def test_postgres_types_column_by_column(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    sql(f"DROP TYPE IF EXISTS mood_{src}")
    sql(f"CREATE TYPE mood_{src} AS ENUM ('ok', 'sad')")
    sql(f'''CREATE TABLE "{src}" (id bigint PRIMARY KEY, amount numeric(12,2), loose numeric, created_at timestamptz,
            local_ts timestamp, day date, uid uuid, doc json, docb jsonb, tags text[], grid int[][], ok boolean,
            raw bytea, name text, code varchar(10), small smallint, medium integer, ratio real, score double precision,
            took interval, mood mood_{src}, addr inet, never timestamp, "Mixed Case" text)''')
    sql(f'''INSERT INTO "{src}" VALUES
        (1, 1234567890.12, 3.14159265358979323846264338327950288, '2024-01-15 10:00:00+02', '2024-01-15 10:00:00',
         '2024-01-15', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"a": 1}}', '{{"b": [1, 2]}}', '{{x,"y z",NULL}}',
         '{{{{1,2}},{{3,4}}}}', true, '\\x00ff', 'héllo', 'c1', 7, 70000, 1.5, 2.25, '1 day 02:00:03', 'sad',
         '10.0.0.1', 'infinity', 'M'),
        (2, -0.01, NULL, '2024-02-01 00:00:00+00', NULL, NULL, NULL, NULL, NULL, '{{}}', NULL, false, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '-infinity', NULL)''')
    report = engine.load(_url(pg_dsn, table=src), into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (2, 2, 0)
    types = _types(sql, table)
    assert {k: v for k, v in types.items() if not k.startswith("_") and k != "connection_id"} == {
        "id": "bigint", "amount": "numeric(12,2)", "loose": "text", "created_at": "timestamp with time zone",
        "local_ts": "timestamp without time zone", "day": "date", "uid": "text", "doc": "text", "docb": "text",
        "tags": "text", "grid": "text", "ok": "boolean", "raw": "bytea", "name": "text", "code": "text",
        "small": "smallint", "medium": "integer", "ratio": "real", "score": "double precision", "took": "interval",
        "mood": "text", "addr": "text", "never": "timestamp without time zone", "mixed_case": "text",
    }
    rows = sql(f'SELECT id, amount, loose, created_at, local_ts, day, uid, doc, docb, tags, grid, ok, raw, name, code, '
               f'small, medium, ratio, score, took::text, mood, addr, never, mixed_case FROM "{table}" ORDER BY id')
    first = rows[0]
    assert (_dec(first[1]), _dec(rows[1][1])) == (Decimal("1234567890.12"), Decimal("-0.01"))
    assert first[2] == "3.14159265358979323846264338327950288"  # unconstrained numeric: exact text
    assert first[3] == dt.datetime(2024, 1, 15, 8, tzinfo=dt.UTC)
    assert first[4] == dt.datetime(2024, 1, 15, 10) and first[5] == dt.date(2024, 1, 15)
    assert first[6] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert (first[7], first[8]) == ('{"a": 1}', '{"b": [1, 2]}')
    assert (first[9], rows[1][9], first[10]) == ('["x","y z",null]', "[]", "[[1,2],[3,4]]")  # arrays: JSON text
    assert (first[11], first[12], first[13], first[14]) == (True, b"\x00\xff", "héllo", "c1")
    assert (first[15], first[16], first[17], first[18]) == (7, 70000, 1.5, 2.25)
    # an interval is read as its length in microseconds (a day is 24h, a month 30 days)
    assert (first[19], first[20], first[21], first[23]) == ("26:00:03", "sad", "10.0.0.1/32", "M")
    assert first[22] is None and rows[1][22] is None  # +-infinity has no calendar value


def test_mysql_types_column_by_column(my: _My, my_src: str, pg_dsn: str, sql: Sql, table: str) -> None:
    my(f"""CREATE TABLE `{my_src}` (id bigint PRIMARY KEY, created_at datetime(6), stamp timestamp NULL,
           zero_dt datetime, zero_d date, big_u bigint unsigned, small_u int unsigned, mood enum('ok','sad'),
           flag tinyint(1), amount decimal(12,2), wide decimal(30,5), name varchar(20), body text, raw blob,
           doc json, took time, bit1 bit(1), score double, yr year, place point)""")
    my("SET SESSION sql_mode = ''")  # zero dates need a relaxed mode to be inserted at all
    my(f"""INSERT INTO `{my_src}` VALUES
        (1, '2024-01-15 10:00:00.123456', '2024-01-15 10:00:00', '0000-00-00 00:00:00', '0000-00-00',
         18446744073709551615, 4294967295, 'sad', 1, 1234567890.12, 1234567890123456789012345.12345, 'héllo', 'txt',
         x'00ff', '{{"a": [1, 2]}}', '838:59:59', b'1', 2.5, 2024, POINT(1, 2)),
        (2, '2024-02-01 00:00:00', NULL, '2024-00-10 00:00:00', '2024-03-01', 9223372036854775808, 0, NULL, 0,
         -0.01, NULL, NULL, NULL, NULL, NULL, '-01:00:00', b'0', NULL, NULL, NULL),
        (3, '2024-02-02 00:00:00', '2024-02-02 12:00:00', '2024-02-02 12:00:00', NULL, 1, NULL, 'ok', 5, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""")
    my("SET SESSION sql_mode = DEFAULT")
    report = engine.load(f"{MYSQL}?table={my_src}", into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (3, 3, 0)
    types = _types(sql, table)
    assert {k: v for k, v in types.items() if not k.startswith("_") and k != "connection_id"} == {
        "id": "bigint", "created_at": "timestamp without time zone", "stamp": "timestamp with time zone",
        "zero_dt": "timestamp without time zone", "zero_d": "date", "big_u": "numeric(20,0)", "small_u": "bigint",
        "mood": "text", "flag": "smallint", "amount": "numeric(12,2)", "wide": "numeric(30,5)", "name": "text",
        "body": "text", "raw": "bytea", "doc": "text", "took": "interval", "bit1": "boolean",
        "score": "double precision", "yr": "smallint", "place": "text",
    }
    rows = sql(f'SELECT id, created_at, stamp, zero_dt, zero_d, big_u, small_u, mood, flag, amount, wide, name, raw, '
               f'doc, took::text, bit1, score, place FROM "{table}" ORDER BY id')
    first, second, third = rows
    assert first[1] == dt.datetime(2024, 1, 15, 10, 0, 0, 123456)
    assert first[2] == dt.datetime(2024, 1, 15, 10, tzinfo=dt.UTC)
    assert (first[3], first[4], second[3]) == (None, None, None)  # zero dates (and a zero month) -> null
    assert third[3] == dt.datetime(2024, 2, 2, 12) and second[4] == dt.date(2024, 3, 1)
    assert [_dec(r[5]) for r in rows] == [Decimal(2**64 - 1), Decimal(2**63), Decimal(1)]  # never wrapped
    assert (first[6], first[7], first[8], third[8]) == (4294967295, "sad", 1, 5)  # tinyint(1) stays a number
    assert (_dec(first[9]), _dec(second[9])) == (Decimal("1234567890.12"), Decimal("-0.01"))
    assert _dec(first[10]) == Decimal("1234567890123456789012345.12345")
    assert (first[11], first[12], first[13]) == ("héllo", b"\x00\xff", '{"a": [1, 2]}')
    assert (first[14], second[14]) == ("838:59:59", "-01:00:00")  # TIME is elapsed time, not a time of day
    assert (first[15], second[15], first[16], first[17]) == (True, False, 2.5, "POINT(1 2)")


# --- parallel reads ---------------------------------------------------------------------------------------
def _pg_rows(sql: Sql, table: str) -> list[tuple[Any, ...]]:
    return sorted(sql(f'SELECT id, k, created_at, v, amount FROM "{table}"'), key=lambda r: r[0])


def test_postgres_partitioned_reads_give_the_same_rows(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    sql(f'''CREATE TABLE "{src}" AS SELECT g::int8 AS id, CASE WHEN g % 10 = 0 THEN NULL ELSE g % 97 END AS k,
            timestamptz '2024-01-01 00:00+00' + g * interval '37 minutes' AS created_at, md5(g::text) AS v,
            (g / 7.0)::numeric(12,2) AS amount FROM generate_series(1, 3000) g''')
    whole = engine.load(_url(pg_dsn, table=src), into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert whole.rows_loaded == 3000
    expected = _pg_rows(sql, table)
    for n, (on, num) in enumerate([("id", 4), ("k", 2), ("created_at", 3)]):
        options = {"partition_on": on, "partition_num": num, "batch_rows": 500}
        source = open_source(_url(pg_dsn, table=src), options=options)
        assert isinstance(source, DatabaseSource) and len(source._queries(None)) == num  # really split
        into = f"{table}_{n}"
        report = engine.load(_url(pg_dsn, table=src), into=into, partition_by="created_at:month", dsn=pg_dsn,
                             options=options)
        assert report.rows_loaded == 3000 and report.source_partitions == 1
        assert _pg_rows(sql, into) == expected, on


def test_mysql_partitioned_reads_give_the_same_rows(my: _My, my_src: str, pg_dsn: str, sql: Sql, table: str) -> None:
    my(f"CREATE TABLE `{my_src}` (id bigint PRIMARY KEY, k int NULL, created_at datetime(6), v varchar(40), "
       "amount decimal(12,2))")
    my(f"INSERT INTO `{my_src}` SELECT seq, IF(seq % 10 = 0, NULL, seq % 97), "
       "TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq * 37 MINUTE, MD5(seq), seq / 7 FROM seq_1_to_3000")
    whole = engine.load(f"{MYSQL}?table={my_src}", into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert whole.rows_loaded == 3000
    expected = _pg_rows(sql, table)
    runs: list[tuple[str, dict[str, Any]]] = [
        (f"{MYSQL}?table={my_src}", {"partition_on": "id", "partition_num": 4, "batch_rows": 500}),
        (f"{MYSQL}?table={my_src}", {"partition_on": "k", "partition_num": 2, "batch_rows": 700}),  # NULL keys
        (f"{MYSQL}?table={my_src}", {"partition_on": "created_at", "partition_num": 2, "batch_rows": 1000}),
        (f"{MYSQL}?table={my_src}", {"batch_rows": 999}),  # pages along the primary key
        (MYSQL, {"query": f"SELECT * FROM {my_src}", "batch_rows": 999}),  # no key: one unbuffered stream
    ]
    for n, (url, options) in enumerate(runs):
        into = f"{table}_{n}"
        report = engine.load(url, into=into, partition_by="created_at:month", dsn=pg_dsn, options=options)
        assert report.rows_loaded == 3000
        assert _pg_rows(sql, into) == expected, options
    source = open_database(f"{MYSQL}?table={my_src}", {"batch_rows": 999})
    assert [f(0).collect().height for f in source.chunks(source.partitions()[0])] == [999, 999, 999, 3]


# --- incremental ------------------------------------------------------------------------------------------
def _same(sql: Sql, src: str, table: str) -> None:
    cols = "id, v, updated_at"
    assert sql(f'SELECT {cols} FROM "{src}" EXCEPT SELECT {cols} FROM "{table}"') == []
    assert sql(f'SELECT {cols} FROM "{table}" EXCEPT SELECT {cols} FROM "{src}"') == []


def test_postgres_incremental_merge_reads_only_changes(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    sql(f'''CREATE TABLE "{src}" AS SELECT g::int8 AS id, md5(g::text) AS v,
            timestamptz '2024-03-01 00:00+00' + g * interval '1 hour' AS updated_at FROM generate_series(1, 200) g''')
    url = _url(pg_dsn, table=src)
    kwargs: dict[str, Any] = {"into": table, "partition_by": "updated_at:month", "dsn": pg_dsn, "mode": "merge",
                              "key": "id", "options": {"cursor": "updated_at"}}
    first = engine.load(url, **kwargs)
    assert first.rows_in == 200
    sql(f'''INSERT INTO "{src}" SELECT g, 'new', timestamptz '2024-05-01 00:00+00' + g * interval '1 minute'
            FROM generate_series(201, 205) g''')
    sql(f'''UPDATE "{src}" SET v = 'changed', updated_at = timestamptz '2024-05-02 00:00+00'
            WHERE id IN (3, 50, 199)''')
    second = engine.load(url, **kwargs)
    assert (second.rows_in, second.rows_loaded) == (8, 8)
    _same(sql, src, table)
    assert _count(sql, table) == 205
    third = engine.load(url, **kwargs)
    assert third.rows_in == 0
    mark = sql("SELECT value FROM biconic.watermarks WHERE dataset = $1", [table])
    assert mark == [("2024-05-02T00:00:00+00:00",)]  # ISO 8601 with the offset
    # a lag re-reads what falls within it (merge keeps the target equal)
    fourth = engine.load(url, **{**kwargs, "options": {"cursor": "updated_at", "lag": "1d"}})
    assert fourth.rows_in == 8
    _same(sql, src, table)


def test_postgres_numeric_cursor_appends_new_rows(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    sql(f'''CREATE TABLE "{src}" AS SELECT g::int8 AS id, md5(g::text) AS v,
            timestamp '2024-03-01' + g * interval '1 hour' AS updated_at FROM generate_series(1, 100) g''')
    url = _url(pg_dsn, table=src, cursor="id")
    assert engine.load(url, into=table, dsn=pg_dsn).rows_in == 100
    sql(f'''INSERT INTO "{src}" SELECT g, 'new', timestamp '2024-04-01' FROM generate_series(101, 110) g''')
    assert engine.load(url, into=table, dsn=pg_dsn).rows_in == 10
    assert engine.load(url, into=table, dsn=pg_dsn).rows_in == 0
    _same(sql, src, table)


def test_mysql_incremental_merge_reads_only_changes(my: _My, my_src: str, pg_dsn: str, sql: Sql,
                                                    table: str) -> None:
    my(f"CREATE TABLE `{my_src}` (id bigint PRIMARY KEY, v varchar(40), updated_at datetime(6))")
    my(f"INSERT INTO `{my_src}` SELECT seq, MD5(seq), TIMESTAMP'2024-03-01 00:00:00' + INTERVAL seq HOUR "
       "FROM seq_1_to_200")
    kwargs: dict[str, Any] = {"into": table, "partition_by": "updated_at:month", "dsn": pg_dsn, "mode": "merge",
                              "key": "id", "options": {"cursor": "updated_at"}}
    url = f"{MYSQL}?table={my_src}"
    assert engine.load(url, **kwargs).rows_in == 200
    my(f"INSERT INTO `{my_src}` SELECT seq, 'new', TIMESTAMP'2024-05-01 00:00:00.5' + INTERVAL seq MINUTE "
       "FROM seq_201_to_205")
    my(f"UPDATE `{my_src}` SET v = 'changed', updated_at = '2024-05-02 00:00:00.25' WHERE id IN (3, 50, 199)")
    second = engine.load(url, **kwargs)
    assert (second.rows_in, second.rows_loaded) == (8, 8)
    assert engine.load(url, **kwargs).rows_in == 0
    source_rows = set(my(f"SELECT id, v, updated_at FROM `{my_src}`"))
    assert set(sql(f'SELECT id, v, updated_at FROM "{table}"')) == source_rows


def test_incremental_source_protocol(pg_dsn: str, sql: Sql, src: str) -> None:
    sql(f'CREATE TABLE "{src}" (id int8, at timestamptz, n numeric(10,3))')
    source = open_database(_url(pg_dsn, table=src), {"cursor": "at"})
    assert isinstance(source, Source) and isinstance(source, IncrementalSource)
    empty = source.with_watermark(None)
    assert empty.high_watermark() is None and empty.read(empty.partitions()[0]).read_all().num_rows == 0
    sql(f"""INSERT INTO "{src}" VALUES (1, '2024-01-01 10:00+02', 1.5), (2, '2024-01-02 00:00+00', 2.25)""")
    bounded = source.with_watermark(None)
    assert bounded.high_watermark() == "2024-01-02T00:00:00+00:00"
    assert bounded.partitions()[0].fingerprint != source.partitions()[0].fingerprint
    again = source.with_watermark(bounded.high_watermark())
    assert again.read(again.partitions()[0]).read_all().num_rows == 0
    later = source.with_watermark("2024-01-01T08:00:00+00:00")  # 10:00+02 is not after 08:00Z
    assert later.read(later.partitions()[0]).read_all().column("id").to_pylist() == [2]
    numeric = open_database(_url(pg_dsn, table=src), {"cursor": "n"}).with_watermark("1.5")
    assert numeric.high_watermark() == "2.250"
    assert numeric.read(numeric.partitions()[0]).read_all().column("id").to_pylist() == [2]
    assert "password" not in source.watermark_key() and src in source.watermark_key()
    query = open_database(pg_dsn, {"query": f'SELECT * FROM "{src}"', "cursor": "id"})
    assert src not in query.watermark_key() and query.watermark_key() != source.watermark_key()


# --- read / scan / schema ---------------------------------------------------------------------------------
def test_read_scan_schema_and_query(pg_dsn: str, sql: Sql, src: str) -> None:
    sql(f'CREATE TABLE "{src}" AS SELECT g AS id, g * 2 AS twice, md5(g::text) AS v FROM generate_series(1, 50) g')
    source = open_database(_url(pg_dsn, table=src), {"batch_rows": 20})
    part = source.partitions()[0]
    assert part.key == part.label and part.size_bytes > 0
    assert source.schema().names == ["id", "twice", "v"]
    assert source.read(part, columns=["v", "id"]).read_all().column_names == ["v", "id"]
    head = source.scan(part).head(3).collect()
    assert head.columns == [ROW_COLUMN, "id", "twice", "v"] and head[ROW_COLUMN].to_list() == [1, 2, 3]
    chunks = [f(0).collect().height for f in source.chunks(part)]
    assert chunks == [20, 20, 10]
    query = open_database(pg_dsn, {"query": f'SELECT id, twice::numeric(10,1) AS t FROM "{src}" WHERE id <= 5;'})
    table = query.read(query.partitions()[0]).read_all()
    assert table.schema.field("t").type == pa.decimal128(10, 1) and table.num_rows == 5


# --- a connection dropped mid-read ------------------------------------------------------------------------
class _KillAfterFirstRows:
    """A progress receiver that kills the source's server session once rows have reached the target."""

    def __init__(self, kill: Callable[[], bool]) -> None:
        self.kill = kill
        self.killed = False

    def update(self, *, label: str, rows: int, done: int, total: int) -> None:
        if rows and not self.killed:
            self.killed = self.kill()


def test_postgres_dropped_connection_commits_nothing(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    sql(f'''CREATE TABLE "{src}" AS SELECT g AS id, timestamptz '2024-01-01 00:00+00' + g * interval '1 minute' AS at,
            repeat(md5(g::text), 30) AS payload FROM generate_series(1, 80000) g''')
    url = _url(pg_dsn, table=src)

    def kill() -> bool:
        rows = sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1 "
                   "AND pid <> pg_backend_pid() AND state = 'active'", [f"%FROM %{src}%"])
        return bool(rows)

    progress = _KillAfterFirstRows(kill)
    with pytest.raises(SourceError) as caught:
        engine.load(url, into=table, dsn=pg_dsn, options={"batch_rows": 2000}, progress=progress)
    assert progress.killed and src in str(caught.value)
    assert _count(sql, table) == 0  # the partition rolled back: nothing half-loaded
    report = engine.load(url, into=table, dsn=pg_dsn, options={"batch_rows": 2000})
    assert report.rows_loaded == 80000 and _count(sql, table) == 80000


def test_mysql_dropped_connection_commits_nothing(my: _My, my_src: str, pg_dsn: str, sql: Sql, table: str) -> None:
    """A query without a key streams from one server statement for the whole read: kill its connection."""
    my(f"CREATE TABLE `{my_src}` (id bigint PRIMARY KEY, at datetime, payload text)")
    my(f"INSERT INTO `{my_src}` SELECT seq, TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq MINUTE, "
       "REPEAT(MD5(seq), 30) FROM seq_1_to_80000")
    url = MYSQL
    options = {"query": f"SELECT * FROM {my_src}", "batch_rows": 2000}

    def kill() -> bool:
        ids = my("SELECT id FROM information_schema.processlist WHERE info LIKE %s AND id <> CONNECTION_ID()",
                 [f"%FROM %{my_src}%"])
        for (pid,) in ids:
            my(f"KILL {int(pid)}")
        return bool(ids)

    progress = _KillAfterFirstRows(kill)
    with pytest.raises(SourceError) as caught:
        engine.load(url, into=table, dsn=pg_dsn, options=options, progress=progress)
    assert progress.killed and "127.0.0.1:3306/test" in str(caught.value)
    assert _count(sql, table) == 0
    report = engine.load(url, into=table, dsn=pg_dsn, options=options)
    assert report.rows_loaded == 80000 and _count(sql, table) == 80000


def test_mysql_abandoned_read_stops_on_the_server(my: _My, my_src: str) -> None:
    """Closing an unbuffered cursor would read every remaining row first: the source kills the statement."""
    my(f"CREATE TABLE `{my_src}` (id bigint PRIMARY KEY, payload text)")
    my(f"INSERT INTO `{my_src}` SELECT seq, REPEAT(MD5(seq), 30) FROM seq_1_to_80000")
    source = open_database(MYSQL, {"query": f"SELECT * FROM {my_src}", "batch_rows": 1000})
    chunks = source.chunks(source.partitions()[0])
    assert next(chunks)(0).collect().height == 1000
    chunks.close()

    def running() -> list[tuple[Any, ...]]:
        return my("SELECT id FROM information_schema.processlist WHERE info LIKE %s AND id <> CONNECTION_ID()",
                  [f"%FROM %{my_src}%"])

    deadline = time.monotonic() + 5
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running() == []


# --- bad input --------------------------------------------------------------------------------------------
def test_postgres_errors_are_clear_and_keep_the_password_out(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    secret = "S3cr#t-Pw"
    user_pw = f"postgres:{secret.replace('#', '%23')}"
    parts = urlsplit(pg_dsn)
    with_pw = urlunsplit(parts._replace(netloc=f"{user_pw}@{parts.hostname}:{parts.port or 5432}"))
    with pytest.raises(SourceError) as caught:
        engine.load(_url(with_pw, table="no_such_table"), into=table, dsn=pg_dsn)
    text = str(caught.value)
    assert "no_such_table" in text and "not found" in text and secret not in text and "S3cr%23t" not in text
    with pytest.raises(SourceError) as caught:
        engine.load(f"postgresql://app:{secret.replace('#', '%23')}@127.0.0.1:1/shop?table=orders", into=table,
                    dsn=pg_dsn)
    text = str(caught.value)
    assert "127.0.0.1" in text and "orders" in text and "S3cr" not in text and "\n" not in text
    with pytest.raises(SpecError) as spec:
        engine.load(with_pw, into=table, dsn=pg_dsn, options={"query": "SELEC id FROM nowhere"})
    assert "syntax error" in str(spec.value) and "S3cr" not in str(spec.value)
    sql(f'CREATE TABLE "{src}" (id int8, created_at timestamptz)')
    with pytest.raises(SpecError, match="did you mean 'created_at'"):
        engine.load(_url(pg_dsn, table=src), into=table, dsn=pg_dsn, options={"cursor": "Created_At"})
    with pytest.raises(SpecError, match="known: batch_rows, cursor, lag"):
        engine.load(_url(pg_dsn, table=src), into=table, dsn=pg_dsn, options={"cursur": "id"})


def test_mysql_errors_are_clear_and_keep_the_password_out(my: _My, pg_dsn: str, table: str) -> None:
    user = f"bx_{uuid.uuid4().hex[:8]}"
    my(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'Right-Pw-1'")
    try:
        with pytest.raises(SourceError) as caught:
            engine.load(f"mysql://{user}:Wr0ng-Pw@127.0.0.1:3306/test?table=anything", into=table, dsn=pg_dsn)
        text = str(caught.value)
        assert "Access denied" in text and "Wr0ng" not in text and "127.0.0.1" in text
    finally:
        my(f"DROP USER '{user}'@'%'")
    with pytest.raises(SourceError, match="table 'no_such_table' not found"):
        engine.load(f"{MYSQL}?table=no_such_table", into=table, dsn=pg_dsn)
    with pytest.raises(SpecError, match="SQL syntax"):
        engine.load(MYSQL, into=table, dsn=pg_dsn, options={"query": "SELEC 1"})
    started = time.monotonic()
    with pytest.raises(SourceError, match="Can't connect") as caught:
        engine.load("mysql://root:Pw-123@127.0.0.1:1/test?table=t", into=table, dsn=pg_dsn)
    assert "Pw-123" not in str(caught.value) and time.monotonic() - started < 10


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
    assert (source.dialect, source.table, source.cursor, source.lag, source.partition_on, source.partition_num,
            source.batch_rows) == ("mysql", "orders", "updated_at", 900.0, "id", 4, 1000)
    assert "pw" not in repr(source) and source.label == "mysql://app@db:3306/shop?table=orders"
    assert "table=" not in source.url and "ssl=1" in source.url  # driver parameters stay
    assert set(OPTIONS) == {"table", "query", "cursor", "lag", "partition_on", "partition_num", "batch_rows"}


def test_parallel_reader_threads_end(pg_dsn: str, sql: Sql, src: str) -> None:
    """An abandoned parallel read stops its reader threads and closes their connections."""
    sql(f'CREATE TABLE "{src}" AS SELECT g AS id, repeat(md5(g::text), 30) AS payload '
        'FROM generate_series(1, 40000) g')
    before = threading.active_count()
    source = open_database(_url(pg_dsn, table=src), {"partition_on": "id", "partition_num": 3, "batch_rows": 1000})
    chunks = source.chunks(source.partitions()[0])
    next(chunks)(0).collect()
    chunks.close()
    assert threading.active_count() <= before
    left = sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
               [f"%FROM %{src}%"])[0][0]
    deadline = time.monotonic() + 5
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid() "
                   "AND state = 'active'", [f"%FROM %{src}%"])[0][0]
    assert left == 0
