"""Add-only replacements: a node added where none is removed (the fleet grows).

The planner may choose a fleet with more nodes than it replaces (more, smaller nodes cost
less). The surplus nodes are add-only replacements (`ReplacementSpec.adds_only`): provisioned
and prepared like any new node (provisioning.py), then complete at once; they never cordon,
drain or delete anything, and rolled back they delete the worker they added (rollback.py).
The planner orders them before every removal, so the group's capacity only grows first.

With no old node to copy, the added node is made the equal of the plan's old nodes: the
labels and taints every one of them still listed shares (what the planner's simulation
assumed of a new node: the group's common labels and taints).
"""

from __future__ import annotations

from daemon.executor.execution import Runtime, StepFailed
from statemachine import events as ev
from statemachine.machines import ReplacementStatus
from statemachine.world import NodeInfo

_RS = ReplacementStatus


async def model_node(rt: Runtime, deadline: float) -> NodeInfo | None:
    """A node carrying what the plan's old nodes still listed all share (labels, taints);
    None when none of them is listed any more."""
    names = {s.old_node for s in rt.spec.replacements if not s.adds_only}
    nodes = await rt.call(
        "list the Kubernetes nodes", rt.ctx.cluster.list_nodes, deadline=deadline
    )
    olds = sorted((n for n in nodes if n.name in names), key=lambda n: n.name)
    if not olds:
        return None
    labels = dict(olds[0].labels)
    taints = list(olds[0].taints)
    for node in olds[1:]:
        labels = {k: v for k, v in labels.items() if node.labels.get(k) == v}
        taints = [t for t in taints if t in node.taints]
    return NodeInfo(name="", labels=labels, taints=tuple(taints))


async def complete_add(rt: Runtime, rid: str) -> None:
    """READY (joined and prepared) -> DONE: the added node is the whole job."""
    spec = rt.spec_of(rid)
    r = rt.replacement(rid)
    if r.status is _RS.DONE:
        return
    if r.status is not _RS.READY or not r.prepared:
        raise StepFailed(f"add-only replacement {rid} cannot complete from {r.status}")
    await rt.record(
        ev.ReplacementCompleted(
            plan_id=rt.plan_id,
            at=rt.at(),
            replacement_id=rid,
            monthly_saving=spec.monthly_saving,
        )
    )
