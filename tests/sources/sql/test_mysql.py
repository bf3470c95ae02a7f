"""The MySQL/MariaDB source end to end through the pipeline against the real servers (MariaDB as the source,
PostgreSQL as the target): types column by column, keyed pages and ranges, incremental reads, a connection
dropped mid-read, an abandoned read, clear errors."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

import engine
from engine.errors import SourceError, SpecError
from engine.sources.sql import MySqlSource, open_database
from tests.sources.sql._helpers import (
    MYSQL,
    KillAfterFirstRows,
    MariaDb,
    column_types,
    dec,
    loaded_rows,
    row_count,
    server_settles,
)
from tests.support import Sql


def test_types_column_by_column(mariadb: MariaDb, my_src: str, pg_dsn: str, sql: Sql,
                                table: str) -> None:
    mariadb(f"""CREATE TABLE `{my_src}` (id bigint PRIMARY KEY, created_at datetime(6), stamp timestamp NULL,
           zero_dt datetime, zero_d date, big_u bigint unsigned, small_u int unsigned, mood enum('ok','sad'),
           flag tinyint(1), amount decimal(12,2), wide decimal(30,5), name varchar(20), body text, raw blob,
           doc json, took time, bit1 bit(1), score double, yr year, place point)""")
    mariadb("SET SESSION sql_mode = ''")  # zero dates need a relaxed mode to be inserted at all
    mariadb(f"""INSERT INTO `{my_src}` VALUES
        (1, '2024-01-15 10:00:00.123456', '2024-01-15 10:00:00', '0000-00-00 00:00:00', '0000-00-00',
         18446744073709551615, 4294967295, 'sad', 1, 1234567890.12, 1234567890123456789012345.12345, 'héllo', 'txt',
         x'00ff', '{{"a": [1, 2]}}', '838:59:59', b'1', 2.5, 2024, POINT(1, 2)),
        (2, '2024-02-01 00:00:00', NULL, '2024-00-10 00:00:00', '2024-03-01', 9223372036854775808, 0, NULL, 0,
         -0.01, NULL, NULL, NULL, NULL, NULL, '-01:00:00', b'0', NULL, NULL, NULL),
        (3, '2024-02-02 00:00:00', '2024-02-02 12:00:00', '2024-02-02 12:00:00', NULL, 1, NULL, 'ok', 5, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""")
    mariadb("SET SESSION sql_mode = DEFAULT")
    report = engine.load(f"{MYSQL}?table={my_src}", into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (3, 3, 0)
    types = column_types(sql, table)
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
    assert [dec(r[5]) for r in rows] == [Decimal(2**64 - 1), Decimal(2**63), Decimal(1)]  # never wrapped
    assert (first[6], first[7], first[8], third[8]) == (4294967295, "sad", 1, 5)  # tinyint(1) stays a number
    assert (dec(first[9]), dec(second[9])) == (Decimal("1234567890.12"), Decimal("-0.01"))
    assert dec(first[10]) == Decimal("1234567890123456789012345.12345")
    assert (first[11], first[12], first[13]) == ("héllo", b"\x00\xff", '{"a": [1, 2]}')
    assert (first[14], second[14]) == ("838:59:59", "-01:00:00")  # TIME is elapsed time, not a time of day
    assert (first[15], second[15], first[16], first[17]) == (True, False, 2.5, "POINT(1 2)")


def test_partitioned_reads_give_the_same_rows(mariadb: MariaDb, my_src: str, pg_dsn: str, sql: Sql,
                                              table: str) -> None:
    mariadb(f"CREATE TABLE `{my_src}` (id bigint PRIMARY KEY, k int NULL, created_at datetime(6), v varchar(40), "
       "amount decimal(12,2))")
    mariadb(f"INSERT INTO `{my_src}` SELECT seq, IF(seq % 10 = 0, NULL, seq % 97), "
       "TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq * 37 MINUTE, MD5(seq), seq / 7 FROM seq_1_to_3000")
    whole = engine.load(f"{MYSQL}?table={my_src}", into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert whole.rows_loaded == 3000
    expected = loaded_rows(sql, table)
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
        assert loaded_rows(sql, into) == expected, options
    source = open_database(f"{MYSQL}?table={my_src}", {"batch_rows": 999})
    assert isinstance(source, MySqlSource)
    assert [f(0).collect().height for f in source.chunks(source.partitions()[0])] == [999, 999, 999, 3]


def test_incremental_merge_reads_only_changes(mariadb: MariaDb, my_src: str, pg_dsn: str, sql: Sql,
                                                    table: str) -> None:
    mariadb(f"CREATE TABLE `{my_src}` (id bigint PRIMARY KEY, v varchar(40), updated_at datetime(6))")
    mariadb(f"INSERT INTO `{my_src}` SELECT seq, MD5(seq), TIMESTAMP'2024-03-01 00:00:00' + INTERVAL seq HOUR "
       "FROM seq_1_to_200")
    kwargs: dict[str, Any] = {"into": table, "partition_by": "updated_at:month", "dsn": pg_dsn, "mode": "merge",
                              "key": "id", "options": {"cursor": "updated_at"}}
    url = f"{MYSQL}?table={my_src}"
    assert engine.load(url, **kwargs).rows_in == 200
    mariadb(f"INSERT INTO `{my_src}` SELECT seq, 'new', TIMESTAMP'2024-05-01 00:00:00.5' + INTERVAL seq MINUTE "
       "FROM seq_201_to_205")
    mariadb(f"UPDATE `{my_src}` SET v = 'changed', updated_at = '2024-05-02 00:00:00.25' WHERE id IN (3, 50, 199)")
    second = engine.load(url, **kwargs)
    assert (second.rows_in, second.rows_loaded) == (8, 8)
    assert engine.load(url, **kwargs).rows_in == 0
    source_rows = set(mariadb(f"SELECT id, v, updated_at FROM `{my_src}`"))
    assert set(sql(f'SELECT id, v, updated_at FROM "{table}"')) == source_rows


def test_dropped_connection_commits_nothing(mariadb: MariaDb, my_src: str, pg_dsn: str, sql: Sql,
                                            table: str) -> None:
    """A query without a key streams from one server statement for the whole read: kill its connection."""
    mariadb(f"CREATE TABLE `{my_src}` (id bigint PRIMARY KEY, at datetime, payload text)")
    mariadb(f"INSERT INTO `{my_src}` SELECT seq, TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq MINUTE, "
       "REPEAT(MD5(seq), 30) FROM seq_1_to_80000")
    url = MYSQL
    options = {"query": f"SELECT * FROM {my_src}", "batch_rows": 2000}

    def kill() -> bool:
        ids = mariadb("SELECT id FROM information_schema.processlist WHERE info LIKE %s AND id <> CONNECTION_ID()",
                 [f"%FROM %{my_src}%"])
        for (pid,) in ids:
            mariadb(f"KILL {int(pid)}")
        return bool(ids)

    progress = KillAfterFirstRows(kill)
    with pytest.raises(SourceError) as caught:
        engine.load(url, into=table, dsn=pg_dsn, options=options, progress=progress)
    assert progress.killed and "127.0.0.1:3306/test" in str(caught.value)
    assert row_count(sql, table) == 0
    report = engine.load(url, into=table, dsn=pg_dsn, options=options)
    assert report.rows_loaded == 80000 and row_count(sql, table) == 80000


def test_abandoned_read_stops_on_the_server(mariadb: MariaDb, my_src: str) -> None:
    """Closing an unbuffered cursor would read every remaining row first: the source kills the statement."""
    mariadb(f"CREATE TABLE `{my_src}` (id bigint PRIMARY KEY, payload text)")
    mariadb(f"INSERT INTO `{my_src}` SELECT seq, REPEAT(MD5(seq), 30) FROM seq_1_to_80000")
    source = open_database(MYSQL, {"query": f"SELECT * FROM {my_src}", "batch_rows": 1000})
    chunks = source.chunks(source.partitions()[0])
    assert next(chunks)(0).collect().height == 1000
    chunks.close()

    def running() -> list[tuple[Any, ...]]:
        return mariadb("SELECT id FROM information_schema.processlist WHERE info LIKE %s AND id <> CONNECTION_ID()",
                       [f"%FROM %{my_src}%"])

    assert server_settles(running)  # the killed statement leaves the process list


def test_errors_are_clear_and_keep_the_password_out(mariadb: MariaDb, pg_dsn: str, table: str) -> None:
    user = f"bx_{uuid.uuid4().hex[:8]}"
    mariadb(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'Right-Pw-1'")
    try:
        with pytest.raises(SourceError) as caught:
            engine.load(f"mysql://{user}:Wr0ng-Pw@127.0.0.1:3306/test?table=anything", into=table, dsn=pg_dsn)
        text = str(caught.value)
        assert "Access denied" in text and "Wr0ng" not in text and "127.0.0.1" in text
    finally:
        mariadb(f"DROP USER '{user}'@'%'")
    with pytest.raises(SourceError, match="table 'no_such_table' not found"):
        engine.load(f"{MYSQL}?table=no_such_table", into=table, dsn=pg_dsn)
    with pytest.raises(SpecError, match="SQL syntax"):
        engine.load(MYSQL, into=table, dsn=pg_dsn, options={"query": "SELEC 1"})
    started = time.monotonic()
    with pytest.raises(SourceError, match="Can't connect") as caught:
        engine.load("mysql://root:Pw-123@127.0.0.1:1/test?table=t", into=table, dsn=pg_dsn)
    assert "Pw-123" not in str(caught.value) and time.monotonic() - started < 10


def test_a_list_or_pattern_of_tables_is_a_partition_each(mariadb: MariaDb, pg_dsn: str, sql: Sql,
                                                         table: str) -> None:
    prefix = f"imp{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}_{n}" for n in (11, 12, 13)]
    try:
        for n, name in enumerate(names):
            mariadb(f"CREATE TABLE `{name}` (id int PRIMARY KEY, at datetime)")
            mariadb(f"INSERT INTO `{name}` SELECT seq, TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq DAY "
                    f"FROM seq_1_to_{n + 1}")
        options = {"connection_from_name": f"{prefix}_([0-9]+)"}
        listed = open_database(f"{MYSQL}?table={names[2]}&table={names[0]}", options)
        assert [p.options["table"] for p in listed.partitions()] == [names[2], names[0]]
        report = engine.load(f"{MYSQL}?table={prefix}\\_%", into=table, options=options, dsn=pg_dsn)
        assert (report.source_partitions, report.rows_loaded) == (3, 6)
        assert dict(sql(f'SELECT connection_id, count(*) FROM "{table}" GROUP BY 1')) == {11: 1, 12: 2, 13: 3}
        assert engine.load(f"{MYSQL}?table={prefix}\\_%", into=table, options=options,
                           dsn=pg_dsn).skipped_partitions == 3
    finally:
        for name in names:
            mariadb(f"DROP TABLE IF EXISTS `{name}`")


def test_per_connection_tables_named_by_uuid_or_carrying_a_column(mariadb: MariaDb, pg_dsn: str, sql: Sql,
                                                                  table: str) -> None:
    """Issue 11 in MySQL too: the old platform's tables named ``<prefix>_<uuid>`` land as a uuid column, a
    table each; a column may give the id instead."""
    prefix = f"imp{uuid.uuid4().hex[:6]}"
    ids = sorted(str(uuid.uuid4()) for _ in range(3))
    names = [f"{prefix}_{cid}" for cid in ids]
    try:
        for n, name in enumerate(names):
            mariadb(f"CREATE TABLE `{name}` (id int PRIMARY KEY, owner char(36), at datetime)")
            mariadb(f"INSERT INTO `{name}` SELECT seq, '{ids[n]}', TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq DAY "
                    f"FROM seq_1_to_{n + 1}")
        pattern = f"{MYSQL}?table={prefix}\\_%"
        by_name = {"connection_from_name": f"{prefix}_([0-9a-f-]{{36}})"}
        report = engine.load(pattern, into=table, options=by_name, dsn=pg_dsn)
        assert (report.source_partitions, report.rows_loaded) == (3, 6)
        assert column_types(sql, table)["connection_id"] == "uuid"
        assert dict(sql(f'SELECT connection_id::text, count(*) FROM "{table}" GROUP BY 1')) == \
            {cid: n + 1 for n, cid in enumerate(ids)}
        assert engine.load(pattern, into=table, options=by_name, dsn=pg_dsn).skipped_partitions == 3
        by_column = engine.load(pattern, into=f"{table}_c", options={"connection_column": "owner"}, dsn=pg_dsn)
        assert by_column.rows_loaded == 6
        assert dict(sql(f'SELECT connection_id::text, count(*) FROM "{table}_c" GROUP BY 1')) == \
            {cid: n + 1 for n, cid in enumerate(ids)}
    finally:
        for name in names:
            mariadb(f"DROP TABLE IF EXISTS `{name}`")


def test_password_env_loads_from_mariadb_and_never_shows_the_password(mariadb: MariaDb, my_src: str, pg_dsn: str,
                                                                      sql: Sql, table: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: ``--option password_env=VAR`` for MySQL/MariaDB as for PostgreSQL (a user with a password)."""
    user, secret = f"bx_{uuid.uuid4().hex[:8]}", "My#S3cret/Pw@x"
    mariadb(f"CREATE TABLE `{my_src}` (id BIGINT PRIMARY KEY, created_at DATETIME)")
    mariadb(f"INSERT INTO `{my_src}` VALUES (1, '2024-01-02 00:00:00'), (2, '2024-02-03 00:00:00')")
    mariadb(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", [secret])
    try:
        mariadb(f"GRANT SELECT ON test.* TO '{user}'@'%'")
        monkeypatch.setenv("MY_PW", secret)
        url = f"mysql://{user}@127.0.0.1:3306/test?table={my_src}"
        report = engine.load(url, into=table, dsn=pg_dsn, options={"password_env": "MY_PW"})
        assert (report.rows_loaded, row_count(sql, table)) == (2, 2)
        ledger = [str(r[0]) for r in sql("SELECT source FROM biconic.loads WHERE dataset = $1", [table])]
        assert all("S3cret" not in text for text in [report.to_json(), report.summary(), *ledger])
        monkeypatch.setenv("MY_PW", "Wr0ng-Pw")
        with pytest.raises(SourceError) as caught:
            engine.load(url, into=f"{table}_b", dsn=pg_dsn, options={"password_env": "MY_PW"})
        assert "Access denied" in str(caught.value) and "Wr0ng" not in str(caught.value)
    finally:
        mariadb(f"DROP USER '{user}'@'%'")
