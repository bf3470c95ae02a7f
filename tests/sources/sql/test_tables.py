"""Many tables as one source (a LIKE pattern or a list), each its own partition, against the real PostgreSQL:
the old platform's per-connection tables moved in, re-runs, a table that cannot be reconciled, clear errors,
hostile table names."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import engine
from engine.errors import PartialLoadError, SourceError, SpecError
from engine.sources.sql import TableSet, open_database
from tests.sources.sql._helpers import column_types, with_params
from tests.support import Sql

#: the old platform's table names: import_<connection uuid>
BY_NAME = {"connection_from_name": "import_([0-9a-f-]{36})"}


@pytest.fixture
def legacy(sql: Sql) -> Iterator[str]:
    """A schema of the test database holding the old platform's tables (dropped afterwards)."""
    schema = f"l_{uuid.uuid4().hex[:10]}"
    sql(f'CREATE SCHEMA "{schema}"')
    yield schema
    sql(f'DROP SCHEMA "{schema}" CASCADE')


def old_table(sql: Sql, schema: str, name: str, rows: int, *, amount: str = "numeric(10,2)") -> None:
    """One of the old platform's tables: ``rows`` readings (``amount`` typed as given)."""
    value = "true" if amount == "boolean" else "1.50"
    sql(f'CREATE TABLE "{schema}"."{name}" (id int, created_at timestamptz, amount {amount}, note text)')
    sql(f'INSERT INTO "{schema}"."{name}" SELECT i, timestamptz \'2024-01-01 00:00Z\' + i * interval \'1 day\', '
        f"{value}, 'n' || i FROM generate_series(1, {rows}) i")


def connections(count: int) -> list[str]:
    """``count`` connection ids (UUID text), in the order their tables are loaded."""
    return sorted(str(uuid.uuid4()) for _ in range(count))


def per_connection(sql: Sql, table: str) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in
            sql(f'SELECT connection_id::text, count(*) FROM "{table}" GROUP BY 1')}


# --- pattern, partitions, re-runs -------------------------------------------------------------------------
def test_a_pattern_loads_each_table_as_its_own_partition_with_its_connection_id(
        pg_dsn: str, sql: Sql, legacy: str, table: str) -> None:
    ids = connections(12)
    for n, cid in enumerate(ids):
        old_table(sql, legacy, f"import_{cid}", rows=n + 1)
    old_table(sql, legacy, "other_table", rows=3)  # not matched by the pattern
    url = with_params(pg_dsn, table=f"{legacy}.import_%")
    source = open_database(url, BY_NAME)
    assert isinstance(source, TableSet) and len(source.partitions()) == 12

    report = engine.load(url, into=table, options=BY_NAME, dsn=pg_dsn)
    assert (report.source_partitions, report.rows_loaded, report.rows_quarantined) == (12, 78, 0)
    assert per_connection(sql, table) == {cid: n + 1 for n, cid in enumerate(ids)}
    assert column_types(sql, table)["connection_id"] == "uuid"
    assert [(d.source.rsplit(".", 1)[1], d.status, d.rows_loaded) for d in report.source_details] == \
        [(f"import_{cid}", "loaded", n + 1) for n, cid in enumerate(ids)]
    assert int(sql("SELECT count(*) FROM biconic.loads WHERE dataset = $1", [table])[0][0]) == 12

    again = engine.load(url, into=table, options=BY_NAME, dsn=pg_dsn)  # every table committed: nothing to do
    assert (again.rows_loaded, again.skipped_partitions) == (0, 12)

    added = str(uuid.uuid4())
    old_table(sql, legacy, f"import_{added}", rows=4)
    third = engine.load(url, into=table, options=BY_NAME, dsn=pg_dsn)
    assert (third.rows_loaded, third.skipped_partitions, third.source_partitions) == (4, 12, 13)
    assert per_connection(sql, table)[added] == 4


def test_a_table_that_cannot_be_reconciled_fails_alone_and_is_reported(
        pg_dsn: str, sql: Sql, legacy: str, table: str) -> None:
    ids = connections(4)
    for cid in ids[:3]:
        old_table(sql, legacy, f"import_{cid}", rows=2)
    old_table(sql, legacy, f"import_{ids[3]}", rows=5, amount="boolean")  # loaded last: the table says numeric
    url = with_params(pg_dsn, table=f"{legacy}.import_%")
    with pytest.raises(PartialLoadError, match=r"1 of 4 source partitions failed") as caught:
        engine.load(url, into=table, options=BY_NAME, dsn=pg_dsn)
    error = caught.value
    assert error.exit_code == 4  # the schema drift's
    assert f"import_{ids[3]}" in str(error) and "'amount'" in str(error)
    report = error.report
    assert (report.rows_loaded, report.failed_partitions) == (6, 1)
    failed = [d for d in report.source_details if d.status == "failed"]
    assert len(failed) == 1 and failed[0].source.endswith(f"import_{ids[3]}")
    assert failed[0].error is not None and "column 'amount' is numeric(10,2) in the table but boolean" in \
        failed[0].error
    assert "FAILED" in report.summary() and f"import_{ids[3]}" in report.summary()
    assert per_connection(sql, table) == {cid: 2 for cid in ids[:3]}

    sql(f'ALTER TABLE "{legacy}"."import_{ids[3]}" ALTER COLUMN amount TYPE numeric(10,2) USING 0')
    fixed = engine.load(url, into=table, options=BY_NAME, dsn=pg_dsn)  # the failed table only
    assert (fixed.rows_loaded, fixed.skipped_partitions, fixed.failed_partitions) == (5, 3, 0)


