"""Growing the node count: the planner chooses more, smaller nodes when they cost less, and
the executor adds the surplus node where none is removed (an add-only replacement), over HTTP
against the simulator, with the real planner, adapters and executor.

The world (tests/executor/growth_world.py): two premium 8c/16g nodes at $100 carry eight
1-CPU pods; three 4c/8g nodes at $40 carry them for $120 a month, and no fleet of two nodes
is as cheap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
import yaml

from adapters.metrics import Metrics
from daemon.clock import rfc3339
from daemon.executor.execution import ExecutionContext, Runtime
from daemon.executor.journal import PlanJournal
from daemon.executor.provisioning import group_name, provision
from daemon.executor.runner import PlanRunner
from daemon.service.recheck import recheck_live
from daemon.service.recovery import recover
from daemon.service.reporter import Regarding, Reporter
from daemon.service.snapshot import gather_snapshot
from planner import NodeGroupPolicy, analyze, make_plan, validate_plan
from simulator.faults import FaultRule
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import PlanStatus, ReplacementStatus
from statemachine.plan import Action, CheckResult, PlanSpec, Strategy
from statemachine.world import NODEGROUP_LABEL, SIZE_LABEL
from tests.executor.checks import assert_nothing_cordoned, events_of
from tests.executor.conftest import World, open_world
from tests.executor.growth_world import GROW_SIZE, growth_text

REPLICAS = 8


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path, growth_text(replicas=REPLICAS)):
        yield w


def policy_of(world: World, strategy: Strategy = Strategy.ROLLING) -> NodeGroupPolicy:
    return NodeGroupPolicy(
        name="general", cluster=world.cluster_id, min_nodes=1, strategy=strategy, soak_s=60.0
    )


def rechecking(world: World, strategy: Strategy = Strategy.ROLLING) -> ExecutionContext:
    """The executor's context with the service's checks before each batch (a fresh snapshot)."""
    policy = policy_of(world, strategy)

    async def recheck(state: PlanState) -> Sequence[CheckResult]:
        return await recheck_live(
            state, world.cloud, world.cluster, policy, cluster_identifier=world.cluster_id,
            clock=world.clock, datacenter="",
        )

    return world.context(recheck=recheck)


async def assert_checks_passed(world: World, spec: PlanSpec, at_least: int) -> None:
    checks = [e for e in await events_of(world, spec.plan_id) if isinstance(e, ev.SafetyChecksRun)]
    assert len(checks) >= at_least
    assert all(c.action is Action.PROCEED for c in checks), [c.reasons for c in checks]


async def planned(world: World, strategy: Strategy = Strategy.ROLLING) -> PlanSpec:
    """The real planner's plan for the world as it is."""
    policy = policy_of(world, strategy)
    gathered = await gather_snapshot(
        world.cloud, world.cluster, cluster_identifier=world.cluster_id, now=world.clock.now()
    )
    analysis = analyze(gathered.snapshot, policy, now=gathered.snapshot.taken_at)
    spec = make_plan(analysis, policy)
    assert spec is not None, analysis.action_reasons
    assert validate_plan(spec, policy) == []
    assert analysis.fleet_before == "2 x k8s-8c-16g"
    assert analysis.fleet_after == "3 x k8s-4c-8g", analysis.fleet_after
    return spec


def added(spec: PlanSpec) -> str:
    (rid,) = [r.replacement_id for r in spec.replacements if r.adds_only]
    return rid


async def web_serving(world: World) -> set[str]:
    """Every web replica Running and Ready (none Pending or lost); the nodes they run on."""
    for _ in range(100):
        pods = [p for p in await world.cluster.list_pods() if p.labels.get("app") == "web"]
        live = [p for p in pods if not p.deleting]
        if len(live) == REPLICAS and all(p.phase == "Running" and p.ready for p in live):
            return {p.node_name for p in live}
        await world.clock.sleep(5)
    raise AssertionError(f"web pods not all serving: {[(p.name, p.phase) for p in pods]}")


