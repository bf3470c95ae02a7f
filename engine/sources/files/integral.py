"""Whole-number float columns as int64: xlsx (and calamine for every format) gives each number as a float,
so an id or a quantity column would load as ``double precision`` and compare badly as a merge key.

Decided once per sheet, over the whole column, so every chunk of the sheet has the same type. Depends on
pyarrow only: the sandboxed Excel worker loads this file by path, without importing the engine.
"""

from __future__ import annotations

from collections.abc import Collection

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["integral_floats", "is_integral"]

#: int64 holds [-2**63, 2**63); beyond it a whole float stays a float.
_LIMIT = 2.0**63


def is_integral(column: pa.Array | pa.ChunkedArray) -> bool:
    """Whether ``column`` is floating point with at least one value and every value whole and in int64's range.

    >>> is_integral(pa.array([1.0, None, -3.0]))
    True
    """
    if not pa.types.is_floating(column.type) or column.null_count == len(column):
        return False
    if not pc.all(pc.equal(pc.floor(column), column)).as_py():  # NaN and decimals fail; nulls are skipped
        return False
    bounds = pc.min_max(column)
    return bool(bounds["min"].as_py() >= -_LIMIT and bounds["max"].as_py() < _LIMIT)


def integral_floats(batch: pa.RecordBatch, *, keep: Collection[int] = ()) -> pa.RecordBatch:
    """``batch`` with each whole-number float column cast to int64, except those at the positions in ``keep``
    (columns given a type by the user).

    >>> integral_floats(pa.record_batch({"id": [1.0, 2.0], "x": [1.5, 2.0]})).schema.types
    [DataType(int64), DataType(double)]
    """
    arrays = list(batch.columns)
    changed = False
    for i, column in enumerate(arrays):
        if i not in keep and is_integral(column):
            arrays[i] = column.cast(pa.int64())
            changed = True
    return pa.record_batch(arrays, names=batch.schema.names) if changed else batch
