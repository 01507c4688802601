"""Topology spread beyond maxSkew: minDomains, matchLabelKeys and the node inclusion policies
(nodeAffinityPolicy, nodeTaintsPolicy) change which fleets the scheduling simulation accepts,
as they change what kube-scheduler would bind."""

from __future__ import annotations

import random
from dataclasses import replace

import orjson
import pytest

from planner import NodeGroupPolicy, analyze, plan
from planner.checks import simulate_batches
from planner.scheduling import Bin, Packer, ShapeBook
from statemachine.plan import Action, Strategy
from statemachine.world import (
    HOSTNAME_LABEL,
    NODEGROUP_LABEL,
    LabelSelector,
    NodeInfo,
    PodInfo,
    Resources,
    SpreadConstraint,
    Taint,
)
from tests.planner.cluster_builder import NOW, cluster, node, pod, shuffled

ZONE = "topology.kubernetes.io/zone"
WEB = LabelSelector(match_labels={"app": "web"})
GPU_TAINT = (Taint(key="gpu", effect="NoSchedule"),)


def policy() -> NodeGroupPolicy:
    return NodeGroupPolicy(name="pool", cluster="c1", min_nodes=1)


def zone_world(
    rule: SpreadConstraint, *, observer: tuple[Taint, ...] | None = None, pinned: bool = False
) -> tuple[list[NodeInfo], list[PodInfo]]:
    """Four LARGE nodes of the group, all in zone a, one tiny `web` replica on each, spread over
    zones by `rule`. `observer`: a node of another group in zone b (with these taints) holding
    no replica. `pinned`: the replicas select the group's nodes (nodeSelector)."""
    nodes = [
        node(f"n{i}", labels={NODEGROUP_LABEL: "pool", HOSTNAME_LABEL: f"n{i}", ZONE: "a"})
        for i in range(4)
    ]
    if observer is not None:
        labels = {NODEGROUP_LABEL: "other", HOSTNAME_LABEL: "o1", ZONE: "b"}
        nodes.append(node("o1", group="other", labels=labels, taints=observer))
    extra: dict[str, object] = {"node_selector": {NODEGROUP_LABEL: "pool"}} if pinned else {}
    pods = [
        pod(
            f"web-{i}",
            f"n{i}",
            cpu=100,
            mem_mib=128,
            labels={"app": "web"},
            owner_name="web",
            topology_spread=(rule,),
            **extra,
        )
        for i in range(4)
    ]
    return nodes, pods


ZONE_CASES = [
    # Zone b's nodes were removed since web was scheduled: one zone is left, fewer than
    # minDomains 2, so the global minimum counts as 0 and zone a may hold at most maxSkew (1)
    # replica. An evicted replica could not come back: the one-node fleet is refused.
    pytest.param({"min_domains": 2}, None, False, Action.PROCEED, Action.REJECT, id="minDomains"),
    # A GPU pool in zone b (tainted, no replica) was added after web rolled out. Counted
    # (nodeTaintsPolicy Ignore, the default) it is an empty zone, so zone a may take no
    # evicted replica back; not counted (Honor), the plan goes ahead.
    pytest.param(
        {"node_taints_policy": "Honor"},
        GPU_TAINT,
        False,
        Action.REJECT,
        Action.PROCEED,
        id="nodeTaintsPolicy",
    ),
    # The replicas select the group's nodes; another pool in zone b was added later. Honor
    # (the default) counts only the nodes the pods may run on; Ignore counts zone b, empty.
    pytest.param(
        {"node_affinity_policy": "Ignore"},
        (),
        True,
        Action.PROCEED,
        Action.REJECT,
        id="nodeAffinityPolicy",
    ),
]


