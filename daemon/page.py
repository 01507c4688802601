"""The status page's data: per node group, its plans, read from the event log.

The page (daemon/static/) is one HTML file and one script that ask the control API for JSON:

    GET /v1/page                  every node group: its current or last plan, older plans,
                                  what the daemon says about the group (when one runs)
    GET /v1/page/plans/{id}       one plan: phase and progress, each replacement (old node,
                                  size and price -> new node, size and price, state, since
                                  when), the fleet before and after, the saving projected and
                                  realised, the safety checks, nodes left out, the timeline

Both answers are folds of the log (daemon.audit: the same fold and reports as the `audit`
command), so the daemon's page and `audit --db FILE --serve` show the same thing for the same
log. `LogPages` folds only what was appended since its previous answer.

A replacement's three phases, as the page names them: create (a new worker is added and joins),
drain (the old node is cordoned and its pods evicted), delete (the old worker is deleted).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from daemon.audit import AuditError, LogFold, plan_report, resolve_plan
from daemon.control import ControlError
from eventstore import EventStore
from statemachine.fold import PlanState
from statemachine.machines import ReplacementStatus
from statemachine.plan import CheckResult

# How many finished plans per node group the overview lists (the audit has them all).
RECENT_PLANS = 10
# The timeline of one plan on the page: its newest entries (the audit has them all).
TIMELINE_ENTRIES = 400

_PHASES: dict[ReplacementStatus, str] = {
    ReplacementStatus.PLANNED: "waiting",
    ReplacementStatus.CREATING_GROUP: "create",
    ReplacementStatus.PROVISIONING: "create",
    ReplacementStatus.JOINING: "create",
    ReplacementStatus.READY: "create",
    ReplacementStatus.CORDONING: "drain",
    ReplacementStatus.CORDONED: "drain",
    ReplacementStatus.DRAINING: "drain",
    ReplacementStatus.DRAINED: "drain",
    ReplacementStatus.TERMINATING: "delete",
    ReplacementStatus.TERMINATED: "delete",
    ReplacementStatus.DONE: "done",
    ReplacementStatus.ROLLING_BACK: "rollback",
    ReplacementStatus.ROLLED_BACK: "rollback",
    ReplacementStatus.FAILED: "failed",
}
_PHASE_ORDER = ("create", "drain", "delete", "rollback")


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def plan_phase(plan: PlanState) -> str:
    """The plan's phase for a person: the furthest phase a replacement still works in."""
    if plan.terminal:
        return str(plan.status)
    active = {_PHASES[r.status] for r in plan.replacements.values()}
    for phase in reversed(_PHASE_ORDER):
        if phase in active:
            return phase
    return str(plan.status)


def plan_summary(plan: PlanState) -> dict[str, Any]:
    spec = plan.spec
    statuses = [r.status for r in plan.replacements.values()]
    done = statuses.count(ReplacementStatus.DONE)
    return {
        "plan_id": plan.plan_id,
        "node_group": spec.node_group,
        "strategy": str(spec.strategy),
        "state": str(plan.status),
        "phase": plan_phase(plan),
        "proposed_at": plan.proposed_at,
        "started_at": plan.started_at,
        "finished_at": plan.finished_at,
        "updated_at": plan.updated_at,
        "replacements_done": done,
        "replacements_total": len(statuses),
        "monthly_saving_projected": str(spec.monthly_saving),
        "monthly_saving_realised": _text(plan.realised_monthly_saving),
        "terminal": plan.terminal,
    }


