"""Executing one repair: replacing a node the provider lost, with the replacement's steps.

A repair is a plan whose opportunity is `repair` (planner/health.py); its replacements follow
the repair machine (statemachine/machines.py). Order, each step an intent before its effect
and an outcome after:

1. the new worker, as a replacement provisions it (`provision`: group, add, join, prepare),
   unless the group's `addFirst` is off;
2. the lost worker: listed? deleted by identifier and confirmed gone by listing
   (`WorkerDeleteRequested` -> `WorkerDeleted`, retried with a fresh intent until
   `rollback_timeout_s`); not listed (by identifier, hostname or address)? `WorkerLossConfirmed`.
   This is the point of no return: a kubelet that merely stopped reporting may still run pods
   on a live VM, and nothing below is safe until that VM is gone;
3. only then the Node: cordoned with this plan's mark (`CordonRequested` -> `NodeCordoned`),
   tainted `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`
   (`OutOfServiceTaintRequested` -> `NodeTaintedOutOfService`, so Kubernetes detaches its
   volumes);
4. its pods deleted, not evicted (`DrainStarted`, then per pod `PodDeleteRequested` ->
   `PodDeleted`, `NodeDrained`): an eviction only sets a deletion time that the node's kubelet
   would finish, and there is none; their controllers create them again elsewhere. DaemonSet
   and mirror pods go with the Node;
5. the Node object deleted (`NodeDeleteRequested` -> `NodeDeleted`; nothing on VPSie's side
   does it), then `ReplacementCompleted`. A Node already gone skips 3-5.

Not bound by maintenance windows nor by the rebalancing safety checks; bounded by the
blast-radius limits checked before the plan was made.
"""

from __future__ import annotations

import logging
from typing import Any

from adapters.errors import Conflict, NotFound
from daemon.executor.drain import cordon_ours, ours, read_node
from daemon.executor.execution import Runtime, StepFailed
from daemon.executor.provisioning import provision
from daemon.executor.removal import delete_node_object, delete_worker
from statemachine import events as ev
from statemachine.machines import ReplacementStatus
from statemachine.world import NodeInfo, VpsieWorker

log = logging.getLogger(__name__)

_RS = ReplacementStatus

OUT_OF_SERVICE_KEY = "node.kubernetes.io/out-of-service"
OUT_OF_SERVICE_VALUE = "nodeshutdown"
OUT_OF_SERVICE_EFFECT = "NoExecute"


def _listed(workers: list[VpsieWorker], worker: str, node: NodeInfo | None, name: str) -> bool:
    if worker:
        return any(w.identifier == worker for w in workers)
    addresses = set(node.addresses) if node is not None else set()
    return any(
        w.hostname.lower() == name.lower() or (addresses & {w.ip, w.private_ip} - {""})
        for w in workers
    )


async def _lose_worker(rt: Runtime, rid: str, patience: float) -> None:
    """READY (or PLANNED without a new worker) -> TERMINATED."""
    spec = rt.spec_of(rid)
    rt.check()
    deadline = min(patience, rt.monotonic() + rt.ctx.call_retry_s)
    cluster = rt.spec.cluster
    workers = await rt.call(
        "list the VPSie workers", lambda: rt.ctx.cloud.list_workers(cluster), deadline=deadline
    )
    node = await read_node(rt, spec.old_node, deadline)
    if not _listed(workers, spec.old_worker, node, spec.old_node):
        await rt.record(
            ev.WorkerLossConfirmed(
                plan_id=rt.plan_id,
                at=rt.at(),
                replacement_id=rid,
                node=spec.old_node,
                worker_identifier=spec.old_worker,
            )
        )
        return
    if not spec.old_worker:
        raise StepFailed(
            f"VPSie lists a worker for {spec.old_node} again, without an identifier this "
            "repair may delete; not repairing it"
        )
    await delete_worker(rt, rid, spec.old_worker, spec.old_node, role="old", deadline=deadline)


async def _cordon(rt: Runtime, rid: str, node: NodeInfo) -> None:
    """TERMINATED -> CORDONED: this plan's cordon and mark (compare-and-set)."""
    name = node.name
    prior = node.unschedulable and not ours(node, rt.plan_id)
    base = {"plan_id": rt.plan_id, "replacement_id": rid}
    await rt.record(
        ev.CordonRequested(**base, at=rt.at(), node=name, prior_unschedulable=prior)
    )
    if not prior:
        problem = await cordon_ours(rt, name, node, rt.monotonic() + rt.ctx.call_retry_s)
        if problem is not None:
            await rt.record(ev.CordonFailed(**base, at=rt.at(), node=name, reason=problem))
            raise StepFailed(problem, permanent=False)
    await rt.record(ev.NodeCordoned(**base, at=rt.at(), node=name))


async def apply_out_of_service(rt: Runtime, name: str, deadline: float) -> None:
    """Put the out-of-service taint on `name` (idempotent; a Node gone needs none)."""

    async def attempt() -> None:
        try:
            await rt.ctx.cluster.set_taint(
                name, OUT_OF_SERVICE_KEY, OUT_OF_SERVICE_VALUE, OUT_OF_SERVICE_EFFECT
            )
        except NotFound:
            return

    await rt.call(f"taint node {name} out of service", attempt, deadline=deadline,
                  interruptible=False)


async def _taint(rt: Runtime, rid: str) -> None:
    name = rt.spec_of(rid).old_node
    base = {"plan_id": rt.plan_id, "replacement_id": rid}
    await rt.record(ev.OutOfServiceTaintRequested(**base, at=rt.at(), node=name))
    await apply_out_of_service(rt, name, rt.monotonic() + rt.ctx.rollback_timeout_s)
    await rt.record(ev.NodeTaintedOutOfService(**base, at=rt.at(), node=name))