async def assert_grown(world: World, spec: PlanSpec, foreign: set[str] = frozenset()) -> None:
    """Completed: three Ready nodes of ours of the smaller size, the old two gone with their
    Nodes, nothing cordoned, every pod serving on our nodes, the saving as the bill says."""
    journal = await PlanJournal.load(world.store, spec.plan_id)
    state = journal.state
    assert state.status is PlanStatus.COMPLETED, state.reasons
    workers = {w.identifier: w for w in await world.cloud.list_workers(world.cluster_id)}
    nodes = {n.name: n for n in await world.cluster.list_nodes()}
    ours = set()
    for r_spec in spec.replacements:
        r = state.replacements[r_spec.replacement_id]
        assert r.status is ReplacementStatus.DONE
        assert r.new_worker in workers and r.new_node in nodes and nodes[r.new_node].ready
        node = nodes[r.new_node]
        assert node.labels[SIZE_LABEL] == str(GROW_SIZE)
        assert node.labels[NODEGROUP_LABEL] == "general"
        ours.add(r.new_worker)
        if not r_spec.adds_only:
            assert r_spec.old_worker not in workers and r_spec.old_node not in nodes
    assert len(ours) == 3
    # Nothing else of ours: the foreign workers are left as they are.
    assert set(workers) == ours | set(foreign)
    assert state.realised_monthly_saving == Decimal(80) == spec.monthly_saving
    await assert_nothing_cordoned(world)
    serving = await web_serving(world)
    # On our new nodes, or on the foreign ones (the scheduler may use them too).
    theirs = {workers[w].hostname.lower() for w in foreign}
    mine = {state.replacements[r.replacement_id].new_node for r in spec.replacements}
    assert {n for n in serving if n.lower() not in theirs} <= mine


async def test_three_smaller_nodes_replace_two_premium_ones_with_no_pod_lost(
    world: World,
) -> None:
    """Adversary: the VPSie autoscaler adding a worker to the same group at every add of ours
    (our add's answer names ours): the foreign workers are never taken for ours nor deleted.
    The add-only replacement comes first, never cordons, drains or deletes anything, and every
    web replica keeps serving (the PDB's floor held throughout, none lost)."""
    world.sim.vpsie.add_answer = "object"
    world.sim.vpsie.foreign_adds_per_add = 1
    spec = await planned(world)
    grow = added(spec)
    assert spec.batches[0] == (grow,)  # capacity grows before any is taken away
    sample, start = world.watch()
    task = start()
    try:
        state = await PlanRunner(await world.approved(spec), rechecking(world)).run()
    finally:
        task.cancel()
    assert state.status is PlanStatus.COMPLETED, state.reasons
    before = {i for i, _ in world.initial}
    listed = {w.identifier for w in await world.cloud.list_workers(world.cluster_id)}
    foreign = listed - before - {r.new_worker for r in state.replacements.values()}
    assert len(foreign) == 3  # one per add of ours
    await assert_grown(world, spec, foreign)
    await assert_checks_passed(world, spec, len(spec.batches))  # one before each batch
    assert sample.samples > 0 and sample.min_ready_web >= REPLICAS - 4
    events = await events_of(world, spec.plan_id)
    mine = [type(e).type_name() for e in events if getattr(e, "replacement_id", "") == grow]
    assert mine == [
        "NodeGroupCreateRequested", "NodeGroupCreated", "WorkerAddRequested", "WorkerAdded",
        "NodeJoined", "NodePrepareRequested", "NodePrepared", "ReplacementCompleted",
    ]
    done = next(
        i for i, e in enumerate(events)
        if isinstance(e, ev.ReplacementCompleted) and e.replacement_id == grow
    )
    first_cordon = next(i for i, e in enumerate(events) if isinstance(e, ev.CordonRequested))
    assert done < first_cordon


@pytest.mark.parametrize("strategy", [Strategy.SURGE, Strategy.BLUE_GREEN])
async def test_surge_and_blue_green_add_before_any_old_node_is_touched(
    world: World, strategy: Strategy
) -> None:
    """Adversary: the simulator's own scheduler placing the moved pods where it likes. In
    surge and blue-green every new node comes first, the added one included; the added node
    is never cordoned for the soak, and the plan completes with every replica serving."""
    spec = await planned(world, strategy)
    grow = added(spec)
    await PlanRunner(await world.approved(spec), rechecking(world, strategy)).run()
    await assert_grown(world, spec)
    await assert_checks_passed(world, spec, 1)
    events = await events_of(world, spec.plan_id)
    joined = [i for i, e in enumerate(events) if isinstance(e, ev.NodeJoined)]
    first_cordon = next(i for i, e in enumerate(events) if isinstance(e, ev.CordonRequested))
    assert len(joined) == 3 and max(joined) < first_cordon
    assert not [
        e for e in events
        if isinstance(e, ev.CordonRequested | ev.DrainStarted) and e.replacement_id == grow
    ]


