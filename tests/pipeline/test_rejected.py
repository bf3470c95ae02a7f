"""A load whose rows are (nearly) all rejected is not a success: the partition fails with RejectedError, commits
nothing, and a sample of its rejected rows stays in quarantine (``max_rejected``, engine/pipeline/rejects.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import engine
from engine.errors import PartialLoadError, RejectedError
from engine.pipeline.rejects import SAMPLE_ROWS
from tests.support import Sql, accounted, quarantine_rows, row_count

RANGE = {"rules": [{"range": {"column": "amount", "min": 0}}]}


def _amounts(path: Path, good: int, bad: int, *, filtered: int = 0) -> Path:
    """A CSV of ``good`` rows with amount 1, ``bad`` with amount -1 and ``filtered`` with kind 'skip'."""
    lines = ["id,day,amount,kind"]
    kinds = [("1", "keep")] * good + [("-1", "keep")] * bad + [("1", "skip")] * filtered
    lines += [f"{i},2024-01-{1 + i % 28:02d},{amount},{kind}" for i, (amount, kind) in enumerate(kinds)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ledger(sql: Sql, table: str) -> int:
    return int(sql("SELECT count(*) FROM biconic.loads WHERE dataset = $1", [table])[0][0])


def test_every_row_rejected_fails_commits_nothing_and_keeps_a_sample(tmp_path: Path, pg_dsn: str, table: str,
                                                                     sql: Sql) -> None:
    """A platform export whose ids are of the wrong kind (UUIDs into a bigint connection_id) used to load as 0
    of N rows, exit 0."""
    first = tmp_path / "first.csv"
    first.write_text("connection_id,day,amount\n7,2024-01-01,1\n")
    engine.load(first, into=table, dsn=pg_dsn)  # the dataset's connection_id is bigint from now on
    path = tmp_path / "export.csv"
    path.write_text("connection_id,day,amount\n" +
                    "".join(f"{i:08x}-4f89-11d3-9a0c-0305e82c3301,2024-01-02,{i}\n" for i in range(1500)))
    with pytest.raises(RejectedError) as info:
        engine.load(path, into=table, dsn=pg_dsn, max_rejected=1.0)  # even a 100% limit: every row is too many
    err = info.value
    assert err.exit_code == 3 and (err.rejected, err.rows) == (1500, 1500)
    message = str(err)
    assert message.startswith("export.csv: 1,500 of 1,500 rows rejected (every row): type on 'connection_id': 1,500")
    assert "00000000-4f89" in message and "nothing of it was committed" in message and err.load_id in message
    assert "connection ids are not of the kind the dataset's connection_id column was created with" in message
    assert "\n" not in message
    assert row_count(sql, table) == 1
    assert _ledger(sql, table) == 1
    kept = quarantine_rows(sql, table)
    assert len(kept) == SAMPLE_ROWS == err.kept
    assert {r["load_id"] for r in kept} == {err.load_id} and {r["rule"] for r in kept} == {"type"}
    assert [r["row_number"] for r in kept[:2]] == [2, 3]  # the first rejected rows, by their line numbers


@pytest.mark.parametrize(("good", "bad", "limit", "fails"), [
    (20, 20, None, False),   # 50% is not over the default 50%
    (19, 21, None, True),    # 52.5% is
    (30, 10, "25%", False),
    (29, 11, "25%", True),
    (30, 10, 0.25, False),
    (29, 11, "0.25", True),
    (3, 9, None, False),     # 75%, but 9 rejected rows are under the floor of a share
    (35, 5, 5, False),       # a count: 5 rejected rows allowed
    (34, 6, "5", True),
    (39, 1, 0, True),        # a count has no floor
    (0, 3, "off", False),    # off: not even every row rejected fails
])
def test_share_or_count_just_under_and_over_the_limit(tmp_path: Path, pg_dsn: str, table: str, sql: Sql, good: int,
                                                      bad: int, limit: object, fails: bool) -> None:
    path = _amounts(tmp_path / "a.csv", good, bad)
    if fails:
        with pytest.raises(RejectedError):
            engine.load(path, into=table, dsn=pg_dsn, spec=RANGE, max_rejected=limit)  # type: ignore[arg-type]
        assert _ledger(sql, table) == 0
        assert sql("SELECT to_regclass($1)", [f'"{table}"']) == [(None,)]  # a failed first load leaves no table
        return
    report = engine.load(path, into=table, dsn=pg_dsn, spec=RANGE, max_rejected=limit)  # type: ignore[arg-type]
    accounted(report)
    assert (report.rows_loaded, report.rows_quarantined) == (good, bad)


def test_filtered_rows_are_not_rejections_nor_counted_in_the_share(tmp_path: Path, pg_dsn: str, table: str) -> None:
    spec = {**RANGE, "steps": [{"filter": "kind = 'keep'"}]}
    ok = engine.load(_amounts(tmp_path / "ok.csv", 10, 0, filtered=90), into=table, dsn=pg_dsn, spec=spec)
    assert (ok.rows_loaded, ok.rows_filtered, ok.rows_quarantined) == (10, 90, 0)
    # 21 of 100 rows rejected would pass; 21 of the 40 rows left after the filter do not
    with pytest.raises(RejectedError) as info:
        engine.load(_amounts(tmp_path / "bad.csv", 19, 21, filtered=60), into=table, dsn=pg_dsn, spec=spec)
    assert (info.value.rejected, info.value.rows) == (21, 40)
    assert "over --max-rejected 50%" in str(info.value) and "range on 'amount': 21" in str(info.value)


def test_a_file_in_the_wrong_encoding_fails_with_the_encoding_hint(tmp_path: Path, pg_dsn: str, table: str,
                                                                   sql: Sql) -> None:
    path = tmp_path / "clientes.csv"
    lines = ["id,nombre,day"] + [f"{i},Peña Muñoz {i},2024-02-{1 + i % 28:02d}" for i in range(40)]
    path.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(RejectedError) as info:  # told UTF-8 (not told, the file's encoding is detected)
        engine.load(path, into=table, dsn=pg_dsn, options={"encoding": "utf-8"})
    message = str(info.value)
    assert "40 of 40 rows rejected" in message and "invalid_utf8 on 'nombre': 40" in message
    assert "wrong encoding? try --option encoding=latin-1" in message
    assert _ledger(sql, table) == 0 and len(quarantine_rows(sql, table)) == 40
    report = engine.load(path, into=table, dsn=pg_dsn, options={"encoding": "latin-1"})  # the hint works
    assert (report.rows_loaded, report.rows_quarantined) == (40, 0)


def test_replace_rolls_back_as_a_whole(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    engine.load(_amounts(tmp_path / "old.csv", 5, 0), into=table, dsn=pg_dsn, spec=RANGE)
    folder = tmp_path / "new"
    folder.mkdir()
    _amounts(folder / "a.csv", 7, 0)
    _amounts(folder / "b.csv", 0, 12)
    with pytest.raises(RejectedError) as info:
        engine.load(folder, into=table, dsn=pg_dsn, spec=RANGE, mode="replace")
    assert info.value.source == "b.csv"
    assert row_count(sql, table) == 5  # the old rows, untouched: a.csv's rows rolled back with the rest
    assert len(sql("SELECT 1 FROM biconic.quarantine WHERE load_id = $1", [info.value.load_id])) == 12


def test_each_file_is_judged_on_its_own_rows(tmp_path: Path, pg_dsn: str, table: str, sql: Sql) -> None:
    """append: a good file commits, a bad one beside it fails alone (its rows would be 12 of 112 together)."""
    folder = tmp_path / "in"
    folder.mkdir()
    _amounts(folder / "a.csv", 100, 0)
    _amounts(folder / "b.csv", 0, 12)
    with pytest.raises(PartialLoadError) as info:
        engine.load(folder, into=table, dsn=pg_dsn, spec=RANGE)
    [(label, error)] = info.value.failures
    assert label == "b.csv" and isinstance(error, RejectedError) and error.source == "b.csv"
    assert quarantine_rows(sql, table) and info.value.exit_code == 3  # its sample is kept
    assert row_count(sql, table) == 100 and _ledger(sql, table) == 1


def test_run_reports_each_load_as_it_commits(tmp_path: Path, pg_dsn: str, table: str) -> None:
    _amounts(tmp_path / "good.csv", 3, 0)
    _amounts(tmp_path / "bad.csv", 0, 3)
    rules = "rules: [{range: {column: amount, min: 0}}]"
    (tmp_path / "p.yaml").write_text(f"loads:\n  - {{source: good.csv, target: {{table: {table}}}, {rules}}}\n"
                                     f"  - {{source: bad.csv, target: {{table: {table}_b}}, {rules}}}\n")
    seen: list[engine.LoadReport] = []
    with pytest.raises(RejectedError):
        engine.run(tmp_path / "p.yaml", dsn=pg_dsn, on_report=seen.append)
    assert [(r.table, r.rows_loaded) for r in seen] == [(table, 3)]


def test_a_failed_load_keeps_its_sample_at_hand_until_a_fixed_load_supersedes_it(tmp_path: Path, pg_dsn: str,
                                                                                    table: str) -> None:
    """Issue 11: the rejected sample of a failed load is what ``biconic quarantine`` shows (the error names the
    command), and the fixed file's successful load marks it superseded."""
    from click.testing import CliRunner

    from engine.cli import cli

    path = tmp_path / "clientes.csv"
    lines = ["id,nombre,day"] + [f"{i},Peña {i},2024-02-{1 + i % 28:02d}" for i in range(30)]
    path.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(RejectedError) as info:
        engine.load(path, into=table, dsn=pg_dsn, options={"encoding": "utf-8"})
    failed = info.value.load_id
    assert f"biconic quarantine {table} --load {failed}" in str(info.value)
    shown = CliRunner().invoke(cli, ["quarantine", table, "--dsn", pg_dsn, "--json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.stdout)
    assert len(rows) == 30 and {r["load_id"] for r in rows} == {failed} and rows[0]["row_number"] == 2
    assert {r["rule"] for r in rows} == {"invalid_utf8"} and all(r["reason"] for r in rows)
    fixed = engine.load(path, into=table, dsn=pg_dsn, options={"encoding": "latin-1"})
    assert fixed.rows_loaded == 30
    assert engine.quarantined(table, dsn=pg_dsn) == []
    old = engine.quarantined(table, load_id=failed, superseded=True, limit=100, dsn=pg_dsn)
    assert len(old) == 30 and {r["superseded_by"] for r in old} == {fixed.load_id}
