"""A dataset's index set as users write it: parsed, checked, and the default set (engine.index_set)."""

from __future__ import annotations

import pytest

from engine.errors import SpecError
from engine.index_set import IndexSpec, default_indexes, index_set, parse_index
from engine.spec.models import TargetSpec


@pytest.mark.parametrize(("text", "method", "columns"), [
    ("gist(area)", "gist", (("area", ""),)),
    ("(connection_id, created_at desc)", "btree", (("connection_id", ""), ("created_at", "DESC"))),
    ("  BRIN( created_at )", "brin", (("created_at", ""),)),
    ('btree("Fecha de alta" ASC, total)', "btree", (("Fecha de alta", "ASC"), ("total", ""))),
])
def test_parse_the_forms_users_write(text: str, method: str, columns: tuple[tuple[str, str], ...]) -> None:
    spec = parse_index(text)
    assert (spec.method, spec.columns) == (method, columns)
    assert parse_index(spec.text()) == spec


@pytest.mark.parametrize("text", ["rtree(a)", "btree()", "btree(a,,b)", "created_at", "btree(a"])
def test_a_bad_index_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"method\(column \[asc\|desc\], \.\.\.\)"):
        parse_index(text)


def test_the_default_is_brin_on_time_and_the_composite_btree_under_their_usual_names() -> None:
    brin, composite = default_indexes("created_at")
    assert brin.definition() == 'USING brin ("created_at")'
    assert composite.definition() == 'USING btree ("connection_id", "created_at" DESC)'
    assert [s.name("sales.orders") for s in (brin, composite)] == ["orders_time_brin", "orders_conn_time_idx"]
    assert index_set(None, "created_at") == (brin, composite)
    # declared again, a default keeps its name (an existing table is not given a twin); others are named by
    # their columns and method
    declared = index_set(["btree(connection_id, created_at desc)", "gist(area)"], "created_at")
    assert declared[0] == composite
    assert declared[1].name("orders") == "orders_area_gist_idx"
    assert index_set([], "created_at") == ()


def test_a_long_index_name_is_cut_to_fit_postgresql() -> None:
    spec = IndexSpec("btree", tuple((f"column_with_a_long_name_{i}", "") for i in range(4)))
    assert len(spec.name("a_table_with_a_long_name_too").encode()) <= 63


def test_the_target_checks_indexes_before_anything_runs() -> None:
    target = TargetSpec(table="t", indexes=["GIST(area)", "(a, b DESC)"])
    assert target.indexes == ("gist(area)", "btree(a, b desc)")
    assert TargetSpec(table="t").indexes is None
    assert TargetSpec(table="t", indexes=[]).indexes == ()
    with pytest.raises((SpecError, ValueError), match="rtree"):
        TargetSpec(table="t", indexes=["rtree(a)"])
