"""``layout: document``: the seed's generic table ``(_import_id, connection_id, data jsonb, created_at)``, one
jsonb document per row, for schemaless sources (NDJSON files, MongoDB, APIs)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import mongomock
import pytest

import engine
from engine.archive.restore import restore
from engine.archive.tiering import tier
from engine.errors import SpecError
from engine.sources.api import mongo
from tests.support import Sql


def _ndjson(path: Path, n: int = 300, *, nul_at: int | None = None) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            doc: dict[str, Any] = {"id": i, "connection_id": 1 + i % 2, "updated_at": f"2026-0{1 + i % 6}-03T10:00:00",
                                   "customer": {"name": f"c{i}", "tags": ["a", "b"]}}
            if i % 3 == 0:
                doc["note"] = "bad\u0000byte" if i == nul_at else "x"
            f.write(json.dumps(doc) + "\n")
    return path


def _columns(sql: Sql, table: str) -> dict[str, str]:
    return {str(n): str(t) for n, t in sql("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                                           "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                                           [table])}


def test_documents_keep_their_nesting_and_partition_on_a_parsed_time(tmp_path: Path, pg_dsn: str, sql: Sql,
                                                                      table: str) -> None:
    report = engine.load(_ndjson(tmp_path / "a.ndjson", nul_at=9), into=table, partition_by="updated_at",
                         layout="document", dsn=pg_dsn)
    assert (report.rows_loaded, report.rows_quarantined) == (299, 1)  # jsonb refuses \u0000: quarantined
    assert _columns(sql, table) == {"connection_id": "bigint", "_import_id": "text", "data": "jsonb",
                                    "created_at": "timestamp with time zone"}
    assert len(report.partitions) == 6
    row = sql(f'SELECT connection_id, _import_id, data, created_at FROM "{table}" WHERE (data->>\'id\')::int = 7')[0]
    assert row[0] == 2 and row[1] == report.load_id
    assert json.loads(str(row[2]))["customer"] == {"name": "c7", "tags": ["a", "b"]}  # an object, not JSON text
    assert row[3] == dt.datetime(2026, 2, 3, 10, tzinfo=dt.UTC)
    assert sql(f"SELECT count(*) FROM \"{table}\" WHERE data->'customer'->>'name' = 'c8'")[0][0] == 1
    assert engine.load(tmp_path / "a.ndjson", into=table, partition_by="updated_at", layout="document",
                       dsn=pg_dsn).rows_loaded == 0  # effectively once, as any load


def test_without_partition_by_documents_are_stamped_with_the_load_time(tmp_path: Path, pg_dsn: str, sql: Sql,
                                                                       table: str) -> None:
    before = dt.datetime.now(dt.UTC)
    engine.load(_ndjson(tmp_path / "a.ndjson", 10), into=table, layout="document", dsn=pg_dsn, archive=False)
    stamped = sql(f'SELECT min(created_at), max(created_at) FROM "{table}"')[0]
    assert stamped[0] == stamped[1] and before - dt.timedelta(seconds=1) <= stamped[0] <= dt.datetime.now(dt.UTC)


def test_mongodb_documents_into_the_generic_table(pg_dsn: str, sql: Sql, table: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake = mongomock.MongoClient()
    monkeypatch.setattr(mongo, "_client_factory", lambda url: fake)
    fake.shop.events.insert_many([{"kind": "click", "at": dt.datetime(2026, 3, 1, 12) + dt.timedelta(days=i),
                                   "meta": {"page": f"/p{i}", "depth": {"x": i}}} for i in range(40)])
    report = engine.load("mongodb://app@mongo.example:27017/shop?collection=events", into=table,
                         partition_by="at", layout="document", connection_id=9, dsn=pg_dsn)
    assert report.rows_loaded == 40
    assert sql(f"SELECT count(*) FROM \"{table}\" WHERE connection_id = 9 AND data->>'kind' = 'click'")[0][0] == 40
    assert sql(f"SELECT count(DISTINCT date_trunc('month', created_at)) FROM \"{table}\"")[0][0] == 2


def test_document_partitions_tier_and_restore_with_their_jsonb(tmp_path: Path, pg_dsn: str, sql: Sql,
                                                                table: str) -> None:
    engine.load(_ndjson(tmp_path / "a.ndjson"), into=table, partition_by="updated_at", layout="document", dsn=pg_dsn)
    everything = f'SELECT count(*), count(DISTINCT data) FROM "{table}"'
    assert engine.query(everything, dsn=pg_dsn).rows() == [(300, 300)]
    moved = tier(now=dt.datetime(2026, 7, 15, tzinfo=dt.UTC), datasets=[table], uploads=False, dsn=pg_dsn)
    assert len(moved.partitions) == 3
    assert engine.query(everything, dsn=pg_dsn, cache=False).rows() == [(300, 300)]  # cold documents are text
    restore(table, start=dt.date(2026, 1, 1), end=dt.date(2026, 3, 31), dsn=pg_dsn)
    assert sql(f"SELECT count(*) FROM \"{table}\" WHERE data->'customer'->>'name' = 'c0'")[0][0] == 1
    assert engine.query(everything, dsn=pg_dsn, cache=False).rows() == [(300, 300)]


def test_document_layout_refuses_merge_and_an_existing_typed_table(tmp_path: Path, pg_dsn: str, table: str) -> None:
    with pytest.raises(SpecError, match="no key columns"):
        engine.load(_ndjson(tmp_path / "a.ndjson", 5), into=table, layout="document", mode="merge", key="id",
                    dsn=pg_dsn)
    with pytest.raises(SpecError, match="layout"):
        engine.load(_ndjson(tmp_path / "a.ndjson", 5), into=table, layout="documents", dsn=pg_dsn)


def test_a_pipeline_file_can_ask_for_documents_and_no_archive(tmp_path: Path, pg_dsn: str, sql: Sql,
                                                               table: str) -> None:
    """``layout`` and ``archive`` in a pipeline file's target (refused as unknown keys before)."""
    _ndjson(tmp_path / "a.ndjson", 12)
    (tmp_path / "p.yaml").write_text(f"source: a.ndjson\ntarget: {{table: {table}, partition_by: updated_at, "
                                     "layout: document, archive: false}\n")
    [report] = engine.run(tmp_path / "p.yaml", dsn=pg_dsn)
    assert (report.rows_loaded, report.archive, report.archive_files) == (12, None, 0)
    assert _columns(sql, table)["data"] == "jsonb"
    assert not (tmp_path / ".biconic" / "archive").exists()
