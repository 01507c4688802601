"""Settling intents the log left open: ask the live world what happened, record it.

After a crash (or a stop in the middle of a call), a replacement may have an intent with no
outcome (`ReplacementState.pending_intent`). Before anything else runs, each one is looked up
and its outcome recorded as found:

- NodeGroupCreateRequested: is there a group of the size? NodeGroupCreated, else
  NodeGroupCreateFailed;
- WorkerAddRequested: one new worker of the target size, not known before, not claimed (looked
  for up to `worker_visible_s`)? WorkerAdded, else WorkerAddFailed; several: the plan pauses for
  a person (a rollback records the add failed), none is taken for ours;
- NodePrepareRequested: the labels and taints applied again (idempotent), NodePrepared;
- StrayPodEvictionRequested: has the pod left the new node (or is it terminating)?
  StrayPodSettled evicted, else not (the sweep after preparing looks again);
- CordonRequested: does the node carry this plan's cordon (unschedulable with our mark)?
  NodeCordoned, else CordonFailed (a cordon without our mark is someone else's);
- PodEvictionRequested: is the pod gone from the node or terminating? PodEvicted, else
  EvictionBlocked;
- WorkerDeleteRequested: is the worker gone from the listing? WorkerDeleted, else
  WorkerDeleteFailed;
- NodeDeleteRequested: is the Node of that uid gone? NodeDeleted, else NodeDeleteFailed;
- UncordonRequested: NodeUncordoned (uncordoning it now if it still carries our mark);
- OutOfServiceTaintRequested (repair): the taint applied again (idempotent),
  NodeTaintedOutOfService;
- PodDeleteRequested (repair): the pod deleted again (grace 0, uid precondition; gone is
  fine), PodDeleted.

A "not made" outcome lets the executor try the step again with a fresh intent; an add is
never repeated before its intent is settled, so no intent ever gets two workers.
"""

from __future__ import annotations

from typing import Any

from daemon.executor.drain import ours, read_node, uncordon_ours
from daemon.executor.execution import Runtime
from daemon.executor.provisioning import (
    AmbiguousWorker,
    finish_prepare,
    park,
    settle_add,
    settle_group,
    unaccounted,
)
from daemon.executor.removal import worker_gone
from daemon.executor.repair import settle_pod_delete, settle_taint
from statemachine import events as ev

NOT_MADE = "not made before the restart"


async def reconcile_pending(rt: Runtime) -> list[str]:
    """Settle every pending intent of the plan; returns one line per intent, what was found."""
    found: list[str] = []
    for rid, r in list(rt.state.replacements.items()):
        if r.pending_intent is not None:
            found.append(f"{rid}: {await reconcile_one(rt, rid)}")
    return found


