"""The engine's hidden bookkeeping columns: carried through a plan, never written to a table.

Every scan carries ``ROW_COLUMN`` (the row's number in its source); steps and rules add reject reasons and
flags, and :func:`engine.plan.rules.finish` collapses them into ``STATUS``/``RULE``/``COLUMN``/``REASON``.
"""

from __future__ import annotations

__all__ = [
    "COLUMN", "CONVERT_PREFIX", "DROP_COLUMN", "GLOBAL_PREFIX", "KEY_COLUMN", "PENDING_COLUMN", "REASON",
    "REJECT_PREFIX", "ROW_COLUMN", "RULE", "SOURCE_PREFIX", "STATUS", "is_hidden",
]

#: Hidden column every scan carries: the 1-based row number in the source file (the header counts as a row,
#: so for a simple CSV it is the line number and for a sheet it is the spreadsheet row).
ROW_COLUMN = "__biconic_row"
REJECT_PREFIX = "__biconic_reject:"
GLOBAL_PREFIX = "__biconic_global:"
SOURCE_PREFIX = "__biconic_src:"
CONVERT_PREFIX = "__biconic_convert:"
KEY_COLUMN = "__biconic_key"
PENDING_COLUMN = "__biconic_pending"
DROP_COLUMN = "__biconic_drop"
#: 0 = load, 1 = quarantine, 2 = filtered
STATUS = "__biconic_status"
RULE = "__biconic_rule"
COLUMN = "__biconic_column"
REASON = "__biconic_reason"


def is_hidden(name: str) -> bool:
    """Engine bookkeeping columns (row number, reject reasons, drop flag) never reach the table."""
    return name.startswith("__biconic_")
