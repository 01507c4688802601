"""The node count may grow when more, smaller nodes cost less: bounded by maxNodes and by
what the nodes cost (each new node pays the DaemonSet load and the reserve); the surplus
nodes are add-only replacements, ordered before any removal; the plan is deterministic."""

from __future__ import annotations

import dataclasses
import random
from decimal import Decimal

import orjson

from planner import NodeGroupPolicy, analyze, make_plan, plan, validate_plan
from statemachine.plan import Opportunity, PlanSpec, Strategy
from statemachine.world import SizeOffer
from tests.planner.cluster_builder import NOW, cluster, node, pod, shuffled

S = SizeOffer(id=1, name="s-2-4", cpu=2, ram_mb=4096, disk_gb=40, monthly_price=Decimal("22"))
M = SizeOffer(id=2, name="s-4-8", cpu=4, ram_mb=8192, disk_gb=80, monthly_price=Decimal("40"))
# The group's size: premium-priced (the per-CPU price rises with the size).
B = SizeOffer(id=3, name="s-8-16", cpu=8, ram_mb=16384, disk_gb=160, monthly_price=Decimal("100"))
OFFERS = (S, M, B)


def world(nodes: int = 2, per_node: int = 4, *, daemonset_cpu: int = 0):  # type: ignore[no-untyped-def]
    """`nodes` 8c/16g nodes, each carrying `per_node` 1-CPU pods (and a DaemonSet pod)."""
    names = [f"n{i}" for i in range(nodes)]
    pods = [pod(f"p{i}-{j}", n, cpu=1000, mem_mib=512) for i, n in enumerate(names)
            for j in range(per_node)]
    if daemonset_cpu:
        pods += [
            pod(f"ds-{n}", n, cpu=daemonset_cpu, mem_mib=64, owner_kind="DaemonSet",
                is_daemonset=True, owner_name="agent", labels={"app": "agent"})
            for n in names
        ]
    return cluster([node(n, B) for n in names], pods, sizes={n: B for n in names}, offers=OFFERS)


POLICY = NodeGroupPolicy(name="pool", cluster="c1", min_nodes=1)


def test_three_smaller_nodes_replace_two_premium_ones() -> None:
    a = analyze(world(), POLICY, now=NOW)
    spec = make_plan(a, POLICY)
    assert spec is not None, a.action_reasons
    assert (a.fleet_before, a.fleet_after) == ("2 x s-8-16", "3 x s-4-8")
    adds = [r for r in spec.replacements if r.adds_only]
    assert len(adds) == 1 and adds[0].replacement_id == f"{spec.plan_id}/+1"
    assert adds[0].new_size_id == M.id and adds[0].monthly_saving == Decimal(-40)
    assert spec.monthly_saving == Decimal(80)  # $200 -> $120
    assert spec.opportunity is Opportunity.RIGHT_SIZE
    assert spec.batches[0] == (adds[0].replacement_id,)  # capacity grows first
    assert validate_plan(spec, POLICY) == []
    health = next(c for c in spec.checks if c.name == "node_group_health")
    assert (health.details["peak_during_plan"], health.details["lowest_during_plan"]) == (4, 2)
    capacity = next(c for c in spec.checks if c.name == "capacity")
    assert capacity.status.value == "passed"
    assert a.snapshot_summary["nodes_added"] == 1


def test_max_nodes_bounds_the_growth() -> None:
    """maxNodes 2: the three-node fleet is out of reach; the cheapest two-node fleet
    (8c + 2c, $122) is planned instead, with no node added."""
    policy = dataclasses.replace(POLICY, max_nodes=2)
    a = analyze(world(), policy, now=NOW)
    spec = make_plan(a, policy)
    assert spec is not None, a.action_reasons
    assert not [r for r in spec.replacements if r.adds_only]
    assert a.fleet_after == "1 x s-2-4 + 1 x s-8-16", a.fleet_after
    assert spec.monthly_saving == Decimal(78)
    # maxNodes 3 lets it grow again; rolling, each replacement's new node comes before its
    # old one goes, so the group briefly runs 4: the check counts the added node and asks a
    # person (a warning, as for any plan that peaks above maxNodes).
    grown = analyze(world(), dataclasses.replace(POLICY, max_nodes=3), now=NOW)
    assert grown.fleet_after == "3 x s-4-8"
    health = next(c for c in grown.checks if c.name == "node_group_health")
    assert health.status.value == "warning" and "4 nodes, above maxNodes 3" in health.message
    assert grown.action.value == "needs_review"


def test_the_per_node_overhead_can_make_growth_not_pay() -> None:
    """A DaemonSet taking 600m CPU of every node: a 4c/8g node then carries two of the pods,
    not three, so three of them no longer do, and four ($160) cost more than keeping one
    8c/16g node and adding one 4c/8g for the rest ($140): the group does not grow. At 1200m
    the kept node carries only five pods, and growing to four 4c/8g ($160) pays again."""
    a = analyze(world(daemonset_cpu=600), POLICY, now=NOW)
    assert a.fleet_after == "1 x s-4-8 + 1 x s-8-16", a.fleet_after
    assert a.monthly_saving == Decimal(60)
    assert not [r for r in a.replacements if r.adds_only]
    heavier = analyze(world(daemonset_cpu=1200), POLICY, now=NOW)
    assert heavier.fleet_after == "4 x s-4-8", heavier.fleet_after
    assert len([r for r in heavier.replacements if r.adds_only]) == 2


def encode(spec: PlanSpec | None) -> bytes:
    assert spec is not None
    return orjson.dumps(spec, default=str)


def test_a_grown_plan_is_byte_identical_for_the_same_input_in_any_order() -> None:
    rng = random.Random(7)
    for strategy in Strategy:
        policy = dataclasses.replace(POLICY, strategy=strategy, soak_s=60)
        snap = world(nodes=3)
        first = encode(plan(snap, policy, now=NOW)[1])
        assert b'"old_node":""' in first  # it does grow
        assert encode(plan(snap, policy, now=NOW)[1]) == first
        for _ in range(3):
            assert encode(plan(shuffled(snap, rng), policy, now=NOW)[1]) == first


def test_validate_plan_refuses_an_add_after_a_removal() -> None:
    a = analyze(world(), POLICY, now=NOW)
    spec = make_plan(a, POLICY)
    assert spec is not None
    first, *rest = spec.batches
    moved = dataclasses.replace(
        spec,
        batches=(*rest, first),
        replacements=tuple(
            dataclasses.replace(
                r, batch=len(spec.batches) - 1 if r.adds_only else r.batch - 1
            )
            for r in spec.replacements
        ),
    )
    # Turn the (now first) replacement into a pure removal: the add comes after it.
    removal = next(r for r in moved.replacements if r.batch == 0)
    broken = dataclasses.replace(
        moved,
        replacements=tuple(
            dataclasses.replace(r, new_size_id=None, new_size_name="",
                                new_monthly_price=Decimal(0)) if r is removal else r
            for r in moved.replacements
        ),
    )
    problems = validate_plan(broken, POLICY)
    assert any("comes after a removal" in p for p in problems), problems
