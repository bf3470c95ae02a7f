"""How many rejected rows a source partition may have before its load counts as failed (``max_rejected``).

>>> RejectLimit.parse("5%").exceeded(rejected=60, rows=1000)
True
>>> str(RejectLimit.parse(0.5)), str(RejectLimit.parse(1000)), str(RejectLimit.parse("off"))
('50%', '1000', 'off')

A number with a decimal point (``0.5``) or a percentage (``50%``) is a share of the partition's rows, a whole
number (``1000``) a count of rows, ``off`` no limit at all. Rows dropped by ``filter`` or ``dedupe`` are not
rejections and do not count in the share. A partition whose every row was rejected fails under any limit but
``off``; a share fails a partition only from :data:`SHARE_FLOOR` rejected rows (2 bad rows in a 3-row file
say little about the file; a count has no floor).
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["DEFAULT_SHARE", "SHARE_FLOOR", "RejectLimit"]

#: the default limit: more than half of a partition's rows rejected fails it
DEFAULT_SHARE = 0.5
#: a share fails a partition only from this many rejected rows
SHARE_FLOOR = 10

_OFF = frozenset({"off", "none", "never"})
_EXPECTED = "expected a share 0.0..1.0 (0.5), a percentage (50%), a whole number of rows (1000) or off"


class RejectLimit(BaseModel):
    """A share of the rows (``share``), a count of rows (``rows``), or no limit (both None)."""

    model_config = ConfigDict(frozen=True)

    share: float | None = DEFAULT_SHARE
    rows: int | None = None

    @classmethod
    def parse(cls, value: Any) -> RejectLimit:
        """A limit from what a user wrote (YAML, the CLI, Python); a ValueError in the engine's words."""
        if value is None:
            return cls()
        if isinstance(value, RejectLimit):
            return value
        if isinstance(value, str):
            return cls._parse_text(value.strip().lower())
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{_EXPECTED}, got {value!r}")
        if isinstance(value, int):
            return cls._count(value)
        return cls._share(value, value)

    @classmethod
    def _parse_text(cls, text: str) -> RejectLimit:
        if text in _OFF:
            return cls(share=None, rows=None)
        try:
            if text.endswith("%"):
                return cls._share(float(text[:-1]) / 100, text)
            if re.fullmatch(r"\+?\d+", text):
                return cls._count(int(text))
            return cls._share(float(text), text)
        except ValueError:
            raise ValueError(f"{_EXPECTED}, got {text!r}") from None

    @classmethod
    def _count(cls, rows: int) -> RejectLimit:
        if rows < 0:
            raise ValueError(f"{_EXPECTED}, got {rows!r}")
        return cls(share=None, rows=rows)

    @classmethod
    def _share(cls, share: float, written: object) -> RejectLimit:
        if math.isnan(share) or not 0.0 <= share <= 1.0:
            raise ValueError(f"{_EXPECTED}, got {written!r}")
        return cls(share=share, rows=None)

    @property
    def off(self) -> bool:
        return self.share is None and self.rows is None

    def exceeded(self, *, rejected: int, rows: int) -> bool:
        """``rejected`` of ``rows`` (the partition's rows less those filtered out) is too many to commit."""
        if self.off or rejected == 0:
            return False
        if rejected >= rows:
            return True
        if self.rows is not None:
            return rejected > self.rows
        assert self.share is not None
        return rejected >= SHARE_FLOOR and rejected > self.share * rows

    def __str__(self) -> str:
        if self.rows is not None:
            return str(self.rows)
        if self.share is not None:
            return f"{self.share * 100:g}%"
        return "off"
