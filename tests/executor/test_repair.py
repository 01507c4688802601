"""Repairs run by the executor against the simulator over HTTP: a lost worker replaced, its
pods running elsewhere, its Node object gone; and a repair killed after every event it
appends (and after every call it makes) finishes on a restart, with one new worker, none left
over, and the lost worker and Node gone.

Adversary: the provider (the simulated VPSie) loses a worker (stopped, vanished, or its
kubelet silent while the VM runs); in the crash tests, also the process dying at any point.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from daemon.clock import rfc3339
from daemon.executor.journal import PlanJournal
from daemon.executor.runner import PlanRunner
from statemachine import events as ev
from statemachine.machines import PlanStatus, ReplacementStatus
from statemachine.plan import Action, Opportunity, PlanSpec, ReplacementSpec, Strategy
from tests.crash.injection import CrashInjector, CrashPoint, WatchedCloud, WatchedCluster
from tests.executor.checks import assert_web_serving, events_of
from tests.executor.conftest import OLD_PRICE, OLD_SIZE, World


def repair_spec(world: World, plan_id: str, index: int, *, gone: bool = False,
                add_first: bool = True) -> PlanSpec:
    identifier, hostname = world.initial[index]
    r = ReplacementSpec(
        replacement_id=f"{plan_id}/{hostname}",
        batch=1,
        old_node=hostname,
        old_worker="" if gone else identifier,
        old_size_id=OLD_SIZE,
        old_monthly_price=OLD_PRICE,
        new_size_id=OLD_SIZE if add_first else None,
        new_size_name="k8s-4c-8g" if add_first else "",
        new_monthly_price=OLD_PRICE if add_first else Decimal(0),
        reason="repair (test)",
    )
    return PlanSpec(
        plan_id=plan_id,
        cluster=world.cluster_id,
        node_group="general",
        strategy=Strategy.ROLLING,
        created_at=rfc3339(world.clock.now()),
        opportunity=Opportunity.REPAIR,
        replacements=(r,),
        batches=((r.replacement_id,),),
        max_concurrent=1,
        checks=(),
        recommended_action=Action.PROCEED,
        action_reasons=("test",),
        provision_timeout_s=600.0,
    )


async def _check_repaired(world: World, spec: PlanSpec, state_status: PlanStatus) -> None:
    assert state_status is PlanStatus.COMPLETED
    lost = spec.replacements[0]
    workers = await world.cloud.list_workers(world.cluster_id)
    hosts = {w.hostname.lower() for w in workers}
    assert lost.old_node not in hosts
    assert lost.old_worker == "" or all(w.identifier != lost.old_worker for w in workers)
    # One new worker: the group is back to three, and every worker serves as a Ready Node.
    nodes = {n.name: n for n in await world.cluster.list_nodes()}
    assert lost.old_node not in nodes
    assert len(workers) == 3 and all(nodes[h].ready for h in hosts)
    await assert_web_serving(world, on=set(hosts))


@pytest.mark.parametrize("kind", ["stop", "vanish", "kubelet"])
async def test_a_lost_worker_is_replaced(world: World, kind: str) -> None:
    _identifier, hostname = world.initial[1]
    world.sim.vpsie.lose_worker(hostname, kind)
    spec = repair_spec(world, f"repair-{kind}", 1, gone=kind == "vanish")
    journal = await world.started(spec)
    state = await PlanRunner(journal, world.context()).run()
    await _check_repaired(world, spec, state.status)
    names = [type(e).__name__ for e in await events_of(world, spec.plan_id)]
    expected_loss = "WorkerLossConfirmed" if kind == "vanish" else "WorkerDeleted"
    order = ["NodeJoined", expected_loss, "NodeCordoned", "NodeTaintedOutOfService",
             "NodeDrained", "NodeDeleted", "ReplacementCompleted"]
    assert [n for n in names if n in order] == order
    assert "PodDeleted" in names and "PodEvicted" not in names


async def test_without_add_first_the_lost_node_is_only_removed(world: World) -> None:
    _, hostname = world.initial[0]
    world.sim.vpsie.lose_worker(hostname, "stop")
    spec = repair_spec(world, "repair-remove", 0, add_first=False)
    state = await PlanRunner(await world.started(spec), world.context()).run()
    assert state.status is PlanStatus.COMPLETED
    workers = await world.cloud.list_workers(world.cluster_id)
    assert len(workers) == 2 and hostname not in {w.hostname.lower() for w in workers}
    assert hostname not in {n.name for n in await world.cluster.list_nodes()}


class Killed(BaseException):
    """The process died here (in-process stand-in for SIGKILL)."""


def _raise() -> None:
    raise Killed


@dataclass
class Run:
    events: int
    finished: bool


async def _run_until_killed(world: World, spec: PlanSpec, point: CrashPoint | None) -> Run:
    injector = CrashInjector(point, kill=_raise)
    journal = await PlanJournal.load(world.store, spec.plan_id)
    journal.subscribe(injector.on_event)
    ctx = world.context(cloud=WatchedCloud(world.cloud, injector),
                        cluster=WatchedCluster(world.cluster, injector))
    try:
        await PlanRunner(journal, ctx).run()
    except Killed:
        return Run(events=injector.seen, finished=False)
    return Run(events=injector.seen, finished=True)


@pytest.mark.parametrize("after_call", [False, True], ids=["after-event", "after-call"])
async def test_killed_at_every_step_the_repair_finishes_once(world: World,
                                                               after_call: bool) -> None:
    """Adversary: the provider stops a worker; the daemon dies again and again, each run after
    its first, second or third appended event in turn (or after the call that follows it),
    each restart folding the same log: intents left open at every step of the repair are
    settled from the world. (Always the first event would loop: an add intent killed before
    its call is settled "not made" and asked again, forever.)"""
    _, hostname = world.initial[1]
    world.sim.vpsie.lose_worker(hostname, "stop")
    spec = repair_spec(world, "repair-kill", 1)
    await world.started(spec)
    kills = 0
    point = 1
    while True:
        run = await _run_until_killed(world, spec, CrashPoint(point, after_call=after_call))
        if run.finished:
            break
        kills += 1
        point = 1 + kills % 3
        assert kills < 100, "the repair never finishes"
    state = (await PlanJournal.load(world.store, spec.plan_id)).state
    await _check_repaired(world, spec, state.status)
    r = next(iter(state.replacements.values()))
    assert r.status is ReplacementStatus.DONE
    adds = [e for e in await events_of(world, spec.plan_id) if isinstance(e, ev.WorkerAdded)]
    assert len(adds) == 1
    # After every event: more than a dozen deaths; after every call: one per side effect
    # (add, label, cordon, taint, pod deletes, worker and Node deletes), give or take.
    assert kills >= (5 if after_call else 12)
