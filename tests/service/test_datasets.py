"""``/v1/datasets`` and ``/v1/sql``: each token reads only its connection's rows; raw SQL is admin-only."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import polars as pl
import pytest

import engine
from tests.service.conftest import Api

pytestmark = pytest.mark.postgres


def orders(path: Path, n: int, *, month: int = 5, first_id: int = 0) -> Path:
    """``n`` orders of May (or ``month``) 2026, one per hour, without a connection column."""
    start = dt.datetime(2026, month, 1)
    pl.DataFrame({"id": range(first_id, first_id + n), "created_at": [start + dt.timedelta(hours=i) for i in range(n)],
                  "amount": [float(i) for i in range(n)], "status": ["paid" if i % 3 else "open" for i in range(n)],
                  }).write_csv(path)
    return path


@pytest.fixture
def shared(api: Api, tmp_path: Path, table: str) -> tuple[str, str, str]:
    """A dataset holding 10 rows of connection A (May) and 4 of connection B (June): (table, A, B)."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    engine.load(orders(tmp_path / "a.csv", 10), into=table, connection_id=a, partition_by="created_at:month",
                dsn=api.dsn, archive="off")
    engine.load(orders(tmp_path / "b.csv", 4, month=6, first_id=100), into=table, connection_id=b,
                partition_by="created_at:month", dsn=api.dsn, archive="off")
    return table, a, b


def test_a_token_sees_its_own_rows_counts_and_partitions_only(api: Api, shared: tuple[str, str, str]) -> None:
    table, a, b = shared
    with api.client(api.token(a, "read")) as client:
        listed = {d["dataset"]: d for d in client.get("/v1/datasets").json()}
        info = client.get(f"/v1/datasets/{table}").json()
        latest = client.get(f"/v1/datasets/{table}/latest").json()
    assert listed[table]["rows"] == 10
    assert (info["rows"], info["rows_by_connection"]) == (10, {a: 10})
    assert [p["name"] for p in info["partitions"]] == [f"{table}_p2026_05"]
    assert "source" not in info["last_load"] and info["last_load"]["rows_loaded"] == 10
    assert len(latest["rows"]) == 10 and {r["connection_id"] for r in latest["rows"]} == {a}
    with api.client(api.token(b, "read")) as client:
        assert client.get(f"/v1/datasets/{table}").json()["rows_by_connection"] == {b: 4}
        assert {r["id"] for r in client.get(f"/v1/datasets/{table}/latest").json()["rows"]} == set(range(100, 104))


def test_another_connections_dataset_or_rows_are_404_or_403_and_nothing_leaks(api: Api,
                                                                              shared: tuple[str, str, str]) -> None:
    table, a, b = shared
    stranger = str(uuid.uuid4())
    with api.client(api.token(stranger, "read")) as client:
        assert table not in {d["dataset"] for d in client.get("/v1/datasets").json()}
        for path in (f"/v1/datasets/{table}", f"/v1/datasets/{table}/latest"):
            answer = client.get(path)
            assert answer.status_code == 404 and answer.json()["detail"] == f"no dataset {table!r}", path
    with api.client(api.token(a, "read")) as client:
        for path in (f"/v1/datasets/{table}", f"/v1/datasets/{table}/latest", "/v1/datasets"):
            answer = client.get(path, params={"connection_id": b})
            assert answer.status_code == 403 and b not in answer.text, path
        assert client.get("/v1/datasets/no_such_table").status_code == 404


def test_an_admin_sees_every_connection_and_picks_one_for_the_latest_rows(api: Api,
                                                                          shared: tuple[str, str, str]) -> None:
    table, a, b = shared
    with api.client(api.token(scope="admin")) as client:
        info = client.get(f"/v1/datasets/{table}").json()
        assert info["rows_by_connection"] == {a: 10, b: 4} and len(info["partitions"]) == 2
        assert client.get(f"/v1/datasets/{table}", params={"connection_id": b}).json()["rows"] == 4
        assert client.get(f"/v1/datasets/{table}/latest").status_code == 400
        assert len(client.get(f"/v1/datasets/{table}/latest", params={"connection_id": a}).json()["rows"]) == 10