@pytest.mark.parametrize(("field", "observer", "pinned", "without", "with_it"), ZONE_CASES)
def test_a_spread_field_changes_the_plan_and_a_refusal_names_the_workload(
    field: dict[str, object],
    observer: tuple[Taint, ...] | None,
    pinned: bool,
    without: Action,
    with_it: Action,
) -> None:
    """Adversary: none moves during the plan; the rule is the workload's own, and the world
    changed around it since its pods were placed (a zone gone, a pool added). Without the
    field and with it, the same world: one outcome is the one-node fleet, the other no plan,
    the reason naming the workload."""
    outcomes = {}
    for rule in (
        SpreadConstraint(max_skew=1, topology_key=ZONE, selector=WEB),
        SpreadConstraint(max_skew=1, topology_key=ZONE, selector=WEB, **field),  # type: ignore[arg-type]
    ):
        nodes, pods = zone_world(rule, observer=observer, pinned=pinned)
        a, spec = plan(cluster(nodes, pods), policy(), now=NOW)
        outcomes[rule == SpreadConstraint(max_skew=1, topology_key=ZONE, selector=WEB)] = a
        if a.action is Action.PROCEED:
            assert a.fleet_after == "1 x s-2-4" and spec is not None and spec.replacements
            assert spec.recommended_action is Action.PROCEED
        else:
            assert spec is not None and spec.recommended_action is Action.REJECT
            (reason,) = a.action_reasons
            assert "ReplicaSet default/web (topology spread rules)" in reason, reason
            assert any("ReplicaSet default/web" in r for r in a.rejected_fleets)
    assert (outcomes[True].action, outcomes[False].action) == (without, with_it)


def revisions_world(keys: tuple[str, ...]) -> tuple[list[NodeInfo], list[PodInfo]]:
    """Six LARGE nodes; web's old ReplicaSet (3 replicas, on n3-n5) and new one (on n0-n2)
    share app=web, spread by hostname with maxSkew 1 over app=web, with matchLabelKeys
    `keys`. The control-plane node is a domain holding none (taints are ignored by
    default), so a node may hold at most one pod the selector counts."""
    rule = SpreadConstraint(
        max_skew=1, topology_key=HOSTNAME_LABEL, selector=WEB, match_label_keys=keys
    )
    nodes = [
        node(f"n{i}", labels={NODEGROUP_LABEL: "pool", HOSTNAME_LABEL: f"n{i}"}) for i in range(6)
    ]
    pods = [
        pod(
            f"web-{rev}-{i}",
            f"n{i + (3 if rev == 'old' else 0)}",
            cpu=100,
            mem_mib=128,
            labels={"app": "web", "pod-template-hash": rev},
            owner_name=f"web-{rev}",
            topology_spread=(rule,),
        )
        for rev in ("old", "new")
        for i in range(3)
    ]
    cp = node(
        "cp",
        group="control",
        labels={HOSTNAME_LABEL: "cp"},
        taints=(Taint(key="node-role.kubernetes.io/control-plane", effect="NoSchedule"),),
    )
    return [*nodes, cp], pods


def test_match_label_keys_let_two_revisions_share_nodes() -> None:
    """Adversary: none moves; a rollout is under way (two ReplicaSets of web). Counting both
    revisions, no node may hold an old and a new replica: every fleet the search offers
    fails the simulation and no plan is made, the reason naming the workload. With
    matchLabelKeys [pod-template-hash] each revision counts only itself: three small nodes
    with one of each pass every batch."""
    a, spec = plan(cluster(*revisions_world(())), policy(), now=NOW)
    assert a.action is Action.REJECT
    assert spec is not None and spec.recommended_action is Action.REJECT
    assert "ReplicaSet default/web-" in a.action_reasons[0]
    assert any(r.startswith("3 x s-2-4") for r in a.rejected_fleets), a.rejected_fleets
    b = analyze(cluster(*revisions_world(("pod-template-hash",))), policy(), now=NOW)
    assert b.action is Action.PROCEED and b.fleet_after == "3 x s-2-4"
    cap = next(c for c in b.checks if c.name == "capacity")
    assert cap.status.value == "passed"


def test_match_label_keys_a_pod_lacks_are_ignored() -> None:
    """A key the pod does not carry adds nothing to the selector: the same as no key."""
    book_pods = revisions_world(("no-such-label",))[1]
    plain = revisions_world(())[1]
    book = ShapeBook([*book_pods, *plain])
    assert book.shape(book_pods[0]).spread == book.shape(plain[0]).spread


