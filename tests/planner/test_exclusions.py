"""Every reason a node is left out, each with its stable code."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner import EXCLUSION_CODES, NodeGroupPolicy, analyze, map_workers
from statemachine.world import (
    CORDONED_BY_ANNOTATION,
    KARPENTER_DO_NOT_DISRUPT,
    NODEGROUP_LABEL,
    PROTECTED_ANNOTATION,
    SAFE_TO_EVICT_ANNOTATION,
    SCALE_DOWN_DISABLED_LABEL,
    SIZE_LABEL,
    LabelRequirement,
    NodeInfo,
    VpsieNodeGroup,
    VpsieWorker,
)
from tests.planner.cluster_builder import LARGE, NOW, cluster, node, pod

POLICY = NodeGroupPolicy(name="pool", cluster="c1", min_nodes=1)


# (case, changes to node "victim", changes to its pod, expected code)
CASES: list[tuple[str, dict[str, object], dict[str, object], str]] = [
    ("not ready", {"ready": False}, {}, "not-ready"),
    ("cordoned by someone else", {"unschedulable": True}, {}, "cordoned"),
    ("protected", {"annotations": {PROTECTED_ANNOTATION: "true"}}, {}, "protected"),
    (
        "scale-down disabled",
        {"labels": {SCALE_DOWN_DISABLED_LABEL: "true"}},
        {},
        "scale-down-disabled",
    ),
    (
        "node do-not-disrupt",
        {"annotations": {KARPENTER_DO_NOT_DISRUPT: "true"}},
        {},
        "do-not-disrupt",
    ),
    ("local storage", {}, {"uses_local_storage": True}, "local-storage"),
    (
        "pod do-not-disrupt",
        {},
        {"annotations": {KARPENTER_DO_NOT_DISRUPT: "true"}},
        "pod-do-not-disrupt",
    ),
    (
        "pod not safe to evict",
        {},
        {"annotations": {SAFE_TO_EVICT_ANNOTATION: "false"}},
        "pod-not-safe-to-evict",
    ),
    ("pod without controller", {}, {"owner_kind": "", "owner_name": ""}, "pod-without-controller"),
    (
        "pod pinned by hostname selector",
        {},
        {"node_selector": {"kubernetes.io/hostname": "victim"}},
        "pod-pinned-to-node",
    ),
    (
        "pod pinned by hostname affinity",
        {},
        {
            "required_node_affinity": (
                (
                    LabelRequirement(
                        key="kubernetes.io/hostname", operator="In", values=("victim",)
                    ),
                ),
            )
        },
        "pod-pinned-to-node",
    ),
]


@pytest.mark.parametrize(("case", "node_kw", "pod_kw", "code"), CASES, ids=[c[0] for c in CASES])
def test_exclusion_reason(
    case: str, node_kw: dict[str, object], pod_kw: dict[str, object], code: str
) -> None:
    if isinstance(extra := node_kw.get("labels"), dict):
        node_kw = {**node_kw, "labels": {**node("victim").labels, **extra}}
    nodes = [node("victim", **node_kw), node("other")]
    pods = [pod("p0", "victim", **pod_kw), pod("p1", "other")]
    a = analyze(cluster(nodes, pods), POLICY, now=NOW)
    found = {e.node: e for e in a.exclusions}
    assert found["victim"].reason == code, case
    assert found["victim"].message
    assert "victim" not in {r.old_node for r in a.replacements}
    assert code in EXCLUSION_CODES


def test_our_own_cordon_does_not_exclude() -> None:
    nodes = [
        node("victim", unschedulable=True, annotations={CORDONED_BY_ANNOTATION: "plan-1"}),
        node("other"),
    ]
    a = analyze(cluster(nodes, [pod("p", "victim")]), POLICY, now=NOW)
    assert "victim" not in {e.node for e in a.exclusions}


def test_local_storage_allowed_when_policy_says_so() -> None:
    nodes = [node("victim"), node("other")]
    pods = [pod("p0", "victim", uses_local_storage=True)]
    relaxed = NodeGroupPolicy(name="pool", min_nodes=1, skip_nodes_with_local_storage=False)
    a = analyze(cluster(nodes, pods), relaxed, now=NOW)
    assert "victim" not in {e.node for e in a.exclusions if e.reason == "local-storage"}
    assert "victim" in {c.node for c in a.candidates}


def test_daemonset_pods_with_local_storage_do_not_pin_the_node() -> None:
    nodes = [node("victim"), node("other")]
    ds = pod("ds", "victim", is_daemonset=True, owner_kind="DaemonSet", uses_local_storage=True)
    a = analyze(cluster(nodes, [ds]), POLICY, now=NOW)
    assert "victim" in {c.node for c in a.candidates}


def test_node_already_on_target_size_is_excluded_with_reason() -> None:
    from tests.planner.cluster_builder import SMALL

    nodes = [node("small", SMALL), node("large")]
    pods = [pod("a", "small", cpu=100), pod("b", "large", cpu=100)]
    snap = cluster(nodes, pods, sizes={"small": SMALL})
    a = analyze(snap, NodeGroupPolicy(name="pool", min_nodes=2), now=NOW)
    assert a.target == SMALL
    assert {e.node: e.reason for e in a.exclusions} == {"small": "already-target-size"}
    assert [r.old_node for r in a.replacements] == ["large"]


def test_unmapped_node_without_worker_is_excluded() -> None:
    snap = cluster([node("a"), node("b")], [])
    lone = NodeInfo(name="ghost", labels=node("ghost").labels, ready=True)
    a = analyze(replace(snap, nodes=(*snap.nodes, lone)), POLICY, now=NOW)
    assert {e.node: e.reason for e in a.exclusions}["ghost"] == "unmapped"


def test_workers_are_matched_by_hostname_then_ip() -> None:
    by_ip = node("renamed", addresses=("10.0.0.9",))
    snap = cluster([node("a")], [])
    workers = (
        *snap.workers,
        VpsieWorker(
            identifier="vm-ip", hostname="something-else", ip="10.0.0.9", cpu=8, ram_mb=16384
        ),
    )
    snap = replace(snap, nodes=(*snap.nodes, by_ip), workers=workers)
    found = map_workers(snap)
    assert found["a"].worker == "vm-a" and found["a"].matched_by == "hostname"
    assert found["renamed"].worker == "vm-ip" and found["renamed"].matched_by == "ip"
    assert found["renamed"].size_id == LARGE.id
    assert found["renamed"].monthly_price == LARGE.monthly_price


def test_pods_are_only_counted_on_their_own_group() -> None:
    nodes = [node("mine"), node("theirs", group="other")]
    pods = [pod("a", "mine"), pod("b", "theirs")]
    a = analyze(cluster(nodes, pods), POLICY, now=NOW)
    assert a.group_nodes == ("mine",)
    assert a.snapshot_summary["group_pods"] == 1


def test_a_workers_size_comes_from_the_log_then_our_label_then_a_unique_shape() -> None:
    """VPSie's node rows name no group: our own records first, the shape last, never a guess."""
    from tests.planner.cluster_builder import MEDIUM, SMALL

    nodes = [
        node("logged"),
        node("labelled", labels={**node("labelled").labels, SIZE_LABEL: str(SMALL.id)}),
        node("shaped"),
    ]
    snap = cluster(nodes, [], sizes={"logged": LARGE, "labelled": LARGE})
    snap = replace(snap, logged_sizes={"vm-logged": MEDIUM.id})
    found = map_workers(snap)
    assert (found["logged"].size_id, found["logged"].size_from) == (MEDIUM.id, "log")
    assert (found["labelled"].size_id, found["labelled"].size_from) == (SMALL.id, "label")
    assert (found["shaped"].size_id, found["shaped"].size_from) == (LARGE.id, "shape")
    assert found["shaped"].group_id == 13


