"""A log that stops right after an intent, with or without its side effect made: recovery
settles the intent from the live world, then the plan completes (or rolls back), and no
intent ever gets a second worker.

Each test drives one replacement to the step before the crash with the executor's own steps,
appends the intent itself, performs (or skips) the call against the simulator, then folds
the log again into a fresh journal, as a restarted daemon would, and runs it.
"""

from __future__ import annotations

import pytest

from daemon.clock import rfc3339
from daemon.executor.drain import Drainer, cordon
from daemon.executor.execution import Runtime
from daemon.executor.journal import PlanJournal
from daemon.executor.provisioning import provision
from daemon.executor.runner import PlanRunner
from daemon.service.recovery import recover
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import PlanStatus, ReplacementStatus
from statemachine.plan import Action, CheckResult, CheckStatus, PlanSpec, Strategy
from statemachine.world import CORDONED_BY_ANNOTATION
from tests.executor.checks import (
    assert_nothing_cordoned,
    assert_replaced,
    events_of,
    replacement_events,
)
from tests.executor.conftest import NEW_SIZE, World

MADE = pytest.mark.parametrize("made", [True, False], ids=["made", "not-made"])


async def _begin(world: World, plan_id: str, count: int = 1) -> tuple[PlanSpec, PlanJournal]:
    spec = world.spec(plan_id, Strategy.ROLLING, count=count)
    return spec, await world.started(spec)


def _rt(world: World, journal: PlanJournal) -> Runtime:
    return Runtime(journal, world.context(), lambda: None)


async def _restart(world: World, plan_id: str) -> PlanJournal:
    """What a restarted daemon does: recovery finds the plan in flight, a journal is loaded."""
    recovered = await recover(world.store)
    assert plan_id in recovered.in_flight
    journal = await PlanJournal.load(world.store, plan_id)
    assert journal.state.status is recovered.in_flight[plan_id].status
    return journal


def _after(events: list[ev.ReplacementEvent], intent: ev.ReplacementEvent) -> ev.Event:
    """The next event of the intent's replacement: its outcome."""
    later = events[events.index(intent) + 1 :]
    return next(e for e in later if e.replacement_id == intent.replacement_id)


def _at(world: World) -> str:
    return rfc3339(world.clock.now())


async def _group_id(world: World) -> int:
    groups = await world.cloud.list_node_groups(world.cluster_id)
    found = [g for g in groups if g.size_id == NEW_SIZE]
    if not found:
        await world.cloud.create_node_group(world.cluster_id, "general-201", NEW_SIZE)
        groups = await world.cloud.list_node_groups(world.cluster_id)
        found = [g for g in groups if g.size_id == NEW_SIZE]
    return found[0].id


async def _new_group_workers(world: World) -> list[str]:
    """Workers of the new size (VPSie's listing names no group: the size's shape tells)."""
    group = next(
        g for g in await world.cloud.list_node_groups(world.cluster_id) if g.size_id == NEW_SIZE
    )
    return [
        w.identifier
        for w in await world.cloud.list_workers(world.cluster_id)
        if (w.cpu, w.ram_mb) == (group.cpu, group.ram_mb)
    ]


@MADE
async def test_node_group_create(world: World, made: bool) -> None:
    spec, journal = await _begin(world, "c-group")
    rid = spec.replacements[0].replacement_id
    intent = ev.NodeGroupCreateRequested(
        plan_id=spec.plan_id,
        at=_at(world),
        replacement_id=rid,
        cluster=world.cluster_id,
        group_name="general-201",
        size_id=NEW_SIZE,
    )
    await journal.record(intent)
    if made:
        await world.cloud.create_node_group(world.cluster_id, "general-201", NEW_SIZE)
    state = await PlanRunner(await _restart(world, spec.plan_id), world.context()).run()
    await assert_replaced(world, spec, state)
    events = await replacement_events(world, spec.plan_id)
    outcome = _after(events, intent)
    assert isinstance(outcome, ev.NodeGroupCreated if made else ev.NodeGroupCreateFailed)
    groups = [g for g in await world.cloud.list_node_groups(world.cluster_id)]
    assert len([g for g in groups if g.size_id == NEW_SIZE]) == 1


