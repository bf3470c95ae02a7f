"""The PostgreSQL source end to end through the pipeline against the real server: types column by column,
ranged parallel reads, incremental reads, read/scan/schema, a connection dropped mid-read, clear errors."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pytest

import engine
from engine.errors import SourceError, SpecError
from engine.plan.columns import ROW_COLUMN
from engine.sources import open_source
from engine.sources.base import IncrementalSource, Source
from engine.sources.sql import PostgresSource, open_database
from tests.sources.sql._helpers import (
    KillAfterFirstRows,
    column_types,
    dec,
    loaded_rows,
    row_count,
    server_settles,
    with_params,
)
from tests.support import Sql


# --- types ------------------------------------------------------------------------------------------------
def test_types_column_by_column(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
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
    report = engine.load(with_params(pg_dsn, table=src), into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (2, 2, 0)
    types = column_types(sql, table)
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
    assert (dec(first[1]), dec(rows[1][1])) == (Decimal("1234567890.12"), Decimal("-0.01"))
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


# --- parallel reads -------------------------------------------------------------------------------------------
def test_partitioned_reads_give_the_same_rows(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    sql(f'''CREATE TABLE "{src}" AS SELECT g::int8 AS id, CASE WHEN g % 10 = 0 THEN NULL ELSE g % 97 END AS k,
            timestamptz '2024-01-01 00:00+00' + g * interval '37 minutes' AS created_at, md5(g::text) AS v,
            (g / 7.0)::numeric(12,2) AS amount FROM generate_series(1, 3000) g''')
    whole = engine.load(with_params(pg_dsn, table=src), into=table, partition_by="created_at:month", dsn=pg_dsn)
    assert whole.rows_loaded == 3000
    expected = loaded_rows(sql, table)
    for n, (on, num) in enumerate([("id", 4), ("k", 2), ("created_at", 3)]):
        options = {"partition_on": on, "partition_num": num, "batch_rows": 500}
        source = open_source(with_params(pg_dsn, table=src), options=options)
        assert isinstance(source, PostgresSource) and len(source._queries(None)) == num  # really split
        into = f"{table}_{n}"
        report = engine.load(with_params(pg_dsn, table=src), into=into, partition_by="created_at:month", dsn=pg_dsn,
                             options=options)
        assert report.rows_loaded == 3000 and report.source_partitions == 1
        assert loaded_rows(sql, into) == expected, on


# --- incremental ----------------------------------------------------------------------------------------------
def _same(sql: Sql, src: str, table: str) -> None:
    cols = "id, v, updated_at"
    assert sql(f'SELECT {cols} FROM "{src}" EXCEPT SELECT {cols} FROM "{table}"') == []
    assert sql(f'SELECT {cols} FROM "{table}" EXCEPT SELECT {cols} FROM "{src}"') == []


def test_incremental_merge_reads_only_changes(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    sql(f'''CREATE TABLE "{src}" AS SELECT g::int8 AS id, md5(g::text) AS v,
            timestamptz '2024-03-01 00:00+00' + g * interval '1 hour' AS updated_at FROM generate_series(1, 200) g''')
    url = with_params(pg_dsn, table=src)
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
    assert row_count(sql, table) == 205
    third = engine.load(url, **kwargs)
    assert third.rows_in == 0
    mark = sql("SELECT value FROM biconic.watermarks WHERE dataset = $1", [table])
    assert mark == [("2024-05-02T00:00:00+00:00",)]  # ISO 8601 with the offset
    # a lag re-reads what falls within it (merge keeps the target equal)
    fourth = engine.load(url, **{**kwargs, "options": {"cursor": "updated_at", "lag": "1d"}})
    assert fourth.rows_in == 8
    _same(sql, src, table)


# --- re-loads (the table's key cannot see changes without a cursor) -------------------------------------------
def _changing_table(sql: Sql, src: str) -> None:
    sql(f'''CREATE TABLE "{src}" AS SELECT g::int8 AS id, md5(g::text) AS v,
            timestamptz '2024-03-01 00:00+00' + g * interval '1 hour' AS updated_at FROM generate_series(1, 50) g''')


def _change(sql: Sql, src: str) -> None:
    sql(f"UPDATE \"{src}\" SET v = 'changed' WHERE id IN (3, 40)")
    sql(f"DELETE FROM \"{src}\" WHERE id = 50")
    sql(f"INSERT INTO \"{src}\" VALUES (51, 'new', timestamptz '2024-03-05 00:00+00')")


def test_merge_without_cursor_applies_changes_every_run(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    _changing_table(sql, src)
    url = with_params(pg_dsn, table=src)
    kwargs: dict[str, Any] = {"into": table, "dsn": pg_dsn, "mode": "merge", "key": "id"}
    assert engine.load(url, **kwargs).rows_loaded == 50
    _change(sql, src)
    second = engine.load(url, **kwargs)
    assert (second.rows_in, second.skipped_partitions) == (50, 0)
    assert sql(f'SELECT id, v FROM "{table}" WHERE id IN (3, 40, 51) ORDER BY id') == \
        [(3, "changed"), (40, "changed"), (51, "new")]
    assert row_count(sql, table) == 51  # merge updates and inserts; a row deleted at the source stays


def test_replace_rereads_and_append_skips_unless_full_refresh(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    _changing_table(sql, src)
    url = with_params(pg_dsn, table=src)
    replaced, appended = f"{table}_r", f"{table}_a"
    engine.load(url, into=replaced, dsn=pg_dsn, mode="replace")
    engine.load(url, into=appended, dsn=pg_dsn)
    _change(sql, src)
    assert engine.load(url, into=replaced, dsn=pg_dsn, mode="replace").rows_loaded == 50
    _same(sql, src, replaced)
    assert engine.load(url, into=appended, dsn=pg_dsn).skipped_partitions == 1
    assert engine.load(url, into=appended, dsn=pg_dsn, full_refresh=True).rows_loaded == 50
    assert row_count(sql, appended) == 100  # append + full refresh adds the rows again, on purpose


def test_full_refresh_ignores_the_watermark(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    _changing_table(sql, src)
    url = with_params(pg_dsn, table=src, cursor="updated_at")
    kwargs: dict[str, Any] = {"into": table, "dsn": pg_dsn, "mode": "merge", "key": "id"}
    assert engine.load(url, **kwargs).rows_in == 50
    sql(f"UPDATE \"{src}\" SET v = 'quiet'")  # a change the cursor cannot see
    assert engine.load(url, **kwargs).rows_in == 0
    assert engine.load(url, **kwargs, full_refresh=True).rows_in == 50
    _same(sql, src, table)
    assert engine.load(url, **kwargs).rows_in == 0  # the watermark is where the full read left it


def test_numeric_cursor_appends_new_rows(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    sql(f'''CREATE TABLE "{src}" AS SELECT g::int8 AS id, md5(g::text) AS v,
            timestamp '2024-03-01' + g * interval '1 hour' AS updated_at FROM generate_series(1, 100) g''')
    url = with_params(pg_dsn, table=src, cursor="id")
    assert engine.load(url, into=table, dsn=pg_dsn).rows_in == 100
    sql(f'''INSERT INTO "{src}" SELECT g, 'new', timestamp '2024-04-01' FROM generate_series(101, 110) g''')
    assert engine.load(url, into=table, dsn=pg_dsn).rows_in == 10
    assert engine.load(url, into=table, dsn=pg_dsn).rows_in == 0
    _same(sql, src, table)


def test_incremental_source_protocol(pg_dsn: str, sql: Sql, src: str) -> None:
    sql(f'CREATE TABLE "{src}" (id int8, at timestamptz, n numeric(10,3))')
    source = open_database(with_params(pg_dsn, table=src), {"cursor": "at"})
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
    numeric = open_database(with_params(pg_dsn, table=src), {"cursor": "n"}).with_watermark("1.5")
    assert numeric.high_watermark() == "2.250"
    assert numeric.read(numeric.partitions()[0]).read_all().column("id").to_pylist() == [2]
    assert "password" not in source.watermark_key() and src in source.watermark_key()
    query = open_database(pg_dsn, {"query": f'SELECT * FROM "{src}"', "cursor": "id"})
    assert src not in query.watermark_key() and query.watermark_key() != source.watermark_key()


# --- read / scan / schema -------------------------------------------------------------------------------------
def test_read_scan_schema_and_query(pg_dsn: str, sql: Sql, src: str) -> None:
    sql(f'CREATE TABLE "{src}" AS SELECT g AS id, g * 2 AS twice, md5(g::text) AS v FROM generate_series(1, 50) g')
    source = open_database(with_params(pg_dsn, table=src), {"batch_rows": 20})
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


# --- a connection dropped mid-read ----------------------------------------------------------------------------
def test_dropped_connection_commits_nothing(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    sql(f'''CREATE TABLE "{src}" AS SELECT g AS id, timestamptz '2024-01-01 00:00+00' + g * interval '1 minute' AS at,
            repeat(md5(g::text), 30) AS payload FROM generate_series(1, 80000) g''')
    url = with_params(pg_dsn, table=src)

    def kill() -> bool:
        rows = sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1 "
                   "AND pid <> pg_backend_pid() AND state = 'active'", [f"%FROM %{src}%"])
        return bool(rows)

    progress = KillAfterFirstRows(kill)
    with pytest.raises(SourceError) as caught:
        engine.load(url, into=table, dsn=pg_dsn, options={"batch_rows": 2000}, progress=progress)
    assert progress.killed and src in str(caught.value)
    assert row_count(sql, table) == 0  # the partition rolled back: nothing half-loaded
    report = engine.load(url, into=table, dsn=pg_dsn, options={"batch_rows": 2000})
    assert report.rows_loaded == 80000 and row_count(sql, table) == 80000


# --- bad input ------------------------------------------------------------------------------------------------
def test_errors_are_clear_and_keep_the_password_out(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    secret = "S3cr#t-Pw"
    user_pw = f"postgres:{secret.replace('#', '%23')}"
    parts = urlsplit(pg_dsn)
    with_pw = urlunsplit(parts._replace(netloc=f"{user_pw}@{parts.hostname}:{parts.port or 5432}"))
    with pytest.raises(SourceError) as caught:
        engine.load(with_params(with_pw, table="no_such_table"), into=table, dsn=pg_dsn)
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
        engine.load(with_params(pg_dsn, table=src), into=table, dsn=pg_dsn, options={"cursor": "Created_At"})
    with pytest.raises(SpecError, match="known: batch_rows, connection_column, connection_from_name, cursor, lag"):
        engine.load(with_params(pg_dsn, table=src), into=table, dsn=pg_dsn, options={"cursur": "id"})


def test_parallel_reader_threads_end(pg_dsn: str, sql: Sql, src: str) -> None:
    """An abandoned parallel read stops its reader threads and closes their connections."""
    sql(f'CREATE TABLE "{src}" AS SELECT g AS id, repeat(md5(g::text), 30) AS payload '
        'FROM generate_series(1, 40000) g')
    before = threading.active_count()
    source = open_database(with_params(pg_dsn, table=src),
                           {"partition_on": "id", "partition_num": 3, "batch_rows": 1000})
    chunks = source.chunks(source.partitions()[0])
    next(chunks)(0).collect()
    chunks.close()
    assert threading.active_count() <= before

    def active() -> int:
        return int(sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid() "
                       "AND state = 'active'", [f"%FROM %{src}%"])[0][0])

    assert server_settles(active)  # the cancelled range reads end on the server


def test_watermarks_are_kept_per_uuid_connection(pg_dsn: str, sql: Sql, src: str, table: str) -> None:
    """Issue 11: two UUID connections reading one source each keep their own watermark, under the id's
    canonical text; a source's own uuid connection_id column makes a uuid column."""
    a, b = "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "9b2e6c1a-0d4f-4a8e-b1c2-7f3e5d6a8b90"
    sql(f'''CREATE TABLE "{src}" AS SELECT g::int8 AS id, md5(g::text) AS v,
            timestamp '2024-03-01' + g * interval '1 hour' AS updated_at FROM generate_series(1, 50) g''')
    url = with_params(pg_dsn, table=src, cursor="id")
    assert engine.load(url, into=table, connection_id=a.upper(), dsn=pg_dsn).rows_in == 50
    assert engine.load(url, into=table, connection_id=b, dsn=pg_dsn).rows_in == 50
    assert engine.load(url, into=table, connection_id=a, dsn=pg_dsn).rows_in == 0
    keys = sql("SELECT connection_key, value FROM biconic.watermarks WHERE dataset = $1 ORDER BY 1", [table])
    assert keys == [(a, "50"), (b, "50")]
    own = f"{src}_own"
    sql(f'''CREATE TABLE "{own}" AS SELECT CASE WHEN g % 2 = 0 THEN '{a}'::uuid ELSE '{b}'::uuid END
            AS connection_id, g AS id, timestamp '2024-03-01' + g * interval '1 hour' AS updated_at
            FROM generate_series(1, 10) g''')
    engine.load(with_params(pg_dsn, table=own), into=f"{table}_own", dsn=pg_dsn)
    assert sql(f'SELECT connection_id::text, count(*) FROM "{table}_own" GROUP BY 1 ORDER BY 1') == [(a, 5), (b, 5)]
    assert sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass($1) "
               "AND attname = 'connection_id'", [f'"{table}_own"']) == [("uuid",)]
