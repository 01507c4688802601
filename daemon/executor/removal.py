"""Taking a worker away: delete it at VPSie, confirm by listing, then delete its Node object.

Deleting is finished when the listing says so: after delete-worker (whatever it answered), the
workers are listed until the worker is absent; a "not found" while it is still listed is an
error. Then the worker's Node object, which nothing on VPSie's side deletes, is deleted under
`NodeDeleteRequested` (by uid: a later Node of the same name is left alone). `terminate` is
the old node's last step in a replacement: past the point of no return, it only goes forward.

Adding a worker and making its Node the old node's equal live in provisioning.py.
"""

from __future__ import annotations

from adapters.errors import Conflict
from daemon.executor.execution import LeftoverNode, Runtime, StepFailed
from statemachine import events as ev
from statemachine.machines import ReplacementStatus

_RS = ReplacementStatus


async def delete_worker(
    rt: Runtime, rid: str, worker: str, node: str, *, role: str, deadline: float
) -> None:
    """One bracketed delete by identifier, finished when the listing no longer has it."""
    await rt.record(
        ev.WorkerDeleteRequested(
            plan_id=rt.plan_id,
            at=rt.at(),
            replacement_id=rid,
            worker_identifier=worker,
            node=node,
            role="old" if role == "old" else "new",
        )
    )
    cluster = rt.spec.cluster
    try:
        deleted = await rt.call(
            f"delete VPSie worker {worker}",
            lambda: rt.ctx.cloud.delete_worker(cluster, worker),
            deadline=deadline,
            interruptible=False,
        )
        if not await worker_gone(rt, worker, wait=deleted, deadline=deadline):
            answer = "accepted the delete" if deleted else "answered not found"
            raise StepFailed(
                f"VPSie {answer} for worker {worker} but still lists it; not recorded as gone",
                permanent=False,
            )
    except StepFailed as exc:
        await rt.record(
            ev.WorkerDeleteFailed(
                plan_id=rt.plan_id,
                at=rt.at(),
                replacement_id=rid,
                worker_identifier=worker,
                reason=exc.reason,
                permanent=exc.permanent,
            )
        )
        raise
    await rt.record(
        ev.WorkerDeleted(
            plan_id=rt.plan_id,
            at=rt.at(),
            replacement_id=rid,
            worker_identifier=worker,
            already_gone=not deleted,
        )
    )


async def worker_gone(rt: Runtime, worker: str, *, wait: bool, deadline: float) -> bool:
    """Whether the cluster's listing no longer has `worker`; with `wait`, listed again every
    poll until it is gone or `deadline` passes."""
    cluster = rt.spec.cluster
    while True:
        workers = await rt.call(
            "list the VPSie workers",
            lambda: rt.ctx.cloud.list_workers(cluster),
            deadline=deadline,
            interruptible=False,
        )
        if all(w.identifier != worker for w in workers):
            return True
        if not wait or rt.monotonic() >= deadline:
            return False
        await rt.ctx.clock.sleep(min(rt.ctx.poll_interval_s, max(0.0, deadline - rt.monotonic())))


async def _leave(rt: Runtime, rid: str, name: str, uid: str, *, role: str, reason: str) -> None:
    """Hand a Node this replacement leaves behind to the service's leftover ledger."""
    if rt.ctx.on_leftover is None:
        return
    r, spec = rt.replacement(rid), rt.spec_of(rid)
    worker = spec.old_worker if role == "old" else r.new_worker
    await rt.ctx.on_leftover(
        LeftoverNode(
            plan_id=rt.plan_id, replacement_id=rid, node=name, uid=uid, worker=worker,
            reason=reason, at=rt.at(),
        )
    )


