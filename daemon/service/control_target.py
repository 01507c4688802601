"""What the control API asks of the service, and what `status` answers.

`status()` is the JSON behind `vpsie-rebalancer status` (cli/control_client.py renders it):
each plan in flight (`plan_summary`) and each node group's last analysis and decision. The
mutating calls are refused (503) by a daemon that does not hold the lease.
"""

from __future__ import annotations

import logging
from typing import Any

from daemon.control import ControlError
from daemon.executor.runner import InvalidRequest, PlanRunner
from daemon.service.decisions import Decisions
from daemon.service.state import Tracked
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import PlanStatus, ReplacementStatus

log = logging.getLogger(__name__)


class PlanControl(Decisions):
    """The control API's `ControlTarget`: status, approve, reject, pause, resume, cancel."""

    def status(self) -> dict[str, Any]:
        plans = [
            plan_summary(t.journal.state) | {"running": t.task is not None}
            for t in self._plans.values()
        ]
        return {
            "plans": sorted(plans, key=lambda p: str(p["plan_id"])),
            "node_groups": {
                name: {"last_analysis_at": v.last_analysis_at, "last_decision": v.last_decision}
                for name, v in sorted(self._groups.items())
            },
            "disagreements": list(self._world_notes),
        }

    def _tracked(self, plan_id: str) -> Tracked:
        tracked = self._plans.get(plan_id)
        if tracked is None:
            matches = [t for pid, t in self._plans.items() if pid.startswith(plan_id)]
            if len(matches) == 1:
                return matches[0]
            if plan_id in self._finished:
                state = self._finished[plan_id]
                raise ControlError(409, f"plan {plan_id} is {state.status.value}")
            raise ControlError(404, f"no plan {plan_id} in flight")
        return tracked

    def _require_leader(self) -> None:
        if self._elector is None or not self._elector.is_leader():
            raise ControlError(503, "this daemon does not hold the lease; ask the leader")

    async def approve(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        state = tracked.journal.state
        if state.status is not PlanStatus.AWAITING_APPROVAL:
            raise ControlError(
                409, f"plan {state.plan_id} is {state.status.value}, not awaiting approval"
            )
        await tracked.journal.record(ev.PlanApproved(plan_id=state.plan_id, at=self._now(), by=by))
        self._start(tracked)
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
                plan_id=state.plan_id, at=self._now(), by=by, reason=reason or "rejected"
            )
        )
        self._plans.pop(state.plan_id, None)
        self._finished[state.plan_id] = tracked.journal.state
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
        if tracked.runner is None:
            tracked.runner = PlanRunner(tracked.journal, self._context())
        try:
            await tracked.runner.resume(by)
        except InvalidRequest as exc:
            raise ControlError(409, str(exc)) from None
        self._start(tracked)
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
                    plan_id=state.plan_id, at=self._now(), by=by, reason=reason or "cancelled"
                )
            )
            self._plans.pop(state.plan_id, None)
            self._finished[state.plan_id] = tracked.journal.state
            return plan_summary(tracked.journal.state)
        if tracked.runner is None:
            tracked.runner = PlanRunner(tracked.journal, self._context())
        try:
            await tracked.runner.cancel(by, reason or "cancelled")
        except InvalidRequest as exc:
            raise ControlError(409, str(exc)) from None
        self._start(tracked)
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
