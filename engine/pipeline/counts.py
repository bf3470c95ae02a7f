"""A partition's row accounting: every row read is loaded, quarantined or filtered, exactly once; and the tally
of its rejected rows (:class:`Rejects`) that :func:`engine.pipeline.rejects.judge` weighs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from engine.errors import IntegrityError
from engine.postgres.ddl import CONNECTION_COLUMN

__all__ = ["SAMPLE_ROWS", "Counts", "Rejects"]

#: rejected rows kept in quarantine when their partition fails on them
SAMPLE_ROWS = 1_000
#: reasons named in the error
_TOP = 3
#: quarantine rules that point at the file's encoding rather than at its rows
_ENCODING_RULES = frozenset({"invalid_utf8"})


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
                                 f"{self.quarantined} + filtered {self.filtered}; nothing of it was committed")


class Rejects:
    """A partition's quarantined rows: counted by (rule, column), one example reason each, and a sample."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str | None]] = Counter()
        self.examples: dict[tuple[str, str | None], str] = {}
        self.sample: list[pl.DataFrame] = []
        self.sampled = 0

    def add(self, rows: pl.DataFrame) -> None:
        """Quarantine rows as written (``rule``, ``column_name``, ``reason``, ...)."""
        grouped = rows.group_by("rule", "column_name").agg(pl.len().alias("n"), pl.col("reason").first())
        for rule, column, n, reason in grouped.iter_rows():
            self.counts[(rule, column)] += n
            self.examples.setdefault((rule, column), reason or "")
        if self.sampled < SAMPLE_ROWS:
            part = rows.head(SAMPLE_ROWS - self.sampled)
            self.sample.append(part)
            self.sampled += part.height

    def top(self) -> list[tuple[str, str | None, int, str]]:
        """The most frequent reasons: (rule, column, rows, example reason)."""
        return [(rule, column, n, self.examples[(rule, column)])
                for (rule, column), n in self.counts.most_common(_TOP)]

    def hint(self) -> str:
        """The likely fix for the most frequent reasons."""
        if any(rule in _ENCODING_RULES for rule, _column in self.counts):
            return "wrong encoding? try --option encoding=latin-1 (or cp1252; in a pipeline file: source.encoding)"
        if self.counts and self.counts.most_common(1)[0][0] == ("type", CONNECTION_COLUMN):
            # a platform export of UUID ids into a dataset created with integer ids, or the other way round
            return ("the rows' connection ids are not of the kind the dataset's connection_id column was created "
                    "with: load them into another dataset, or (a file of one connection) give --connection ID "
                    "--connection-override (connection_override in Python and pipeline files)")
        return ""
