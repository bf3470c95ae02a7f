"""What incremental sources share: reading a ``lag`` option (how far before the watermark to re-read)."""

from __future__ import annotations

import re
from typing import Any

from engine.errors import SpecError

__all__ = ["lag_units"]

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def lag_units(value: Any) -> float:
    """A lag as a number: ``90``, ``"90"``, ``"15m"``, ``"2h"``, ``"1d"`` (seconds for time cursors, plain
    units for numeric ones)."""
    if isinstance(value, bool):
        raise SpecError("source.lag", f"expected a number or a duration like 15m, got {value!r}")
    if isinstance(value, (int, float)):
        lag = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
        if not m:
            raise SpecError("source.lag", f"expected a number or a duration like 30s, 15m, 2h, 1d; got {value!r}")
        lag = float(m.group(1)) * _UNITS[m.group(2)]
    if lag < 0:
        raise SpecError("source.lag", "must not be negative")
    return lag
