"""Micro-benchmarks of the engine's hot pieces (pytest-benchmark); not part of the default test run.

    just bench-micro            # = python -m pytest bench/micro --benchmark-only -q
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from engine.plan.columns import STATUS
from engine.plan.frame import Plan
from engine.plan.rules import apply_rules, finish
from engine.plan.steps import compile_steps
from engine.spec.models import Pipeline
from engine.spec.parse import parse_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from generate import frame  # noqa: E402

SPEC: dict[str, Any] = yaml.safe_load((Path(__file__).resolve().parents[1] / "spec.yaml").read_text())


@pytest.fixture(scope="module")
def orders_1m() -> pl.DataFrame:
    """1M generated orders, with every 1,000th amount negative and every 500th status unknown (rejects)."""
    df = frame(1_000_000)
    return df.with_columns(
        pl.when(pl.col("id") % 1000 == 0).then(-pl.col("amount")).otherwise(pl.col("amount")).alias("amount"),
        pl.when(pl.col("id") % 500 == 0).then(pl.lit("lost")).otherwise(pl.col("status")).alias("status"),
    )


def test_spec_compile(benchmark: Any) -> None:
    """Parse the bench spec and compile its steps onto a lazy frame (no data is touched)."""
    lazy = frame(10).lazy()

    def compile_spec() -> Plan:
        return compile_steps(parse_pipeline(SPEC), lazy)

    plan = benchmark(compile_spec)
    assert "total" in plan.columns


def test_validate_1m_rows(benchmark: Any, orders_1m: pl.DataFrame) -> None:
    """The bench spec's rules (not_null, unique, range x2, allowed, regex) and finish() on 1M rows, collected."""
    rules = Pipeline(rules=parse_pipeline(SPEC).rules)
    lazy = orders_1m.lazy()

    def validate() -> pl.DataFrame:
        plan = Plan.start(lazy)
        apply_rules(plan, rules)
        finish(plan)
        return plan.frame.collect()

    out = benchmark.pedantic(validate, rounds=5, iterations=1, warmup_rounds=1)
    counts = dict(out.group_by(STATUS).len().iter_rows())
    assert counts == {0: 998_000, 1: 2_000}  # 2,000 unknown statuses, 1,000 of them with a negative amount too


def test_arrow_batch_100k(benchmark: Any, orders_1m: pl.DataFrame) -> None:
    """A streamed batch as the sink sees it: 100k rows, keep status 0, drop helper columns, hand over Arrow."""
    batch = orders_1m.head(100_000).with_columns(
        (pl.col("id") % 50 == 0).cast(pl.Int8).alias(STATUS), pl.lit(None, pl.String).alias("__biconic_reason"))

    def to_arrow() -> Any:
        good = batch.filter(pl.col(STATUS) == 0).drop(STATUS, "__biconic_reason")
        return good.to_arrow()

    table = benchmark(to_arrow)
    assert table.num_rows == 98_000
