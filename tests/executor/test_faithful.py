"""The executor against the VPSie API as its public clients show it, over HTTP: no group id
on node rows, add-worker answering `data: true` or an object, deleted workers' Nodes left
behind, a second actor adding workers to the same group."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from daemon.executor.runner import PlanRunner
from daemon.service.recheck import recheck_live
from daemon.service.snapshot import gather_snapshot
from planner import NodeGroupPolicy, analyze, make_plan
from planner.inventory import map_workers
from simulator.faults import FaultRule
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import PlanStatus
from statemachine.plan import Action, CheckResult, Strategy
from statemachine.world import SIZE_LABEL
from tests.executor.checks import assert_replaced, events_of, replacement_events
from tests.executor.conftest import NEW_SIZE, World

POLICY = NodeGroupPolicy(name="general", cluster="", min_nodes=1, max_concurrent=1)


async def test_a_delete_answered_not_found_while_listed_is_not_recorded_gone(
    world: World,
) -> None:
    """Adversary: VPSie answering 404 to a delete it did not make (a lagging or wrong answer)."""
    world.sim.faults.add_rule(
        FaultRule(
            service="vpsie", method="DELETE", path="*/delete/slave", error_rate=1.0,
            error_status=404, times=1,
        )
    )
    spec = world.spec("f-404", Strategy.ROLLING, count=1)
    state = await PlanRunner(await world.approved(spec), world.context()).run()
    await assert_replaced(world, spec, state)  # retried once the listing disagreed
    events = await replacement_events(world, spec.plan_id)
    deletes = [e for e in events if isinstance(e, ev.WorkerDeleteRequested)]
    failed = [e for e in events if isinstance(e, ev.WorkerDeleteFailed)]
    gone = [e for e in events if isinstance(e, ev.WorkerDeleted)]
    assert len(deletes) == 2 and len(failed) == 1 and len(gone) == 1
    assert "answered not found" in failed[0].reason and "still lists it" in failed[0].reason
    assert events.index(failed[0]) < events.index(deletes[1]) < events.index(gone[0])
    assert gone[0].already_gone is False  # the second delete is the one that removed it


async def test_the_old_nodes_taints_and_labels_survive_the_replacement(world: World) -> None:
    """Adversary: an operator who dedicated the node (a taint and a label) before we came."""
    old = world.initial[0][1]
    await world.cluster.set_taint(old, "dedicated", "db", "NoSchedule")
    await world.cluster.label_node(old, {"team": "data"})
    spec = world.spec("f-taint", Strategy.ROLLING, count=1)
    state = await PlanRunner(await world.approved(spec), world.context()).run()
    assert state.status is PlanStatus.COMPLETED, state.reasons
    r = state.replacements[spec.replacements[0].replacement_id]
    node = await world.cluster.get_node(r.new_node)
    assert node is not None
    assert [(t.key, t.value, t.effect) for t in node.taints] == [("dedicated", "db", "NoSchedule")]
    assert node.labels["team"] == "data" and node.labels[SIZE_LABEL] == str(NEW_SIZE)
    events = await replacement_events(world, spec.plan_id)
    intent = next(e for e in events if isinstance(e, ev.NodePrepareRequested))
    assert intent.taints == ("dedicated=db:NoSchedule",) and intent.node == r.new_node
    prepared = next(e for e in events if isinstance(e, ev.NodePrepared))
    cordon = next(e for e in events if isinstance(e, ev.CordonRequested))
    assert events.index(intent) < events.index(prepared) < events.index(cordon)


def _stray_deployment(avoid: list[str]) -> dict[str, object]:
    """One pod that fits no node of today (required affinity: hostname NotIn `avoid`), and
    tolerates nothing: pending until a new node joins."""
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": avoid},
        ]}],
    }}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "elsewhere", "namespace": "shop"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "elsewhere"}},
            "template": {
                "metadata": {"labels": {"app": "elsewhere"}},
                "spec": {
                    "affinity": affinity,
                    "containers": [{"name": "c", "image": "busybox",
                                    "resources": {"requests": {"cpu": "100m"}}}],
                },
            },
        },
    }


async def test_a_pod_that_landed_before_the_taints_is_moved_off_the_new_node(
    world: World,
) -> None:
    """Adversary: the kube-scheduler, which places a pending pod on the new node the moment it
    joins (VPSie registers workers untainted), before the old node's dedicated taint reaches
    it; and an operator who dedicated the old node (taint `dedicated=db:NoSchedule`)."""
    old = world.initial[0][1]
    await world.cluster.set_taint(old, "dedicated", "db", "NoSchedule")
    world.sim.kube.load_manifests([_stray_deployment([n for _, n in world.initial])])
    spec = world.spec("f-stray", Strategy.ROLLING, count=1)
    state = await PlanRunner(await world.approved(spec), world.context()).run()
    assert state.status is PlanStatus.COMPLETED, state.reasons
    new_node = state.replacements[spec.replacements[0].replacement_id].new_node
    events = await replacement_events(world, spec.plan_id)
    intent = next(e for e in events if isinstance(e, ev.StrayPodEvictionRequested))
    settled = next(e for e in events if isinstance(e, ev.StrayPodSettled))
    prepared = next(e for e in events if isinstance(e, ev.NodePrepared))
    cordon = next(e for e in events if isinstance(e, ev.CordonRequested))
    assert (intent.node, intent.namespace, intent.taint) == (
        new_node, "shop", "dedicated=db:NoSchedule"
    )
    assert intent.pod.startswith("elsewhere-") and settled.pod == intent.pod and settled.evicted
    assert events.index(prepared) < events.index(intent) < events.index(settled)
    assert events.index(settled) < events.index(cordon)
    # Nothing that does not tolerate the taint runs there now; its controller made the pod
    # again, and it waits for room.
    on_new = {p["metadata"]["name"] for p in world.sim.kube.pods_on(new_node)}
    assert not any(name.startswith("elsewhere-") for name in on_new), on_new
    again = [
        p for p in world.sim.kube.pods("shop") if p["metadata"]["name"].startswith("elsewhere")
    ]
    assert again and all(not p["spec"].get("nodeName") for p in again)


async def test_a_concurrent_foreign_add_is_never_claimed_when_the_answer_names_ours(
    world: World,
) -> None:
    """Adversary: the VPSie autoscaler adding a worker to the same group at the same moment."""
    world.sim.vpsie.add_answer = "object"
    world.sim.vpsie.foreign_adds_per_add = 1
    spec = world.spec("f-foreign", Strategy.ROLLING, count=1)
    state = await PlanRunner(await world.approved(spec), world.context()).run()
    assert state.status is PlanStatus.COMPLETED, state.reasons
    events = await replacement_events(world, spec.plan_id)
    (added,) = [e for e in events if isinstance(e, ev.WorkerAdded)]
    assert added.identified_by == "answer"
    ours = state.replacements[spec.replacements[0].replacement_id].new_worker
    listed = {w.identifier for w in await world.cloud.list_workers(world.cluster_id)}
    known = {i for i, _ in world.initial}
    foreign = listed - known - {ours}
    assert len(foreign) == 1  # still there, never touched
    deleted = {e.worker_identifier for e in events if isinstance(e, ev.WorkerDeleteRequested)}
    assert deleted == {spec.replacements[0].old_worker}


async def test_a_concurrent_foreign_add_parks_the_plan_when_the_answer_names_none(
    world: World,
) -> None:
    """Adversary: the VPSie autoscaler adding to the same group while our add answers `true`."""
    world.sim.vpsie.add_answer = "true"
    world.sim.vpsie.foreign_adds_per_add = 1
    spec = world.spec("f-park", Strategy.ROLLING, count=1)
    state = await PlanRunner(await world.approved(spec), world.context()).run()
    assert state.status is PlanStatus.PAUSED
    _, kind, by, reason = state.reasons[-1]
    assert (kind, by) == ("PlanPaused", "rebalancer") and "none is taken for ours" in reason
    listed = {w.identifier for w in await world.cloud.list_workers(world.cluster_id)}
    new = listed - {i for i, _ in world.initial}
    assert len(new) == 2 and all(w in reason for w in new)
    events = await replacement_events(world, spec.plan_id)
    assert not [e for e in events if isinstance(e, ev.WorkerAdded | ev.WorkerDeleteRequested)]


async def test_our_nodes_map_to_their_new_size_and_a_second_analysis_proposes_nothing(
    world: World,
) -> None:
    """After a completed plan, with the log's record and without it (our size label, then the
    shape), the nodes we created are of the new size: nothing is planned again."""
    now = world.clock.now()
    policy = dataclasses.replace(POLICY, cluster=world.cluster_id)
    first = await gather_snapshot(world.cloud, world.cluster, cluster_identifier=world.cluster_id,
                                  now=now)
    spec = make_plan(analyze(first.snapshot, policy, now=first.snapshot.taken_at), policy)
    assert spec is not None and {r.new_size_id for r in spec.replacements} <= {NEW_SIZE, None}
    state = await PlanRunner(await world.approved(spec), world.context()).run()
    assert state.status is PlanStatus.COMPLETED, state.reasons
    logged = {r.new_worker: NEW_SIZE for r in state.replacements.values() if r.new_worker}
    new_nodes = {r.new_node for r in state.replacements.values() if r.new_node}
    assert new_nodes
    for sizes, source in ((logged, "log"), ({}, "label")):
        again = await gather_snapshot(world.cloud, world.cluster,
                                      cluster_identifier=world.cluster_id,
                                      now=world.clock.now(), logged_sizes=sizes)
        # Size identification itself (a node may still be left out for another reason, such
        # as a budget its consolidated pods now fill).
        matched = map_workers(again.snapshot)
        assert {(matched[n].size_id, matched[n].size_from) for n in new_nodes} == {
            (NEW_SIZE, source)
        }
        analysis = analyze(again.snapshot, policy, now=again.snapshot.taken_at)
        assert not {c.node for c in analysis.candidates} & new_nodes, analysis.candidates
        assert make_plan(analysis, policy) is None, analysis.action_reasons


async def test_the_govpsie_shape_is_refused_for_deletes(govpsie_world: World) -> None:
    """govpsie's node rows carry no identifier: no node is ever planned for deletion."""
    world = govpsie_world
    policy = dataclasses.replace(POLICY, cluster=world.cluster_id)
    gathered = await gather_snapshot(world.cloud, world.cluster,
                                     cluster_identifier=world.cluster_id, now=world.clock.now())
    assert all(not w.deletable for w in gathered.snapshot.workers)
    analysis = analyze(gathered.snapshot, policy, now=gathered.snapshot.taken_at)
    assert analysis.candidates == ()
    assert {e.reason for e in analysis.exclusions} == {"worker-read-only"}
    assert len(analysis.exclusions) == 3
    assert "cannot be deleted safely" in analysis.exclusions[0].message
    assert make_plan(analysis, policy) is None


