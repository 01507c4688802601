"""/metrics passes Prometheus' own linter (`promtool check metrics`, Debian's `prometheus`
package), and the Grafana dashboard in dashboards/ is valid dashboard JSON whose every query
is valid PromQL (`promtool check rules`) over metric names /metrics exports.

The daemon's real /metrics after a whole rebalance is checked the same way by the status-page
browser test (tests/page/test_status_page_browser.py), which runs a daemon anyway.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import yaml

from adapters.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "vpsie-rebalancer.json"
PROMTOOL = shutil.which("promtool")
METRIC = re.compile(r"\b(vpsie_rebalancing_[a-z0-9_]+)\b")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
GRID_COLUMNS = 24


def busy_metrics() -> Metrics:
    """A registry with every family holding samples, as after a rebalance with trouble."""
    m = Metrics()
    m.plan_created("web", "rolling")
    m.plan_executed("web", "rolling", 900.0)
    m.plan_failed("web", "surge", 30.0)
    m.rollback_started("web", "surge")
    m.node_provisioned("web", 240.0)
    m.node_drained("web", 45.0)
    m.node_terminated("web", 3.0)
    m.node_failed("web")
    m.batch_finished("web", 300.0)
    m.safety_check("capacity", passed=True)
    m.safety_check("timing", passed=False)
    m.progress("web", percent=50, batch=1, remaining_s=600)
    m.set_savings_realized("web", 12.5)
    m.set_leader(True)
    m.set_plans_in_flight({"executing": 1})
    m.api_request("vpsie", "list_workers", "ok", 0.03)
    m.api_request("kubernetes", "create pods/eviction", "rate_limited", 0.01)
    m.eventlog_committed([0.002, 0.003, 0.004])
    m.analysed("web", 1_767_225_600.0, {"local-storage": 2, "protected": 1})
    return m


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert PROMTOOL is not None, "promtool is missing: scripts/system-deps installs it"
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def exported_families(exposition: str) -> set[str]:
    """Metric family names a /metrics body declares (`# TYPE name kind`)."""
    return set(re.findall(r"^# TYPE (\S+) \S+$", exposition, re.M))


def family_of(series: str) -> str:
    for suffix in HISTOGRAM_SERIES:
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return data


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query, the template variables' included."""
    out = [
        (p["title"], t["expr"])
        for p in dash["panels"]
        if p["type"] != "row"
        for t in p["targets"]
    ]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"variable {var['name']}", var["definition"]))
    return out


def check_metrics_text(text: str) -> None:
    result = promtool("check", "metrics", stdin=text.encode())
    problems = (result.stdout + result.stderr).decode().strip()
    assert result.returncode == 0 and not problems, problems


def test_metrics_pass_promtool() -> None:
    check_metrics_text(busy_metrics().render().decode())


def test_promtool_does_refuse_a_bad_exposition() -> None:
    """The check above can fail: a counter without `_total` and a unit-less name are refused."""
    bad = "# HELP things Things.\n# TYPE things counter\nthings 3\n"
    result = promtool("check", "metrics", stdin=bad.encode())
    assert result.returncode != 0 and b"_total" in result.stdout + result.stderr


def test_labels_stay_bounded() -> None:
    """No label holds an identifier that grows without bound (plan, node, pod, worker)."""
    for line in busy_metrics().render().decode().splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        labels = set(re.findall(r'(\w+)="', line.split("}")[0]))
        assert labels <= {"node_group", "strategy", "check", "state", "api", "call", "outcome",
                          "reason", "le"}, line


def test_the_dashboard_is_valid_grafana_json() -> None:
    dash = dashboard()
    for key in ("title", "uid", "schemaVersion", "panels", "templating", "time"):
        assert key in dash, key
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "node_group"} <= variables
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        assert grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    # Panels never overlap on the grid.
    cells: dict[tuple[int, int], str] = {}
    for panel in dash["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exported = exported_families(busy_metrics().render().decode())
    used = {family_of(m) for _, expr in queries(dashboard()) for m in METRIC.findall(expr)}
    assert used, "the dashboard queries no metric of ours"
    missing = {family_of(name) for name in used} - exported
    assert not missing, f"queried but not exported: {sorted(missing)}"
    # What the issue asks the dashboard to show, by the metric that shows it.
    for wanted in (
        "vpsie_rebalancing_plans_executed_total",  # plans by outcome
        "vpsie_rebalancing_plans_failed_total",
        "vpsie_rebalancing_plans_in_flight",  # replacements in flight
        "vpsie_rebalancing_provision_duration_seconds",  # phase durations
        "vpsie_rebalancing_drain_duration_seconds",
        "vpsie_rebalancing_terminate_duration_seconds",
        "vpsie_rebalancing_savings_realized_monthly_dollars",  # saving realised
        "vpsie_rebalancing_safety_checks_failed_total",  # safety checks failing by check
        "vpsie_rebalancing_rollbacks_executed_total",  # rollbacks
        "vpsie_rebalancing_leader",  # leadership
    ):
        assert wanted in used, wanted


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query (Grafana's variables filled in) as a recording rule: promtool parses it."""
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$node_group", "web"),
        }
        for i, (_, expr) in enumerate(queries(dashboard()))
        if not expr.startswith("label_values(")  # Grafana's, not PromQL
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "sum("}]}]})
    )
    assert promtool("check", "rules", str(broken)).returncode != 0
