"""Mixed fleets: the cheapest mix of sizes, anti-affinity, safe-to-evict, determinism."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal

import orjson
import pytest

from planner import NodeGroupPolicy, analyze, plan, validate_plan
from statemachine.plan import Action
from statemachine.world import SAFE_TO_EVICT_ANNOTATION, LabelSelector, SizeOffer
from tests.planner.cluster_builder import NOW, OFFERS, cluster, node, pod, shuffled

# A CPU-leaning and a memory-leaning size beside the general ones (all nodes start LARGE).
CPU_4_4 = SizeOffer(id=4, name="c-4-4", cpu=4, ram_mb=4096, disk_gb=40, monthly_price=Decimal(25))
MEM_2_16 = SizeOffer(
    id=5, name="m-2-16", cpu=2, ram_mb=16384, disk_gb=40, monthly_price=Decimal(30)
)
LADDER = (*OFFERS, CPU_4_4, MEM_2_16)


def policy(solver: bool = True, **kw: object) -> NodeGroupPolicy:
    base: dict[str, object] = {"name": "pool", "cluster": "c1", "min_nodes": 1}
    base.update(kw)
    return NodeGroupPolicy(fleet_solver=solver, **base)  # type: ignore[arg-type]


def cpu_and_memory_world() -> tuple[list, list]:  # type: ignore[type-arg]
    """Four LARGE nodes ($320), each with a CPU-heavy pod (1500m, 256 MiB) and a memory-heavy
    pod (100m, 5 GiB). Usable room: c-4-4 3528m / 2674 MiB (two CPU pods, no memory pod);
    m-2-16 1737m / 12259 MiB (one CPU pod and two memory pods, but not two CPU pods);
    s-4-8 3528m / 5624 MiB (one of each; 2 + 1 is 32 MiB too much); s-8-16 two nodes.
    Single sizes: 4 x m-2-16 $120, 4 x s-4-8 $160, 2 x s-8-16 $160; c-4-4 and s-2-4 alone
    cannot carry a memory pod. The mix 2 x m-2-16 (one CPU and two memory pods each) +
    1 x c-4-4 (the other two CPU pods) costs $85."""
    nodes = [node(f"n{i}") for i in range(4)]
    pods = []
    for i in range(4):
        pods.append(pod(f"cpu-{i}", f"n{i}", cpu=1500, mem_mib=256, labels={"app": "cpu"}))
        pods.append(pod(f"mem-{i}", f"n{i}", cpu=100, mem_mib=5120, labels={"app": "mem"}))
    return nodes, pods


@pytest.mark.parametrize("solver", [True, False], ids=["solver", "heuristic"])
def test_a_mix_strictly_cheaper_than_every_single_size_is_chosen(solver: bool) -> None:
    nodes, pods = cpu_and_memory_world()
    pol = policy(solver)
    a = analyze(cluster(nodes, pods, offers=LADDER), pol, now=NOW)
    singles = {}
    for offer in LADDER:
        alone = policy(solver, allowed_sizes=(offer.name,))
        b = analyze(cluster(nodes, pods, offers=LADDER), alone, now=NOW)
        if b.replacements:
            singles[offer.name] = Decimal(320) - b.monthly_saving
    assert singles == {"s-4-8": 160, "s-8-16": 160, "m-2-16": 120}
    assert a.fleet_before == "4 x s-8-16"
    assert a.fleet_after == "2 x m-2-16 + 1 x c-4-4"
    assert a.monthly_saving == Decimal(320 - 85)
    assert a.action is Action.PROCEED
    assert sorted(r.new_size_name or "remove" for r in a.replacements) == [
        "c-4-4",
        "m-2-16",
        "m-2-16",
        "remove",
    ]
    _, spec = plan(cluster(nodes, pods, offers=LADDER), pol, now=NOW)
    assert spec is not None and validate_plan(spec, pol) == []
    assert spec.snapshot_summary["fleet_after"] == "2 x m-2-16 + 1 x c-4-4"


def test_anti_affinity_needs_one_node_per_replica() -> None:
    # Four tiny replicas fit one SMALL node, but each repels the others on hostname.
    sel = LabelSelector(match_labels={"app": "spread"})
    nodes = [node(f"n{i}") for i in range(6)]
    pods = [
        pod(
            f"r{i}",
            f"n{i}",
            cpu=100,
            mem_mib=128,
            labels={"app": "spread"},
            anti_affinity_hostname=(sel,),
        )
        for i in range(4)
    ]
    a = analyze(cluster(nodes, pods), policy(), now=NOW)
    assert a.fleet_after == "4 x s-2-4"
    without = [
        pod(f"r{i}", f"n{i}", cpu=100, mem_mib=128, labels={"app": "spread"}) for i in range(4)
    ]
    assert analyze(cluster(nodes, without), policy(), now=NOW).fleet_after == "1 x s-2-4"


def test_safe_to_evict_true_makes_local_storage_and_bare_pods_movable() -> None:
    nodes = [node("n0"), node("n1"), node("n2")]
    safe = {SAFE_TO_EVICT_ANNOTATION: "true"}
    pods = [
        pod("cache", "n0", uses_local_storage=True),
        pod("bare", "n1", owner_kind="", owner_name=""),
        pod("web", "n2"),
    ]
    held = analyze(cluster(nodes, pods), policy(), now=NOW)
    assert {(e.node, e.reason) for e in held.exclusions} >= {
        ("n0", "local-storage"),
        ("n1", "pod-without-controller"),
    }
    pods = [
        pod("cache", "n0", uses_local_storage=True, annotations=safe),
        pod("bare", "n1", owner_kind="", owner_name="", annotations=safe),
        pod("web", "n2"),
    ]
    a = analyze(cluster(nodes, pods), policy(), now=NOW)
    assert not [e for e in a.exclusions if e.reason != "already-target-size"]
    assert {c.node for c in a.candidates} == {"n0", "n1", "n2"}


@pytest.mark.parametrize("solver", [True, False], ids=["solver", "heuristic"])
def test_a_mixed_plan_is_byte_identical_for_the_same_world(solver: bool) -> None:
    nodes, pods = cpu_and_memory_world()
    snap = cluster(nodes, pods, offers=LADDER)
    pol = policy(solver, batch_size=2)
    first = orjson.dumps(plan(snap, pol, now=NOW)[1], default=str)
    assert b"c-4-4" in first and b"m-2-16" in first
    rng = random.Random(7)
    for _ in range(3):
        assert orjson.dumps(plan(shuffled(snap, rng), pol, now=NOW)[1], default=str) == first


def spread_world(key: str) -> tuple[list, list]:  # type: ignore[type-arg]
    """Six LARGE nodes (zones a and b, three each), one tiny `web` replica on each, spread
    over `key` with maxSkew 1 (DoNotSchedule), and the cluster's control-plane node."""
    from statemachine.world import SpreadConstraint, Taint

    rule = SpreadConstraint(
        max_skew=1, topology_key=key, selector=LabelSelector(match_labels={"app": "web"})
    )
    nodes = [
        node(
            f"n{i}",
            labels={
                "autoscaler.vpsie.com/nodegroup": "pool",
                "kubernetes.io/hostname": f"n{i}",
                "topology.kubernetes.io/zone": "ab"[i % 2],
            },
        )
        for i in range(6)
    ]
    pods = [
        pod(
            f"web-{i}",
            f"n{i}",
            cpu=100,
            mem_mib=128,
            labels={"app": "web"},
            owner_name="web",
            topology_spread=(rule,),
        )
        for i in range(6)
    ]
    # A control-plane node of the cluster, outside the group: tainted, but the scheduler
    # counts it as a domain (nodeTaintsPolicy defaults to Ignore), holding no replica.
    cp = node(
        "cp",
        group="control",
        labels={"kubernetes.io/hostname": "cp", "topology.kubernetes.io/zone": "a"},
        taints=(Taint(key="node-role.kubernetes.io/control-plane", effect="NoSchedule"),),
    )
    return [*nodes, cp], pods


