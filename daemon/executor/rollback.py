"""Rolling back: undo what this plan did, and only that.

For every replacement that started and is not finished: uncordon its old node if this plan
cordoned it (the log says `prior_unschedulable` was false, and the node still carries our
`CORDONED_BY_ANNOTATION`), then, if it added a worker (the log shows `WorkerAdded` for this
replacement; nothing else is ever deleted), move the pods off that worker's node through the
Eviction API and delete the worker, then its Node object (joined or not: nothing on VPSie's
side deletes it), then `ReplacementRolledBack`.
A replacement past its point of no return (its old node drained and the pods confirmed
running elsewhere, or its old worker being deleted) is not undone: it is finished forward
(the delete is tried again), and its saving counts; if the delete still fails, a person is
told to finish it. Intents left open are settled (`reconcile`) before any step, and every
step is logged, the new node's vacating included.

A rollback step that keeps failing (past `rollback_timeout_s` of retries) marks the
replacement `ReplacementFailed` and the plan `PlanFailed`, with a reason that says what is
left in which state, so a person can finish the job.
"""

from __future__ import annotations

import logging

from daemon.executor.drain import node_of_new_worker, uncordon, vacate_new_node
from daemon.executor.execution import Runtime, StepFailed
from daemon.executor.reconcile import reconcile_pending
from daemon.executor.removal import delete_node_object, delete_worker, terminate
from daemon.executor.repair import repair
from statemachine import events as ev
from statemachine.machines import PlanStatus, ReplacementStatus

_RS = ReplacementStatus

log = logging.getLogger(__name__)


async def roll_back_replacement(rt: Runtime, rid: str, reason: str) -> str | None:
    """Undo one replacement; returns None when done, or what a person must look at.
    Every step it takes is logged (the new node's vacating too, which has no events)."""
    r = rt.replacement(rid)
    if r.status in (_RS.DONE, _RS.ROLLED_BACK, _RS.FAILED, _RS.PLANNED):
        return None
    extra = {"plan_id": rt.plan_id}
    try:
        if rt.forward_only(rid) and rt.repairing:
            log.info("rollback of %s: the lost worker's delete was asked for; finishing the "
                     "repair forward", rid, extra=extra)
            await repair(rt, rid)
            return None
        if rt.forward_only(rid):
            log.info("rollback of %s: past its drain, finishing it forward (deleting the old "
                     "worker %s)", rid, rt.spec_of(rid).old_worker, extra=extra)
            await terminate(rt, rid)
            return None
        if r.status is not _RS.ROLLING_BACK:
            await rt.record(
                ev.ReplacementRollbackStarted(
                    plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, reason=reason
                )
            )
        r = rt.replacement(rid)
        if r.prior_unschedulable is False:  # this plan asked for a cordon: is our mark there?
            rt.check()
            log.info("rollback of %s: uncordoning %s if it carries this plan's mark", rid,
                     rt.spec_of(rid).old_node, extra=extra)
            await uncordon(rt, rid)
        r = rt.replacement(rid)
        if r.new_worker and not r.new_deleted:
            rt.check()
            log.info("rollback of %s: vacating the node of worker %s (cordon, evict its pods)",
                     rid, r.new_worker, extra=extra)
            await vacate_new_node(rt, rid)
            log.info("rollback of %s: deleting worker %s, which this plan added", rid,
                     r.new_worker, extra=extra)
            await delete_worker(
                rt,
                rid,
                r.new_worker,
                r.new_node or r.new_hostname,
                role="new",
                deadline=rt.monotonic() + rt.ctx.rollback_timeout_s,
            )
        r = rt.replacement(rid)
        if r.new_deleted and not r.new_node_deleted:
            deadline = rt.monotonic() + rt.ctx.rollback_timeout_s
            joined = await node_of_new_worker(rt, rid, deadline)
            if joined is not None:
                await delete_node_object(rt, rid, joined.name, role="new")
        await rt.record(
            ev.ReplacementRolledBack(plan_id=rt.plan_id, at=rt.at(), replacement_id=rid)
        )
        log.info("rollback of %s: done", rid, extra=extra)
        return None
    except StepFailed as exc:
        r = rt.replacement(rid)
        left = []
        if r.cordoned_by_us:
            left.append(f"node {rt.spec_of(rid).old_node} is still cordoned by this plan")
        if r.new_worker and not r.new_deleted:
            node = f"; its node {r.new_node} may be cordoned by this plan" if r.new_node else ""
            left.append(f"worker {r.new_worker} that this plan added still exists{node}")
        problem = f"replacement {rid}: rollback could not complete: {exc.reason}" + (
            f" ({'; '.join(left)})" if left else ""
        )
        log.warning("rollback of %s failed: %s", rid, problem, extra=extra)
        await rt.record(
            ev.ReplacementFailed(plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, reason=problem)
        )
        return problem


async def roll_back_plan(rt: Runtime, reason: str) -> None:
    """From PlanRollbackStarted to PlanRolledBack (or PlanFailed when a step cannot finish)."""
    state = rt.state
    if state.status in (PlanStatus.EXECUTING, PlanStatus.PAUSED):
        await rt.record(ev.PlanRollbackStarted(plan_id=rt.plan_id, at=rt.at(), reason=reason))
    if rt.state.status is not PlanStatus.ROLLING_BACK:
        return
    why = _rollback_reason(rt) or reason
    # What a crash or a failed step left open is settled first: no step acts on a guess.
    for line in await reconcile_pending(rt):
        log.info("rollback: settled %s", line, extra={"plan_id": rt.plan_id})
    problems = []
    for rid in rt.state.replacements:
        rt.check()
        problem = await roll_back_replacement(rt, rid, why)
        if problem:
            problems.append(problem)
    if problems:
        await rt.record(
            ev.PlanFailed(
                plan_id=rt.plan_id,
                at=rt.at(),
                reason="; ".join(problems) + "; finish these by hand, then verify the cluster",
            )
        )
    else:
        await rt.record(ev.PlanRolledBack(plan_id=rt.plan_id, at=rt.at()))


def _rollback_reason(rt: Runtime) -> str:
    for _at, kind, _by, reason in reversed(rt.state.reasons):
        if kind == "PlanRollbackStarted":
            return reason
    return ""