@pytest.mark.parametrize(
    ("rule", "tainted", "placed"),
    [
        # Zone a holds two replicas, zone b none: b takes the next, then a and b alternate
        # within the skew: all 5 are placed.
        (SpreadConstraint(max_skew=1, topology_key="zone", selector=WEB), False, 5),
        # minDomains 3 with two zones: the global minimum counts as 0, so a zone holds at
        # most one replica; zone a already holds two, zone b takes one: 1 placed.
        (SpreadConstraint(max_skew=1, topology_key="zone", selector=WEB, min_domains=3), False, 1),
        # A tainted node in zone c (the pods do not tolerate it) counts by default, empty:
        # zone a may take none (2 + 1 > 2), zone b two.
        (SpreadConstraint(max_skew=2, topology_key="zone", selector=WEB), True, 2),
        # ... and not with nodeTaintsPolicy Honor: zones a and b then share the 5.
        (
            SpreadConstraint(
                max_skew=2, topology_key="zone", selector=WEB, node_taints_policy="Honor"
            ),
            True,
            5,
        ),
    ],
)
def test_the_simulation_counts_domains_as_the_fields_say(
    rule: SpreadConstraint, tainted: bool, placed: int
) -> None:
    proto = pod("p", "x", labels={"app": "web"}, topology_spread=(rule,))
    book = ShapeBook([proto])
    shape = book.shape(proto)
    room = Resources(cpu_millis=10_000, memory_bytes=10 << 30, pods=110)
    a1 = book.bin("a1", {"zone": "a"}, (), room)
    a2 = book.bin("a2", {"zone": "a"}, (), room)
    b1 = book.bin("b1", {"zone": "b"}, (), room)
    bins = [a1, a2, b1]
    if tainted:
        bins.append(book.bin("c1", {"zone": "c"}, GPU_TAINT, room))
    a1.add(shape, 1)
    a2.add(shape, 1)
    assert 5 - Packer(bins=bins).place(shape, 5) == placed
    zone_a = a1.content[shape] + a2.content[shape]
    zone_b = b1.content.get(shape, 0)
    assert zone_a + zone_b == placed + 2
    if not tainted and rule.min_domains == 1:
        assert abs(zone_a - zone_b) <= 1


def test_plans_with_every_field_are_byte_identical_whatever_the_order() -> None:
    rule = SpreadConstraint(
        max_skew=1,
        topology_key=HOSTNAME_LABEL,
        selector=WEB,
        min_domains=2,
        match_label_keys=("pod-template-hash",),
        node_affinity_policy="Honor",
        node_taints_policy="Honor",
    )
    nodes, pods = revisions_world(())
    pods = [replace(p, topology_spread=(rule,)) for p in pods]
    snap = cluster(nodes, pods)
    first = orjson.dumps(plan(snap, policy(), now=NOW)[1], default=str)
    assert b"s-2-4" in first
    rng = random.Random(3)
    for _ in range(3):
        assert orjson.dumps(plan(shuffled(snap, rng), policy(), now=NOW)[1], default=str) == first


@pytest.mark.parametrize(
    ("policy_", "failed_batch"),
    [("Ignore", 0), ("Honor", None)],
    ids=["taints-ignored", "taints-honoured"],
)
def test_cordoned_old_nodes_stop_counting_when_taints_are_honoured(
    policy_: str, failed_batch: int | None
) -> None:
    """Blue-green, hostname spread maxSkew 1: s1 stays and holds one replica; d1 (one replica)
    is drained first, d2 (none) later; every old node is cordoned from the start. Counting
    the cordoned nodes (nodeTaintsPolicy Ignore), d1 and d2 are empty domains and s1 may not
    take a second replica; honouring the cordon's taint they are not domains, and it may."""
    rule = SpreadConstraint(
        max_skew=1, topology_key=HOSTNAME_LABEL, selector=WEB, node_taints_policy=policy_
    )
    proto = pod("p", "x", labels={"app": "web"}, topology_spread=(rule,))
    book = ShapeBook([proto])
    shape = book.shape(proto)
    room = Resources(cpu_millis=10_000, memory_bytes=10 << 30, pods=110)
    s1, d1, d2 = (book.bin(n, {HOSTNAME_LABEL: n}, (), room) for n in ("s1", "d1", "d2"))
    s1.add(shape, 1)
    d1.add(shape, 1)

    def no_new(i: int) -> Bin:
        raise AssertionError("no new node in this plan")

    outcome = simulate_batches(
        [s1], [[d1], [d2]], [0, 0], no_new, Strategy.BLUE_GREEN, min_cpu=0, min_mem=0
    )
    assert outcome.failed_batch == failed_batch
    assert s1.content[shape] == (2 if failed_batch is None else 1)