async def remove_pod(rt: Runtime, namespace: str, name: str, uid: str, deadline: float) -> bool:
    """Delete one pod at once; False when it was gone (or is another pod of that name now)."""

    async def attempt() -> bool:
        try:
            return await rt.ctx.cluster.delete_pod(namespace, name, uid=uid)
        except Conflict:
            return False

    return await rt.call(f"delete pod {namespace}/{name}", attempt, deadline=deadline,
                         interruptible=False)


async def _clear(rt: Runtime, rid: str) -> None:
    """CORDONED -> DRAINED: delete the pods of a node whose worker is gone."""
    name = rt.spec_of(rid).old_node
    base: dict[str, Any] = {"plan_id": rt.plan_id, "replacement_id": rid}
    deadline = rt.monotonic() + rt.ctx.rollback_timeout_s
    pods = await rt.call(
        f"list the pods of node {name}", lambda: rt.ctx.cluster.list_pods(name), deadline=deadline
    )
    doomed = [p for p in pods if not (p.is_daemonset or p.is_mirror)]
    if rt.replacement(rid).status is _RS.CORDONED:
        refs = tuple(f"{p.namespace}/{p.name}" for p in doomed)
        await rt.record(ev.DrainStarted(**base, at=rt.at(), node=name, pods=refs))
    for pod in doomed:
        ref = f"{pod.namespace}/{pod.name}"
        if ref in rt.replacement(rid).evicted:
            continue
        await rt.record(
            ev.PodDeleteRequested(**base, at=rt.at(), namespace=pod.namespace, pod=pod.name,
                                  uid=pod.uid)
        )
        deleted = await remove_pod(rt, pod.namespace, pod.name, pod.uid, deadline)
        await rt.record(
            ev.PodDeleted(**base, at=rt.at(), namespace=pod.namespace, pod=pod.name,
                          already_gone=not deleted)
        )
    await rt.record(ev.NodeDrained(**base, at=rt.at(), node=name))


async def _complete(rt: Runtime, rid: str) -> None:
    spec = rt.spec_of(rid)
    await rt.record(
        ev.ReplacementCompleted(
            plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, monthly_saving=spec.monthly_saving
        )
    )


async def repair(rt: Runtime, rid: str) -> None:
    """Drive one repair to DONE (from wherever the log left it)."""
    spec = rt.spec_of(rid)
    await provision(rt, rid)
    patience = rt.monotonic() + rt.ctx.rollback_timeout_s
    first, most = rt.ctx.retry_backoff_s
    delay = first
    while True:
        r = rt.replacement(rid)
        match r.status:
            case _RS.READY | _RS.PLANNED if r.status is _RS.READY or spec.new_size_id is None:
                try:
                    await _lose_worker(rt, rid, patience)
                except StepFailed as exc:
                    if exc.permanent or rt.monotonic() >= patience:
                        raise StepFailed(
                            f"the lost worker {spec.old_worker or spec.old_node} could not be "
                            f"removed: {exc.reason}"
                        ) from None
                    await rt.sleep(min(delay, max(0.0, patience - rt.monotonic())))
                    delay = min(delay * 2, most)
            case _RS.TERMINATED:
                rt.check()
                deadline = rt.monotonic() + rt.ctx.rollback_timeout_s
                node = await read_node(rt, spec.old_node, deadline)
                if node is None:
                    log.info("repair %s: node %s is gone already; nothing to empty", rid,
                             spec.old_node, extra={"plan_id": rt.plan_id})
                    await _complete(rt, rid)
                    continue
                try:
                    await _cordon(rt, rid, node)
                except StepFailed:
                    if rt.monotonic() >= patience:
                        raise
                    await rt.sleep(min(delay, max(0.0, patience - rt.monotonic())))
                    delay = min(delay * 2, most)
            case _RS.CORDONED if not r.out_of_service:
                await _taint(rt, rid)
            case _RS.CORDONED | _RS.DRAINING:
                await _clear(rt, rid)
            case _RS.DRAINED:
                if not r.old_node_deleted:
                    await delete_node_object(rt, rid, spec.old_node, role="old")
                await _complete(rt, rid)
            case _RS.DONE:
                return
            case _:
                raise StepFailed(f"repair {rid} cannot go on from {r.status}")


async def settle_taint(rt: Runtime, rid: str, intent: ev.OutOfServiceTaintRequested) -> str:
    """Reconcile: the taint applied again (idempotent), then its outcome."""
    await apply_out_of_service(rt, intent.node, rt.monotonic() + rt.ctx.rollback_timeout_s)
    await rt.record(
        ev.NodeTaintedOutOfService(
            plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, node=intent.node
        )
    )
    return f"node {intent.node} is tainted out of service"


async def settle_pod_delete(rt: Runtime, rid: str, intent: ev.PodDeleteRequested) -> str:
    """Reconcile: the pod deleted again (idempotent, uid precondition), then its outcome."""
    deadline = rt.monotonic() + rt.ctx.rollback_timeout_s
    deleted = await remove_pod(rt, intent.namespace, intent.pod, intent.uid, deadline)
    await rt.record(
        ev.PodDeleted(
            plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, namespace=intent.namespace,
            pod=intent.pod, already_gone=not deleted,
        )
    )
    return f"pod {intent.namespace}/{intent.pod} is deleted"


__all__ = [
    "OUT_OF_SERVICE_KEY",
    "apply_out_of_service",
    "repair",
    "settle_pod_delete",
    "settle_taint",
]