# --- connection ids ---------------------------------------------------------------------------------------
def test_a_name_the_regex_does_not_match_is_a_clear_error(pg_dsn: str, sql: Sql, legacy: str, table: str) -> None:
    old_table(sql, legacy, "import_not-a-uuid", rows=2)
    with pytest.raises(SourceError, match=r"table name 'import_not-a-uuid' does not match connection_from_name"):
        engine.load(with_params(pg_dsn, table=f"{legacy}.import_not-a-uuid"), into=table, options=BY_NAME,
                    dsn=pg_dsn)
    cid = str(uuid.uuid4())
    old_table(sql, legacy, f"import_{cid}", rows=3)
    with pytest.raises(PartialLoadError, match="import_not-a-uuid") as caught:
        engine.load(with_params(pg_dsn, table=f"{legacy}.import_%"), into=table, options=BY_NAME, dsn=pg_dsn)
    assert caught.value.exit_code == 3
    assert per_connection(sql, table) == {cid: 3}


def test_the_connection_id_from_a_column(pg_dsn: str, sql: Sql, legacy: str, table: str) -> None:
    ids = connections(2)
    for cid in ids:
        sql(f'CREATE TABLE "{legacy}"."t_{cid[:8]}" (conn uuid, created_at timestamptz, v int)')
        sql(f"""INSERT INTO "{legacy}"."t_{cid[:8]}" VALUES ('{cid}', '2024-05-01Z', 1), ('{cid}', '2024-05-02Z', 2)""")
    names = ",".join(f"{legacy}.t_{cid[:8]}" for cid in ids)
    report = engine.load(with_params(pg_dsn, table=names), into=table, options={"connection_column": "conn"},
                         dsn=pg_dsn)
    assert report.source_partitions == 2
    assert per_connection(sql, table) == {cid: 2 for cid in ids}
    assert "conn" not in {str(r[0]) for r in sql("SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_name = $1", [table])}


def test_a_column_that_clashes_with_connection_id_is_named(pg_dsn: str, sql: Sql, legacy: str, table: str) -> None:
    name = f"import_{uuid.uuid4()}"
    sql(f'CREATE TABLE "{legacy}"."{name}" (connection_id int, created_at timestamptz)')
    sql(f"""INSERT INTO "{legacy}"."{name}" VALUES (1, '2024-05-01Z')""")
    with pytest.raises(SourceError, match=r"already has a 'connection_id' column; read it with connection_column"):
        engine.load(with_params(pg_dsn, table=f"{legacy}.{name}"), into=table, options=BY_NAME, dsn=pg_dsn)


# --- names ------------------------------------------------------------------------------------------------
def test_hostile_table_names_are_only_data(pg_dsn: str, sql: Sql, legacy: str, table: str) -> None:
    sql(f'CREATE TABLE "{legacy}".victim (x int)')
    hostile = ["imp_a'; DROP TABLE victim; --", 'imp_b"; DROP TABLE victim; --', "imp_c.d"]
    for n, name in enumerate(hostile):
        quoted = '"' + name.replace('"', '""') + '"'
        sql(f'CREATE TABLE "{legacy}".{quoted} (conn int, created_at timestamptz)')
        sql(f"INSERT INTO \"{legacy}\".{quoted} VALUES ({n + 1}, '2024-05-01Z')")
    report = engine.load(with_params(pg_dsn, table=f"{legacy}.imp_%"), into=table,
                         options={"connection_column": "conn"}, dsn=pg_dsn)
    assert (report.source_partitions, report.rows_loaded) == (3, 3)
    assert sql("SELECT to_regclass($1)::text", [f'"{legacy}".victim'])[0][0] is not None
    with pytest.raises(SourceError, match="no table of .* matches"):
        engine.load(with_params(pg_dsn, table=f"{legacy}.x%' OR '1'='1"), into=table,
                    options={"connection_column": "conn"}, dsn=pg_dsn)


def test_a_list_names_tables_and_patterns(pg_dsn: str, sql: Sql, legacy: str) -> None:
    for name in ("a_1", "a_2", "b", "c"):
        old_table(sql, legacy, name, rows=1)
    url = with_params(pg_dsn, table=f"{legacy}.c") + f"&table={legacy}.a_%25&table={legacy}.b"
    source = open_database(url, {})
    assert isinstance(source, TableSet)
    assert [p.options["table"] for p in source.partitions()] == [f"{legacy}.c", f"{legacy}.a_1", f"{legacy}.a_2",
                                                                 f"{legacy}.b"]
    with pytest.raises(SourceError, match="not found"):
        open_database(with_params(pg_dsn, table=f"{legacy}.b,{legacy}.nope"), {}).partitions()


