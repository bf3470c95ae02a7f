"""``latest.png``, made to read at a glance: at the main size, one horizontal bar per line for its ratio to
``psql \\copy`` (the shared-append lines: to psql on the same shared table), its CPU-seconds and its peak RSS,
with the Speed bar II bars marked where a line has one; below, rows/s of every tool across the sizes measured
(this run and earlier ``rows_<N>.json``), and the bar table itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: one colour per family of tools, the same in every panel
FAMILY = {"engine": "tab:blue", "psql": "tab:gray", "adbc": "tab:green", "dlt": "tab:orange", "pandas": "tab:red",
          "fastexcel": "tab:purple"}
STATUS_COLOR = {"met": "tab:green", "NOT met": "tab:red", "not measured": "tab:gray"}


def color(tool: str) -> str:
    return FAMILY.get(tool.split("-")[0].split("+")[0], "black")


def name(e: dict[str, Any]) -> str:
    capped = f" [first {e['rows']:,} rows]" if e["rows"] != e["input_rows"] else ""
    return f"{e['scenario']}: {e['label']}{capped}"


def plot(every: dict[str, list[dict[str, Any]]], main: list[dict[str, Any]], bars: list[dict[str, Any]], out: Path,
         *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [e for e in main if e.get("seconds")]
    rows = shown[0]["input_rows"] if shown else 0
    fig = plt.figure(figsize=(16, 10))
    grid = fig.add_gridspec(2, 3, height_ratios=[3, 2], width_ratios=[1.3, 1, 1.1])
    ratio = fig.add_subplot(grid[0, 0])
    cpu, rss = fig.add_subplot(grid[0, 1], sharey=ratio), fig.add_subplot(grid[0, 2], sharey=ratio)
    hbars(ratio, shown, "vs_psql_copy", "{:.2f}×", f"× psql \\copy, rows/s ({rows:,} rows; higher is better)")
    hbars(cpu, shown, "cpu_s", "{:.1f}", "CPU-seconds of the run, user + sys (lower is better)")
    hbars(rss, shown, "peak_rss_mb", "{:,.0f}", "peak RSS MB (lower is better)")
    ratio.axvline(1.0, color="black", linewidth=0.8)
    ratio.set_yticks(range(len(shown)), [name(e) for e in shown], fontsize=8)
    ratio.invert_yaxis()
    for ax in (cpu, rss):
        ax.tick_params(axis="y", labelleft=False)
    where = {(e["scenario"], e["tool"]): i for i, e in enumerate(shown)}
    for b in bars:
        if b["line"] and tuple(b["line"]) in where:
            scale = 1.0 if b["unit"] == "×" else rows / 1_000_000  # the CPU bars are per 1M rows
            mark(ratio if b["unit"] == "×" else cpu, where[tuple(b["line"])], b, scale)
    rss_bar = next((b for b in bars if "RSS" in b["case"]), None)
    if rss_bar is not None:
        rss.set_xlabel(f"{rss_bar['case']}: {rss_bar['measured']}\n(bar {rss_bar['bar_text']}: {rss_bar['status']})",
                       fontsize=8, color=STATUS_COLOR[rss_bar["status"]])
    sizes(fig.add_subplot(grid[1, 0]), every)  # its legend takes the middle column
    bar_table(fig.add_subplot(grid[1, 2]), bars, rows)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=100)
    plt.close(fig)


def hbars(ax: Any, shown: list[dict[str, Any]], key: str, fmt: str, title: str) -> None:
    """One bar per line, labelled with its value (a line without the figure gets an empty slot)."""
    values = [e.get(key) or 0 for e in shown]
    drawn = ax.barh(range(len(shown)), values, color=[color(e["tool"]) for e in shown], height=0.7)
    ax.bar_label(drawn, labels=[fmt.format(e[key]) if e.get(key) is not None else "" for e in shown],
                 fontsize=7, padding=2)
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    ax.margins(x=0.15)


def mark(ax: Any, y: int, bar: dict[str, Any], scale: float) -> None:
    """The bar (solid) and goal (dashed) across the line's own row, in the colour of whether it is met."""
    tone = STATUS_COLOR[bar["status"]]
    ax.plot([bar["bar"] * scale] * 2, [y - 0.45, y + 0.45], color=tone, linewidth=2.5)
    ax.plot([bar["goal"] * scale] * 2, [y - 0.45, y + 0.45], color=tone, linewidth=1.2, linestyle="--")
    if bar["unit"] == "×":  # the CPU rows sit close together: there the table below says it
        ax.annotate(f"bar {bar['bar_text']}: {bar['status']}", (bar["bar"] * scale, y + 0.45), fontsize=7,
                    color=tone, xytext=(3, -2), textcoords="offset points", va="top")


def sizes(ax: Any, every: dict[str, list[dict[str, Any]]]) -> None:
    """rows/s against input size, one line per tool (log x): a run of one size adds its points to earlier ones."""
    import matplotlib
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    labels: dict[tuple[str, str], str] = {}
    for entries in every.values():
        for e in entries:
            if e.get("rows_per_s") and e["tool"] != "fastexcel":
                series.setdefault((e["scenario"], e["tool"]), []).append((e["input_rows"], e["rows_per_s"]))
                labels[(e["scenario"], e["tool"])] = name(e)
    styles = {"CSV": ("o", "-"), "Parquet": ("s", "--"), "xlsx": ("^", ":")}
    palette = matplotlib.colormaps["tab20"]
    for i, ((scenario, tool), pts) in enumerate(sorted(series.items())):
        pts.sort()
        marker, linestyle = styles.get(scenario, ("o", "-"))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, linestyle=linestyle, color=palette(i % 20),
                label=labels[(scenario, tool)])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input size (rows)")
    ax.set_ylabel("rows/s (median)")
    ax.set_title(f"across sizes: {', '.join(f'{int(k):,}' for k in sorted(every, key=int))} rows", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    legend = ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    legend.set_in_layout(False)  # it fills the empty middle column; the layout must not shrink the panels for it


def bar_table(ax: Any, bars: list[dict[str, Any]], rows: int) -> None:
    ax.axis("off")
    ax.set_title(f"Speed bar II (issue 17), {rows:,} rows; CPU-s per 1M rows", fontsize=9)
    for i, b in enumerate(bars):
        y = 0.92 - i * 0.16
        ax.text(0.0, y, b["case"], fontsize=7.5, transform=ax.transAxes)
        ax.text(0.0, y - 0.06, f"{b['measured']}  (bar {b['bar_text']}, goal {b['goal_text']})  {b['status']}",
                fontsize=7.5, transform=ax.transAxes, color=STATUS_COLOR[b["status"]], weight="bold")