async def test_an_add_whose_answer_is_lost_is_found_by_listing_and_made_once(
    world: World,
) -> None:
    """Adversary: the network losing VPSie's answer to our first add (the worker is made, the
    answer is a 503): the listing finds it, no second worker is asked for."""
    world.sim.faults.add_rule(
        FaultRule(
            service="vpsie", method="POST", path="*/add/slave/group/*", lost_answer_rate=1.0,
            error_status=503, times=1,
        )
    )
    spec = await planned(world)
    await PlanRunner(await world.approved(spec), world.context()).run()
    await assert_grown(world, spec)
    events = await events_of(world, spec.plan_id)
    grow = added(spec)
    adds = [e for e in events if isinstance(e, ev.WorkerAddRequested)]
    assert len(adds) == 3 and [e.replacement_id for e in adds].count(grow) == 1
    made = [e for e in events if isinstance(e, ev.WorkerAdded) and e.replacement_id == grow]
    assert len(made) == 1 and made[0].identified_by == "listing"


async def _restart(world: World, plan_id: str) -> PlanJournal:
    recovered = await recover(world.store)
    assert plan_id in recovered.in_flight
    return await PlanJournal.load(world.store, plan_id)


async def _grow_group(world: World) -> int:
    name = group_name("general", GROW_SIZE)
    groups = [g for g in await world.cloud.list_node_groups(world.cluster_id)
              if g.size_id == GROW_SIZE]
    if not groups:
        await world.cloud.create_node_group(world.cluster_id, name, GROW_SIZE)
        groups = [g for g in await world.cloud.list_node_groups(world.cluster_id)
                  if g.size_id == GROW_SIZE]
    return groups[0].id


@pytest.mark.parametrize("made", [True, False], ids=["made", "not-made"])
async def test_a_crash_after_the_add_intent_resumes_with_one_worker(
    world: World, made: bool
) -> None:
    """Adversary: the daemon killed between the add-only replacement's add intent and its
    answer, the add made or not: the restarted daemon settles it from the listing and
    completes the plan; the add-only replacement owns exactly one worker."""
    spec = await planned(world)
    grow = added(spec)
    journal = await world.started(spec)
    group_id = await _grow_group(world)
    known = tuple(sorted(w.identifier for w in await world.cloud.list_workers(world.cluster_id)))
    await journal.record(
        ev.WorkerAddRequested(
            plan_id=spec.plan_id, at=rfc3339(world.clock.now()), replacement_id=grow,
            idempotency_key=f"{grow}/add/1", cluster=world.cluster_id, group_id=group_id,
            size_id=GROW_SIZE, known_workers=known,
        )
    )
    if made:
        await world.cloud.add_worker(world.cluster_id, group_id)
    await PlanRunner(await _restart(world, spec.plan_id), rechecking(world)).run()
    await assert_grown(world, spec)
    events = await events_of(world, spec.plan_id)
    outcomes = [
        e for e in events
        if isinstance(e, ev.WorkerAdded | ev.WorkerAddFailed) and e.replacement_id == grow
    ]
    kinds = [type(e).type_name() for e in outcomes]
    assert kinds == (["WorkerAdded"] if made else ["WorkerAddFailed", "WorkerAdded"])


async def test_a_crash_with_the_added_node_prepared_completes_it(world: World) -> None:
    """Adversary: the daemon killed after the added node joined and was prepared, before the
    replacement was recorded complete: the restarted daemon completes it without adding
    another worker, then goes on with the removals."""
    spec = await planned(world)
    grow = added(spec)
    journal = await world.started(spec)
    await provision(Runtime(journal, world.context(), lambda: None), grow)
    assert journal.state.replacements[grow].prepared
    assert journal.state.replacements[grow].status is ReplacementStatus.READY
    await PlanRunner(await _restart(world, spec.plan_id), rechecking(world)).run()
    await assert_grown(world, spec)
    events = await events_of(world, spec.plan_id)
    assert sum(isinstance(e, ev.WorkerAddRequested) for e in events) == 3


