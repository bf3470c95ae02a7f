"""Speed bar II (issue 17): the bars the engine is held to, computed from one run of ``bench/run.py``, and the
shared table behind its first case (a 1M-row append beside >= 5M rows of other connections).

Every bar is one entry of ``BARS``: the case, how its figure comes out of the summary, the bar, the goal and
which way is better. ``run.py`` prints them after its main table and writes them to ``latest.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the generated files' own connections are 1..20; the shared table's other connections are shifted past them
OWN = "connection_id <= 20"
OTHERS_STEP = 100
SHARED_TOOLS = ("engine-append-shared", "psql-shared")
RSS_ROWS = 10_000_000  # the big size of the peak-RSS bar (10M vs 1M)


# --- the shared table ----------------------------------------------------------------------------------------
def fill_shared(sql: Callable[[str], str], table: str, columns: str, rows: int, others: int) -> int:
    """Copy the table's ``rows`` rows (the engine's first load) as other connections until they are at least
    ``others``, then delete its own: the timed loads then write into partitions and indexes that already hold
    that much of other tenants' data, as a real append does. Returns the other rows held."""
    copies = max(1, math.ceil(others / rows))
    select = columns.replace("connection_id", f"connection_id + {OTHERS_STEP} * g")
    sql(f"INSERT INTO {table} ({columns}) SELECT {select} FROM {table}, generate_series(1, {copies}) g")
    sql(f"DELETE FROM {table} WHERE {OWN}")
    sql(f"VACUUM ANALYZE {table}")
    return copies * rows


def clear_own(sql: Callable[[str], str], table: str) -> None:
    """Before each timed run: the file's rows out, and their dead tuples vacuumed, so that neither tool
    inherits the other's leftovers."""
    sql(f"DELETE FROM {table} WHERE {OWN}")
    sql(f"VACUUM {table}")


def own_rows(sql: Callable[[str], str], table: str) -> int:
    return int(sql(f"SELECT count(*) FROM {table} WHERE {OWN}"))


# --- the bars ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figures:
    """What the bars are computed from: the main size's summary entries and the RSS run (if any)."""

    rows: int
    entries: dict[tuple[str, str], dict[str, Any]]
    rss: dict[str, Any] | None
    shared_rows: int

    def get(self, scenario: str, tool: str, key: str) -> float | None:
        value = self.entries.get((scenario, tool), {}).get(key)
        return float(value) if value is not None else None

    def times(self, scenario: str, slower: str, faster: str) -> float | None:
        """How many times ``faster`` beats ``slower``: the ratio of their median seconds (same rows)."""
        num, den = self.get(scenario, slower, "seconds"), self.get(scenario, faster, "seconds")
        return num / den if num and den else None

    def cpu_per_million(self, tool: str) -> float | None:
        cpu = self.get("CSV", tool, "cpu_s")
        return cpu * 1_000_000 / self.rows if cpu is not None else None


@dataclass(frozen=True)
class Bar:
    case: str
    value: Callable[[Figures], float | None]
    bar: float
    goal: float
    higher_is_better: bool
    unit: str  # "×" or "CPU-s"
    line: tuple[str, str] | None = None  # the plotted line the bar is marked on
    goal_text: str = ""
    note: Callable[[Figures], str] = lambda f: ""  # what the figure was measured on, where the case does not say

    def shown(self, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}×" if self.unit == "×" else f"{value:.1f} CPU-s"

    def status(self, value: float | None) -> str:
        if value is None:
            return "not measured"
        return "met" if (value >= self.bar if self.higher_is_better else value <= self.bar) else "NOT met"