@MADE
async def test_worker_add(world: World, made: bool) -> None:
    spec, journal = await _begin(world, "c-add")
    rid = spec.replacements[0].replacement_id
    group_id = await _group_id(world)
    known = tuple(sorted(w.identifier for w in await world.cloud.list_workers(world.cluster_id)))
    intent = ev.WorkerAddRequested(
        plan_id=spec.plan_id,
        at=_at(world),
        replacement_id=rid,
        idempotency_key=f"{rid}/add/1",
        cluster=world.cluster_id,
        group_id=group_id,
        size_id=NEW_SIZE,
        known_workers=known,
    )
    await journal.record(intent)
    if made:
        await world.cloud.add_worker(world.cluster_id, group_id)
        ours = set(await _new_group_workers(world))
        assert len(ours) == 1
    state = await PlanRunner(await _restart(world, spec.plan_id), world.context()).run()
    await assert_replaced(world, spec, state)
    events = await replacement_events(world, spec.plan_id)
    outcome = _after(events, intent)
    adds = [e for e in events if isinstance(e, ev.WorkerAddRequested)]
    added = [e for e in events if isinstance(e, ev.WorkerAdded)]
    assert len(added) == 1
    if made:
        assert isinstance(outcome, ev.WorkerAdded)
        assert {outcome.worker_identifier} == ours
        assert adds == [intent]  # the intent that was made is never made again
    else:
        assert isinstance(outcome, ev.WorkerAddFailed)
        assert "not made" in outcome.reason
        assert len(adds) == 2
    assert await _new_group_workers(world) == [state.replacements[rid].new_worker]


async def test_three_concurrent_adds_two_made(world: World) -> None:
    """Surge: three add intents pending in one group, two calls made, both answered `data:
    true`. Two workers could be any intent's (or another actor's): none is taken for ours, the
    plan pauses for a person and nothing is deleted. The person deletes one of them and
    resumes: the other is taken, the rest is added anew, the plan completes."""
    world.sim.vpsie.add_answer = "true"
    spec = world.spec("c-surge", Strategy.SURGE, max_concurrent=3, batches=((0, 1, 2),))
    journal = await world.started(spec)
    group_id = await _group_id(world)
    intents = []
    for r in spec.replacements:
        known = tuple(
            sorted(w.identifier for w in await world.cloud.list_workers(world.cluster_id))
        )
        intent = ev.WorkerAddRequested(
            plan_id=spec.plan_id,
            at=_at(world),
            replacement_id=r.replacement_id,
            idempotency_key=f"{r.replacement_id}/add/1",
            cluster=world.cluster_id,
            group_id=group_id,
            size_id=NEW_SIZE,
            known_workers=known,
        )
        await journal.record(intent)
        intents.append(intent)
    await world.cloud.add_worker(world.cluster_id, group_id)
    await world.cloud.add_worker(world.cluster_id, group_id)
    appeared = sorted(await _new_group_workers(world))
    runner = PlanRunner(await _restart(world, spec.plan_id), world.context())
    state = await runner.run()
    assert state.status is PlanStatus.PAUSED
    _, kind, by, reason = state.reasons[-1]
    assert (kind, by) == ("PlanPaused", "rebalancer")
    assert all(w in reason for w in appeared) and "nothing is deleted" in reason
    assert not [e for e in await replacement_events(world, spec.plan_id)
                if isinstance(e, ev.WorkerAdded | ev.WorkerDeleteRequested)]
    assert sorted(await _new_group_workers(world)) == appeared

    await world.cloud.delete_worker(world.cluster_id, appeared[1])  # the person's choice
    await runner.resume("operator")
    state = await runner.run()
    await assert_replaced(world, spec, state)
    events = await replacement_events(world, spec.plan_id)
    outcomes = [_after(events, i) for i in intents]
    assert isinstance(outcomes[0], ev.WorkerAdded)
    assert outcomes[0].worker_identifier == appeared[0]
    assert all(isinstance(o, ev.WorkerAddFailed) for o in outcomes[1:])
    assert len([e for e in events if isinstance(e, ev.WorkerAddRequested)]) == 5
    assert sorted(await _new_group_workers(world)) == sorted(
        r.new_worker for r in state.replacements.values()
    )


async def _to(world: World, journal: PlanJournal, rid: str, status: ReplacementStatus) -> None:
    """Drive one replacement forward with the executor's steps until `status`."""
    rt = _rt(world, journal)
    await provision(rt, rid)
    if status is ReplacementStatus.READY:
        return
    await cordon(rt, rid)
    if status is ReplacementStatus.CORDONED:
        return
    await Drainer(rt, rid).run()
    assert journal.state.replacements[rid].status is ReplacementStatus.DRAINED