async def test_a_rollback_deletes_the_added_worker_and_nothing_else(world: World) -> None:
    """Adversary: an operator cancelling the plan once the added node serves. The rollback
    vacates and deletes the worker the add-only replacement added, its Node too; the old
    nodes are untouched (never cordoned) and every pod keeps serving."""
    spec = await planned(world)
    grow = added(spec)
    journal = await world.started(spec)
    await provision(Runtime(journal, world.context(), lambda: None), grow)
    new_worker = journal.state.replacements[grow].new_worker
    runner = PlanRunner(journal, world.context())
    await runner.cancel("operator", "not today")
    state = await runner.run()
    assert state.status is PlanStatus.ROLLED_BACK, state.reasons
    assert state.replacements[grow].status is ReplacementStatus.ROLLED_BACK
    listed = {w.identifier for w in await world.cloud.list_workers(world.cluster_id)}
    assert listed == {i for i, _ in world.initial} and new_worker not in listed
    nodes = {n.name for n in await world.cluster.list_nodes()}
    assert nodes == {h for _, h in world.initial}
    await assert_nothing_cordoned(world)
    await web_serving(world)
    events = await events_of(world, spec.plan_id)
    deletes = [e for e in events if isinstance(e, ev.WorkerDeleteRequested)]
    assert [(e.worker_identifier, e.role) for e in deletes] == [(new_worker, "new")]
    assert not [e for e in events if isinstance(e, ev.CordonRequested)]


async def kube_events(world: World) -> list[tuple[str, str, str]]:
    """(regarding name, reason, note) of every Kubernetes Event the simulator holds."""
    config = yaml.safe_load(world.sim.kubeconfig_path.read_text(encoding="utf-8"))
    token = config["users"][0]["user"]["token"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{world.sim.kube_url}/apis/events.k8s.io/v1/events",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        body = await resp.json()
    return [(e["regarding"]["name"], e["reason"], e["note"]) for e in body["items"]]


async def test_the_kubernetes_events_of_an_added_node_name_it(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Adversary: none beyond the simulator's scheduler. The reporter, subscribed to the
    plan's journal, posts Events about the add-only replacement on the node it added (or the
    group), never on a Node with an empty name, and never says it replaces a node."""
    spec = await planned(world)
    grow = added(spec)
    journal = await world.approved(spec)
    reporter = Reporter(world.cluster, Metrics(), Regarding("Lease", "rebalancer", "kube-system"))
    journal.subscribe(reporter.on_event)
    sender = asyncio.create_task(reporter.run())
    try:
        state = await PlanRunner(journal, world.context()).run()
        await reporter.flush(timeout_s=5.0)
    finally:
        sender.cancel()
    assert state.status is PlanStatus.COMPLETED, state.reasons
    assert "reporting" not in caplog.text  # no subscriber failure
    new_node = state.replacements[grow].new_node
    events = await kube_events(world)
    assert all(name for name, _, _ in events)
    provisioned = [note for name, reason, note in events
                   if reason == "NodeProvisioned" and name == new_node]
    assert provisioned == [f"Node {new_node} provisioned (added to the group)"]
    assert any(reason == "NodeProvisioning" and note.endswith("to grow the group")
               for _, reason, note in events)
    assert not any("replaces )" in note or "replace  " in note for _, _, note in events)


async def test_the_added_node_is_made_the_equal_of_the_old_nodes(world: World) -> None:
    """Adversary: an operator who labelled and tainted the group's nodes before we came (one
    label on one node only). The node added where none is removed has no old node to copy: it
    gets what every old node shares (the label on both, the taint on both), not what only one
    has; the replacements copy their own old node as always."""
    (_, first), (_, second) = world.initial
    for name in (first, second):
        await world.cluster.label_node(name, {"team": "data"})
        await world.cluster.set_taint(name, "dedicated", "shop", "PreferNoSchedule")
    await world.cluster.label_node(first, {"only-here": "yes"})
    spec = await planned(world)
    grow = added(spec)
    state = await PlanRunner(await world.approved(spec), world.context()).run()
    assert state.status is PlanStatus.COMPLETED, state.reasons
    node = await world.cluster.get_node(state.replacements[grow].new_node)
    assert node is not None
    assert node.labels["team"] == "data" and "only-here" not in node.labels
    assert [(t.key, t.value, t.effect) for t in node.taints] == [
        ("dedicated", "shop", "PreferNoSchedule")
    ]
    events = await events_of(world, spec.plan_id)
    intent = next(e for e in events
                  if isinstance(e, ev.NodePrepareRequested) and e.replacement_id == grow)
    assert intent.taints == ("dedicated=shop:PreferNoSchedule",)
    assert intent.labels["team"] == "data" and intent.labels[SIZE_LABEL] == str(GROW_SIZE)
