"""The staging schema's sweep (engine.postgres.stage_area): a dead load's staged tables go, a live one's stay,
and ``biconic tier`` sweeps as every load does."""

from __future__ import annotations

import uuid

from engine.archive.tiering import tier
from engine.postgres import stage_area
from engine.postgres.connection import Session, connect


def _stage(sql, load_id: str) -> str:  # type: ignore[no-untyped-def]
    """A staged table of ``load_id`` holding rows, as a helper connection leaves it."""
    name = stage_area.staged_name(load_id, "orders_p2026_02")
    sql("CREATE SCHEMA IF NOT EXISTS biconic_stage")
    sql(f'CREATE TABLE biconic_stage."{name}" AS SELECT g AS id FROM generate_series(1, 100) g')
    return name


def _staged(sql) -> set[str]:  # type: ignore[no-untyped-def]
    return {r[0] for r in sql("SELECT tablename FROM pg_tables WHERE schemaname = 'biconic_stage'")}


def test_the_sweep_drops_a_dead_loads_tables_and_keeps_a_live_ones(pg_dsn: str, sql) -> None:  # type: ignore[no-untyped-def]
    live_id = uuid.uuid4().hex
    holder = connect(pg_dsn)
    try:
        stage_area.hold_load(holder, pg_dsn, live_id)
        dead, live = _stage(sql, uuid.uuid4().hex), _stage(sql, live_id)
        sql('CREATE TABLE biconic_stage."not_ours" (x int)')  # no load id in its name: not the engine's
        with Session(pg_dsn) as session:
            swept = stage_area.sweep(session)
        assert dead in swept and live not in swept
        assert {live, "not_ours"} <= _staged(sql) and dead not in _staged(sql)
    finally:
        holder.close()  # the load ends: its lock goes with its connection
    with Session(pg_dsn) as session:
        assert live in stage_area.sweep(session)
    assert "not_ours" in _staged(sql) and live not in _staged(sql)
    sql('DROP TABLE biconic_stage."not_ours"')


def test_tier_sweeps_the_staging_schema(pg_dsn: str, sql) -> None:  # type: ignore[no-untyped-def]
    dead = _stage(sql, uuid.uuid4().hex)
    # no dataset chosen: only the sweep runs (the session's other tests' datasets are left alone)
    assert tier(dsn=pg_dsn, uploads=False, datasets=[], dry_run=True).swept == []  # a dry run changes nothing
    assert dead in _staged(sql)
    report = tier(dsn=pg_dsn, uploads=False, datasets=[])
    assert dead in report.swept and "staged table(s) killed loads left" in report.summary()
    assert dead not in _staged(sql)
