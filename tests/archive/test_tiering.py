"""Tiering against a real PostgreSQL: old partitions move to the archive (verified or snapshotted), the query
still returns every row exactly once, restore brings whole periods back, and kill -9 at any point loses nothing."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import engine
from engine.archive.restore import restore
from engine.archive.tiering import TierPolicy, TierReport, tier
from engine.errors import ArchiveError, SpecError
from engine.reads.duck import run_query

Sql = Callable[..., list[tuple[Any, ...]]]

START = dt.datetime(2025, 1, 1)
MONTHS = [dt.date(2025, m, 1) for m in range(1, 7)]  # six consecutive months, January to June 2025
#: now - 90 days = 2025-05-17: January..April have ended by then, May and June have not
NOW = dt.datetime(2025, 8, 15, 12, tzinfo=dt.UTC)
COLUMNS = ["id", "connection_id", "created_at", "amount"]


# --- helpers ------------------------------------------------------------------------------------------------
def _month_end(month: dt.date) -> dt.date:
    return month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)


def _frame(n: int, *, first_id: int = 0) -> pl.DataFrame:
    """``n`` orders spread evenly over the six months, connections 1..3, amounts with cents."""
    span = dt.datetime.combine(_month_end(MONTHS[-1]), dt.time()) - START
    ids = list(range(first_id, first_id + n))
    return pl.DataFrame({
        "id": ids,
        "connection_id": [i % 3 + 1 for i in ids],
        "created_at": [START + span * k / n for k in range(n)],
        "amount": [round((i % 997) * 1.25 + 0.01, 2) for i in ids],
    }).with_columns(pl.col("created_at").dt.truncate("1s"))


def _write(df: pl.DataFrame, path: Path) -> Path:
    df.write_csv(path)
    return path


def _load(path: Path, table: str, dsn: str, **kw: Any) -> None:
    engine.load(path, into=table, partition_by="created_at:month", dsn=dsn, **kw)


def _month_counts(df: pl.DataFrame) -> dict[dt.date, int]:
    counts = df.group_by(pl.col("created_at").dt.truncate("1mo").dt.date().alias("m")).len()
    return {m: int(n) for m, n in counts.iter_rows()}


def _child(table: str, month: dt.date) -> str:
    return f"{table}_p{month.year:04d}_{month.month:02d}"


def _children(sql: Sql, table: str) -> set[str]:
    rows = sql("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
               "WHERE i.inhparent = to_regclass($1)", [f'"{table}"'])
    return {str(r[0]) for r in rows}


def _exists(sql: Sql, name: str) -> bool:
    return sql("SELECT to_regclass($1) IS NOT NULL", [f'"{name}"'])[0][0] is True


def _manifest(sql: Sql, table: str) -> dict[tuple[dt.date, str], int]:
    """Rows per (period, state) as the manifest lists them."""
    rows = sql("SELECT period, state, sum(rows)::bigint FROM biconic.archive_files WHERE dataset = $1 "
               "GROUP BY 1, 2", [table])
    return {(r[0], str(r[1])): int(r[2]) for r in rows}


def _states(sql: Sql, table: str, state: str) -> dict[dt.date, int]:
    return {p: n for (p, s), n in _manifest(sql, table).items() if s == state}


def _rows(table: str, dsn: str, **kw: Any) -> pl.DataFrame:
    """Every row the query layer returns (hot PostgreSQL + cold archive), in the source's layout, by id."""
    return _sorted(run_query(f'SELECT {", ".join(COLUMNS)} FROM "{table}"', dsn=dsn, cache=False, **kw).frame)


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` in one comparable layout: the source's columns and types, ordered by id (then amount)."""
    return frame.select(COLUMNS).sort("id", "amount").select(
        pl.col("id").cast(pl.Int64), pl.col("connection_id").cast(pl.Int64),
        pl.col("created_at").cast(pl.Datetime("us")), pl.col("amount").cast(pl.Float64))


def _pg_rows(sql: Sql, table: str) -> pl.DataFrame:
    """The rows PostgreSQL itself holds (no archive), like :func:`_sorted`."""
    rows = sql(f'SELECT {", ".join(COLUMNS)} FROM "{table}" ORDER BY id, amount')
    return _sorted(pl.DataFrame(rows, schema=COLUMNS, orient="row"))


def _same_rows(table: str, dsn: str, expected: pl.DataFrame, **kw: Any) -> None:
    want = _sorted(expected)
    got = _rows(table, dsn, **kw)
    assert got.height == want.height, f"query returned {got.height} rows, expected {want.height}"
    assert_frame_equal(got, want)


def _tier(dsn: str, table: str, **kw: Any) -> TierReport:
    kw.setdefault("now", NOW)
    return tier(dsn=dsn, datasets=[table], uploads=False, **kw)


def _old(now: dt.datetime = NOW, days: int = 90) -> list[dt.date]:
    """The months whose whole period has ended by ``now - days``."""
    cutoff = now.astimezone(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=days)
    return [m for m in MONTHS if dt.datetime.combine(_month_end(m), dt.time()) <= cutoff]


# --- 1. tiering: exactly the old partitions leave PostgreSQL, the query still returns every row ----------------
def test_tier_detaches_exactly_the_old_partitions_and_the_query_keeps_every_row(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = _frame(6_000)
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn)
    counts = _month_counts(source)
    assert sorted(counts) == MONTHS and sum(counts.values()) == source.height
    old = _old()
    assert old == MONTHS[:4]
    before = _manifest(sql, table)
    assert {s for _, s in before} == {"hot"}

    dry = _tier(pg_dsn, table, dry_run=True)
    assert dry.dry_run is True
    assert [(p.partition, p.rows, p.how) for p in dry.partitions] == \
        [(_child(table, m), counts[m], "verified") for m in old]
    assert _children(sql, table) == {_child(table, m) for m in MONTHS}, "a dry run detached a partition"
    assert _manifest(sql, table) == before, "a dry run changed the manifest"

    report = _tier(pg_dsn, table)
    assert report.dry_run is False
    assert [(p.dataset, p.partition, p.period, p.rows, p.how) for p in report.partitions] == \
        [(table, _child(table, m), m.isoformat(), counts[m], "verified") for m in old]
    assert sum(p.rows for p in report.partitions) == sum(counts[m] for m in old)
    assert _children(sql, table) == {_child(table, m) for m in MONTHS if m not in old}
    for m in MONTHS:
        assert _exists(sql, _child(table, m)) == (m not in old), m
    assert int(sql(f'SELECT count(*) FROM "{table}"')[0][0]) == sum(counts[m] for m in MONTHS if m not in old)
    assert _states(sql, table, "cold") == {m: counts[m] for m in old}
    assert _states(sql, table, "hot") == {m: counts[m] for m in MONTHS if m not in old}
    assert _states(sql, table, "superseded") == {}

    total = run_query(f'SELECT count(*) AS n, sum(amount) AS s, count(DISTINCT id) AS d FROM "{table}"',
                      dsn=pg_dsn, cache=False).frame
    assert total.row(0) == pytest.approx((source.height, source["amount"].sum(), source.height))
    _same_rows(table, pg_dsn, source)

    again = _tier(pg_dsn, table)
    assert again.partitions == [], "tiering twice moved something twice"
    assert _states(sql, table, "cold") == {m: counts[m] for m in old}


def test_the_cutoff_is_the_whole_period_ending_by_now_minus_the_archive_age(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = _frame(600)
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn)
    moves = {p.partition for p in _tier(pg_dsn, table, now=dt.datetime(2025, 7, 30, tzinfo=dt.UTC),
                                        dry_run=True).partitions}
    assert moves == {_child(table, m) for m in MONTHS[:4]}, "April ends exactly at now - 90 days: it moves"
    just_before = dt.datetime(2025, 7, 29, 23, 59, 59, tzinfo=dt.UTC)
    moves = {p.partition for p in _tier(pg_dsn, table, now=just_before, dry_run=True).partitions}
    assert moves == {_child(table, m) for m in MONTHS[:3]}, "April ends one second after the cutoff"
    # 01:00 in UTC+2 is still the 29th in UTC: April has not ended 90 days before
    madrid = dt.datetime(2025, 7, 30, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    moves = {p.partition for p in _tier(pg_dsn, table, now=madrid, dry_run=True).partitions}
    assert moves == {_child(table, m) for m in MONTHS[:3]}
    moves = {p.partition for p in _tier(pg_dsn, table, policy=TierPolicy(archive_days=30), dry_run=True).partitions}
    assert moves == {_child(table, m) for m in _old(days=30)} == {_child(table, m) for m in MONTHS}
    assert _children(sql, table) == {_child(table, m) for m in MONTHS}


def test_timestamptz_dataset_with_sessions_in_another_time_zone(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition bounds are UTC midnights; PostgreSQL prints them in the session's zone. Every connection here
    (libpq reads PGTZ) is in Lima, UTC-5, where January starts on '2024-12-31 19:00:00-05'."""
    monkeypatch.setenv("PGTZ", "America/Lima")
    source = _frame(1_200).with_columns(pl.col("created_at").dt.replace_time_zone("UTC"))
    late = _frame(120, first_id=100_000).with_columns(pl.col("created_at").dt.replace_time_zone("UTC")) \
        .filter(pl.col("created_at").dt.month() == 1)
    source.write_parquet(tmp_path / "orders.parquet")
    late.write_parquet(tmp_path / "late.parquet")
    _load(tmp_path / "orders.parquet", table, pg_dsn)
    _load(tmp_path / "late.parquet", table, pg_dsn, archive=False)
    assert "timestamp with time zone" in str(sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                                 "WHERE attrelid = to_regclass($1) AND attname = 'created_at'",
                                                 [f'"{table}"'])[0][0])
    everything = pl.concat([source, late])
    counts = _month_counts(everything)
    report = _tier(pg_dsn, table)
    assert [(p.partition, p.period, p.rows, p.how) for p in report.partitions] == \
        [(_child(table, m), m.isoformat(), counts[m], "snapshot" if m == MONTHS[0] else "verified")
         for m in MONTHS[:4]]
    assert _states(sql, table, "cold") == {m: counts[m] for m in MONTHS[:4]}
    frame = run_query(f'SELECT count(*) AS n, count(DISTINCT id) AS d, min(created_at) AS lo FROM "{table}"',
                      dsn=pg_dsn, cache=False).frame
    assert frame.row(0)[:2] == (everything.height, everything.height)
    assert frame["lo"].dt.convert_time_zone("UTC").dt.replace_time_zone(None).item() == START
    back = restore(table, start=MONTHS[0], end=MONTHS[0], dsn=pg_dsn)
    assert (back.periods, back.rows) == (["2025-01-01"], counts[MONTHS[0]])
    assert int(sql(f'SELECT count(*) FROM "{_child(table, MONTHS[0])}"')[0][0]) == counts[MONTHS[0]]


def test_datasets_filter_takes_either_spelling_and_leaves_other_datasets_alone(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = _frame(600)
    other = f"{table}_other"
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn)
    _load(tmp_path / "orders.csv", other, pg_dsn)
    report = tier(dsn=pg_dsn, now=NOW, datasets=[f"public.{table}"], uploads=False)
    assert {p.dataset for p in report.partitions} == {table}
    assert len(report.partitions) == 4
    assert _children(sql, other) == {_child(other, m) for m in MONTHS}, "another dataset was tiered"
    assert _states(sql, other, "cold") == {}


# --- 2. restore ---------------------------------------------------------------------------------------------
def test_restore_brings_back_exactly_the_overlapping_periods_once(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = _frame(6_000)
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn)
    counts = _month_counts(source)
    assert len(_tier(pg_dsn, table).partitions) == 4

    # [Feb 1, Mar 1]: February and March overlap it; January ends (exclusively) on Feb 1, April starts after
    back = restore(table, start=dt.date(2025, 2, 1), end=dt.date(2025, 3, 1), dsn=pg_dsn)
    assert back.dataset == table
    assert back.periods == ["2025-02-01", "2025-03-01"]
    assert back.rows == counts[MONTHS[1]] + counts[MONTHS[2]]
    assert back.files == 6  # one file per connection and period
    assert _children(sql, table) == {_child(table, m) for m in MONTHS[1:3] + MONTHS[4:]}
    for m in MONTHS[1:3]:
        n = sql(f'SELECT count(*) FROM "{_child(table, m)}"')[0][0]
        assert n == counts[m]
    assert _states(sql, table, "cold") == {m: counts[m] for m in (MONTHS[0], MONTHS[3])}
    assert _states(sql, table, "hot") == {m: counts[m] for m in MONTHS[1:3] + MONTHS[4:]}
    _same_rows(table, pg_dsn, source)

    manifest = _manifest(sql, table)
    again = restore(f"public.{table}", start=dt.date(2025, 2, 1), end=dt.date(2025, 3, 1), dsn=pg_dsn)
    assert (again.rows, again.files, again.periods) == (0, 0, [])
    assert int(sql(f'SELECT count(*) FROM "{table}"')[0][0]) == sum(counts[m] for m in MONTHS[1:3] + MONTHS[4:])
    assert _manifest(sql, table) == manifest

    retier = _tier(pg_dsn, table)
    assert [(p.partition, p.rows, p.how) for p in retier.partitions] == \
        [(_child(table, m), counts[m], "verified") for m in MONTHS[1:3]]
    assert _children(sql, table) == {_child(table, m) for m in MONTHS[4:]}
    assert _states(sql, table, "cold") == {m: counts[m] for m in MONTHS[:4]}
    _same_rows(table, pg_dsn, source)

    # a range covering everything brings the four back: PostgreSQL alone holds every row again
    everything = restore(table, start=dt.date(2000, 1, 1), end=dt.date(2030, 1, 1), dsn=pg_dsn)
    assert everything.rows == sum(counts[m] for m in MONTHS[:4])
    assert _children(sql, table) == {_child(table, m) for m in MONTHS}
    assert _states(sql, table, "cold") == {}
    assert_frame_equal(_pg_rows(sql, table), _sorted(source))


def test_restore_of_a_range_with_nothing_cold_is_a_no_op(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = _frame(600)
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn)
    _tier(pg_dsn, table)
    manifest = _manifest(sql, table)
    none = restore(table, start=dt.date(2025, 5, 1), end=dt.date(2025, 6, 30), dsn=pg_dsn)
    assert (none.rows, none.files, none.periods) == (0, 0, [])
    before_jan = restore(table, start=dt.date(2024, 1, 1), end=dt.date(2024, 12, 31), dsn=pg_dsn)
    assert (before_jan.rows, before_jan.files, before_jan.periods) == (0, 0, [])
    assert _children(sql, table) == {_child(table, m) for m in MONTHS[4:]}
    assert _manifest(sql, table) == manifest


def test_restore_of_a_lost_cold_file_fails_and_changes_nothing_of_that_period(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = _frame(600)
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn)
    _tier(pg_dsn, table)
    counts = _month_counts(source)
    lost = str(sql("SELECT uri FROM biconic.archive_files WHERE dataset = $1 AND period = $2 AND connection_id = '3'",
                   [table, MONTHS[2]])[0][0])
    Path(lost).unlink()
    with pytest.raises(ArchiveError, match="cannot read it back") as err:
        restore(table, start=MONTHS[1], end=MONTHS[2], dsn=pg_dsn)
    assert lost in str(err.value)
    # February (restored first) committed; March rolled back whole: no partition, its files still cold
    assert _children(sql, table) == {_child(table, m) for m in [MONTHS[1], *MONTHS[4:]]}
    assert not _exists(sql, _child(table, MONTHS[2]))
    assert _states(sql, table, "cold") == {m: counts[m] for m in (MONTHS[0], MONTHS[2], MONTHS[3])}
    assert sql("SELECT count(*) FROM biconic.loads WHERE dataset = $1 AND mode = 'restore' "
               "AND partition_key = $2", [table, MONTHS[2].isoformat()])[0][0] == 0


def test_late_rows_for_a_tiered_month_are_counted_once_then_tiered_and_restored(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = _frame(1_200)
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn)
    _tier(pg_dsn, table)
    late = _frame(300, first_id=50_000).filter(pl.col("created_at").dt.month() == 2)
    _load(_write(late, tmp_path / "late.csv"), table, pg_dsn)
    # February is back in PostgreSQL with the late rows only; its old rows are still cold
    assert int(sql(f'SELECT count(*) FROM "{_child(table, MONTHS[1])}"')[0][0]) == late.height
    everything = pl.concat([source, late])
    _same_rows(table, pg_dsn, everything)

    report = _tier(pg_dsn, table)
    assert [(p.partition, p.rows, p.how) for p in report.partitions] == \
        [(_child(table, MONTHS[1]), late.height, "verified")]
    counts = _month_counts(everything)
    assert _states(sql, table, "cold") == {m: counts[m] for m in MONTHS[:4]}

    back = restore(table, start=MONTHS[1], end=MONTHS[1], dsn=pg_dsn)
    assert back.rows == counts[MONTHS[1]]
    assert int(sql(f'SELECT count(*) FROM "{_child(table, MONTHS[1])}"')[0][0]) == counts[MONTHS[1]]
    _same_rows(table, pg_dsn, everything)


def test_merge_into_a_tiered_period_is_refused_until_restored(tmp_path: Path, pg_dsn: str, table: str) -> None:
    """A merge only sees PostgreSQL: updating a key whose row is cold would leave two versions. It stops with a
    clear error (nothing committed), and after a restore the same merge keeps one version of each key."""
    first = _frame(300)
    _load(_write(first, tmp_path / "first.csv"), table, pg_dsn, mode="merge", key="id")
    _tier(pg_dsn, table)
    update = first.filter(pl.col("created_at").dt.month() == 1).head(5).with_columns(pl.col("amount") + 1000)
    with pytest.raises(SpecError, match=r"tiered out to the archive; run `biconic restore"):
        _load(_write(update, tmp_path / "update.csv"), table, pg_dsn, mode="merge", key="id")
    _same_rows(table, pg_dsn, first)  # nothing of the refused merge is visible
    restore(table, start=MONTHS[0], end=MONTHS[0], dsn=pg_dsn)
    _load(tmp_path / "update.csv", table, pg_dsn, mode="merge", key="id")
    _same_rows(table, pg_dsn, first.update(update, on="id"))