def test_a_hard_hostname_spread_forbids_the_cheapest_fleet() -> None:
    """Adversary: none moves; the rule is the workload's own. Without the rule all six tiny
    replicas fit one SMALL node; with maxSkew 1 over hostnames no node may hold two while
    another (the control-plane node counts) holds none, so the fleet keeps a node per
    replica (the smallest size), and every batch of the plan keeps the skew. A fleet of one
    node would be refused by the simulation, naming the workload."""
    nodes, pods = spread_world("kubernetes.io/hostname")
    free = [replace(p, topology_spread=()) for p in pods]
    assert analyze(cluster(nodes, free), policy(), now=NOW).fleet_after == "1 x s-2-4"
    a = analyze(cluster(nodes, pods), policy(), now=NOW)
    assert a.fleet_after == "6 x s-2-4"
    assert a.action is Action.PROCEED
    assert any(
        r.startswith("1 x s-2-4") and "ReplicaSet default/web (topology spread rules)" in r
        for r in a.rejected_fleets
    ), a.rejected_fleets
    cap = next(c for c in a.checks if c.name == "capacity")
    assert cap.status.value == "passed"


def test_a_spread_over_a_key_new_nodes_lack_makes_no_plan_and_names_the_workload() -> None:
    """Adversary: none moves. The replicas spread over zones; the group's nodes are in two
    zones, so a new node (which carries only the labels every node of the group shares)
    would have no zone: the scheduler would never place a replica there. No plan is made and
    the reason names the workload and the key."""
    nodes, pods = spread_world("topology.kubernetes.io/zone")
    a = analyze(cluster(nodes, pods), policy(), now=NOW)
    assert a.action is Action.REJECT and not a.replacements
    (reason,) = a.action_reasons
    assert "ReplicaSet default/web" in reason and "topology.kubernetes.io/zone" in reason


