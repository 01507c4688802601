"""Scenario files: the shipped ones load; a bad one is refused naming file, document and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulator.faults import FaultRule
from simulator.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "simulator" / "scenarios"

WORLD = """\
apiVersion: sim.vpsie-rebalancer.io/v1
kind: World
spec:
  datacenters: [{identifier: dc-1, name: One}]
  sizes:
    - {id: 1, name: s1, cpu: 2, ramMB: 4096, diskGB: 40, prices: {dc-1: {monthly: "20"}}}
    - {id: 2, name: s2, cpu: 4, ramMB: 8192, diskGB: 80, prices: {dc-1: {monthly: 40.5}}}
  cluster: {identifier: c-1, name: tiny, datacenter: dc-1, maxWorkers: 4}
  nodeGroups: [{name: g, sizeId: 2, workers: 2}]
  faults:
    rules: [{service: vpsie, method: GET, path: "*/k8s/*", errorRate: 0.5, times: 3}]
    down: [{service: kubernetes, start: 10, end: 20}]
    neverReady: ["tiny-g-0009"]
    evictionBlocked: ["shop/app=web"]
"""


def test_shipped_scenarios_load() -> None:
    demo = load_scenario(SCENARIOS / "demo.yaml")
    assert [(g.name, g.size_id, g.workers) for g in demo.groups] == [("general", 104, 12)]
    kinds = sorted({m["kind"] for m in demo.manifests})
    assert kinds == ["DaemonSet", "Deployment", "Namespace", "PodDisruptionBudget"]
    cheaper = [s for s in demo.sizes if s.cpu < 8]
    assert len(cheaper) >= 2
    small = load_scenario(SCENARIOS / "small.yaml")
    assert sum(g.workers for g in small.groups) == 3


def test_a_world_document_parses_fully() -> None:
    scenario = parse_scenario(WORLD, source="w.yaml")
    assert scenario.sizes[1].prices["dc-1"].monthly == 40.5
    assert str(scenario.sizes[0].prices["dc-1"].hourly) == "0.0274"  # monthly / 730
    assert scenario.faults.rules == [
        FaultRule(service="vpsie", method="GET", path="*/k8s/*", error_rate=0.5, times=3)
    ]
    assert scenario.faults.is_down("kubernetes", 15) and not scenario.faults.is_down("vpsie", 15)
    assert scenario.faults.never_turns_ready("tiny-g-0009")
    assert scenario.faults.eviction_blocked == {"shop/app=web"}
    assert scenario.auth.token  # no credentials given: a static token is made up


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("sizeId: 2, workers: 2", "sizeId: 7, workers: 2"), "spec.nodeGroups[0].sizeId: 7 is not"),
        (('monthly: "20"', "monthly: cheap"), "spec.sizes[0].prices.dc-1.monthly: expected a"),
        (("maxWorkers: 4", "maxWorkers: 1"), "spec.nodeGroups: 2 workers exceed maxWorkers"),
        (("datacenter: dc-1,", "datacenter: dc-9,"), "spec.cluster.datacenter: 'dc-9' is not"),
        (("errorRate: 0.5", "errorRate: 5"), "spec.faults.rules[0].errorRate: must be between"),
        (("service: vpsie", "service: aws"), "spec.faults.rules[0].service: expected one of"),
        (("start: 10, end: 20", "start: 10, end: 5"), "spec.faults.down[0].end: must be afte"),
        (("shop/app=web", "shop"), "spec.faults.evictionBlocked[0]: expected 'namespace/"),
        (("cpu: 2,", "cpus: 2,"), "spec.sizes[0].cpus: unknown key"),
        (("name: tiny,", "name: Tiny_1,"), "spec.cluster.name: lower-case"),
    ],
)
def test_bad_world_names_file_document_and_key(edit: tuple[str, str], message: str) -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n" + WORLD
    old, new = edit
    assert old in text
    with pytest.raises(ScenarioError, match=re.escape(message)) as caught:
        parse_scenario(text.replace(old, new), source="w.yaml")
    assert str(caught.value).startswith("w.yaml: document 1 (World): ")


def test_structural_errors() -> None:
    with pytest.raises(ScenarioError, match="no document with apiVersion"):
        parse_scenario("apiVersion: v1\nkind: Namespace\n", source="w.yaml")
    with pytest.raises(ScenarioError, match="document 1: a second World document"):
        parse_scenario(WORLD + "---\n" + WORLD, source="w.yaml")
    with pytest.raises(ScenarioError, match=r"not valid YAML \(line 2\)"):
        parse_scenario("a: 1\n b: [\n", source="w.yaml")
    with pytest.raises(ScenarioError, match="document 0: expected a mapping"):
        parse_scenario("- 1\n---\n" + WORLD, source="w.yaml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")
