"""What a load reports: counts that always add up, where the rows went, and how fast."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["LoadReport", "SourcePartition"]

#: lines of the summary listing source partitions (all of them in the JSON)
_LISTED = 20


@dataclass
class SourcePartition:
    """One source partition (a file, sheet or table) of a load: ``loaded`` (committed now), ``skipped``
    (committed by an earlier run) or ``failed`` (rolled back, with the one-line ``error``; a re-run retries it)."""

    source: str
    status: Literal["loaded", "skipped", "failed"]
    rows_in: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    error: str | None = None


@dataclass
class LoadReport:
    """The outcome of one ``engine.load``: ``rows_in == rows_loaded + rows_quarantined + rows_filtered``.

    ``partitions`` are the PostgreSQL child tables that received rows; ``skipped_partitions`` counts source
    partitions (files, sheets, tables) already committed by an earlier run of the same load, and
    ``failed_partitions`` those rolled back by an error while the others committed; ``source_details`` has each
    one's outcome.
    """

    load_id: str
    table: str
    source: str
    mode: str
    rows_in: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_filtered: int = 0
    partitions: list[str] = field(default_factory=list)
    source_partitions: int = 0
    skipped_partitions: int = 0
    failed_partitions: int = 0
    source_details: list[SourcePartition] = field(default_factory=list)
    quarantine_by_rule: dict[str, int] = field(default_factory=dict)
    columns_added: list[str] = field(default_factory=list)
    columns_widened: list[str] = field(default_factory=list)
    time_column: str | None = None
    #: what the source guessed rather than was told (a CSV's sniffed delimiter, its detected encoding)
    notes: list[str] = field(default_factory=list)
    #: which PostgreSQL received the rows (password masked, or "embedded PostgreSQL in <folder>")
    database: str = ""
    source_bytes: int = 0
    #: where the archive copy went (None: archiving off), its size, files, and source_bytes / archive_bytes
    #: (None when either is unknown: no archive copy, or a source without a size such as a query or an API)
    archive: str | None = None
    archive_bytes: int = 0
    archive_files: int = 0
    compression_ratio: float | None = None
    seconds: float = 0.0
    rows_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_child_rss_mb: float = 0.0

    def note(self, source: str, status: Literal["loaded", "skipped", "failed"], *, rows_in: int = 0,
             rows_loaded: int = 0, rows_quarantined: int = 0, error: str | None = None) -> None:
        """Record one source partition's outcome (failures also counted in ``failed_partitions``)."""
        if status == "failed":
            self.failed_partitions += 1
        self.source_details.append(SourcePartition(source=source, status=status, rows_in=rows_in,
                                                   rows_loaded=rows_loaded, rows_quarantined=rows_quarantined,
                                                   error=error))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    def summary(self) -> str:
        """A few human lines for the terminal."""
        lines = [
            f"{self.table}: {self.rows_loaded:,} rows loaded, {self.rows_quarantined:,} quarantined, "
            f"{self.rows_filtered:,} filtered (of {self.rows_in:,} read) in {self.seconds:.2f} s "
            f"({self.rows_per_s:,.0f} rows/s, peak RSS {self.peak_rss_mb:,.0f} MB)",
            f"  source partitions: {self.source_partitions} ({self.skipped_partitions} already loaded, skipped"
            + (f"; {self.failed_partitions} FAILED)" if self.failed_partitions else ")"),
            *self._details(),
            f"  table partitions: {', '.join(self.partitions) if self.partitions else '-'}",
            f"  into: {self.database or '-'}; archive: {self.archive or 'off'}",
        ]
        if self.archive is not None and self.archive_files:
            ratio = f", source/archive {self.compression_ratio:.1f}x" if self.compression_ratio else ""
            lines.append(f"  archive copy: {self.archive_files} file(s), {self.archive_bytes:,} bytes{ratio}")
        if self.quarantine_by_rule:
            rules = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.quarantine_by_rule.items()))
            lines.append(f"  quarantined by rule: {rules}  "
                         f"(see: biconic quarantine {self.table} --load {self.load_id})")
        lines.extend(f"  read: {note}" for note in self.notes)
        if self.columns_added or self.columns_widened:
            lines.append(f"  schema: added {self.columns_added or '-'}, widened {self.columns_widened or '-'}")
        return "\n".join(lines)

    def _details(self) -> list[str]:
        """A line per source partition when there are several (failures first, then the first few)."""
        if len(self.source_details) < 2:
            return []
        ordered = sorted(self.source_details, key=lambda d: d.status != "failed")
        lines = [f"    {d.source}: " + (f"FAILED: {d.error}" if d.status == "failed" else
                                        f"{d.rows_loaded:,} rows loaded, {d.rows_quarantined:,} quarantined"
                                        if d.status == "loaded" else "already loaded")
                 for d in ordered[:_LISTED]]
        if len(ordered) > _LISTED:
            lines.append(f"    ... and {len(ordered) - _LISTED} more (see --json)")
        return lines
