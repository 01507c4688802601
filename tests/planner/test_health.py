"""Node health: which nodes count as lost, since when, and when repairing them is blocked.

Pure: snapshots built by hand (tests/planner/cluster_builder.py), a fixed `now`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner.health import Signal, assess, assess_group, make_repair_plan
from planner.policy import ConditionRule, Limit, NodeGroupPolicy, RepairPolicy
from statemachine.plan import Opportunity
from statemachine.world import NODEGROUP_LABEL, ClusterSnapshot, NodeCondition
from tests.planner.cluster_builder import LARGE, NOW, cluster, node

pytestmark = pytest.mark.filterwarnings("error")

POLICY = NodeGroupPolicy(name="pool", cluster="c-1")
CREATED = "2026-11-26T10:00:00Z"


def ready(at: str = "2026-11-26T10:01:00Z") -> tuple[NodeCondition, ...]:
    return (NodeCondition(type="Ready", status="True", last_transition=at),)


def sick(status: str, since: str, *extra: NodeCondition) -> dict[str, object]:
    return {
        "ready": False,
        "created_at": CREATED,
        "conditions": (NodeCondition(type="Ready", status=status, last_transition=since), *extra),
    }


def world(
    n: int = 6,
    sick_nodes: dict[str, dict[str, object]] | None = None,
    gone: tuple[str, ...] = (),
    statuses: dict[str, str] | None = None,
) -> ClusterSnapshot:
    sick_nodes = sick_nodes or {}
    healthy: dict[str, object] = {"created_at": CREATED, "conditions": ready()}
    nodes = [
        node(f"n{i}", LARGE, **sick_nodes.get(f"n{i}", healthy)) for i in range(n)
    ]
    snap = cluster(nodes, [])
    workers = tuple(
        replace(w, status=(statuses or {}).get(w.hostname, "running"))
        for w in snap.workers
        if w.hostname not in gone
    )
    return replace(snap, workers=workers)


def test_healthy_group_has_nothing_to_repair() -> None:
    h = assess_group(world(), POLICY, now=NOW)
    assert h.nodes == 6 and h.unhealthy == () and h.to_repair == () and not h.blocked


def test_ready_false_is_due_only_after_its_toleration() -> None:
    # NOW is 12:00; the default toleration for Ready=False is 10 minutes.
    early = world(sick_nodes={"n1": sick("False", "2026-11-26T11:55:00Z")})
    h = assess_group(early, POLICY, now=NOW)
    assert [(u.node, u.signal, u.due) for u in h.unhealthy] == [("n1", Signal.READY_FALSE, False)]
    assert h.unhealthy[0].due_at == "2026-11-26T12:05:00Z"
    assert h.to_repair == ()
    late = world(sick_nodes={"n1": sick("False", "2026-11-26T11:49:00Z")})
    h = assess_group(late, POLICY, now=NOW)
    assert [u.node for u in h.to_repair] == ["n1"]


def test_unknown_has_its_own_toleration() -> None:
    rp = RepairPolicy(ready_unknown_s=60, ready_false_s=3600)
    policy = replace(POLICY, repair=rp)
    snap = world(sick_nodes={"n2": sick("Unknown", "2026-11-26T11:58:00Z")})
    h = assess_group(snap, policy, now=NOW)
    assert [(u.node, u.signal, u.due) for u in h.to_repair] == [
        ("n2", Signal.READY_UNKNOWN, True)
    ]


def test_worker_gone_is_due_sooner_and_names_no_worker() -> None:
    snap = world(sick_nodes={"n3": sick("Unknown", "2026-11-26T11:58:00Z")}, gone=("n3",))
    (u,) = assess_group(snap, POLICY, now=NOW).to_repair
    # Its size from its capacity, the one VPSie group size it matches (the worker is gone).
    assert u.signal is Signal.WORKER_GONE and u.worker == "" and u.size_id == LARGE.id


def test_worker_stopped_status_is_a_signal() -> None:
    snap = world(
        sick_nodes={"n4": sick("Unknown", "2026-11-26T11:58:00Z")}, statuses={"n4": "Suspended"}
    )
    (u,) = assess_group(snap, POLICY, now=NOW).to_repair
    assert u.signal is Signal.WORKER_STOPPED and "Suspended" in u.detail and u.worker


def test_a_running_worker_with_a_ready_node_is_not_a_signal_whatever_its_status() -> None:
    snap = world(statuses={"n0": "stopped"})
    assert assess_group(snap, POLICY, now=NOW).unhealthy == ()


def test_never_ready_counts_from_creation() -> None:
    fields = {
        "ready": False,
        "created_at": "2026-11-26T11:40:00Z",
        "conditions": (
            NodeCondition(type="Ready", status="False", last_transition="2026-11-26T11:40:00Z"),
        ),
    }
    policy = replace(POLICY, repair=RepairPolicy(startup_s=900, ready_false_s=60))
    (u,) = assess_group(world(sick_nodes={"n5": fields}), policy, now=NOW).to_repair
    assert u.signal is Signal.NEVER_READY and u.since == "2026-11-26T11:40:00Z"
    # The startup timeout, not the (shorter) NotReady toleration, judges a node still joining.
    late = replace(POLICY, repair=RepairPolicy(startup_s=3600, ready_false_s=60))
    (u,) = assess_group(world(sick_nodes={"n5": fields}), late, now=NOW).unhealthy
    assert u.signal is Signal.NEVER_READY and not u.due


def test_user_listed_condition() -> None:
    deadlock = NodeCondition(
        type="KernelDeadlock", status="True", last_transition="2026-11-26T11:00:00Z"
    )
    fields = {"created_at": CREATED, "conditions": (*ready(), deadlock)}
    rp = RepairPolicy(conditions=(ConditionRule(type="KernelDeadlock", after_s=600),))
    snap = world(sick_nodes={"n0": fields})
    assert assess_group(snap, POLICY, now=NOW).unhealthy == ()  # not listed: no signal
    (u,) = assess_group(snap, replace(POLICY, repair=rp), now=NOW).to_repair
    assert u.signal is Signal.CONDITION and u.detail == "KernelDeadlock=True"


def test_too_many_unhealthy_blocks_the_group() -> None:
    since = "2026-11-26T11:00:00Z"
    snap = world(sick_nodes={f"n{i}": sick("Unknown", since) for i in range(3)})
    h = assess_group(snap, POLICY, now=NOW)
    # 40% of 6, rounded down, is 2: three unhealthy block every repair.
    assert h.allowed == 2 and len(h.due) == 3 and h.to_repair == ()
    assert "3 of 6 nodes are unhealthy" in h.blocked and "(2)" in h.blocked
    two = world(sick_nodes={f"n{i}": sick("Unknown", since) for i in range(2)})
    assert len(assess_group(two, POLICY, now=NOW).to_repair) == 2


def test_nodes_within_their_toleration_count_toward_the_limit() -> None:
    snap = world(
        sick_nodes={
            "n0": sick("Unknown", "2026-11-26T11:00:00Z"),
            "n1": sick("Unknown", "2026-11-26T11:59:00Z"),
            "n2": sick("Unknown", "2026-11-26T11:59:00Z"),
        }
    )
    h = assess_group(snap, POLICY, now=NOW)
    assert len(h.due) == 1 and h.to_repair == () and h.blocked


@pytest.mark.parametrize(
    ("limit", "total", "allowed"),
    [
        (Limit(value=40, percent=True), 6, 2),
        (Limit(value=40, percent=True), 2, 1),  # never below one
        (Limit(value=50, percent=True), 7, 3),
        (Limit(value=0, percent=True), 10, 0),
        (Limit(value=3), 100, 3),
    ],
)
def test_limit_rounding(limit: Limit, total: int, allowed: int) -> None:
    assert limit.of(total) == allowed


def test_cluster_wide_stop() -> None:
    since = "2026-11-26T11:00:00Z"
    snap = world(sick_nodes={f"n{i}": sick("Unknown", since) for i in range(2)})
    h = assess(snap, [POLICY], now=NOW, cluster_limit=Limit(value=1))
    assert "cluster-wide" in h.blocked and h.group("pool").to_repair == ()  # type: ignore[union-attr]
    ok = assess(snap, [POLICY], now=NOW)
    assert len(ok.group("pool").to_repair) == 2  # type: ignore[union-attr]


def test_nothing_is_repaired_when_kubernetes_could_not_be_read() -> None:
    snap = replace(world(), nodes=(), api_reachable=False)
    h = assess(snap, [POLICY], now=NOW)
    assert not h.readable and h.group("pool").to_repair == ()  # type: ignore[union-attr]
    assert "could not be read" in h.group("pool").blocked  # type: ignore[union-attr]


def test_switched_off_and_handled_nodes_are_not_repaired() -> None:
    snap = world(sick_nodes={"n1": sick("False", "2026-11-26T11:00:00Z")})
    off = replace(POLICY, repair=RepairPolicy(enabled=False))
    h = assess_group(snap, off, now=NOW)
    assert len(h.due) == 1 and h.to_repair == () and "switched off" in h.blocked
    h = assess_group(snap, POLICY, now=NOW, handled=frozenset({"n1"}))
    assert len(h.due) == 1 and h.to_repair == () and not h.blocked


def test_repair_plan_replaces_with_the_same_size_and_says_why() -> None:
    snap = world(sick_nodes={"n1": sick("False", "2026-11-26T11:00:00Z")}, gone=("n1",))
    h = assess_group(snap, POLICY, now=NOW)
    spec = make_repair_plan(snap, POLICY, h, now=NOW)
    assert spec is not None and spec.plan_id.startswith("repair-")
    assert spec.opportunity is Opportunity.REPAIR
    (r,) = spec.replacements
    assert r.old_node == "n1" and r.old_worker == "" and r.new_size_id == LARGE.id
    assert "worker-gone" in r.reason and spec.batches == ((r.replacement_id,),)
    again = make_repair_plan(snap, POLICY, h, now=NOW)
    assert again == spec  # deterministic
    no_add = replace(POLICY, repair=RepairPolicy(add_first=False))
    spec = make_repair_plan(snap, no_add, assess_group(snap, no_add, now=NOW), now=NOW)
    assert spec is not None and spec.replacements[0].new_size_id is None


def test_size_unknown_falls_back_to_the_groups_common_size() -> None:
    base = world(sick_nodes={"n1": sick("False", "2026-11-26T11:00:00Z")}, gone=("n1",))
    h = assess_group(base, POLICY, now=NOW)
    unknown = replace(h, to_repair=(replace(h.to_repair[0], size_id=0),))
    spec = make_repair_plan(base, POLICY, unknown, now=NOW)
    assert spec is not None and spec.replacements[0].new_size_id == LARGE.id
    assert any("most common size" in reason for reason in spec.action_reasons)


def test_a_node_whose_worker_vanished_still_belongs_to_its_group() -> None:
    """Unlabelled nodes belong to a group through their worker; a vanished worker's node is
    placed by its capacity, so its loss is not missed."""
    snap = world(sick_nodes={"n2": sick("Unknown", "2026-11-26T11:00:00Z")}, gone=("n2",))
    unlabelled = tuple(
        replace(n, labels={k: v for k, v in n.labels.items() if k != NODEGROUP_LABEL})
        for n in snap.nodes
    )
    snap = replace(snap, nodes=unlabelled)
    policy = replace(POLICY, name=f"vpsie-{LARGE.id}")
    h = assess_group(snap, policy, now=NOW)
    assert h.nodes == 6 and [u.node for u in h.to_repair] == ["n2"]