async def test_a_locked_vpsie_cluster_pauses_execution_between_steps(world: World) -> None:
    """Adversary: VPSie locking the cluster (an upgrade) while a plan is about to start a batch.
    Nothing is started and nothing is undone; the plan goes on once the lock is gone."""
    world.sim.vpsie.lock = True
    policy = dataclasses.replace(POLICY, cluster=world.cluster_id)

    async def recheck(state: PlanState) -> Sequence[CheckResult]:
        return await recheck_live(
            state, world.cloud, world.cluster, policy, cluster_identifier=world.cluster_id,
            clock=world.clock, datacenter="",
        )

    spec = world.spec("f-lock", Strategy.ROLLING, count=2)
    journal = await world.approved(spec)

    async def unlock_when_postponed() -> None:
        while True:
            events = await events_of(world, spec.plan_id)
            if any(isinstance(e, ev.SafetyChecksRun) and e.action is Action.POSTPONE
                   for e in events):
                await world.clock.sleep(60)  # the lock lasts a while after the postponement
                world.sim.vpsie.lock = False
                return
            await asyncio.sleep(0.005)

    unlocker = asyncio.create_task(unlock_when_postponed())
    state = await PlanRunner(journal, world.context(recheck=recheck)).run()
    await unlocker
    await assert_replaced(world, spec, state)
    events = await events_of(world, spec.plan_id)
    checks = [e for e in events if isinstance(e, ev.SafetyChecksRun)]
    assert [(c.step, c.action) for c in checks[:2]] == [
        ("batch 1", Action.POSTPONE), ("batch 1", Action.PROCEED),
    ]
    assert "the VPSie cluster is locked" in checks[0].reasons[0]
    first_add = next(e for e in events if isinstance(e, ev.WorkerAddRequested))
    assert events.index(checks[1]) < events.index(first_add)
    assert not [e for e in events if isinstance(e, ev.PlanRollbackStarted)]