def test_options_of_a_table_set_are_checked() -> None:
    url = "postgresql://h/db?table=import_%"
    with pytest.raises(SpecError, match="exactly one"):
        open_database(url, {"connection_from_name": "import_.*"})
    with pytest.raises(SpecError, match="not a regular expression"):
        open_database(url, {"connection_from_name": "import_(("})
    with pytest.raises(SpecError, match="not both"):
        open_database(url, {"connection_from_name": "import_(.*)", "connection_column": "c"})
    with pytest.raises(SpecError, match="cursor reads one table"):
        open_database(url, {"cursor": "updated_at"})
    source = open_database("postgresql://h/db", {"table": ["a", "b"]})
    assert isinstance(source, TableSet) and source.names == ("a", "b")


def test_one_connection_is_reloaded_with_replace(pg_dsn: str, sql: Sql, legacy: str, table: str) -> None:
    ids = connections(2)
    for cid in ids:
        old_table(sql, legacy, f"import_{cid}", rows=2)
    engine.load(with_params(pg_dsn, table=f"{legacy}.import_%"), into=table, options=BY_NAME, dsn=pg_dsn)
    sql(f'INSERT INTO "{legacy}"."import_{ids[0]}" SELECT 9, \'2024-03-01Z\', 1, \'late\'')
    report = engine.load(with_params(pg_dsn, table=f"{legacy}.import_{ids[0]}"), into=table, mode="replace",
                         connection_id=ids[0], dsn=pg_dsn)
    assert report.rows_loaded == 3
    assert per_connection(sql, table) == {ids[0]: 3, ids[1]: 2}


def test_the_readme_recipe_through_the_cli(pg_dsn: str, sql: Sql, legacy: str, table: str) -> None:
    """The README's command as an operator types it: the regex in ``--option``, the JSON report listing each
    table with its status and rows, and the same command again loading nothing."""
    import json

    from click.testing import CliRunner

    from engine.cli import cli

    ids = connections(3)
    for n, cid in enumerate(ids):
        old_table(sql, legacy, f"import_{cid}", rows=n + 1)
    args = ["load", with_params(pg_dsn, table=f"{legacy}.import_%"), "--into", table, "--partition-by",
            "created_at:month", "--option", "connection_from_name=import_([0-9a-f-]{36})", "--dsn", pg_dsn, "--json"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, (first.output, repr(first.exception))
    moved = json.loads(first.stdout)
    assert [(d["source"].rsplit(".", 1)[1], d["status"], d["rows_loaded"]) for d in moved["source_details"]] == \
        [(f"import_{cid}", "loaded", n + 1) for n, cid in enumerate(ids)]
    assert per_connection(sql, table) == {cid: n + 1 for n, cid in enumerate(ids)}
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, (again.output, repr(again.exception))
    report = json.loads(again.stdout)
    assert (report["rows_loaded"], report["skipped_partitions"]) == (0, 3)
    assert {d["status"] for d in report["source_details"]} == {"skipped"}


def test_a_name_whose_group_is_no_connection_id_fails_that_table_alone(pg_dsn: str, sql: Sql, legacy: str,
                                                                        table: str) -> None:
    """The regex matched but its group cannot be an id: the table fails before it is read (an empty one too),
    named with what ids are accepted; the others load."""
    cid = str(uuid.uuid4())
    old_table(sql, legacy, f"import_{cid}", rows=2)
    old_table(sql, legacy, "import_a b", rows=0)
    with pytest.raises(PartialLoadError) as caught:
        engine.load(with_params(pg_dsn, table=f"{legacy}.import_%"), into=table,
                    options={"connection_from_name": "import_(.*)"}, dsn=pg_dsn)
    (failed,) = [d for d in caught.value.report.source_details if d.status == "failed"]
    assert failed.error is not None
    assert failed.error.startswith("table name 'import_a b': expected a connection id: an integer, a UUID")
    assert per_connection(sql, table) == {cid: 2}


def test_tables_whose_ids_are_of_another_kind_fail_alone(pg_dsn: str, sql: Sql, legacy: str, table: str) -> None:
    """The first table's UUID fixes the column as uuid; a later table named by an integer or a text id fails
    alone, saying the column needs a UUID, and the UUID table's rows stay."""
    cid = "0" + str(uuid.uuid4())[1:]  # sorts first: its table is loaded first
    for name in (f"import_{cid}", "import_42", "import_shop"):
        old_table(sql, legacy, name, rows=2)
    with pytest.raises(PartialLoadError, match="2 of 3 source partitions failed") as caught:
        engine.load(with_params(pg_dsn, table=f"{legacy}.import_%"), into=table,
                    options={"connection_from_name": "import_(.*)"}, dsn=pg_dsn)
    failed = {d.source.rsplit(".", 1)[1]: d.error for d in caught.value.report.source_details if d.status == "failed"}
    assert set(failed) == {"import_42", "import_shop"}
    assert "connection_id '42' is not a UUID" in str(failed["import_42"])
    assert column_types(sql, table)["connection_id"] == "uuid"
    assert per_connection(sql, table) == {cid: 2}