# --- 3. the snapshot path -----------------------------------------------------------------------------------
def test_merged_dataset_is_snapshotted_and_the_query_returns_postgres_merged_rows(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    first = _frame(3_000)
    updates = first.filter(pl.col("id") % 2 == 0).with_columns(pl.col("amount") * 3 + 7)
    _load(_write(first, tmp_path / "first.csv"), table, pg_dsn, mode="merge", key="id")
    _load(_write(updates, tmp_path / "updates.csv"), table, pg_dsn, mode="merge", key="id")
    merged = first.update(updates, on="id")
    assert int(sql(f'SELECT count(*) FROM "{table}"')[0][0]) == first.height
    archived = sum(_states(sql, table, "hot").values())
    assert archived == first.height + updates.height, "the archive holds every version of a merged row"
    before = _rows(table, pg_dsn)  # hot only: PostgreSQL's merged rows
    assert_frame_equal(before, _sorted(merged))
    counts = _month_counts(merged)
    old_files = {str(r[0]) for r in sql("SELECT uri FROM biconic.archive_files WHERE dataset = $1 AND period < $2",
                                        [table, MONTHS[4]])}

    report = _tier(pg_dsn, table)
    assert [(p.partition, p.rows, p.how) for p in report.partitions] == \
        [(_child(table, m), counts[m], "snapshot") for m in MONTHS[:4]]
    superseded = {str(r[0]) for r in sql("SELECT uri FROM biconic.archive_files WHERE dataset = $1 "
                                         "AND state = 'superseded'", [table])}
    assert superseded == old_files
    snapshots = sql("SELECT load_key, period, rows FROM biconic.archive_files WHERE dataset = $1 AND state = 'cold'",
                    [table])
    assert all(str(k).startswith("snapshot-") for k, _, _ in snapshots)
    assert _states(sql, table, "cold") == {m: counts[m] for m in MONTHS[:4]}
    assert_frame_equal(_rows(table, pg_dsn), before)

    # the snapshot comes back as it went
    back = restore(table, start=MONTHS[0], end=MONTHS[3], dsn=pg_dsn)
    assert back.rows == sum(counts[m] for m in MONTHS[:4])
    assert_frame_equal(_pg_rows(sql, table), before)
    assert [p.how for p in _tier(pg_dsn, table).partitions] == ["verified"] * 4
    assert_frame_equal(_rows(table, pg_dsn), before)


def test_a_load_without_archive_is_snapshotted(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    source = _frame(3_000)
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn, archive=False)
    assert _manifest(sql, table) == {}
    report = _tier(pg_dsn, table)
    counts = _month_counts(source)
    assert [(p.partition, p.rows, p.how) for p in report.partitions] == \
        [(_child(table, m), counts[m], "snapshot") for m in MONTHS[:4]]
    assert _states(sql, table, "cold") == {m: counts[m] for m in MONTHS[:4]}
    assert _states(sql, table, "superseded") == {}
    _same_rows(table, pg_dsn, source)


def test_a_lost_or_torn_archive_file_is_not_trusted(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """Verification reads the files' footers, not the manifest's counts: a file gone from the archive, or cut
    short, makes its partition a snapshot (PostgreSQL still holds the rows), and the bad file is superseded."""
    source = _frame(3_000)
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn)
    files = {(r[0], int(r[1])): str(r[2]) for r in sql(
        "SELECT period, connection_id, uri FROM biconic.archive_files WHERE dataset = $1", [table])}
    lost, torn = files[(MONTHS[0], 2)], files[(MONTHS[2], 3)]
    Path(lost).unlink()
    Path(torn).write_bytes(Path(torn).read_bytes()[:100])
    counts = _month_counts(source)

    report = _tier(pg_dsn, table)
    assert [(p.partition, p.rows, p.how) for p in report.partitions] == [
        (_child(table, MONTHS[0]), counts[MONTHS[0]], "snapshot"),
        (_child(table, MONTHS[1]), counts[MONTHS[1]], "verified"),
        (_child(table, MONTHS[2]), counts[MONTHS[2]], "snapshot"),
        (_child(table, MONTHS[3]), counts[MONTHS[3]], "verified")]
    superseded = {str(r[0]) for r in sql("SELECT uri FROM biconic.archive_files WHERE dataset = $1 "
                                         "AND state = 'superseded'", [table])}
    assert {lost, torn} <= superseded
    assert superseded == {u for (m, _), u in files.items() if m in (MONTHS[0], MONTHS[2])}
    assert _states(sql, table, "cold") == {m: counts[m] for m in MONTHS[:4]}
    _same_rows(table, pg_dsn, source)


def test_merge_plus_unarchived_rows_with_matching_counts_are_still_snapshotted(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """A merge leaves stale versions in the archive (more rows than PostgreSQL), a load without archive leaves
    rows PostgreSQL has and the archive has not (fewer): together the counts can match while the contents do
    not. Verifying by count alone would tier out the stale versions and drop the unarchived rows."""
    first = _frame(1_200)
    updates = first.filter(pl.col("id") % 4 == 0).with_columns(pl.col("amount") + 1000)
    # same connection and time as the updates, new ids: per connection and period, as many rows as the updates
    extra = updates.with_columns(pl.col("id") + 1_000_000, pl.col("amount") - 500)
    _load(_write(first, tmp_path / "first.csv"), table, pg_dsn, mode="merge", key="id")
    _load(_write(updates, tmp_path / "updates.csv"), table, pg_dsn, mode="merge", key="id")
    _load(_write(extra, tmp_path / "extra.csv"), table, pg_dsn, archive=False)
    expected = pl.concat([first.update(updates, on="id"), extra])
    assert int(sql(f'SELECT count(*) FROM "{table}"')[0][0]) == expected.height
    assert sum(_states(sql, table, "hot").values()) == expected.height, "the trap: the counts match"

    report = _tier(pg_dsn, table)
    assert [p.how for p in report.partitions] == ["snapshot"] * 4
    _same_rows(table, pg_dsn, expected)


def test_two_tiering_runs_at_once_move_each_partition_once(tmp_path: Path, pg_dsn: str, table: str,
                                                          sql: Sql) -> None:
    source = _frame(20_000)
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn, archive=False)  # snapshots: each takes a moment
    reports: list[TierReport] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait()
            reports.append(_tier(pg_dsn, table))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    moved = sorted(p.partition for r in reports for p in r.partitions)
    assert moved == sorted(_child(table, m) for m in MONTHS[:4]), "a partition was moved twice, or not at all"
    assert sql("SELECT count(*) FROM biconic.archive_files WHERE dataset = $1", [table])[0][0] == 4 * 3
    _same_rows(table, pg_dsn, source)


# --- 4. kill -9 during tiering --------------------------------------------------------------------------------
_TIER_SCRIPT = textwrap.dedent("""
    import datetime as dt, os, sys, time
    import engine.archive.tiering as tiering
    import engine.postgres.meta as meta
    from engine.postgres.connection import Session

    point = os.environ.get("KILL_AT", "")

    if point == "steps":  # announce every statement, snapshot batch, upload and commit: the test kills at one
        from engine.archive.store import Store
        def announce(cls, name):
            original = getattr(cls, name)
            def announced(*a, **k):
                print("STEP", name, flush=True)
                time.sleep(0.005)
                return original(*a, **k)
            setattr(cls, name, announced)
        for cls, name in [(Session, "run"), (Session, "commit"), (tiering.ArchiveWriter, "add"),
                          (Store, "put_verified")]:
            announce(cls, name)

    def pause():
        print("PAUSED", flush=True)
        time.sleep(600)

    if point == "snapshot-streaming":  # rows half-written to a local snapshot file
        add = tiering.ArchiveWriter.add
        def hooked_add(self, *a, **k):
            add(self, *a, **k)
            pause()
        tiering.ArchiveWriter.add = hooked_add
    elif point == "snapshot-uploaded":  # snapshot files at their final keys, not listed in the manifest
        meta.record_files = lambda *a, **k: pause()
    elif point == "snapshot-listed":  # listed, old files superseded, not committed
        record = meta.record_files
        def hooked_record(*a, **k):
            record(*a, **k)
            pause()
        meta.record_files = hooked_record
    elif point == "dropped":  # cold in the manifest, detached and dropped, not committed
        run = Session.run
        def hooked_run(self, sql, *a, **k):
            rows = run(self, sql, *a, **k)
            if sql.startswith("DROP TABLE"):
                pause()
            return rows
        Session.run = hooked_run
    elif point == "committed":  # the first partition committed, the next not begun
        commit, run = Session.commit, Session.run
        dropped = []
        def noting_run(self, sql, *a, **k):
            rows = run(self, sql, *a, **k)
            if sql.startswith("DROP TABLE"):
                dropped.append(sql)
            return rows
        def hooked_commit(self, *a, **k):
            commit(self, *a, **k)
            if dropped and not a and not k:  # the data transaction that dropped a partition
                pause()
        Session.run, Session.commit = noting_run, hooked_commit

    print("READY", flush=True)
    tiering.tier(dsn=os.environ["TIER_DSN"], now=dt.datetime.fromisoformat(os.environ["TIER_NOW"]),
                 datasets=[os.environ["TIER_TABLE"]], uploads=False)
    print("DONE", flush=True)
""")


def _spawn(table: str, dsn: str, errors: Path, point: str = "") -> subprocess.Popen[str]:
    """``tier()`` in a child process; its stderr goes to a file (a pipe nobody reads could fill and stall it)."""
    env = {**os.environ, "KILL_AT": point, "TIER_DSN": dsn, "TIER_NOW": NOW.isoformat(), "TIER_TABLE": table,
           "PYTHONUNBUFFERED": "1"}
    with open(errors, "a") as err:
        return subprocess.Popen([sys.executable, "-c", _TIER_SCRIPT], stdout=subprocess.PIPE, stderr=err, env=env,
                                text=True)


def _wait_for(proc: subprocess.Popen[str], word: str, errors: Path) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == word:
            return
    proc.wait(timeout=30)
    raise AssertionError(f"tiering ended before {word}: rc={proc.returncode}\n{errors.read_text()}")


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()


def _consistent(sql: Sql, table: str, dsn: str, source: pl.DataFrame) -> None:
    """Nothing lost, nothing twice: the query returns the source exactly; each period lives in PostgreSQL or in
    cold files, never both and never neither; listed cold rows equal the period's rows."""
    _same_rows(table, dsn, source)
    counts = _month_counts(source)
    cold = _states(sql, table, "cold")
    hot = _states(sql, table, "hot")
    children = _children(sql, table)
    for m in MONTHS:
        in_pg = _child(table, m) in children
        assert in_pg != (m in cold), f"{m}: in PostgreSQL {in_pg}, cold files {m in cold}"
        if in_pg:
            assert int(sql(f'SELECT count(*) FROM "{_child(table, m)}"')[0][0]) == counts[m]
            assert m not in cold
        else:
            assert cold[m] == counts[m], f"{m}: cold files list {cold[m]} rows, the source has {counts[m]}"
            assert m not in hot


def _kill_dataset(tmp_path: Path, table: str, dsn: str, n: int) -> pl.DataFrame:
    """January and February verified, March and April snapshotted (rows loaded without archive)."""
    source = _frame(n)
    late = _frame(n // 10, first_id=10 * n).filter(pl.col("created_at").dt.month().is_in([3, 4]))
    _load(_write(source, tmp_path / "orders.csv"), table, dsn)
    _load(_write(late, tmp_path / "late.csv"), table, dsn, archive=False)
    return pl.concat([source, late])


@pytest.mark.slow
@pytest.mark.parametrize("point", ["snapshot-streaming", "snapshot-uploaded", "snapshot-listed", "dropped",
                                   "committed"])
def test_kill_9_at_each_step_of_tiering_then_rerun_loses_nothing(
        tmp_path: Path, pg_dsn: str, table: str, sql: Sql, point: str) -> None:
    source = _kill_dataset(tmp_path, table, pg_dsn, 3_000)
    errors = tmp_path / "tier.err"
    proc = _spawn(table, pg_dsn, errors, point)
    try:
        _wait_for(proc, "PAUSED", errors)
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    _consistent(sql, table, pg_dsn, source)
    first = {p.partition for p in _tier(pg_dsn, table).partitions}
    assert not any(_exists(sql, _child(table, m)) for m in MONTHS[:4])
    _consistent(sql, table, pg_dsn, source)
    # what the killed run committed is not done again, what it did not commit is
    done_before_kill = {"committed": {_child(table, MONTHS[0])}, "dropped": set()}.get(point, {
        _child(table, MONTHS[0]), _child(table, MONTHS[1])})
    assert first == {_child(table, m) for m in MONTHS[:4]} - done_before_kill
    listed = sql("SELECT count(*) FROM biconic.archive_files WHERE dataset = $1 AND load_key LIKE 'snapshot-%'",
                 [table])[0][0]
    assert listed == 2 * 3, "one snapshot file per connection for March and April, none from the killed run"


@pytest.mark.slow
def test_kill_9_at_random_points_then_rerun_loses_nothing(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """Runs killed at a random step (statement, snapshot batch, upload, commit) plus a random few milliseconds,
    one after another on the same dataset; after each, and after the final in-process run, nothing is lost."""
    source = _kill_dataset(tmp_path, table, pg_dsn, 12_000)
    rng = random.Random(20250815)
    killed, seen = 0, set()
    errors = tmp_path / "tier.err"
    for _ in range(4):
        at = rng.randint(1, 30)  # a whole run is about 70 steps, a partition about 15
        proc = _spawn(table, pg_dsn, errors, "steps")
        try:
            assert proc.stdout is not None
            steps = 0
            for line in proc.stdout:
                steps += line.startswith("STEP")
                if steps == at:
                    time.sleep(rng.uniform(0, 0.01))
                    _kill(proc)
                    killed += 1
                    break
                if line.strip() == "DONE":
                    break
            if proc.poll() is None or proc.returncode != -signal.SIGKILL:
                assert proc.wait(timeout=30) == 0, errors.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
        tiered = len([m for m in MONTHS[:4] if not _exists(sql, _child(table, m))])
        seen.add(tiered)
        _consistent(sql, table, pg_dsn, source)
        if tiered == 4:
            break
    assert killed >= 3 and seen & {1, 2, 3}, f"the kills never landed part-way ({killed} kills, {seen})"
    _tier(pg_dsn, table)
    assert _children(sql, table) == {_child(table, m) for m in MONTHS[4:]}
    _consistent(sql, table, pg_dsn, source)
    assert _tier(pg_dsn, table).partitions == []


# --- 5. S3 --------------------------------------------------------------------------------------------------
@pytest.mark.s3
def test_s3_round_trip(tmp_path: Path, pg_dsn: str, table: str, sql: Sql, s3_archive: str) -> None:
    # one connection, given on the command line (not a column): one file per month keeps the S3 traffic small
    source = _frame(3_000).with_columns(connection_id=pl.lit(7, pl.Int64))
    late = _frame(300, first_id=100_000).filter(pl.col("created_at").dt.month() == 2) \
        .with_columns(connection_id=pl.lit(7, pl.Int64))
    _load(_write(source.drop("connection_id"), tmp_path / "orders.csv"), table, pg_dsn, archive=s3_archive,
          connection_id=7)
    _load(_write(late.drop("connection_id"), tmp_path / "late.csv"), table, pg_dsn, archive=False, connection_id=7)
    everything = pl.concat([source, late])
    counts = _month_counts(everything)
    uris = [str(r[0]) for r in sql("SELECT uri FROM biconic.archive_files WHERE dataset = $1", [table])]
    assert uris and all(u.startswith(s3_archive + "/") for u in uris)

    report = tier(dsn=pg_dsn, archive=s3_archive, now=NOW, datasets=[table], uploads=False)
    assert [(p.partition, p.rows, p.how) for p in report.partitions] == [
        (_child(table, MONTHS[0]), counts[MONTHS[0]], "verified"),
        (_child(table, MONTHS[1]), counts[MONTHS[1]], "snapshot"),
        (_child(table, MONTHS[2]), counts[MONTHS[2]], "verified"),
        (_child(table, MONTHS[3]), counts[MONTHS[3]], "verified")]
    cold = [str(r[0]) for r in sql("SELECT uri FROM biconic.archive_files WHERE dataset = $1 AND state = 'cold'",
                                   [table])]
    assert cold and all(u.startswith(s3_archive + "/") for u in cold)
    assert _states(sql, table, "cold") == {m: counts[m] for m in MONTHS[:4]}
    _same_rows(table, pg_dsn, everything, archive=s3_archive)

    back = restore(table, start=MONTHS[1], end=MONTHS[1], dsn=pg_dsn, archive=s3_archive)
    assert (back.periods, back.rows) == (["2025-02-01"], counts[MONTHS[1]])
    assert int(sql(f'SELECT count(*) FROM "{_child(table, MONTHS[1])}"')[0][0]) == counts[MONTHS[1]]
    assert restore(table, start=MONTHS[1], end=MONTHS[1], dsn=pg_dsn, archive=s3_archive).rows == 0
    rest = restore(table, start=MONTHS[0], end=MONTHS[5], dsn=pg_dsn, archive=s3_archive)
    assert rest.periods == ["2025-01-01", "2025-03-01", "2025-04-01"]
    assert _children(sql, table) == {_child(table, m) for m in MONTHS}
    assert _states(sql, table, "cold") == {}
    assert_frame_equal(_pg_rows(sql, table), _sorted(everything))


# --- 6. errors ----------------------------------------------------------------------------------------------
def test_tier_with_archiving_off_is_a_spec_error(pg_dsn: str, table: str) -> None:
    with pytest.raises(SpecError, match="archiv"):
        tier(dsn=pg_dsn, archive="off", now=NOW, datasets=[table], uploads=False)


def test_restore_to_before_from_is_a_spec_error(pg_dsn: str, table: str) -> None:
    with pytest.raises(SpecError, match="before") as err:
        restore(table, start=dt.date(2025, 3, 1), end=dt.date(2025, 2, 1), dsn=pg_dsn)
    assert "2025-02-01" in str(err.value) and "2025-03-01" in str(err.value)


def test_restore_of_an_unknown_dataset_is_a_spec_error(pg_dsn: str, table: str) -> None:
    with pytest.raises(SpecError) as err:
        restore(f"{table}_nope", start=dt.date(2025, 1, 1), end=dt.date(2025, 2, 1), dsn=pg_dsn)
    assert f"{table}_nope" in str(err.value)
    assert err.value.exit_code == 2


def test_tier_of_an_unknown_dataset_is_a_spec_error(tmp_path: Path, pg_dsn: str, table: str) -> None:
    _load(_write(_frame(300), tmp_path / "orders.csv"), table, pg_dsn)
    with pytest.raises(SpecError) as err:
        tier(dsn=pg_dsn, now=NOW, datasets=[f"{table}_nope"], uploads=False)
    assert f"{table}_nope" in str(err.value)


# --- connection ids that are UUIDs (issue 11) ------------------------------------------------------------------
UUIDS = ["3f2504e0-4f89-11d3-9a0c-0305e82c3301", "9b2e6c1a-0d4f-4a8e-b1c2-7f3e5d6a8b90",
         "c0ffee00-0000-4000-8000-000000000001"]


@pytest.mark.parametrize("archived", [True, False])  # False: the partitions are snapshotted when tiered
def test_uuid_connections_tier_query_and_restore(tmp_path: Path, pg_dsn: str, table: str, sql: Sql,
                                                 archived: bool) -> None:
    source = _frame(600).with_columns(pl.col("connection_id").map_elements(lambda i: UUIDS[i - 1],
                                                                            return_dtype=pl.String))
    _load(_write(source, tmp_path / "orders.csv"), table, pg_dsn, archive=None if archived else False)
    report = _tier(pg_dsn, table)
    assert [p.how for p in report.partitions] == ["verified" if archived else "snapshot"] * 4
    files = sql("SELECT uri, connection_id FROM biconic.archive_files WHERE dataset = $1 AND state = 'cold'",
                [table])
    assert {str(c) for _, c in files} == set(UUIDS)
    assert all(f"/connection_id={c}/" in str(u) for u, c in files)
    # hot PostgreSQL rows (uuid) and cold archive rows (their text) answer one query, compared with a UUID
    want = source.group_by("connection_id").len().sort("connection_id")
    got = run_query(f'SELECT connection_id::text AS connection_id, count(*) AS len FROM "{table}" GROUP BY 1 '
                    "ORDER BY 1", dsn=pg_dsn, cache=False).frame
    assert got.rows() == want.rows()
    one = run_query(f"SELECT count(*) AS n FROM \"{table}\" WHERE connection_id = '{UUIDS[1]}'", dsn=pg_dsn,
                    cache=False).frame
    assert one.item() == source.filter(pl.col("connection_id") == UUIDS[1]).height
    raw = run_query(f"SELECT count(*) AS n FROM archive.\"{table}\" WHERE connection_id = '{UUIDS[0]}'",
                    dsn=pg_dsn, cache=False).frame
    cold = source.filter(pl.col("created_at") < dt.datetime(2025, 5, 1))
    assert raw.item() >= cold.filter(pl.col("connection_id") == UUIDS[0]).height
    back = restore(table, start=MONTHS[0], end=MONTHS[3], dsn=pg_dsn)
    assert back.rows == cold.height
    rows = sql(f'SELECT connection_id::text, count(*) FROM "{table}" GROUP BY 1 ORDER BY 1')
    assert [(str(c), int(n)) for c, n in rows] == want.rows()
