"""A partition's row accounting: every row read is loaded, quarantined or filtered, exactly once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from engine.errors import IntegrityError

__all__ = ["Counts"]


@dataclass
class Counts:
    """Rows of one source partition by outcome, and quarantined rows by rule."""

    rows_in: int = 0
    loaded: int = 0
    quarantined: int = 0
    filtered: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)

    def check(self, label: str) -> None:
        """``rows_in == loaded + quarantined + filtered``, or an IntegrityError (before anything commits)."""
        if self.rows_in != self.loaded + self.quarantined + self.filtered:
            raise IntegrityError(f"{label}: rows_in {self.rows_in} != loaded {self.loaded} + quarantined "
                                 f"{self.quarantined} + filtered {self.filtered}; nothing was committed")
