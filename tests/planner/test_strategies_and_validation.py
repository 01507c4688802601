"""Batches per strategy, the duration estimate, rollback steps, and validate_plan."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from planner import NodeGroupPolicy, plan, validate_plan
from planner.checks import simulate_batches
from planner.scheduling import Bin, ShapeBook
from statemachine.plan import PlanSpec, Strategy
from statemachine.world import Resources
from tests.planner.cluster_builder import NOW, cluster, fleet, pod


def make(strategy: Strategy, count: int = 5, **kw: object) -> tuple[PlanSpec, NodeGroupPolicy]:
    nodes, pods = fleet(count, 1, cpu=100)
    fields: dict[str, object] = {
        "name": "pool",
        "cluster": "c1",
        "min_nodes": count,  # one for one: every replacement adds a node
        "strategy": strategy,
        "batch_size": 2,
        "max_concurrent": 2,
        "soak_s": 900.0,
    }
    fields.update(kw)
    pol = NodeGroupPolicy(**fields)  # type: ignore[arg-type]
    spec = plan(cluster(nodes, pods), pol, now=NOW)[1]
    assert spec is not None
    return spec, pol


def test_rolling_batches_hold_batch_size_replacements() -> None:
    spec, pol = make(Strategy.ROLLING)
    assert [len(b) for b in spec.batches] == [2, 2, 1]
    assert [r.batch for r in spec.replacements] == [0, 0, 1, 1, 2]
    # rolling: per batch ceil(new / c) * P + m * D = (180 + 120) * 2 + (180 + 60)
    assert spec.estimated_duration_s == 840.0
    assert validate_plan(spec, pol) == []


def test_surge_provisions_everything_first() -> None:
    spec, _ = make(Strategy.SURGE)
    assert [len(b) for b in spec.batches] == [2, 2, 1]
    # surge: ceil(5 / 2) * 180 + 5 * 60
    assert spec.estimated_duration_s == 840.0
    assert any("failed to become Ready" in s for s in spec.rollback_steps)
    assert any("is not undone" in s for s in spec.rollback_steps)  # forward only
    assert spec.soak_s == 0.0


def test_blue_green_is_one_batch_with_a_soak() -> None:
    spec, pol = make(Strategy.BLUE_GREEN)
    assert len(spec.batches) == 1 and len(spec.batches[0]) == 5
    assert spec.soak_s == 900.0
    assert spec.estimated_duration_s == 3 * 180 + 900 + 5 * 60
    assert any("cordoned for the soak" in s for s in spec.rollback_steps)
    assert validate_plan(spec, pol) == []


def test_every_plan_field_is_filled() -> None:
    spec, _ = make(Strategy.ROLLING)
    assert spec.cluster == "c1" and spec.node_group == "pool"
    assert spec.created_at == NOW
    assert spec.prices_seen == {"1": "20", "2": "40", "3": "80"}
    assert spec.snapshot_summary["group_nodes"] == 5
    assert spec.snapshot_summary["taken_at"] == NOW
    assert len(spec.checks) == 5 and spec.action_reasons
    assert spec.min_nodes == 5 and spec.min_healthy_percent == 75
    assert (spec.provision_timeout_s, spec.drain_timeout_s) == (600.0, 300.0)
    r = spec.replacements[0]
    assert r.old_worker == f"vm-{r.old_node}" and r.old_size_id == 3
    assert r.reason and r.monthly_saving == Decimal(60)


BREAKAGES = [
    (
        "replacement in two batches",
        lambda s: replace(s, batches=(*s.batches, s.batches[0])),
        "is in batches",
    ),
    ("replacement in no batch", lambda s: replace(s, batches=s.batches[1:]), "in no batch"),
    (
        "node replaced twice",
        lambda s: replace(
            s,
            replacements=(
                *s.replacements[:1],
                replace(s.replacements[1], old_node=s.replacements[0].old_node),
                *s.replacements[2:],
            ),
        ),
        "replaced twice",
    ),
    ("savings do not add up", lambda s: replace(s, monthly_saving=Decimal(1)), "do not add up"),
    (
        # The first replacement made a removal: the 5-node group (minNodes 5) drops to 4.
        "below minNodes",
        lambda s: replace(
            s,
            replacements=(
                replace(
                    s.replacements[0], new_size_id=None, new_size_name="",
                    new_monthly_price=Decimal(0),
                ),
                *s.replacements[1:],
            ),
        ),
        "below minNodes",
    ),
    (
        "add-only naming an old worker",
        lambda s: replace(
            s,
            replacements=(
                *s.replacements,
                replace(
                    s.replacements[0], replacement_id="x/+1", old_node="", old_worker="vm-1",
                    old_size_id=0, old_monthly_price=Decimal(0),
                ),
            ),
        ),
        "names an old worker",
    ),
    (
        "batch too large",
        lambda s: replace(s, batches=(s.batches[0] + s.batches[1], s.batches[2])),
        "says batch",
    ),
    (
        "no old worker",
        lambda s: replace(
            s, replacements=(replace(s.replacements[0], old_worker=""), *s.replacements[1:])
        ),
        "no old worker",
    ),
]


@pytest.mark.parametrize(("case", "breaks", "problem"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_validate_plan_finds_broken_plans(case: str, breaks, problem: str) -> None:  # type: ignore[no-untyped-def]
    spec, pol = make(Strategy.ROLLING)
    assert validate_plan(spec, pol) == []
    problems = validate_plan(breaks(spec), pol)
    assert any(problem in p for p in problems), (case, problems)


def test_validate_plan_checks_batch_size_against_policy() -> None:
    spec, pol = make(Strategy.ROLLING)
    assert any("above batchSize" in p for p in validate_plan(spec, replace(pol, batch_size=1)))


def test_rolling_capacity_counts_only_new_nodes_that_exist_by_then() -> None:
    # Batch 0 adds no node and n1 is full, so rolling has nowhere to put n0's pod; surge has
    # provisioned both new nodes before the first drain. n1 also has room in the third case.
    pods = [pod("a", "n0", cpu=1500), pod("b", "n1", cpu=1500)]
    book = ShapeBook(pods)

    def old(name: str, room: int) -> Bin:
        free = Resources(cpu_millis=1500 + room, memory_bytes=10**10, pods=10)
        b = book.bin(name, {}, (), free)
        b.add(book.shape(next(p for p in pods if p.node_name == name)), 1)
        return b

    def new(i: int) -> Bin:
        return book.bin(f"new{i}", {}, (), Resources(cpu_millis=2000, memory_bytes=10**10, pods=10))

    cases = ((Strategy.ROLLING, 0, 0), (Strategy.SURGE, 0, None), (Strategy.ROLLING, 1500, None))
    for strategy, room, failed in cases:
        outcome = simulate_batches(
            [],
            [[old("n0", 0)], [old("n1", room)]],
            [0, 2],
            new,
            strategy,
            min_cpu=1500,
            min_mem=0,
        )
        assert outcome.failed_batch == failed, (strategy, room)
