"""What the executor tests assert about the world and the log after a plan ran."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import PlanStatus, ReplacementStatus
from statemachine.plan import PlanSpec
from statemachine.world import (
    CORDONED_BY_ANNOTATION,
    NODEGROUP_LABEL,
    SIZE_LABEL,
    VPSIE_GROUP_LABEL,
)
from tests.executor.conftest import NEW_SIZE, World


async def events_of(world: World, plan_id: str) -> list[ev.Event]:
    return [
        ev.decode(r.type, r.schema_version, r.data)
        for r in await world.store.read_stream(ev.stream_for(plan_id))
    ]


async def replacement_events(world: World, plan_id: str) -> list[ev.ReplacementEvent]:
    return [e for e in await events_of(world, plan_id) if isinstance(e, ev.ReplacementEvent)]


def when(event: ev.Event) -> float:
    return datetime.fromisoformat(event.at.replace("Z", "+00:00")).timestamp()


async def assert_nothing_cordoned(world: World) -> None:
    nodes = await world.cluster.list_nodes()
    assert [n.name for n in nodes if n.unschedulable] == []
    assert [n.name for n in nodes if CORDONED_BY_ANNOTATION in n.annotations] == []


async def assert_no_leftover_nodes(world: World) -> None:
    """Every Node has a VPSie worker (hostnames compared lower-cased): nothing left behind."""
    hosts = {w.hostname.lower() for w in await world.cloud.list_workers(world.cluster_id)}
    nodes = await world.cluster.list_nodes()
    assert [n.name for n in nodes if n.name.lower() not in hosts] == []


async def assert_web_serving(world: World, on: set[str]) -> None:
    """Every web pod Running and Ready, on the nodes `on`, none Pending."""
    for _ in range(100):
        pods = [p for p in await world.cluster.list_pods() if p.labels.get("app") == "web"]
        live = [p for p in pods if not p.deleting]
        if len(live) == 3 and all(p.phase == "Running" and p.ready for p in live):
            assert {p.node_name for p in live} <= on
            return
        await world.clock.sleep(5)
    raise AssertionError(f"web pods not all serving: {[(p.name, p.phase) for p in pods]}")


async def assert_replaced(world: World, spec: PlanSpec, state: PlanState) -> None:
    """Completed: new workers Ready and labelled, old ones gone, nothing cordoned, pods moved,
    the saving right, and a fresh fold of the log agrees."""
    assert state.status is PlanStatus.COMPLETED, state.reasons
    workers = {w.identifier: w for w in await world.cloud.list_workers(world.cluster_id)}
    groups = {g.id: g for g in await world.cloud.list_node_groups(world.cluster_id)}
    nodes = {n.name: n for n in await world.cluster.list_nodes()}
    new_nodes: set[str] = set()
    for r_spec in spec.replacements:
        r = state.replacements[r_spec.replacement_id]
        assert r.status is ReplacementStatus.DONE
        assert r_spec.old_worker not in workers
        assert r_spec.old_node not in nodes
        if r_spec.new_size_id is None:
            assert r.new_worker == ""
            continue
        worker = workers[r.new_worker]
        assert r.group_id is not None and groups[r.group_id].size_id == NEW_SIZE
        assert (worker.cpu, worker.ram_mb) == (groups[r.group_id].cpu, groups[r.group_id].ram_mb)
        node = nodes[r.new_node]
        assert node.ready and not node.unschedulable
        assert node.labels[NODEGROUP_LABEL] == spec.node_group
        assert node.labels[SIZE_LABEL] == str(NEW_SIZE)
        assert node.labels[VPSIE_GROUP_LABEL] == str(r.group_id)
        new_nodes.add(node.name)
    added = [r.new_worker for r in state.replacements.values() if r.new_worker]
    assert len(set(added)) == len(added)
    untouched = {i for i, _ in world.initial} - {r.old_worker for r in spec.replacements}
    assert set(workers) == set(added) | untouched
    await assert_no_leftover_nodes(world)
    await assert_nothing_cordoned(world)
    await assert_web_serving(world, set(nodes))
    expected = sum((r.monthly_saving for r in spec.replacements), Decimal(0))
    assert state.realised_monthly_saving == expected
    folded = await world.folded(spec.plan_id)
    assert folded.status is PlanStatus.COMPLETED
    assert folded.realised_monthly_saving == expected
    assert {k: v.status for k, v in folded.replacements.items()} == {
        k: v.status for k, v in state.replacements.items()
    }
    report = await world.store.verify()
    assert report.ok, report.problem


def assert_evictions_bracketed(events: list[ev.Event]) -> None:
    """Every eviction intent has its outcome; evicted pods were never refused and then
    counted evicted without a new intent."""
    pending: dict[str, ev.PodEvictionRequested] = {}
    for event in events:
        if isinstance(event, ev.PodEvictionRequested):
            assert event.replacement_id not in pending
            pending[event.replacement_id] = event
        elif isinstance(event, ev.PodEvicted | ev.EvictionBlocked):
            intent = pending.pop(event.replacement_id)
            assert (intent.namespace, intent.pod) == (event.namespace, event.pod)
    assert pending == {}