def test_an_ambiguous_shape_leaves_the_size_unknown() -> None:
    twin = replace(LARGE, id=4, name="s-8-16-b")  # same cpu/ram/disk as LARGE, its own group
    snap = cluster([node("a"), node("b")], [], offers=(*cluster([], []).offers, twin))
    groups = (*snap.vpsie_groups, VpsieNodeGroup(id=14, name="vpsie-4", size_id=4))
    a = analyze(replace(snap, vpsie_groups=groups), POLICY, now=NOW)
    found = {e.node: e for e in a.exclusions}
    assert found["a"].reason == "unmapped" and "ambiguous" in found["a"].message


def test_hostnames_match_whatever_their_case_and_readonly_workers_are_excluded() -> None:
    snap = cluster([node("mixed-case-1"), node("other")], [])
    listed = (
        VpsieWorker(identifier="vm-1", hostname="Mixed-Case-1", cpu=8, ram_mb=16384),
        VpsieWorker(identifier="", node_id=7, hostname="OTHER", cpu=8, ram_mb=16384),
    )
    snap = replace(snap, workers=listed, nodes=tuple(
        replace(n, labels={k: v for k, v in n.labels.items() if k != NODEGROUP_LABEL})
        for n in snap.nodes
    ))
    found = map_workers(snap)
    assert found["mixed-case-1"].worker == "vm-1" and found["mixed-case-1"].matched_by == "hostname"
    assert found["other"].read_only
    a = analyze(snap, NodeGroupPolicy(name="vpsie-3", cluster="c1", min_nodes=1), now=NOW)
    assert {e.node: e.reason for e in a.exclusions} == {"other": "worker-read-only"}
    assert [c.node for c in a.candidates] == ["mixed-case-1"]