@MADE
async def test_cordon(world: World, made: bool) -> None:
    spec, journal = await _begin(world, "c-cordon")
    r = spec.replacements[0]
    await _to(world, journal, r.replacement_id, ReplacementStatus.READY)
    intent = ev.CordonRequested(
        plan_id=spec.plan_id,
        at=_at(world),
        replacement_id=r.replacement_id,
        node=r.old_node,
        prior_unschedulable=False,
    )
    await journal.record(intent)
    if made:
        await world.cluster.cordon(r.old_node, {CORDONED_BY_ANNOTATION: spec.plan_id})
    state = await PlanRunner(await _restart(world, spec.plan_id), world.context()).run()
    await assert_replaced(world, spec, state)
    events = await replacement_events(world, spec.plan_id)
    outcome = _after(events, intent)
    assert isinstance(outcome, ev.NodeCordoned if made else ev.CordonFailed)
    assert len([e for e in events if isinstance(e, ev.CordonRequested)]) == (1 if made else 2)


@MADE
async def test_eviction(world: World, made: bool) -> None:
    spec, journal = await _begin(world, "c-evict")
    r = spec.replacements[0]
    rid = r.replacement_id
    await _to(world, journal, rid, ReplacementStatus.CORDONED)
    pods = [p for p in await world.cluster.list_pods(r.old_node) if not p.is_daemonset]
    assert pods
    await journal.record(
        ev.DrainStarted(
            plan_id=spec.plan_id,
            at=_at(world),
            replacement_id=rid,
            node=r.old_node,
            pods=tuple(f"{p.namespace}/{p.name}" for p in pods),
        )
    )
    intent = ev.PodEvictionRequested(
        plan_id=spec.plan_id,
        at=_at(world),
        replacement_id=rid,
        namespace=pods[0].namespace,
        pod=pods[0].name,
    )
    await journal.record(intent)
    if made:
        await world.cluster.evict(pods[0].namespace, pods[0].name)
    state = await PlanRunner(await _restart(world, spec.plan_id), world.context()).run()
    await assert_replaced(world, spec, state)
    events = await replacement_events(world, spec.plan_id)
    outcome = _after(events, intent)
    assert isinstance(outcome, ev.PodEvicted if made else ev.EvictionBlocked)
    if not made:
        assert isinstance(outcome, ev.EvictionBlocked) and "not made" in outcome.reason
    evicted = [e for e in events if isinstance(e, ev.PodEvicted)]
    assert [e.pod for e in evicted].count(pods[0].name) == 1


@MADE
async def test_old_worker_delete(world: World, made: bool) -> None:
    spec, journal = await _begin(world, "c-delete")
    r = spec.replacements[0]
    rid = r.replacement_id
    await _to(world, journal, rid, ReplacementStatus.DRAINED)
    intent = ev.WorkerDeleteRequested(
        plan_id=spec.plan_id,
        at=_at(world),
        replacement_id=rid,
        worker_identifier=r.old_worker,
        node=r.old_node,
        role="old",
    )
    await journal.record(intent)
    if made:
        assert await world.cloud.delete_worker(world.cluster_id, r.old_worker)
    state = await PlanRunner(await _restart(world, spec.plan_id), world.context()).run()
    await assert_replaced(world, spec, state)
    events = await replacement_events(world, spec.plan_id)
    outcome = _after(events, intent)
    if made:
        assert isinstance(outcome, ev.WorkerDeleted) and outcome.already_gone
    else:
        assert isinstance(outcome, ev.WorkerDeleteFailed)
        again = [e for e in events if isinstance(e, ev.WorkerDeleted)]
        assert len(again) == 1 and not again[0].already_gone


def _failing(message: str) -> object:
    async def recheck(state: object) -> list[CheckResult]:
        return [
            CheckResult(name="cluster_health", status=CheckStatus.PASSED, message="ok"),
            CheckResult(name="disruption_budgets", status=CheckStatus.FAILED, message=message),
        ]

    return recheck


async def test_checks_failing_after_recovery_roll_back(world: World) -> None:
    """Cordon made, then the crash; after recovery the checks fail: roll back what the plan
    did (uncordon the old node, delete the new worker), and only that."""
    spec, journal = await _begin(world, "c-checks")
    r = spec.replacements[0]
    rid = r.replacement_id
    await _to(world, journal, rid, ReplacementStatus.READY)
    new_worker = journal.state.replacements[rid].new_worker
    await journal.record(
        ev.CordonRequested(
            plan_id=spec.plan_id,
            at=_at(world),
            replacement_id=rid,
            node=r.old_node,
            prior_unschedulable=False,
        )
    )
    await world.cluster.cordon(r.old_node, {CORDONED_BY_ANNOTATION: spec.plan_id})
    ctx = world.context(recheck=_failing("web would drop below minAvailable"))
    state = await PlanRunner(await _restart(world, spec.plan_id), ctx).run()
    assert state.status is PlanStatus.ROLLED_BACK
    assert state.replacements[rid].status is ReplacementStatus.ROLLED_BACK
    assert state.last_checks is not None and state.last_checks.step == "resume"
    await assert_nothing_cordoned(world)
    workers = {w.identifier for w in await world.cloud.list_workers(world.cluster_id)}
    assert new_worker not in workers
    assert workers == {i for i, _ in world.initial}
    folded = await world.folded(spec.plan_id)
    assert folded.status is PlanStatus.ROLLED_BACK


