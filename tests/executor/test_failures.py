"""Failures: a worker that never turns Ready, a PodDisruptionBudget that never allows, an
unreliable VPSie API; and the controls: stop, pause and resume, cancel."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from pathlib import Path

import pytest

from adapters.kubernetes import KubeClient
from daemon.clock import rfc3339
from daemon.executor.execution import Runtime
from daemon.executor.provisioning import add_worker, ensure_group, match_node
from daemon.executor.runner import InvalidRequest, PlanRunner
from simulator.faults import FaultRule
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import PlanStatus, ReplacementStatus
from statemachine.plan import Strategy
from statemachine.world import CORDONED_BY_ANNOTATION
from tests.executor.checks import (
    assert_evictions_bracketed,
    assert_nothing_cordoned,
    assert_replaced,
    events_of,
    when,
)
from tests.executor.conftest import NEW_SIZE, World, open_world, small_text


async def _workers(world: World) -> set[str]:
    return {w.identifier for w in await world.cloud.list_workers(world.cluster_id)}


async def _web_pods(world: World) -> set[str]:
    return {p.name for p in await world.cluster.list_pods() if p.labels.get("app") == "web"}


async def assert_untouched(world: World) -> None:
    """Back where it started: the original workers only, nothing cordoned."""
    assert await _workers(world) == {i for i, _ in world.initial}
    await assert_nothing_cordoned(world)


async def test_surge_stops_and_rolls_back_when_a_node_never_turns_ready(world: World) -> None:
    world.sim.faults.never_ready.add("small-general-201-0005")
    spec = world.spec(
        "f-ready", Strategy.SURGE, max_concurrent=3, batches=((0, 1, 2),), provision_timeout_s=300
    )
    journal = await world.approved(spec)
    state = await PlanRunner(journal, world.context()).run()
    assert state.status is PlanStatus.ROLLED_BACK
    assert all(r.status is ReplacementStatus.ROLLED_BACK for r in state.replacements.values())
    await assert_untouched(world)
    events = await events_of(world, spec.plan_id)
    assert sum(isinstance(e, ev.NodeJoinTimedOut) for e in events) == 1
    assert not any(isinstance(e, ev.CordonRequested | ev.DrainStarted) for e in events)
    deleted = {e.worker_identifier for e in events if isinstance(e, ev.WorkerDeleted)}
    assert deleted == {r.new_worker for r in state.replacements.values()}
    assert "did not become a Ready node within 300 s" in state.reasons[-1][3]
    assert (await world.folded(spec.plan_id)).status is PlanStatus.ROLLED_BACK


async def test_rolling_drain_blocked_by_a_budget_rolls_back_without_deleting_pods(
    tmp_path: Path,
) -> None:
    async for world in open_world(tmp_path, small_text(min_available=3)):
        pods_before = await _web_pods(world)
        spec = world.spec("f-pdb", Strategy.ROLLING, count=1, drain_timeout_s=200)
        journal = await world.approved(spec)
        ctx = world.context(eviction_backoff_s=(5.0, 40.0))
        state = await PlanRunner(journal, ctx).run()
        assert state.status is PlanStatus.ROLLED_BACK
        await assert_untouched(world)
        assert await _web_pods(world) == pods_before  # nothing evicted, nothing deleted
        events = await events_of(world, spec.plan_id)
        assert_evictions_bracketed(events)
        blocked = [e for e in events if isinstance(e, ev.EvictionBlocked)]
        assert len(blocked) >= 3
        assert not any(isinstance(e, ev.PodEvicted) for e in events)
        gaps = [when(b) - when(a) for a, b in itertools.pairwise(blocked)]
        assert max(gaps) >= 3 * min(gaps)  # backing off: 5, 10, 20, 40 s (plus latency)
        assert [b.attempt for b in blocked] == list(range(1, len(blocked) + 1))
        timed_out = [e for e in events if isinstance(e, ev.DrainTimedOut)]
        assert len(timed_out) == 1 and timed_out[0].remaining
        assert any(isinstance(e, ev.NodeUncordoned) for e in events)
        assert "PodDisruptionBudget" in state.reasons[-1][3]


async def test_vpsie_errors_at_a_rate_are_retried_to_completion(world: World) -> None:
    # The first create-group and add-worker calls surely fail; then 25 % 503s and 15 % 429s.
    for path in ("*/k8s/cluster/add/group", "*/add/slave/group/*"):
        world.sim.faults.rules.append(
            FaultRule(service="vpsie", method="POST", path=path, error_rate=1.0, times=1)
        )
    world.sim.faults.rules.append(
        FaultRule(service="vpsie", error_rate=0.25, error_status=503, throttle_rate=0.15)
    )
    world.sim.faults.rules.append(
        FaultRule(service="kubernetes", method="PATCH", error_rate=0.3, error_status=500)
    )
    spec = world.spec("f-flaky", Strategy.SURGE, max_concurrent=2, batches=((0, 1), (2,)))
    journal = await world.approved(spec)
    state = await PlanRunner(journal, world.context()).run()
    await assert_replaced(world, spec, state)
    events = await events_of(world, spec.plan_id)
    added = [e for e in events if isinstance(e, ev.WorkerAdded)]
    assert len(added) == 3  # failed adds were settled, never doubled
    retried = [e for e in events if isinstance(e, ev.WorkerAddFailed | ev.NodeGroupCreateFailed)]
    assert len(retried) >= 2 and not any(e.permanent for e in retried)
    assert len(await _workers(world)) == 3  # no orphan
    groups = [g for g in await world.cloud.list_node_groups(world.cluster_id)]
    assert len([g for g in groups if g.size_id == NEW_SIZE]) == 1


async def _when_recorded(runner: PlanRunner, kind: type[ev.Event], action: str, *args: str) -> None:
    """Subscribe: the first time `kind` is recorded, call runner.<action>(*args)."""
    fired = False

    def on_event(state: PlanState, event: ev.Event) -> None:
        nonlocal fired
        if isinstance(event, kind) and not fired:
            fired = True
            if action == "stop":
                runner.request_stop()
            else:
                asyncio.get_running_loop().create_task(getattr(runner, action)(*args))

    runner._journal.subscribe(on_event)


async def test_stop_returns_after_the_step_and_a_new_run_finishes(world: World) -> None:
    spec = world.spec("f-stop", Strategy.ROLLING, count=2)
    journal = await world.approved(spec)
    runner = PlanRunner(journal, world.context())
    await _when_recorded(runner, ev.NodeCordoned, "stop")
    state = await runner.run()
    assert state.status is PlanStatus.EXECUTING
    first = spec.replacements[0].replacement_id
    assert state.replacements[first].status is ReplacementStatus.CORDONED
    assert state.replacements[first].pending_intent is None
    state = await PlanRunner(journal, world.context()).run()
    await assert_replaced(world, spec, state)


async def test_pause_then_resume(world: World) -> None:
    spec = world.spec("f-pause", Strategy.ROLLING, count=2)
    journal = await world.approved(spec)
    runner = PlanRunner(journal, world.context())
    await _when_recorded(runner, ev.NodeJoined, "pause", "alice", "look first")
    state = await runner.run()
    assert state.status is PlanStatus.PAUSED
    assert state.reasons[-1][1:] == ("PlanPaused", "alice", "look first")
    await runner.resume("alice")
    state = await runner.run()
    await assert_replaced(world, spec, state)


async def test_cancel_while_draining_rolls_back_what_the_plan_did(world: World) -> None:
    spec = world.spec("f-cancel", Strategy.ROLLING, count=3)
    journal = await world.approved(spec)
    runner = PlanRunner(journal, world.context())
    await _when_recorded(runner, ev.DrainStarted, "cancel", "bob", "wrong window")
    state = await runner.run()
    assert state.status is PlanStatus.ROLLED_BACK
    assert "cancelled by bob: wrong window" in state.reasons[-1][3] or any(
        "cancelled by bob" in r[3] for r in state.reasons
    )
    await assert_untouched(world)
    assert [r.status for r in state.replacements.values()] == [
        ReplacementStatus.ROLLED_BACK,
        ReplacementStatus.PLANNED,
        ReplacementStatus.PLANNED,
    ]


async def test_rollback_moves_pods_off_the_new_node_before_deleting_it(world: World) -> None:
    """Cancelled while the old node was drained onto the new one (before the pods were
    confirmed running there: past that point the replacement finishes forward): the rollback
    uncordons the old node, evicts the pods from the new node, and only then deletes its
    worker."""
    spec = world.spec("f-vacate", Strategy.ROLLING, count=1)
    others = [name for _, name in world.initial[1:]]
    for name in others:  # a person's cordons: the drained pod can only go to the new node
        await world.cluster.cordon(name)
    journal = await world.approved(spec)
    runner = PlanRunner(journal, world.context())
    await _when_recorded(runner, ev.PodEvicted, "cancel", "carol", "")
    on_deleted_node: list[list[str]] = []

    def at_delete(state: PlanState, event: ev.Event) -> None:
        if isinstance(event, ev.WorkerDeleteRequested) and event.role == "new":
            on_deleted_node.append(
                [
                    e.obj["metadata"]["name"]
                    for e in world.sim.kube.store.entries("/pods")
                    if e.obj["spec"].get("nodeName") == event.node
                    and "deletionTimestamp" not in e.obj["metadata"]
                ]
            )

    journal.subscribe(at_delete)
    sample, start = world.watch()
    watcher = start()
    try:
        state = await runner.run()
    finally:
        watcher.cancel()
    assert state.status is PlanStatus.ROLLED_BACK
    rid = spec.replacements[0].replacement_id
    assert state.replacements[rid].status is ReplacementStatus.ROLLED_BACK
    assert on_deleted_node == [[]]
    assert sample.min_ready_web >= 2
    nodes = {n.name: n for n in await world.cluster.list_nodes()}
    assert all(nodes[name].unschedulable for name in others)  # not ours: left alone
    for name in others:
        await world.cluster.uncordon(name)
    await assert_untouched(world)
    events = await events_of(world, spec.plan_id)
    assert any(isinstance(e, ev.PodEvicted) for e in events)  # the pod had moved to the new node


async def test_a_node_someone_else_cordoned_is_skipped_and_their_cordon_left(
    tmp_path: Path,
) -> None:
    """The old node was cordoned by a person after the plan was made: the replacement is
    skipped (rolled back alone, the reason recorded, its new worker deleted), nothing is
    evicted from the node, and the node stays cordoned."""
    async for world in open_world(tmp_path, small_text(min_available=3)):
        spec = world.spec("f-prior", Strategy.ROLLING, count=1, drain_timeout_s=30)
        old = spec.replacements[0].old_node
        await world.cluster.cordon(old)
        journal = await world.approved(spec)
        runner = PlanRunner(journal, world.context())
        state = await runner.run()
        assert state.status is PlanStatus.COMPLETED
        r = state.replacements[spec.replacements[0].replacement_id]
        assert r.status is ReplacementStatus.ROLLED_BACK
        assert "cordoned by someone else" in r.rollback_reason
        node = await world.cluster.get_node(old)
        assert node is not None and node.unschedulable
        events = await events_of(world, spec.plan_id)
        assert not any(isinstance(e, ev.UncordonRequested) for e in events)
        assert not any(isinstance(e, ev.PodEvictionRequested) for e in events)
        await world.cluster.uncordon(old)
        await assert_untouched(world)
        with pytest.raises(InvalidRequest, match="completed"):
            await runner.pause("x", "y")


async def test_a_rollback_that_cannot_finish_fails_the_plan_with_what_is_left(
    world: World,
) -> None:
    """The new node never turns Ready, and VPSie goes down before the rollback can delete
    the worker: PlanFailed names the worker this plan added that still exists."""
    world.sim.faults.never_ready.add("small-general-201-*")
    spec = world.spec("f-stuck", Strategy.ROLLING, count=1, provision_timeout_s=100)
    journal = await world.approved(spec)

    def vpsie_down(state: PlanState, event: ev.Event) -> None:
        if isinstance(event, ev.NodeJoinTimedOut):
            world.sim.faults.set_down("vpsie", True)

    journal.subscribe(vpsie_down)
    state = await PlanRunner(journal, world.context(rollback_timeout_s=60.0)).run()
    world.sim.faults.set_down("vpsie", False)
    assert state.status is PlanStatus.FAILED
    rid = spec.replacements[0].replacement_id
    new_worker = state.replacements[rid].new_worker
    assert state.replacements[rid].status is ReplacementStatus.FAILED
    reason = state.reasons[-1][3]
    assert f"worker {new_worker} that this plan added still exists" in reason
    assert "by hand" in reason
    assert new_worker in await _workers(world)
    assert (await world.folded(spec.plan_id)).status is PlanStatus.FAILED


async def test_a_restart_does_not_extend_the_provision_timeout(world: World) -> None:
    world.sim.faults.never_ready.add("small-general-201-*")
    spec = world.spec("f-late", Strategy.ROLLING, count=1, provision_timeout_s=100)
    journal = await world.approved(spec)
    runner = PlanRunner(journal, world.context())
    await _when_recorded(runner, ev.WorkerAdded, "stop")
    state = await runner.run()
    assert state.status is PlanStatus.EXECUTING
    await world.clock.sleep(150)  # the daemon was down for 150 s
    state = await PlanRunner(journal, world.context()).run()
    assert state.status is PlanStatus.ROLLED_BACK
    timed_out = [
        e for e in await events_of(world, spec.plan_id) if isinstance(e, ev.NodeJoinTimedOut)
    ]
    assert len(timed_out) == 1 and 150 <= timed_out[0].waited_s < 200
    await assert_untouched(world)


async def test_a_restart_does_not_extend_the_drain_timeout(tmp_path: Path) -> None:
    async for world in open_world(tmp_path, small_text(min_available=3)):
        spec = world.spec("f-drain-late", Strategy.ROLLING, count=1, drain_timeout_s=100)
        journal = await world.approved(spec)
        runner = PlanRunner(journal, world.context())
        await _when_recorded(runner, ev.EvictionBlocked, "stop")
        state = await runner.run()
        assert state.status is PlanStatus.EXECUTING
        await world.clock.sleep(150)
        resumed = world.clock.now()
        state = await PlanRunner(journal, world.context()).run()
        assert state.status is PlanStatus.ROLLED_BACK
        events = await events_of(world, spec.plan_id)
        timed_out = next(e for e in events if isinstance(e, ev.DrainTimedOut))
        assert when(timed_out) - resumed < 30  # at the first look, not 100 s later
        await assert_untouched(world)


async def test_rollback_evicts_from_a_node_that_turned_ready_after_its_join_timed_out(
    world: World,
) -> None:
    """The join timed out, then the Node turned Ready and took a pod. The rollback must not
    delete the worker under that pod: it evicts first, and a budget that refuses stops it."""
    spec = world.spec("f-late", Strategy.ROLLING, count=1, drain_timeout_s=60)
    journal = await world.started(spec)
    rid = spec.replacements[0].replacement_id
    rt = Runtime(journal, world.context(), lambda: None)
    await add_worker(rt, rid, await ensure_group(rt, rid), rt.monotonic() + 600)
    r = journal.state.replacements[rid]
    assert r.status is ReplacementStatus.JOINING and not r.new_node
    for _ in range(1000):
        node = match_node(await world.cluster.list_nodes(), r.new_hostname, (r.new_ip,))
        if node is not None and node.ready:
            break
        await world.clock.sleep(5)
    assert node is not None and node.ready
    await journal.record(
        ev.NodeJoinTimedOut(
            plan_id=spec.plan_id, at=rfc3339(world.clock.now()), replacement_id=rid, waited_s=1
        )
    )
    olds = [hostname for _, hostname in world.initial]
    for name in olds:
        await world.cluster.cordon(name)
    web = [p for p in await world.cluster.list_pods() if p.labels.get("app") == "web"]
    await world.cluster.evict(web[0].namespace, web[0].name)
    for _ in range(1000):
        moved = [
            p
            for p in await world.cluster.list_pods(node.name)
            if p.labels.get("app") == "web" and p.phase == "Running"
        ]
        if moved:
            break
        await world.clock.sleep(5)
    assert moved
    for name in olds:
        await world.cluster.uncordon(name)
    world.sim.kube.block_evictions("shop", "app=web")
    await journal.record(
        ev.PlanRollbackStarted(plan_id=spec.plan_id, at=rfc3339(world.clock.now()), reason="test")
    )
    state = await PlanRunner(journal, world.context()).run()
    assert state.status is PlanStatus.FAILED
    assert "could not be evicted" in state.reasons[-1][3]
    assert r.new_worker in await _workers(world)
    assert moved[0].name in {p.name for p in await world.cluster.list_pods(node.name)}


class _PersonCordonsFirst:
    """The Cluster port as it looks when a person cordons a node in the instant between the
    executor's read of it and the executor's own cordon patch."""

    def __init__(self, inner: KubeClient, node: str) -> None:
        self._inner = inner
        self._node = node
        self.raced = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def set_cordon(
        self,
        name: str,
        cordoned: bool,
        *,
        annotations: Mapping[str, str | None],
        resource_version: str,
    ) -> None:
        if name == self._node and cordoned and not self.raced:
            self.raced = True
            await self._inner.cordon(name)
        await self._inner.set_cordon(
            name, cordoned, annotations=annotations, resource_version=resource_version
        )


async def test_a_cordon_made_by_someone_else_during_ours_is_left_to_them(world: World) -> None:
    spec = world.spec("f-race", Strategy.ROLLING, count=1)
    old = spec.replacements[0].old_node
    cluster = _PersonCordonsFirst(world.cluster, old)
    journal = await world.approved(spec)
    state = await PlanRunner(journal, world.context(cluster=cluster)).run()
    assert cluster.raced
    assert state.status is PlanStatus.ROLLED_BACK
    r = state.replacements[spec.replacements[0].replacement_id]
    assert not r.cordoned_by_us
    node = await world.cluster.get_node(old)
    assert node is not None and node.unschedulable  # the person's cordon stays
    assert CORDONED_BY_ANNOTATION not in node.annotations  # and carries no mark of ours
    events = await events_of(world, spec.plan_id)
    assert any(isinstance(e, ev.CordonFailed) and "someone else" in e.reason for e in events)
    assert not any(isinstance(e, ev.UncordonRequested) for e in events)
    await world.cluster.uncordon(old)
    await assert_untouched(world)
