"""Late schema drift inside one partition: a value past the rows a source inferred its types from that does
not fit them (integers, then text after thousands of rows).

Under the ``evolve`` contract the partition is rolled back and read again with the column widened
(integers to double when the late values are decimals, anything else to text): the widening is paid only by
a file that drifts. Under ``freeze`` the load is refused, naming the file, row, column and value; ``freeze``
also refuses text that does not parse as the existing table's column type (evolve quarantines such rows,
keeping the table's type).
"""

from __future__ import annotations

import dataclasses

import polars as pl

from engine.errors import SchemaDriftError
from engine.pipeline.context import LoadState
from engine.pipeline.fit import Prepared
from engine.plan.columns import COLUMN, ROW_COLUMN, RULE, SOURCE_PREFIX
from engine.sources.base import WIDEN, LateDrift, Partition
from engine.types import pg_type, to_loadable

__all__ = ["LateDrift", "check_drift", "widened"]


def widened(state: LoadState, partition: Partition, drift: LateDrift) -> Partition:
    """The partition read with ``drift``'s columns widened (on top of earlier widenings); under ``freeze``
    a :class:`SchemaDriftError` instead (for drift a source found while reading)."""
    if state.target.contract == "freeze":
        column, dtype = next(iter(drift.widen.items()))
        raise SchemaDriftError(state.target.table, column, None, pg_type(to_loadable(dtype)),
                               f"{drift.where}; the schema contract is 'freeze': use contract 'evolve' to "
                               "read the column as text")
    before = partition.options.get(WIDEN, {})
    return dataclasses.replace(partition, options={**partition.options, WIDEN: {**before, **drift.widen}})


def check_drift(state: LoadState, partition: Partition, bad: pl.DataFrame, prepared: Prepared) -> None:
    """Raise :class:`LateDrift` (evolve) or :class:`SchemaDriftError` (freeze) when rejected rows hold
    values that do not fit a type the source inferred; under freeze also for the table's own types."""
    inferred_of = getattr(state.source, "inferred", None)
    inferred: dict[str, pl.DataType] = inferred_of(partition) if inferred_of is not None else {}
    typed = bad.filter(pl.col(RULE) == "type")
    if not typed.height:
        return
    freeze = state.target.contract == "freeze"
    widen: dict[str, pl.DataType] = {}
    for column in typed[COLUMN].unique(maintain_order=True).to_list():
        late = column in inferred
        if not late and not (freeze and column in prepared.text_casts):
            continue  # a type given in dtypes or by a step: bad values are data, quarantined
        rows = typed.filter(pl.col(COLUMN) == column)
        raw = rows[f"{SOURCE_PREFIX}{column}"] if f"{SOURCE_PREFIX}{column}" in rows.columns else rows[column]
        values = raw.cast(pl.String)
        if freeze:
            existing = pg_type(to_loadable(inferred[column] if late else prepared.text_casts[column]))
            why = ("past the rows its type was inferred from; the schema contract is 'freeze': use "
                   "contract 'evolve' to widen the column, or give its type in dtypes" if late else
                   "the schema contract is 'freeze' (evolve quarantines such rows)")
            raise SchemaDriftError(state.target.table, column, existing, "text",
                                   f"{partition.label} row {rows[ROW_COLUMN][0]} holds {values[0]!r}, {why}")
        widen[column] = _wider(inferred[column], values)
    if widen:
        raise LateDrift(widen)


def _wider(dtype: pl.DataType, values: pl.Series) -> pl.DataType:
    """The narrowest type past ``dtype`` that holds ``values``: integers widen to double for decimals."""
    if dtype.is_integer() and values.str.strip_chars().cast(pl.Float64, strict=False).is_not_null().all():
        return pl.Float64()
    return pl.String()
