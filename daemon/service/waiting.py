"""What a node group waits for, in words and with a time: the `waiting` of `status`.

`status` (text and `--json`) and the status page say it per node group:

    approval    a plan awaits a person's approve or reject
    resume      a plan was paused by a person
    window      a plan was paused at a safe point when no maintenance window was open; it
                resumes by itself when the next opens
    cooldown    the last plan finished less than cooldownPeriod ago (until when)
    window      outside the maintenance windows (until the next opens)
    world       the last analysis could not read VPSie or Kubernetes (the next try)
    analysis    nothing to do now (the next analysis)

A plan that runs waits for nothing: None.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from daemon.executor.runner import WINDOW_PAUSER
from statemachine.fold import PlanState
from statemachine.machines import PlanStatus
from statemachine.plan import CheckResult, CheckStatus


def _waiting(reason: str, message: str, until: str | None = None) -> dict[str, Any]:
    return {"reason": reason, "until": until, "message": message}


def _short(instant: str) -> str:
    """An RFC 3339 time to the second, for a sentence ("2026-01-05 02:00:00Z")."""
    return re.sub(r"\.\d+", "", instant).replace("T", " ")


def paused_by(state: PlanState) -> str:
    """Who recorded the plan's last pause ("" if never paused)."""
    for _, kind, by, _ in reversed(state.reasons):
        if kind == "PlanPaused":
            return by
    return ""


def paused_for_window(state: PlanState) -> bool:
    """Paused by the executor because no maintenance window was open (resumes by itself)."""
    return state.status is PlanStatus.PAUSED and paused_by(state) == WINDOW_PAUSER


def plan_waiting(plan: PlanState) -> dict[str, Any] | None:
    """What a plan in flight waits for (a person), or None when it is working."""
    if plan.status is PlanStatus.AWAITING_APPROVAL:
        why = plan.approval_requested_reason or "approval is required"
        return _waiting(
            "approval",
            f"a person to approve or reject plan {plan.plan_id} ({why}): "
            f"vpsie-rebalancer approve {plan.plan_id}",
        )
    if plan.status is PlanStatus.PAUSED and paused_for_window(plan):
        return _waiting(
            "window",
            f"the next maintenance window, when plan {plan.plan_id} resumes by itself",
        )
    if plan.status is PlanStatus.PAUSED:
        return _waiting(
            "resume",
            f"a person to resume plan {plan.plan_id}: vpsie-rebalancer resume {plan.plan_id}",
        )
    return None


def analysis_waiting(
    checks: Sequence[CheckResult], reasons: str | None, next_analysis_at: str
) -> dict[str, Any]:
    """After an analysis: the blocking check's time, else the next round.

    `reasons` is why the analysis proposed nothing (None when it proposed a plan: that plan
    says what the group waits for while it is in flight, and this applies once it has ended).
    """
    for check in checks:
        if check.status is not CheckStatus.FAILED:
            continue
        cooldown_until = check.details.get("next_allowed_at")
        if isinstance(cooldown_until, str):
            return _waiting(
                "cooldown",
                f"the cooldown after the last plan to end at {_short(cooldown_until)}",
                cooldown_until,
            )
        window_at = check.details.get("next_window_at")
        if isinstance(window_at, str):
            return _waiting(
                "window",
                f"the next maintenance window, which opens at {_short(window_at)}",
                window_at,
            )
    why = f" (nothing to do now: {reasons})" if reasons is not None else ""
    return _waiting(
        "analysis", f"the next analysis at {_short(next_analysis_at)}{why}", next_analysis_at
    )


def world_waiting(problem: str, next_analysis_at: str) -> dict[str, Any]:
    return _waiting(
        "world",
        f"VPSie and Kubernetes to be readable ({problem}); next try at {_short(next_analysis_at)}",
        next_analysis_at,
    )
