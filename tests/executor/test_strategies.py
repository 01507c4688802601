"""Rolling, surge and blue-green plans complete on the small scenario, over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal

from daemon.executor.runner import PlanRunner
from statemachine import events as ev
from statemachine.machines import PlanStatus, ReplacementStatus
from statemachine.plan import Strategy
from tests.executor.checks import (
    assert_evictions_bracketed,
    assert_replaced,
    events_of,
    when,
)
from tests.executor.conftest import World


async def _run(world: World, spec_id: str, strategy: Strategy, **kw: object) -> None:
    spec = world.spec(spec_id, strategy, **kw)  # type: ignore[arg-type]
    journal = await world.approved(spec)
    sample, start = world.watch()
    watcher = start()
    try:
        state = await PlanRunner(journal, world.context()).run()
    finally:
        watcher.cancel()
    await assert_replaced(world, spec, state)
    assert sample.samples > 0
    assert sample.min_ready_web >= 2  # the PodDisruptionBudget (minAvailable 2) always held
    events = await events_of(world, spec.plan_id)
    assert_evictions_bracketed(events)
    # every pod that went away went through an eviction the API allowed
    now = {f"{p.namespace}/{p.name}" for p in await world.cluster.list_pods()}
    evicted = {f"{e.namespace}/{e.pod}" for e in events if isinstance(e, ev.PodEvicted)}
    assert sample.seen - now <= evicted
    assert evicted <= sample.seen - now
    for r in spec.replacements:
        mine = [e for e in events if getattr(e, "replacement_id", "") == r.replacement_id]
        joined = next(i for i, e in enumerate(mine) if isinstance(e, ev.NodeJoined))
        drained = next(i for i, e in enumerate(mine) if isinstance(e, ev.DrainStarted))
        assert joined < drained
    return None


async def test_rolling_replaces_one_at_a_time(world: World) -> None:
    await _run(world, "p-rolling", Strategy.ROLLING)
    events = await events_of(world, "p-rolling")
    # one batch at a time: a batch's first add comes after the previous batch's completion
    adds = [i for i, e in enumerate(events) if isinstance(e, ev.WorkerAddRequested)]
    done = [i for i, e in enumerate(events) if isinstance(e, ev.ReplacementCompleted)]
    assert len(adds) == 3 and len(done) == 3
    assert adds[1] > done[0] and adds[2] > done[1]
    checks = [e for e in events if isinstance(e, ev.SafetyChecksRun)]
    assert checks == []  # no recheck configured


async def test_surge_adds_every_node_before_draining_any(world: World) -> None:
    await _run(world, "p-surge", Strategy.SURGE, max_concurrent=2, batches=((0, 1), (2,)))
    events = await events_of(world, "p-surge")
    joined = [i for i, e in enumerate(events) if isinstance(e, ev.NodeJoined)]
    drains = [i for i, e in enumerate(events) if isinstance(e, ev.DrainStarted)]
    assert len(joined) == 3
    assert max(joined) < min(drains)
    created = [e for e in events if isinstance(e, ev.NodeGroupCreated)]
    assert len(created) == 1  # one group per size, shared by the three replacements


async def test_blue_green_cordons_all_then_soaks(world: World) -> None:
    await _run(world, "p-bg", Strategy.BLUE_GREEN, max_concurrent=3, soak_s=120.0)
    events = await events_of(world, "p-bg")
    cordons = [e for e in events if isinstance(e, ev.NodeCordoned)]
    drains = [e for e in events if isinstance(e, ev.DrainStarted)]
    assert len(cordons) == 3
    assert events.index(cordons[-1]) < events.index(drains[0])
    assert when(drains[0]) - when(cordons[-1]) >= 120.0


async def test_removal_skips_provisioning_and_saves_the_old_price(world: World) -> None:
    spec = world.spec("p-remove", Strategy.ROLLING, count=1, remove=(0,))
    journal = await world.approved(spec)
    state = await PlanRunner(journal, world.context()).run()
    await assert_replaced(world, spec, state)
    assert state.realised_monthly_saving == Decimal("48.00")
    events = await events_of(world, "p-remove")
    assert not any(isinstance(e, ev.WorkerAddRequested) for e in events)


async def test_blue_green_soak_survives_a_stop(world: World) -> None:
    """Stopped during the soak and run again 100 s later: the soak is counted from the last
    cordon in the log, neither started over nor skipped."""
    spec = world.spec("p-bg-stop", Strategy.BLUE_GREEN, max_concurrent=3, soak_s=200.0)
    journal = await world.approved(spec)
    runner = PlanRunner(journal, world.context())
    cordoned: list[str] = []

    def on_event(state: object, event: ev.Event) -> None:
        if isinstance(event, ev.NodeCordoned):
            cordoned.append(event.node)
            if len(cordoned) == 3:
                runner.request_stop()

    journal.subscribe(on_event)
    state = await runner.run()
    assert state.status is PlanStatus.EXECUTING
    assert all(r.status is ReplacementStatus.CORDONED for r in state.replacements.values())
    await world.clock.sleep(100)
    state = await PlanRunner(journal, world.context()).run()
    await assert_replaced(world, spec, state)
    events = await events_of(world, spec.plan_id)
    last_cordon = [e for e in events if isinstance(e, ev.NodeCordoned)][-1]
    first_drain = next(e for e in events if isinstance(e, ev.DrainStarted))
    assert 200.0 <= when(first_drain) - when(last_cordon) < 280.0


async def test_two_plans_adding_to_one_group_at_once_each_get_their_own_worker(
    world: World,
) -> None:
    """Two plans (two node groups' worth) add to the same VPSie group concurrently."""
    base = world.spec("p-two", Strategy.ROLLING, count=2)
    first = dataclasses.replace(
        base,
        plan_id="p-a",
        replacements=(dataclasses.replace(base.replacements[0], replacement_id="p-a/1"),),
        batches=(("p-a/1",),),
    )
    second = dataclasses.replace(
        base,
        plan_id="p-b",
        replacements=(dataclasses.replace(base.replacements[1], replacement_id="p-b/1"),),
        batches=(("p-b/1",),),
    )
    journals = [await world.approved(first), await world.approved(second)]
    states = await asyncio.gather(*(PlanRunner(j, world.context()).run() for j in journals))
    for state in states:
        assert state.status is PlanStatus.COMPLETED, state.reasons
    added = [s.replacements[r].new_worker for s in states for r in s.replacements]
    assert len(set(added)) == 2
    workers = {w.identifier for w in await world.cloud.list_workers(world.cluster_id)}
    assert workers == set(added) | {world.initial[2][0]}