async def reconcile_one(rt: Runtime, rid: str) -> str:
    intent = rt.replacement(rid).pending_intent
    base: dict[str, Any] = {"plan_id": rt.plan_id, "replacement_id": rid}
    deadline = rt.monotonic() + rt.ctx.rollback_timeout_s
    cluster = rt.ctx.cluster
    match intent:
        case None:
            return "nothing pending"
        case ev.NodeGroupCreateRequested(size_id=size_id, group_name=name):
            group_id = await settle_group(rt, size_id)
            if group_id is not None:
                await rt.record(ev.NodeGroupCreated(**base, at=rt.at(), group_id=group_id))
                return f"node group {name} exists (id {group_id})"
            await rt.record(ev.NodeGroupCreateFailed(**base, at=rt.at(), reason=NOT_MADE))
            return f"node group {name} was not created"
        case ev.WorkerAddRequested(group_id=group_id):
            try:
                if await settle_add(rt, rid, intent):
                    return f"worker added: {rt.replacement(rid).new_worker}"
            except AmbiguousWorker as exc:
                await park(rt, rid, exc.reason)
                return exc.reason
            await unaccounted(rt, intent, f"{NOT_MADE}: not listed after the restart")
            await rt.record(ev.WorkerAddFailed(**base, at=rt.at(), reason=NOT_MADE))
            return f"no worker was added to group {group_id}"
        case ev.CordonRequested(node=name):
            node = await read_node(rt, name, deadline)
            if node is not None and (intent.prior_unschedulable or ours(node, rt.plan_id)):
                await rt.record(ev.NodeCordoned(**base, at=rt.at(), node=name))
                return f"node {name} is cordoned"
            if node is None:
                why = "the node is gone"
            elif node.unschedulable:  # without our mark: someone else's cordon, not ours
                why = f"node {name} was cordoned by someone else; leaving their cordon alone"
            else:
                why = NOT_MADE
            await rt.record(ev.CordonFailed(**base, at=rt.at(), node=name, reason=why))
            return f"node {name} is not cordoned by this plan"
        case ev.PodEvictionRequested(namespace=ns, pod=name):
            node_name = rt.spec_of(rid).old_node
            pods = await rt.call(
                f"list the pods of node {node_name}",
                lambda: cluster.list_pods(node_name),
                deadline=deadline,
                interruptible=False,
            )
            pod = next((p for p in pods if (p.namespace, p.name) == (ns, name)), None)
            if pod is None or pod.deleting:
                await rt.record(ev.PodEvicted(**base, at=rt.at(), namespace=ns, pod=name))
                return f"pod {ns}/{name} was evicted"
            attempt = rt.replacement(rid).eviction_blocks + 1
            await rt.record(
                ev.EvictionBlocked(
                    **base, at=rt.at(), namespace=ns, pod=name, attempt=attempt, reason=NOT_MADE
                )
            )
            return f"pod {ns}/{name} was not evicted"
        case ev.WorkerDeleteRequested(worker_identifier=worker):
            if await worker_gone(rt, worker, wait=False, deadline=deadline):
                await rt.record(
                    ev.WorkerDeleted(
                        **base, at=rt.at(), worker_identifier=worker, already_gone=True
                    )
                )
                return f"worker {worker} is gone"
            await rt.record(
                ev.WorkerDeleteFailed(**base, at=rt.at(), worker_identifier=worker, reason=NOT_MADE)
            )
            return f"worker {worker} still exists"
        case ev.NodePrepareRequested(node=name):
            await finish_prepare(rt, rid, intent)
            return f"node {name} has the old node's labels and taints"
        case ev.StrayPodEvictionRequested(node=node_name, namespace=ns, pod=name):
            pods = await rt.call(
                f"list the pods of node {node_name}",
                lambda: cluster.list_pods(node_name),
                deadline=deadline,
                interruptible=False,
            )
            pod = next((p for p in pods if (p.namespace, p.name) == (ns, name)), None)
            stray = {**base, "node": node_name, "namespace": ns, "pod": name}
            if pod is None or pod.deleting:
                await rt.record(ev.StrayPodSettled(**stray, at=rt.at(), evicted=True))
                return f"pod {ns}/{name} left the new node"
            await rt.record(
                ev.StrayPodSettled(**stray, at=rt.at(), evicted=False, reason=NOT_MADE)
            )
            return f"pod {ns}/{name} is still on the new node"
        case ev.NodeDeleteRequested(node=name, uid=uid):
            node = await read_node(rt, name, deadline)
            if node is None or (uid and node.uid != uid):
                await rt.record(ev.NodeDeleted(**base, at=rt.at(), node=name, already_gone=True))
                return f"node {name} is gone"
            await rt.record(ev.NodeDeleteFailed(**base, at=rt.at(), node=name, reason=NOT_MADE))
            return f"node {name} still exists"
        case ev.OutOfServiceTaintRequested():
            return await settle_taint(rt, rid, intent)
        case ev.PodDeleteRequested():
            return await settle_pod_delete(rt, rid, intent)
        case ev.UncordonRequested(node=name):
            await uncordon_ours(rt, name, deadline)  # only while it carries our mark
            await rt.record(ev.NodeUncordoned(**base, at=rt.at(), node=name))
            return f"node {name} is uncordoned"
        case _:
            raise AssertionError(f"no reconciliation for {type(intent).type_name()}")