def _fleet(plan: PlanState) -> dict[str, Any]:
    """The replaced nodes before and after: sizes, counts and monthly cost."""
    before: Counter[tuple[str, str]] = Counter()
    after: Counter[tuple[str, str]] = Counter()
    cost_before = cost_after = Decimal(0)
    for r in plan.spec.replacements:
        if not r.adds_only:  # an added node replaces none
            before[(f"size {r.old_size_id}", str(r.old_monthly_price))] += 1
            cost_before += r.old_monthly_price
        if r.new_size_id is not None:
            after[(r.new_size_name or f"size {r.new_size_id}", str(r.new_monthly_price))] += 1
            cost_after += r.new_monthly_price

    def rows(counts: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
        return [
            {"size": size, "monthly_price": price, "count": n}
            for (size, price), n in sorted(counts.items())
        ]

    return {
        "before": rows(before),
        "after": rows(after),
        "monthly_cost_before": str(cost_before),
        "monthly_cost_after": str(cost_after),
    }


def _replacements(plan: PlanState) -> list[dict[str, Any]]:
    out = []
    for spec in plan.spec.replacements:
        state = plan.replacements[spec.replacement_id]
        out.append(
            {
                "replacement_id": spec.replacement_id,
                "batch": spec.batch,
                # An add-only replacement (the group grows) has no old node: null fields.
                "adds_only": spec.adds_only,
                "old_node": spec.old_node or None,
                "old_size": None if spec.adds_only else f"size {spec.old_size_id}",
                "old_monthly_price": None if spec.adds_only else str(spec.old_monthly_price),
                "new_node": state.new_node or state.new_hostname,
                "new_size": None
                if spec.new_size_id is None
                else spec.new_size_name or f"size {spec.new_size_id}",
                "new_monthly_price": None
                if spec.new_size_id is None
                else str(spec.new_monthly_price),
                "state": str(state.status),
                "phase": _PHASES[state.status],
                "since": state.updated_at or state.started_at or plan.proposed_at,
                # The last error of a step still retrying; once done, a retried error is old news.
                "problem": state.failure_reason
                or state.rollback_reason
                or ("" if state.status is ReplacementStatus.DONE else state.last_error),
            }
        )
    return out


def _checks(checks: Sequence[CheckResult]) -> list[dict[str, str]]:
    return [{"name": c.name, "status": str(c.status), "message": c.message} for c in checks]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class LogPages:
    """The page's JSON from an event log (`PageSource` of daemon.control)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._fold = LogFold()

    async def overview(self, live: dict[str, Any] | None) -> dict[str, Any]:
        """Every group's plans; `live` is the running daemon's status (None: a recorded log).

        From `live` come the daemon's role and, per node group, its last analysis and what it
        waits for.
        """
        await self._fold.catch_up(self._store)
        by_group: dict[str, list[PlanState]] = {}
        for plan in self._fold.state.plans.values():
            by_group.setdefault(plan.spec.node_group, []).append(plan)
        live_groups: dict[str, Any] = (live or {}).get("node_groups") or {}
        repair: dict[str, Any] = (live or {}).get("repair") or {}
        repair_groups: dict[str, Any] = repair.get("node_groups") or {}
        groups = []
        for name in sorted(by_group.keys() | live_groups.keys() | repair_groups.keys()):
            plans = sorted(by_group.get(name, []), key=lambda p: p.proposed_at, reverse=True)
            # The plan in flight; else the last one that changed nodes (a later proposal closed
            # at once, a postponement for the cooldown say, goes with the earlier plans); else
            # the newest.
            running = [p for p in plans if not p.terminal]
            acted = [p for p in plans if p.started_at]
            choice = running or acted or plans
            current = choice[0] if choice else None
            groups.append(
                {
                    "name": name,
                    "current": None if current is None else plan_summary(current),
                    "recent": [
                        plan_summary(p) for p in plans if p is not current
                    ][:RECENT_PLANS],
                    "daemon": live_groups.get(name),
                    # Node health from the running daemon (docs/repair.md): unhealthy nodes,
                    # since when, the signal, what will happen; why repair is blocked.
                    "repair": repair_groups.get(name),
                }
            )
        return {
            "source": "log" if live is None else "daemon",
            "log": self._store.path,
            "daemon": None if live is None else live.get("daemon"),
            "groups": groups,
            "problems": self._fold.problems[-20:],
        }

    async def plan(self, prefix: str) -> dict[str, Any]:
        try:
            plan_id = await resolve_plan(self._store, prefix)
            report = await plan_report(self._store, plan_id)
        except AuditError as exc:
            raise ControlError(404, str(exc)) from None
        await self._fold.catch_up(self._store)
        plan = self._fold.state.plans.get(plan_id)
        if plan is None:
            raise ControlError(404, f"plan {plan_id} cannot be read from the log")
        spec = plan.spec
        recheck = plan.last_checks
        timeline = [_jsonable(dataclasses.asdict(t)) for t in report.timeline]
        return {
            **plan_summary(plan),
            "cluster": spec.cluster,
            "opportunity": str(spec.opportunity),
            "recommended_action": str(spec.recommended_action),
            "action_reasons": list(spec.action_reasons),
            "approval_requested_reason": plan.approval_requested_reason,
            "approved_by": plan.approved_by,
            "estimated_duration_s": spec.estimated_duration_s,
            "batches": len(spec.batches),
            "fleet": _fleet(plan),
            "replacements": _replacements(plan),
            "checks": _checks(spec.checks),
            "last_recheck": None
            if recheck is None
            else {
                "at": recheck.at,
                "step": recheck.step,
                "action": str(recheck.action),
                "reasons": list(recheck.reasons),
                "checks": _checks(recheck.checks),
            },
            "decisions": [_jsonable(dataclasses.asdict(d)) for d in report.decisions],
            "exclusions": [
                {"node": x.node, "reason": x.reason, "message": x.message}
                for x in spec.exclusions
            ],
            "prices_seen": dict(spec.prices_seen),
            "timeline": timeline[-TIMELINE_ENTRIES:],
            "timeline_total": len(timeline),
            "problems": list(report.problems),
        }