BARS = [
    Bar("append beside >= 5M rows of other connections, vs psql \\copy", lambda f: f.times(
        "CSV", "psql-shared", "engine-append-shared"), 1.2, 1.5, True, "×", ("CSV", "engine-append-shared"),
        note=lambda f: f"beside {f.shared_rows:,}+ rows of other connections"),
    Bar("CPU-s per 1M CSV rows, without the archive copy", lambda f: f.cpu_per_million("engine-noarchive"),
        3.0, 2.0, False, "CPU-s", ("CSV", "engine-noarchive")),
    Bar("CPU-s per 1M CSV rows, with the archive copy", lambda f: f.cpu_per_million("engine"), 3.5, 2.5, False,
        "CPU-s", ("CSV", "engine")),
    Bar("new table with archive, vs psql \\copy", lambda f: f.times("CSV", "psql", "engine"), 1.5, 1.74, True,
        "×", ("CSV", "engine")),
    Bar("xlsx -> PostgreSQL, vs fastexcel's bare read", lambda f: f.times("xlsx", "engine", "fastexcel"), 1.3,
        1.1, False, "×"),
    Bar("peak RSS, 10M vs 1M rows, with archive", lambda f: f.rss["ratio"] if f.rss else None, 1.2, 1.0, False,
        "×", goal_text="flat", note=lambda f: f.rss["note"] if f.rss else ""),
]


def bar_rows(rows: int, entries: list[dict[str, Any]], rss: dict[str, Any] | None,
             shared_rows: int) -> list[dict[str, Any]]:
    """Every bar measured: what ``latest.json`` keeps under ``bars`` and the terminal table prints."""
    figures = Figures(rows, {(e["scenario"], e["tool"]): e for e in entries if e.get("seconds")}, rss, shared_rows)
    out = []
    for bar in BARS:
        value = bar.value(figures)
        out.append({"case": bar.case, "value": round(value, 3) if value is not None else None,
                    "measured": bar.shown(value), "bar": bar.bar, "goal": bar.goal,
                    "bar_text": f"{'>=' if bar.higher_is_better else '<='} {bar.shown(bar.bar)}",
                    "goal_text": bar.goal_text or f"{'>=' if bar.higher_is_better else '<='} {bar.shown(bar.goal)}",
                    "status": bar.status(value), "line": list(bar.line) if bar.line else None,
                    "unit": bar.unit, "note": bar.note(figures) if value is not None else ""})
    return out


def print_bars(rows: int, bars: list[dict[str, Any]]) -> None:
    print(f"\nSpeed bar II (issue 17), at {rows:,} rows (CPU-s scaled to 1M rows)")
    head = f"{'case':<64}{'measured':>14}{'bar':>15}{'goal':>15}  status"
    print(head)
    print("-" * len(head))
    for b in bars:
        note = f"  ({b['note']})" if b.get("note") else ""
        print(f"{b['case']:<64}{b['measured']:>14}{b['bar_text']:>15}{b['goal_text']:>15}  {b['status']}{note}")


def rss_ratio(main: dict[str, Any] | None, big: dict[str, Any] | None, *, source: str) -> dict[str, Any] | None:
    """Peak RSS of the CSV engine line (archive on) at the big size over that at the main size."""
    if not main or not big or not main.get("peak_rss_mb") or not big.get("peak_rss_mb"):
        return None
    ratio = big["peak_rss_mb"] / main["peak_rss_mb"]
    return {"ratio": ratio, "big_rows": big["rows"], "big_peak_rss_mb": big["peak_rss_mb"],
            "main_rows": main["rows"], "main_peak_rss_mb": main["peak_rss_mb"],
            "note": f"{big['peak_rss_mb']:,.0f} MB at {big['rows']:,} rows / {main['peak_rss_mb']:,.0f} MB at "
                    f"{main['rows']:,}; {source}"}


def earlier_rss(out: Path, main: dict[str, Any] | None) -> dict[str, Any] | None:
    """The RSS figure when this run made no big run: from an earlier ``rows_10000000.json``, if it has the CSV
    engine line (archive on)."""
    path = out / f"rows_{RSS_ROWS}.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    entries = [e for size in doc["results"].values() for e in size]
    big = next((e for e in entries if (e["scenario"], e["tool"]) == ("CSV", "engine") and e.get("peak_rss_mb")),
               None)
    return rss_ratio(main, big, source=f"from {path.name} of {doc['machine']['date']}, not this run")
