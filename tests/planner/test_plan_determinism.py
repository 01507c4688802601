"""The same input gives a byte-identical plan, whatever order the snapshot lists things in."""

from __future__ import annotations

import random

import orjson
import pytest

from planner import NodeGroupPolicy, plan, validate_plan
from statemachine.plan import PlanSpec, Strategy
from tests.planner.cluster_builder import NOW, random_cluster, shuffled


def encode(spec: PlanSpec | None) -> bytes:
    assert spec is not None
    return orjson.dumps(spec, default=str)


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_input_and_shuffled_input_give_identical_bytes(seed: int, strategy: Strategy) -> None:
    rng = random.Random(seed)
    snap = random_cluster(rng, 24)
    pol = NodeGroupPolicy(
        name="pool", cluster="c1", min_nodes=2, strategy=strategy, batch_size=2, soak_s=600
    )
    first = encode(plan(snap, pol, now=NOW)[1])
    assert encode(plan(snap, pol, now=NOW)[1]) == first
    for _ in range(3):
        again = encode(plan(shuffled(snap, rng), pol, now=NOW)[1])
        assert again == first
    spec = orjson.loads(first)
    assert spec["plan_id"].startswith("plan-")
    assert all(r["replacement_id"].startswith(spec["plan_id"] + "/") for r in spec["replacements"])


def test_a_different_instant_gives_a_different_plan_id() -> None:
    snap = random_cluster(random.Random(5), 12)
    pol = NodeGroupPolicy(name="pool", min_nodes=2)
    a = plan(snap, pol, now=NOW)[1]
    b = plan(snap, pol, now="2026-11-26T12:00:01Z")[1]
    assert a is not None and b is not None
    assert a.plan_id != b.plan_id
    assert validate_plan(a, pol) == [] and validate_plan(b, pol) == []


def test_analysis_leaves_the_garbage_collector_as_it_found_it() -> None:
    import gc

    snap = random_cluster(random.Random(9), 6)
    pol = NodeGroupPolicy(name="pool", min_nodes=1)
    assert gc.isenabled()
    plan(snap, pol, now=NOW)
    assert gc.isenabled()
    gc.disable()
    try:
        plan(snap, pol, now=NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()