def test_a_node_a_plan_added_is_not_a_candidate_again_within_the_cooldown() -> None:
    """Adversary: none moves; the planner itself would churn. Three oversized nodes, one of
    them added by our last plan 20 minutes ago (our size label, its creation time): within
    the hour's cooldown it is left out with its reason and the others are still planned;
    once the cooldown has passed it is a candidate again."""
    from statemachine.world import SIZE_LABEL

    fresh = node(
        "fresh", labels={**node("fresh").labels, SIZE_LABEL: "3"}, created_at="2026-11-26T11:40:00Z"
    )
    nodes = [node("a"), node("b"), fresh]
    pods = [pod(f"p-{n.name}", n.name, cpu=100) for n in nodes]
    pol = NodeGroupPolicy(name="pool", min_nodes=1, cooldown_s=3600)
    a = analyze(cluster(nodes, pods), pol, now=NOW)  # 12:00
    recent = [e for e in a.exclusions if e.reason == "recently-added"]
    assert [(e.node, e.message) for e in recent] == [
        (
            "fresh",
            "added by a plan at 2026-11-26T11:40:00Z: not a candidate again before "
            "2026-11-26T12:40:00Z (cooldownPeriod)",
        )
    ]
    assert "fresh" not in {r.old_node for r in a.replacements}
    assert a.replacements  # the rest of the group is still planned
    later = analyze(cluster(nodes, pods), pol, now="2026-11-26T12:40:00Z")
    assert "fresh" in {c.node for c in later.candidates}
    # An unreadable creation time holds the node back too.
    blind = [node("a"), node("b"), replace(fresh, created_at="yesterday")]
    c = analyze(cluster(blind, pods), pol, now=NOW)
    assert [e.node for e in c.exclusions if e.reason == "recently-added"] == ["fresh"]
    # A node of the same age that no plan of ours added is a candidate.
    theirs = [node("a"), node("b"), node("fresh", created_at="2026-11-26T11:40:00Z")]
    d = analyze(cluster(theirs, pods), pol, now=NOW)
    assert "fresh" in {c.node for c in d.candidates}
