"""deploy/grafana/biconic.json: a dashboard Grafana imports (uid, schema, a DS_PROMETHEUS data source input), laid
out in three rows, whose queries parse and read only metrics the engine exports and series alerts.yml records."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.names import GRAFANA, unknown_names

#: row -> panels it must hold (issue 16)
GROUPS = {
    "Performance": ["Query latency", "Rows loaded per second", "Error rate", "Load duration", "Job duration"],
    "Capacity": ["Host CPU", "Host memory", "Disk used per folder", "Disk free per folder",
                 "PostgreSQL connections in use", "Queue depth", "Workers", "Running jobs per connection"],
    "Business": ["Rows loaded", "Rows quarantined by rule", "Rows filtered", "Read", "Archived", "Loads by outcome",
                 "Jobs by outcome", "Transformation steps", "Errors by type"],
}
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((GRAFANA / "biconic.json").read_text(encoding="utf-8"))
    return dashboard


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exprs() -> list[str]:
    return [target["expr"] for panel in _panels() for target in panel["targets"]]


def test_the_dashboard_is_importable() -> None:
    dashboard = _dashboard()
    assert dashboard["title"] == "Biconic Engine"
    assert dashboard["uid"] == "biconic"
    assert dashboard["schemaVersion"] == 39
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"


def test_every_panel_is_complete_and_placed_without_overlap() -> None:
    panels = _dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["title"] and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "table"}, panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() and t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]


def test_the_three_rows_hold_their_panels() -> None:
    rows: dict[str, list[str]] = {}
    current = None
    for panel in sorted(_dashboard()["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            current = panel["title"]
            rows[current] = []
        else:
            assert current is not None, f"{panel['title']} sits above the first row"
            rows[current].append(panel["title"])
    assert list(rows) == list(GROUPS)
    for row, titles in GROUPS.items():
        assert sorted(rows[row]) == sorted(titles), row


def test_the_queries_use_only_exported_metrics_and_recorded_series() -> None:
    unknown, unrecorded, source = unknown_names(_exprs())
    assert unknown == set(), f"not exported according to {source}"
    assert unrecorded == set(), "recorded series that no rule in deploy/prometheus/alerts.yml records"


def test_the_queries_parse(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana's range variables set to fixed ranges)."""
    rules = [{"record": f"dashboard:query{i}",
              "expr": expr.replace("$__rate_interval", "5m").replace("$__range", "1h")}
             for i, expr in enumerate(_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rules)} rules found" in done.stdout