def test_raw_sql_is_for_admin_tokens_only(api: Api, shared: tuple[str, str, str]) -> None:
    table, a, _ = shared
    body = {"sql": f"SELECT connection_id, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 2 DESC"}
    for scope in ("read", "write"):
        with api.client(api.token(a, scope)) as client:
            refused = client.post("/v1/sql", json=body)
            assert refused.status_code == 403 and refused.json()["detail"] == "only an admin token may do this"
    with api.client(api.token(scope="admin")) as client:
        answer = client.post("/v1/sql", json={**body, "limit": 1}).json()
        broken = client.post("/v1/sql", json={"sql": "SELEC nonsense"})
    assert answer["row_count"] == 2 and answer["truncated"] and answer["rows"] == [{"connection_id": a, "n": 10}]
    assert broken.status_code == 400 and broken.headers["content-type"] == "application/problem+json"


def test_a_structured_query_counts_only_the_tokens_rows_and_is_cached_the_second_time(
        api: Api, shared: tuple[str, str, str]) -> None:
    table, a, b = shared
    body = {"group_by": ["status"], "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "amount"}],
            "order_by": [{"column": "status"}]}
    with api.client(api.token(a, "read")) as client:
        first = client.post(f"/v1/datasets/{table}/query", json=body).json()
        second = client.post(f"/v1/datasets/{table}/query", json=body).json()
        sneaky = client.post(f"/v1/datasets/{table}/query", json={
            **body, "filters": [{"column": "connection_id", "op": "=", "value": b}]}).json()
    assert first["rows"] == [{"status": "open", "n": 4, "sum_amount": 18.0},
                             {"status": "paid", "n": 6, "sum_amount": 27.0}]
    assert (first["cached"], second["cached"], second["rows"]) == (False, True, first["rows"])
    assert sneaky["rows"] == []  # a filter in the body only narrows the server's own
    with api.client(api.token(b, "read")) as client:
        theirs = client.post(f"/v1/datasets/{table}/query", json=body).json()
    assert sum(r["n"] for r in theirs["rows"]) == 4 and theirs["cached"] is False
    with api.client(api.token(scope="admin")) as client:
        everyone = client.post(f"/v1/datasets/{table}/query", json=body).json()
    assert sum(r["n"] for r in everyone["rows"]) == 14


@pytest.mark.parametrize("hostile", [
    {"columns": ['id"; DROP TABLE x; --']},
    {"filters": [{"column": "status", "op": "=", "value": "' OR 1=1 --"}]},
    {"filters": [{"column": "status", "op": "OR 1=1", "value": "x"}]},
    {"group_by": ["status"], "aggregates": [{"fn": "count", "as": "n; DROP TABLE x"}]},
    {"order_by": [{"column": "1; DELETE FROM t"}]},
    {"time_range": {"from": "2026-05-01'; --"}},
    {"limit": "10; DROP TABLE x"},
])
def test_injection_in_any_query_field_is_refused_or_answered_harmlessly(api: Api, shared: tuple[str, str, str],
                                                                       hostile: dict[str, object]) -> None:
    table, a, _ = shared
    with api.client(api.token(a, "read")) as client:
        answer = client.post(f"/v1/datasets/{table}/query", json=hostile)
        count = client.post(f"/v1/datasets/{table}/query", json={"aggregates": [{"fn": "count", "as": "n"}]})
    assert answer.status_code in (200, 400, 422), answer.text
    if answer.status_code == 200:
        assert answer.json()["rows"] == []  # the quote is a value, and no status holds it
    else:
        assert answer.headers["content-type"] == "application/problem+json"
    assert count.json()["rows"] == [{"n": 10}]


def test_the_list_holds_the_datasets_the_connection_loaded_and_survives_ones_it_cannot_describe(
        api: Api, tmp_path: Path, table: str) -> None:
    mine = str(uuid.uuid4())
    engine.load(orders(tmp_path / "mine.csv", 3), into=table, connection_id=mine, partition_by="created_at:month",
                dsn=api.dsn, archive="off")
    engine.load(orders(tmp_path / "int.csv", 2), into=f"{table}_int", connection_id=7,  # keyed by integers
                partition_by="created_at:month", dsn=api.dsn, archive="off")
    with api.client(api.token(mine, "read")) as client:
        listed = client.get("/v1/datasets")
    with api.client(api.token(scope="admin")) as client:
        everything = {d["dataset"] for d in client.get("/v1/datasets").json()}
    assert listed.status_code == 200 and [d["dataset"] for d in listed.json()] == [table]
    assert {table, f"{table}_int"} <= everything