def test_the_simulation_keeps_a_zone_spread_within_its_skew() -> None:
    """Zone a has two nodes with one replica each, zone b one node with none: the next
    replica must go to zone b (skew 2 - 0 would be 2 > 1), and once b holds one, a and b
    alternate; a fourth node in a zone the pods' nodeSelector excludes does not count."""
    from planner.scheduling import Bin, Packer, ShapeBook
    from statemachine.world import Resources, SpreadConstraint

    rule = SpreadConstraint(
        max_skew=1, topology_key="zone", selector=LabelSelector(match_labels={"app": "web"})
    )
    proto = pod("p", "x", labels={"app": "web"}, topology_spread=(rule,), node_selector={"ok": "1"})
    book = ShapeBook([proto])
    shape = book.shape(proto)
    room = Resources(cpu_millis=10_000, memory_bytes=10 << 30, pods=110)

    def make(name: str, zone: str, ok: str = "1") -> Bin:
        return book.bin(name, {"zone": zone, "ok": ok}, (), room)

    a1, a2, b1, c1 = make("a1", "a"), make("a2", "a"), make("b1", "b"), make("c1", "c", ok="0")
    a1.add(shape, 1)
    a2.add(shape, 1)
    packer = Packer(bins=[a1, a2, b1, c1])
    assert packer.place(shape, 1) == 0
    assert (a1.content[shape], a2.content[shape], b1.content.get(shape, 0)) == (1, 1, 1)
    assert packer.place(shape, 3) == 0
    zone_a = a1.content[shape] + a2.content[shape]
    assert abs(zone_a - b1.content[shape]) <= 1 and c1.content.get(shape, 0) == 0


def test_removals_come_from_the_most_populated_zone_first() -> None:
    """Adversary: none moves. Four nodes in zone a, two in zone b, all equally loaded: keeping
    the first by name would keep two zone-a nodes. Two LARGE nodes carry everything (the
    heuristic sizing, which keeps nodes of the size by this rule; the solver chooses the
    nodes it keeps by what they hold); the four removals are taken from the zone with most
    nodes left each time, so one node stays in each zone."""
    nodes = [
        node(
            f"n{i}",
            labels={
                "autoscaler.vpsie.com/nodegroup": "pool",
                "kubernetes.io/hostname": f"n{i}",
                "topology.kubernetes.io/zone": "a" if i < 4 else "b",
            },
        )
        for i in range(6)
    ]
    pods = [pod(f"p{i}", f"n{i}", cpu=2000, mem_mib=512) for i in range(6)]
    pol = policy(False, allowed_sizes=("s-8-16",))
    a = analyze(cluster(nodes, pods), pol, now=NOW)
    removed = {r.old_node for r in a.replacements if r.new_size_id is None}
    assert len(removed) == 4 and a.fleet_after == "2 x s-8-16"
    stay = {f"n{i}" for i in range(6)} - removed
    assert {"a" if int(n[1:]) < 4 else "b" for n in stay} == {"a", "b"}
