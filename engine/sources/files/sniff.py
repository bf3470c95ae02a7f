"""Guessing what a CSV file's user did not say: its delimiter from its first lines.

A ``;`` file read with ``,`` loads silently as one column named like ``id_created_at_name``; so when no
delimiter is given, the one that splits the first lines into the same number of fields wins.
"""

from __future__ import annotations

import re

__all__ = ["CANDIDATES", "sniff_delimiter"]

#: delimiters tried, in order of preference on a tie
CANDIDATES = (",", ";", "\t", "|")
#: lines looked at
_LINES = 20


def _quoted(quote: str | None) -> re.Pattern[str] | None:
    return re.compile(f"{re.escape(quote)}[^{re.escape(quote)}]*{re.escape(quote)}") if quote else None


def sniff_delimiter(head: str, *, quote: str | None = '"', skip_rows: int = 0, comment: str | None = None,
                    complete: bool = True) -> str:
    """The candidate that splits the first lines of ``head`` into the same number (> 0) of fields each, the most
    fields on a tie of consistency; else the one most frequent in the header line; else ``,``.

    ``complete`` is False when ``head`` was cut short (its last line may be partial, so it is not counted).

    >>> sniff_delimiter("id;name;amount\\n1;a;1,5\\n2;b;2,0\\n")
    ';'
    """
    pattern = _quoted(quote)
    text = pattern.sub("", head) if pattern else head  # a delimiter inside quotes is data
    lines = text.splitlines()
    if not complete and len(lines) > 1:
        lines = lines[:-1]
    lines = [line for line in lines[skip_rows:] if line.strip() and not (comment and line.startswith(comment))]
    lines = lines[:_LINES]
    if not lines:
        return ","
    consistent = [c for c in CANDIDATES if lines[0].count(c) > 0 and all(ln.count(c) == lines[0].count(c)
                                                                        for ln in lines)]
    if consistent:
        return max(consistent, key=lambda c: (lines[0].count(c), -CANDIDATES.index(c)))
    best = max(CANDIDATES, key=lambda c: (lines[0].count(c), -CANDIDATES.index(c)))
    return best if lines[0].count(best) else ","