async def delete_node_object(rt: Runtime, rid: str, name: str, *, role: str) -> None:
    """Delete the Node object of a worker VPSie no longer lists, bracketed. Nothing to do when
    no such Node exists. A Node still Ready (its VM not yet stopped) is waited for up to
    `call_retry_s`, then left behind; a failure is recorded and does not stop the replacement.
    Either way the Node is handed to the leftover ledger first (`on_leftover`), which deletes it
    on a later round once it is NotReady and no worker is listed for it."""
    cluster = rt.ctx.cluster
    deadline = rt.monotonic() + rt.ctx.call_retry_s
    started = rt.monotonic()
    while True:
        node = await rt.call(
            f"read node {name}", lambda: cluster.get_node(name), deadline=deadline,
            interruptible=False,
        )
        if node is None:
            return
        if not node.ready:
            break
        if rt.monotonic() >= deadline:
            waited = rt.monotonic() - started
            await _leave(
                rt, rid, name, node.uid, role=role,
                reason=f"still Ready {waited:.0f} s after its worker was deleted",
            )
            return
        await rt.ctx.clock.sleep(min(rt.ctx.poll_interval_s, max(0.0, deadline - rt.monotonic())))
    base = {"plan_id": rt.plan_id, "replacement_id": rid}
    await rt.record(
        ev.NodeDeleteRequested(
            **base, at=rt.at(), node=name, uid=node.uid, role="old" if role == "old" else "new"
        )
    )
    uid = node.uid

    async def attempt() -> bool:
        try:
            return await cluster.delete_node(name, uid=uid)
        except Conflict:
            return False  # another Node of that name now: not the one to delete

    try:
        deleted = await rt.call(
            f"delete node {name}", attempt, deadline=deadline, interruptible=False
        )
    except StepFailed as exc:
        await _leave(rt, rid, name, uid, role=role, reason=f"its delete failed: {exc.reason}")
        await rt.record(ev.NodeDeleteFailed(**base, at=rt.at(), node=name, reason=exc.reason))
        return
    await rt.record(ev.NodeDeleted(**base, at=rt.at(), node=name, already_gone=not deleted))


async def terminate(rt: Runtime, rid: str) -> None:
    """DRAINED -> DONE: delete the old worker, then its Node object, then record the
    replacement complete.

    Forward only: a delete that fails is tried again with a fresh intent (backoff) for up to
    `rollback_timeout_s` (deleting by identifier is idempotent); a permanent refusal, or the
    end of that patience, is StepFailed, and the rollback does not undo this replacement but
    tries the delete again, then leaves it to a person."""
    spec = rt.spec_of(rid)
    patience = rt.monotonic() + rt.ctx.rollback_timeout_s
    first, most = rt.ctx.retry_backoff_s
    delay = first
    while True:
        r = rt.replacement(rid)
        match r.status:
            case _RS.DRAINED:
                rt.check()
                try:
                    await delete_worker(
                        rt,
                        rid,
                        spec.old_worker,
                        spec.old_node,
                        role="old",
                        deadline=min(patience, rt.monotonic() + rt.ctx.call_retry_s),
                    )
                except StepFailed as exc:
                    if exc.permanent or rt.monotonic() >= patience:
                        raise StepFailed(
                            f"the old worker {spec.old_worker} ({spec.old_node}) could not be "
                            f"deleted: {exc.reason}; its pods already run elsewhere, so this "
                            "replacement is not rolled back: delete the worker by hand"
                        ) from None
                    await rt.sleep(min(delay, max(0.0, patience - rt.monotonic())))
                    delay = min(delay * 2, most)
            case _RS.TERMINATED:
                if not r.old_node_deleted:
                    await delete_node_object(rt, rid, spec.old_node, role="old")
                await rt.record(
                    ev.ReplacementCompleted(
                        plan_id=rt.plan_id,
                        at=rt.at(),
                        replacement_id=rid,
                        monthly_saving=spec.monthly_saving,
                    )
                )
            case _RS.DONE:
                return
            case _:
                raise StepFailed(f"replacement {rid} cannot be terminated from {r.status}")