@MADE
async def test_rollback_uncordon_and_delete_new(world: World, made: bool) -> None:
    """A crash in the middle of a rollback: the uncordon intent (made or not) is settled and
    the rollback finishes, deleting the new worker once."""
    spec, journal = await _begin(world, "c-undo")
    r = spec.replacements[0]
    rid = r.replacement_id
    await _to(world, journal, rid, ReplacementStatus.CORDONED)
    new_worker = journal.state.replacements[rid].new_worker
    at = _at(world)
    await journal.record(
        ev.PlanRollbackStarted(plan_id=spec.plan_id, at=at, reason="test"),
        ev.ReplacementRollbackStarted(plan_id=spec.plan_id, at=at, replacement_id=rid, reason="t"),
        ev.UncordonRequested(plan_id=spec.plan_id, at=at, replacement_id=rid, node=r.old_node),
    )
    if made:
        await world.cluster.uncordon(r.old_node, {CORDONED_BY_ANNOTATION: None})
    state = await PlanRunner(await _restart(world, spec.plan_id), world.context()).run()
    assert state.status is PlanStatus.ROLLED_BACK
    await assert_nothing_cordoned(world)
    workers = {w.identifier for w in await world.cloud.list_workers(world.cluster_id)}
    assert new_worker not in workers and r.old_worker in workers
    events = await replacement_events(world, spec.plan_id)
    deletes = [e for e in events if isinstance(e, ev.WorkerDeleteRequested)]
    assert [(d.worker_identifier, d.role) for d in deletes] == [(new_worker, "new")]


async def test_settling_an_uncordon_leaves_a_later_cordon_of_someone_else(world: World) -> None:
    """Our uncordon was made before the crash, then a person cordoned the node: settling the
    intent records the uncordon and leaves the person's cordon alone."""
    spec, journal = await _begin(world, "c-theirs")
    r = spec.replacements[0]
    rid = r.replacement_id
    await _to(world, journal, rid, ReplacementStatus.CORDONED)
    at = _at(world)
    await journal.record(
        ev.PlanRollbackStarted(plan_id=spec.plan_id, at=at, reason="test"),
        ev.ReplacementRollbackStarted(plan_id=spec.plan_id, at=at, replacement_id=rid, reason="t"),
        ev.UncordonRequested(plan_id=spec.plan_id, at=at, replacement_id=rid, node=r.old_node),
    )
    await world.cluster.uncordon(r.old_node, {CORDONED_BY_ANNOTATION: None})
    await world.cluster.cordon(r.old_node)
    state = await PlanRunner(await _restart(world, spec.plan_id), world.context()).run()
    assert state.status is PlanStatus.ROLLED_BACK
    node = await world.cluster.get_node(r.old_node)
    assert node is not None and node.unschedulable
    assert CORDONED_BY_ANNOTATION not in node.annotations
    events = await replacement_events(world, spec.plan_id)
    assert [type(e) for e in events if isinstance(e, ev.NodeUncordoned)] == [ev.NodeUncordoned]


async def test_checks_passing_after_recovery_resume_forward(world: World) -> None:
    """Cordon made, then the crash; the checks pass: the plan goes on, and the checks run
    again before the next batch."""
    spec, journal = await _begin(world, "c-resume", count=2)
    r = spec.replacements[0]
    await _to(world, journal, r.replacement_id, ReplacementStatus.READY)
    await journal.record(
        ev.CordonRequested(
            plan_id=spec.plan_id,
            at=_at(world),
            replacement_id=r.replacement_id,
            node=r.old_node,
            prior_unschedulable=False,
        )
    )
    await world.cluster.cordon(r.old_node, {CORDONED_BY_ANNOTATION: spec.plan_id})
    asked: list[str] = []

    async def recheck(state: PlanState) -> list[CheckResult]:
        asked.append(state.plan_id)
        return [CheckResult(name="capacity", status=CheckStatus.PASSED, message="fits")]

    state = await PlanRunner(
        await _restart(world, spec.plan_id), world.context(recheck=recheck)
    ).run()
    await assert_replaced(world, spec, state)
    runs = [e for e in await events_of(world, spec.plan_id) if isinstance(e, ev.SafetyChecksRun)]
    assert [(e.step, e.action) for e in runs] == [
        ("resume", Action.PROCEED),
        ("batch 2", Action.PROCEED),
    ]
    assert asked == [spec.plan_id, spec.plan_id]
