"""What the control API asks of the service, and what `status` answers.

`status()` is the JSON behind `vpsie-rebalancer status` (cli/control_client.py renders it):
each plan in flight (`plan_summary`) and each node group's last analysis and decision. The
mutating calls are refused (503) by a daemon that does not hold the lease: `Service` gives
`PlanControl` the question "do I lead?" along with the shared `ServiceContext` and the `Runners`
that start, pause, resume and cancel a plan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from daemon.control import ControlError
from daemon.executor.runner import InvalidRequest
from daemon.service.repairs import Repairs
from daemon.service.runners import Runners
from daemon.service.state import ServiceContext, Tracked
from daemon.service.waiting import plan_waiting
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import PlanStatus, ReplacementStatus

log = logging.getLogger(__name__)


class PlanControl:
    """The control API's `ControlTarget`: status, approve, reject, pause, resume, cancel."""

    def __init__(
        self,
        ctx: ServiceContext,
        runners: Runners,
        *,
        is_leader: Callable[[], bool],
        repairs: Repairs | None = None,
    ) -> None:
        self._ctx = ctx
        self._runners = runners
        self._is_leader = is_leader
        self._repairs = repairs

    def status(self) -> dict[str, Any]:
        plans = [
            plan_summary(t.journal.state) | runner_summary(t) for t in self._ctx.plans.values()
        ]
        return {
            "plans": sorted(plans, key=lambda p: str(p["plan_id"])),
            "quarantined": [
                {
                    "plan_id": q.plan_id,
                    "node_group": q.node_group,
                    "problem": q.problem,
                    "seq": q.seq,
                }
                for q in self._ctx.quarantines.active.values()
            ],
            "node_groups": {
                name: {
                    "last_analysis_at": v.last_analysis_at,
                    "last_decision": v.last_decision,
                    "waiting": self._waiting(name, v.waiting),
                }
                for name, v in sorted(self._ctx.groups.items())
            },
            "disagreements": list(self._ctx.world_notes),
            "unaccounted_workers": (
                list(self._ctx.unaccounted.last) if self._ctx.unaccounted is not None else []
            ),
            "leftover_nodes": (
                list(self._ctx.leftovers.last) if self._ctx.leftovers is not None else []
            ),
            "repair": self._repairs.status() if self._repairs is not None else None,
        }

    def _waiting(self, group: str, after_analysis: dict[str, Any] | None) -> dict[str, Any] | None:
        """A plan in flight decides what the group waits for (a person, or nothing: it runs)."""
        for tracked in self._ctx.plans.values():
            state = tracked.journal.state
            if state.spec.node_group == group:
                return plan_waiting(state)
        return after_analysis

    def _tracked(self, plan_id: str) -> Tracked:
        tracked = self._ctx.plans.get(plan_id)
        if tracked is None:
            matches = [t for pid, t in self._ctx.plans.items() if pid.startswith(plan_id)]
            if len(matches) == 1:
                return matches[0]
            if plan_id in self._ctx.finished:
                state = self._ctx.finished[plan_id]
                raise ControlError(409, f"plan {plan_id} is {state.status.value}")
            raise ControlError(404, f"no plan {plan_id} in flight")
        return tracked

    def _require_leader(self) -> None:
        if not self._is_leader():
            raise ControlError(503, "this daemon does not hold the lease; ask the leader")

    async def approve(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        state = tracked.journal.state
        if state.status is not PlanStatus.AWAITING_APPROVAL:
            raise ControlError(
                409, f"plan {state.plan_id} is {state.status.value}, not awaiting approval"
            )
        await tracked.journal.record(
            ev.PlanApproved(plan_id=state.plan_id, at=self._ctx.now(), by=by, reason=reason)
        )
        self._runners.start(tracked)
        return plan_summary(tracked.journal.state)

    async def reject(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        state = tracked.journal.state
        if state.status not in (PlanStatus.PROPOSED, PlanStatus.AWAITING_APPROVAL):
            raise ControlError(
                409,
                f"plan {state.plan_id} is {state.status.value}; only a plan awaiting "
                "approval can be rejected (cancel a running one)",
            )
        await tracked.journal.record(
            ev.PlanRejected(
                plan_id=state.plan_id, at=self._ctx.now(), by=by, reason=reason or "rejected"
            )
        )
        self._ctx.retire(tracked.journal.state)
        return plan_summary(tracked.journal.state)

    async def pause(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        if tracked.runner is None or tracked.journal.state.status is not PlanStatus.EXECUTING:
            state = tracked.journal.state
            raise ControlError(409, f"plan {state.plan_id} is {state.status.value}, not executing")
        try:
            await tracked.runner.pause(by, reason)
        except InvalidRequest as exc:
            raise ControlError(409, str(exc)) from None
        return plan_summary(tracked.journal.state)

    async def resume(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        state = tracked.journal.state
        if state.status is not PlanStatus.PAUSED:
            raise ControlError(409, f"plan {state.plan_id} is {state.status.value}, not paused")
        runner = self._runners.runner(tracked)
        try:
            await runner.resume(by)
        except InvalidRequest as exc:
            raise ControlError(409, str(exc)) from None
        self._runners.start(tracked)
        return plan_summary(tracked.journal.state)

    async def cancel(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        state = tracked.journal.state
        if state.status in (
            PlanStatus.PROPOSED,
            PlanStatus.AWAITING_APPROVAL,
            PlanStatus.APPROVED,
        ) and (tracked.task is None):
            await tracked.journal.record(
                ev.PlanCancelled(
                    plan_id=state.plan_id, at=self._ctx.now(), by=by, reason=reason or "cancelled"
                )
            )
            self._ctx.retire(tracked.journal.state)
            return plan_summary(tracked.journal.state)
        runner = self._runners.runner(tracked)
        try:
            await runner.cancel(by, reason or "cancelled")
        except InvalidRequest as exc:
            raise ControlError(409, str(exc)) from None
        self._runners.start(tracked)
        return plan_summary(tracked.journal.state)


def plan_summary(state: PlanState) -> dict[str, Any]:
    spec = state.spec
    done = sum(1 for r in state.replacements.values() if r.status is ReplacementStatus.DONE)
    saving = state.realised_monthly_saving
    return {
        "plan_id": state.plan_id,
        "state": state.status.value,
        "node_group": spec.node_group,
        "strategy": spec.strategy.value,
        "replacements_done": done,
        "replacements_total": len(state.replacements),
        "recommended_action": spec.recommended_action.value,
        "monthly_saving_planned": str(spec.monthly_saving),
        "realised_monthly_saving": None if saving is None else str(saving),
        "replacements": {rid: r.status.value for rid, r in sorted(state.replacements.items())},
    }


def runner_summary(tracked: Tracked) -> dict[str, Any]:
    """Whether a runner drives the plan: running, restarting (after an error), stopped (needs
    a person, or the plan waits: paused, awaiting approval), with the runner's last error."""
    if tracked.task is not None:
        runner = "running"
    elif tracked.restart_at is not None:
        runner = "restarting"
    else:
        runner = "stopped"
    return {
        "running": tracked.task is not None,
        "runner": runner,
        "runner_error": tracked.last_error,
    }
