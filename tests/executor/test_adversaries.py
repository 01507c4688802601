"""The executor when something else moves: an answer lost after its effect, an operator who
cordons, a drained replacement whose old worker cannot be deleted, a daemon restarted between
a drain and its confirmation, pods that arrive after the plan was made.

Every test drives the real adapters over HTTP against the simulator; each names its adversary.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import yaml

from daemon.clock import rfc3339
from daemon.executor.drain import cordon
from daemon.executor.execution import Runtime
from daemon.executor.provisioning import provision
from daemon.executor.runner import PlanRunner
from simulator.faults import FaultRule
from statemachine import events as ev
from statemachine.machines import PlanStatus, ReplacementStatus
from statemachine.plan import Strategy
from statemachine.world import CORDONED_BY_ANNOTATION, SCALE_DOWN_DISABLED_LABEL
from tests.executor.checks import assert_nothing_cordoned, events_of
from tests.executor.conftest import World, open_world, small_text


async def _workers(world: World) -> set[str]:
    return {w.identifier for w in await world.cloud.list_workers(world.cluster_id)}


def _at(world: World) -> str:
    return rfc3339(world.clock.now())


# -- 2. ownership of cordons is decided by our mark ----------------------------------------------


async def test_a_cordon_whose_answers_are_lost_is_found_by_its_mark_and_undone(
    tmp_path: Path,
) -> None:
    """Adversary: every answer to a patch of the old node is lost after the patch was applied
    (the client sees 503). The cordon is ours (our mark is on it), and the rollback that a
    budget forces takes it off again: nothing is left cordoned."""
    async for world in open_world(tmp_path, small_text(min_available=3)):
        spec = world.spec("a-lost", Strategy.ROLLING, count=1, drain_timeout_s=30)
        old = spec.replacements[0].old_node
        world.sim.faults.add_rule(
            FaultRule(
                service="kubernetes",
                method="PATCH",
                path=f"/api/v1/nodes/{old}",
                lost_answer_rate=1.0,
            )
        )
        journal = await world.approved(spec)
        state = await PlanRunner(journal, world.context(call_retry_s=20.0)).run()
        assert state.status is PlanStatus.ROLLED_BACK
        events = await events_of(world, spec.plan_id)
        assert any(isinstance(e, ev.NodeCordoned) for e in events)
        assert any(isinstance(e, ev.DrainTimedOut) for e in events)
        assert any(isinstance(e, ev.NodeUncordoned) for e in events)
        world.sim.faults.clear()
        await assert_nothing_cordoned(world)
        assert await _workers(world) == {i for i, _ in world.initial}


async def test_an_operator_cordon_made_while_the_daemon_was_down_is_not_taken_for_ours(
    world: World,
) -> None:
    """Adversary: an operator who cordons. The daemon died between `CordonRequested` and its
    patch; meanwhile an operator cordoned the node. Recovery must not take that cordon for
    ours: the node is not drained, its worker not deleted, and their cordon stays."""
    spec = world.spec("a-operator", Strategy.ROLLING, count=1, remove=(0,))
    journal = await world.started(spec)
    r = spec.replacements[0]
    await journal.record(
        ev.CordonRequested(
            plan_id=spec.plan_id,
            at=_at(world),
            replacement_id=r.replacement_id,
            node=r.old_node,
            prior_unschedulable=False,
        )
    )
    await world.cluster.cordon(r.old_node)  # the operator, with kubectl cordon
    before = {p.name for p in await world.cluster.list_pods(r.old_node)}
    state = await PlanRunner(journal, world.context()).run()
    assert r.old_worker in await _workers(world)
    assert state.replacements[r.replacement_id].status is ReplacementStatus.ROLLED_BACK
    node = await world.cluster.get_node(r.old_node)
    assert node is not None and node.unschedulable
    assert CORDONED_BY_ANNOTATION not in node.annotations
    assert {p.name for p in await world.cluster.list_pods(r.old_node)} == before
    events = await events_of(world, spec.plan_id)
    assert not any(isinstance(e, ev.PodEvictionRequested) for e in events)
    assert any(isinstance(e, ev.CordonFailed) and "someone else" in e.reason for e in events)


async def test_rollback_never_clears_a_cordon_taken_over_between_its_read_and_its_patch(
    world: World,
) -> None:
    """Adversary: an operator who takes a node over. This plan cordoned it; at the rollback,
    right after the daemon read the node (our mark on it), the operator replaced our mark with
    their own reason and kept it cordoned. The uncordon, conditioned on the version read, is
    refused and decided again: their cordon stays."""
    spec = world.spec("a-takeover", Strategy.ROLLING, count=1)
    journal = await world.started(spec)
    rid = spec.replacements[0].replacement_id
    old = spec.replacements[0].old_node
    rt = Runtime(journal, world.context(), lambda: None)
    await provision(rt, rid)
    await cordon(rt, rid)
    node = await world.cluster.get_node(old)
    assert node is not None and node.annotations.get(CORDONED_BY_ANNOTATION) == spec.plan_id

    async def operator_takes_over() -> None:
        await world.cluster.label_node(old, {"ops/hold": "disk"})
        await world.cluster.cordon(old, {CORDONED_BY_ANNOTATION: None, "ops/why": "disk"})

    world.sim.faults.act_after("kubernetes", "GET", f"/api/v1/nodes/{old}", operator_takes_over)
    await journal.record(
        ev.PlanRollbackStarted(plan_id=spec.plan_id, at=_at(world), reason="test")
    )
    state = await PlanRunner(journal, world.context()).run()
    assert state.status is PlanStatus.ROLLED_BACK
    node = await world.cluster.get_node(old)
    assert node is not None and node.unschedulable, "the operator's cordon was cleared"
    assert node.annotations.get("ops/why") == "disk"
    assert await _workers(world) == {i for i, _ in world.initial}


# -- 4. protections hold at the moment of the effect ---------------------------------------------


async def test_a_node_protected_after_the_plan_was_made_is_skipped_before_its_batch(
    world: World,
) -> None:
    """Adversary: an operator who protects a node while a rolling plan runs (labels it
    scale-down-disabled after the first batch). The second batch reads the node again: its
    replacement is skipped with the reason recorded, nothing is added for it, and the node
    and its worker stay."""
    spec = world.spec("a-protect", Strategy.ROLLING, count=2)
    second = spec.replacements[1]
    journal = await world.approved(spec)
    runner = PlanRunner(journal, world.context())

    def stop_after_first(state: object, event: ev.Event) -> None:
        if isinstance(event, ev.ReplacementCompleted):
            runner.request_stop()

    journal.subscribe(stop_after_first)
    state = await runner.run()
    assert state.status is PlanStatus.EXECUTING
    await world.cluster.label_node(second.old_node, {SCALE_DOWN_DISABLED_LABEL: "true"})
    state = await PlanRunner(journal, world.context()).run()
    assert state.status is PlanStatus.COMPLETED
    r = state.replacements[second.replacement_id]
    assert r.status is ReplacementStatus.ROLLED_BACK
    assert SCALE_DOWN_DISABLED_LABEL in r.rollback_reason
    assert second.old_worker in await _workers(world)
    assert r.new_worker == ""
    assert state.realised_monthly_saving == spec.replacements[0].monthly_saving
    node = await world.cluster.get_node(second.old_node)
    assert node is not None and not node.unschedulable


# -- 3. deleting the old worker never costs the new one ------------------------------------------


async def test_a_failing_delete_of_the_old_worker_is_retried_forward_not_rolled_back(
    world: World,
) -> None:
    """Adversary: VPSie refuses to delete workers (503) for longer than one call's retries.
    The old node is drained and its pods run on the new one: the delete is tried again until
    it goes through; the new worker is never vacated nor deleted."""
    world.sim.faults.add_rule(
        FaultRule(service="vpsie", method="DELETE", path="*/delete/slave", error_rate=1.0,
                  times=10)
    )
    spec = world.spec("a-delete", Strategy.ROLLING, count=1)
    journal = await world.approved(spec)
    state = await PlanRunner(journal, world.context(call_retry_s=10.0)).run()
    assert state.status is PlanStatus.COMPLETED, state.reasons
    r = state.replacements[spec.replacements[0].replacement_id]
    assert r.status is ReplacementStatus.DONE and not r.new_deleted
    workers = await _workers(world)
    assert spec.replacements[0].old_worker not in workers and r.new_worker in workers
    events = await events_of(world, spec.plan_id)
    assert any(isinstance(e, ev.WorkerDeleteFailed) for e in events)
    assert not any(isinstance(e, ev.ReplacementRollbackStarted) for e in events)


async def test_a_rollback_after_the_point_of_no_return_finishes_forward(world: World) -> None:
    """Adversary: a person cancels the plan while the delete of a drained node's worker keeps
    failing. The cancel rolls back nothing that was drained: the replacement is finished
    forward (its delete retried), its new worker kept."""
    world.sim.faults.add_rule(
        FaultRule(service="vpsie", method="DELETE", path="*/delete/slave", error_rate=1.0,
                  times=8)
    )
    spec = world.spec("a-cancel", Strategy.ROLLING, count=1)
    journal = await world.approved(spec)
    runner = PlanRunner(journal, world.context(call_retry_s=10.0))
    cancelled = False

    def cancel_at_first_failed_delete(state: object, event: ev.Event) -> None:
        nonlocal cancelled
        if isinstance(event, ev.WorkerDeleteFailed) and not cancelled:
            cancelled = True
            runner.request_stop()

    journal.subscribe(cancel_at_first_failed_delete)
    state = await runner.run()
    assert cancelled and state.status is PlanStatus.EXECUTING
    await PlanRunner(journal, world.context()).cancel("dave", "changed my mind")
    state = await PlanRunner(journal, world.context(call_retry_s=10.0)).run()
    r = state.replacements[spec.replacements[0].replacement_id]
    assert r.status is ReplacementStatus.DONE, state.reasons
    assert state.status is PlanStatus.ROLLED_BACK
    workers = await _workers(world)
    assert spec.replacements[0].old_worker not in workers and r.new_worker in workers


# -- 5. rescheduling is confirmed against a recorded baseline ------------------------------------


async def _kube(world: World, method: str, path: str, body: object, content_type: str) -> None:
    """Another client of the simulated Kubernetes API (its own HTTP session and token)."""
    kubeconfig = yaml.safe_load(world.sim.kubeconfig_path.read_text(encoding="utf-8"))
    token = kubeconfig["users"][0]["user"]["token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    async with aiohttp.ClientSession() as http, http.request(
        method, f"{world.sim.kube_url}{path}", json=body, headers=headers
    ) as answer:
        assert answer.status in (200, 201), await answer.text()


async def _web_ready(world: World, count: int) -> None:
    for _ in range(200):
        pods = await world.cluster.list_pods()
        ready = [p for p in pods if p.labels.get("app") == "web" and p.phase == "Running"
                 and p.ready and not p.deleting]
        if len(ready) >= count:
            return
        await world.clock.sleep(5)
    raise AssertionError("the web pods never came back")


async def test_a_finished_pod_of_a_drained_controller_does_not_block_confirmation(
    world: World,
) -> None:
    """Adversary: another node's kubelet evicts a web pod under memory pressure: the pod
    stays, Failed (reason Evicted). The drained web pods are Running and Ready elsewhere: the
    finished pod counts neither way, and the replacement completes instead of rolling back
    after a full drain."""
    spec = world.spec("a-finished", Strategy.ROLLING, count=1, drain_timeout_s=120)
    old = spec.replacements[0].old_node
    pods = await world.cluster.list_pods()
    victim = next(p for p in pods if p.labels.get("app") == "web" and p.node_name != old)
    status = {"status": {"phase": "Failed", "reason": "Evicted",
                         "conditions": [{"type": "Ready", "status": "False"}]}}
    await _kube(world, "PATCH", f"/api/v1/namespaces/shop/pods/{victim.name}/status", status,
                "application/merge-patch+json")
    await _web_ready(world, 3)
    journal = await world.approved(spec)
    state = await PlanRunner(journal, world.context()).run()
    assert state.status is PlanStatus.COMPLETED, state.reasons
    failed = next(p for p in await world.cluster.list_pods() if p.name == victim.name)
    assert failed.phase == "Failed"
    events = await events_of(world, spec.plan_id)
    started = next(e for e in events if isinstance(e, ev.DrainStarted))
    assert started.baseline is not None and [o.kind for o in started.baseline] == ["ReplicaSet"]


BIG = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "batch", "namespace": "shop"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "batch"}},
        "template": {
            "metadata": {"labels": {"app": "batch"}},
            "spec": {"containers": [{"name": "batch", "image": "busybox",
                                     "resources": {"requests": {"cpu": "64"}}}]},
        },
    },
}


async def test_after_a_restart_rescheduling_is_confirmed_against_the_recorded_baseline(
    world: World,
) -> None:
    """Adversary: the daemon restarts between the drain and its confirmation, and meanwhile
    a team deploys into the same namespace something that can never be scheduled (it stays
    Pending). After the restart the wait uses the baseline recorded in DrainStarted (the web
    controller only): the drained pods are back, the replacement completes; the other
    team's Pending pod, which never was on the node, does not roll it back."""
    spec = world.spec("a-baseline", Strategy.ROLLING, count=1, drain_timeout_s=120)
    journal = await world.approved(spec)
    runner = PlanRunner(journal, world.context())

    def stop_at_drained(state: object, event: ev.Event) -> None:
        if isinstance(event, ev.NodeDrained):
            runner.request_stop()

    journal.subscribe(stop_at_drained)
    state = await runner.run()
    assert state.status is PlanStatus.EXECUTING
    rid = spec.replacements[0].replacement_id
    assert state.replacements[rid].status is ReplacementStatus.DRAINED
    await _kube(world, "POST", "/apis/apps/v1/namespaces/shop/deployments", BIG,
                "application/json")
    state = await PlanRunner(journal, world.context()).run()
    assert state.status is PlanStatus.COMPLETED, state.reasons
    pending = [p for p in await world.cluster.list_pods() if p.labels.get("app") == "batch"]
    assert pending and all(p.phase == "Pending" for p in pending)


async def test_a_pod_under_two_budgets_added_after_the_plan_was_made_is_not_drained(
    world: World,
) -> None:
    """Adversary: a team adds a second PodDisruptionBudget over the web pods after the plan
    was made (the Eviction API then answers 500 for them). The batch reads the budgets again:
    the replacement is skipped, named, and no eviction is tried until a drain timeout."""
    spec = world.spec("a-two-pdbs", Strategy.ROLLING, count=1)
    second = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web-too", "namespace": "shop"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }
    await _kube(world, "POST", "/apis/policy/v1/namespaces/shop/poddisruptionbudgets", second,
                "application/json")
    journal = await world.approved(spec)
    state = await PlanRunner(journal, world.context()).run()
    r = state.replacements[spec.replacements[0].replacement_id]
    assert r.status is ReplacementStatus.ROLLED_BACK
    assert "pod-under-two-budgets" in r.rollback_reason and "shop/web-too" in r.rollback_reason
    events = await events_of(world, spec.plan_id)
    assert not any(isinstance(e, ev.PodEvictionRequested) for e in events)
    assert spec.replacements[0].old_worker in await _workers(world)
