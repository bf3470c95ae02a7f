"""``engine.run()``: every load of a pipeline YAML file, in order, each effectively once."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

import engine
from tests.support import FIXTURES, Sql, accounted, child_bounds, data_types, orders_frame, quarantine_rows


def test_run_pipeline_yaml_with_several_loads(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders_1.csv").write_text('order_id;Fecha;importe\n'
                                       '1;01/02/2024;"1.234,56"\n2;02/02/2024;"-1,00"\n')
    (data / "orders_2.csv").write_text('order_id;Fecha;importe\n1;01/02/2024;"10,00"\n3;03/03/2024;"5,00"\n')
    orders_frame(5).write_parquet(data / "customers.parquet")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(textwrap.dedent(f"""\
        loads:
          - source: {{path: data/orders_*.csv, delimiter: ";"}}
            target: {{table: {table}, connection_id: 7, partition_by: "fecha:month", mode: merge,
                      key: [order_id]}}
            steps:
              - rename: {{Fecha: fecha}}
              - parse_date: {{column: fecha, format: "%d/%m/%Y"}}
              - parse_number: {{column: importe, decimal: ",", thousands: "."}}
              - derive: {{total: "importe * 1.21"}}
            rules:
              - range: {{column: importe, min: 0}}
          - source: data/customers.parquet
            target: {{table: {table}_c, partition_by: created_at}}
        """), encoding="utf-8")
    reports = engine.run(spec, dsn=pg_dsn)
    assert [r.table for r in reports] == [table, f"{table}_c"]
    orders, customers = reports
    assert orders.source_partitions == 2
    assert (orders.rows_in, orders.rows_loaded, orders.rows_quarantined) == (4, 3, 1)
    rows = sql(f'SELECT order_id, fecha, importe, total, connection_id FROM "{table}" ORDER BY 1')
    assert [r[:3] for r in rows] == [(1, dt.date(2024, 2, 1), 10.0), (3, dt.date(2024, 3, 3), 5.0)]
    assert [r[3] for r in rows] == [pytest.approx(12.1), pytest.approx(6.05)]
    assert {r[4] for r in rows} == {7}
    assert customers.rows_loaded == 5
    again = engine.run(spec, dsn=pg_dsn)
    assert [r.rows_loaded for r in again] == [0, 0]
    assert [r.skipped_partitions for r in again] == [2, 1]


def test_fixture_spanish_orders_pipeline(pg_dsn: str, sql: Sql) -> None:
    """fixtures/orders_es.yaml: cp1252, ';', day-first dates, '1.234,56' amounts, three bad rows."""
    (report,) = engine.run(FIXTURES / "orders_es.yaml", dsn=pg_dsn)
    accounted(report)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (6, 3, 3)
    assert report.quarantine_by_rule == {"parse_date": 1, "parse_number": 1, "range": 1}
    table = report.table
    assert list(data_types(sql, table)) == ["connection_id", "no_pedido", "fecha", "cliente", "importe",
                                            "ciudad"]
    assert sql(f'SELECT no_pedido, fecha, cliente, importe, ciudad FROM "{table}" ORDER BY 1') == [
        (1, dt.date(2024, 1, 5), "José Pérez", 1234.56, "Málaga"),
        (2, dt.date(2024, 1, 17), "Ñandú S.L.", 89.9, "A Coruña"),
        (6, dt.date(2024, 2, 29), "Íñigo", 2000.0, "Éibar"),
    ]
    assert set(child_bounds(sql, table)) == {f"{table}_p2024_01", f"{table}_p2024_02"}
    assert [r["row_number"] for r in quarantine_rows(sql, table)] == [4, 5, 6]


def test_run_archive_and_contract_replace_the_targets_own(tmp_path: Path, pg_dsn: str, table: str,
                                                          sql: Sql) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("day,v\n2024-01-01,1\n")
    second.write_text("day,v,extra\n2024-01-02,2,x\n")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(f"source: a.csv\ntarget: {{table: {table}, archive: '{tmp_path / 'arch'}', contract: evolve}}\n")
    [report] = engine.run(spec, dsn=pg_dsn, archive=False)
    assert report.archive is None and report.archive_files == 0 and not (tmp_path / "arch").exists()
    spec.write_text(f"source: b.csv\ntarget: {{table: {table}, contract: evolve}}\n")
    with pytest.raises(engine.SchemaDriftError, match="extra"):
        engine.run(spec, dsn=pg_dsn, contract="freeze")
    [report] = engine.run(spec, dsn=pg_dsn, archive=str(tmp_path / "other"))
    assert report.archive_files == 1 and (tmp_path / "other").is_dir() and report.columns_added == ["extra"]
    with pytest.raises(engine.SpecError, match=r"^target.contract: expected one of evolve, freeze"):
        engine.run(spec, dsn=pg_dsn, contract="loose")
