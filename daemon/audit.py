"""The audit: "why was node X replaced, by what, and what did it save?", from the log alone.

Reads the event log through the same fold the daemon uses and turns it into reports: a list
of plans, and for one plan its decisions (safety checks with their messages, prices seen,
nodes left out and why, re-checks during execution), its timeline (every transition with the
node, the state before and after, and the reason) and its totals. The `audit` command prints
them as tables or JSON, the status page (daemon/page.py) shows them in a browser;
`verify_log` checks the hash chain and that every event still means something to this build.
It lives beside the daemon, not in the command line, because both the daemon's status page and
`audit --serve` use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from daemon.eventlog import open_log_to_read
from eventstore import EventStore, is_postgres
from statemachine import events as ev
from statemachine.fold import Change, FoldState, PlanState, apply
from statemachine.machines import IllegalTransition, ReplacementStatus


class AuditError(Exception):
    """A question the log cannot answer (no such plan, an ambiguous prefix)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRow:
    plan_id: str
    node_group: str
    strategy: str
    proposed_at: str
    outcome: str
    nodes: int
    planned_saving: Decimal
    realised_saving: Decimal | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineEntry:
    seq: int
    at: str
    node: str  # the old node of the replacement; "" for plan events
    replacement_id: str
    event: str
    from_state: str
    to_state: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    at: str
    kind: str  # "plan" (the planner's checks) or "recheck"
    action: str
    reasons: tuple[str, ...]
    checks: tuple[tuple[str, str, str], ...]  # (name, status, message)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanReport:
    row: PlanRow
    cluster: str
    opportunity: str
    replacements: tuple[tuple[str, str, str, str, str], ...]  # (id, old node, old, new, status)
    prices_seen: dict[str, str]
    exclusions: tuple[tuple[str, str, str], ...]  # (node, reason, message)
    decisions: tuple[Decision, ...]
    timeline: tuple[TimelineEntry, ...]
    replaced: int
    rolled_back: int
    failed: int
    duration_s: float | None
    problems: tuple[str, ...] = field(default=())


def _row(plan: PlanState) -> PlanRow:
    spec = plan.spec
    return PlanRow(
        plan_id=plan.plan_id,
        node_group=spec.node_group,
        strategy=str(spec.strategy),
        proposed_at=plan.proposed_at,
        outcome=str(plan.status),
        nodes=len(spec.replacements),
        planned_saving=spec.monthly_saving,
        realised_saving=plan.realised_monthly_saving,
    )


class LogFold:
    """Every plan of a log, folded, kept up to date by reading only what was appended since.

    A plan whose events stop making sense (an event this build cannot read, a transition its
    machine forbids) is folded no further and named in `problems`; the others are unaffected.
    The audit folds a log once; the status page calls `catch_up` before each answer, so a
    page refresh reads the events appended since the previous one, not the whole log.
    """

    def __init__(self) -> None:
        self.state = FoldState(keep_finished=True)
        self.problems: list[str] = []
        self._refused: set[str] = set()
        self._next_seq = 1

    async def catch_up(self, store: EventStore) -> None:
        async for recorded in store.read_all(self._next_seq):
            self._next_seq = recorded.seq + 1
            pid = ev.plan_id_of_stream(recorded.stream)
            if pid in self._refused:
                continue
            try:
                apply(self.state, recorded)
            except (IllegalTransition, ev.EventDecodeError) as exc:
                self.problems.append(
                    f"seq {recorded.seq} ({recorded.stream}, {recorded.type}): {exc}"
                )
                if pid is not None:
                    self._refused.add(pid)

    def rows(self) -> list[PlanRow]:
        return [_row(p) for p in self.state.plans.values()]


async def list_plans(store: EventStore) -> tuple[list[PlanRow], list[str]]:
    """Every plan in the log, oldest first, and the problems met folding it."""
    folded = LogFold()
    await folded.catch_up(store)
    return folded.rows(), folded.problems


async def resolve_plan(store: EventStore, prefix: str) -> str:
    """The plan id that `prefix` names uniquely."""
    matches = [
        pid
        for stream, _ in await store.streams()
        if (pid := ev.plan_id_of_stream(stream)) is not None and pid.startswith(prefix)
    ]
    if prefix in matches:
        return prefix
    if not matches:
        raise AuditError(f"no plan whose id starts with {prefix!r}")
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:5])
        raise AuditError(f"{prefix!r} matches {len(matches)} plans ({shown}); give more of it")
    return matches[0]


def describe(event: ev.Event) -> str:
    """A short reason or detail for the timeline."""
    match event:
        case ev.PlanProposed(plan=spec):
            return f"{spec.opportunity}, {len(spec.replacements)} nodes, {spec.recommended_action}"
        case ev.PlanApproved(by=by, reason=reason) if reason:
            return f"by {by}: {reason}"
        case ev.PlanApproved(by=by) | ev.PlanResumed(by=by):
            return f"by {by}"
        case (
            ev.PlanRejected(by=by, reason=reason)
            | ev.PlanPaused(by=by, reason=reason)
            | ev.PlanCancelled(by=by, reason=reason)
        ):
            return f"by {by}: {reason}"
        case ev.PlanCompleted(realised_monthly_saving=saving):
            return f"realised saving ${saving}/month"
        case ev.SafetyChecksRun(action=action, reasons=reasons, step=step):
            return f"{step or 'checks'}: {action}" + (f" ({'; '.join(reasons)})" if reasons else "")
        case ev.NodeGroupCreateRequested(group_name=name, size_id=size):
            return f"group {name} of size {size}"
        case ev.NodeGroupCreated(group_id=group):
            return f"group {group}"
        case ev.WorkerAddRequested(group_id=group, size_id=size, known_workers=known):
            return f"group {group}, size {size}, {len(known)} workers before"
        case ev.WorkerAdded(worker_identifier=worker, hostname=host):
            return f"worker {worker} ({host})" if host else f"worker {worker}"
        case ev.NodeJoined(node_name=node):
            return f"node {node} Ready"
        case ev.CordonRequested(prior_unschedulable=prior):
            return "was already unschedulable" if prior else ""
        case ev.DrainStarted(pods=pods):
            return f"{len(pods)} pods to evict"
        case ev.PodEvictionRequested(namespace=ns, pod=pod) | ev.PodEvicted(namespace=ns, pod=pod):
            return f"{ns}/{pod}"
        case ev.EvictionBlocked(namespace=ns, pod=pod, attempt=n, reason=reason):
            return f"{ns}/{pod} attempt {n}: {reason}"
        case ev.WorkerDeleteRequested(worker_identifier=worker, role=role):
            return f"{role} worker {worker}"
        case ev.WorkerDeleted(worker_identifier=worker, already_gone=gone):
            return f"{worker}" + (" (was already gone)" if gone else "")
        case ev.ReplacementCompleted(monthly_saving=saving):
            return f"saves ${saving}/month"
        case ev.NodeJoinTimedOut(waited_s=waited):
            return f"not Ready after {waited:g} s"
        case ev.DrainTimedOut(remaining=remaining):
            return f"{len(remaining)} pods left"
        case _:
            reason = getattr(event, "reason", "")
            return str(reason)


def _seconds_between(start: str, end: str) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


async def plan_report(store: EventStore, plan_id: str) -> PlanReport:
    state = FoldState(keep_finished=True)
    changes: list[Change] = []
    problems: list[str] = []
    for recorded in await store.read_stream(ev.stream_for(plan_id)):
        try:
            change = apply(state, recorded)
        except (IllegalTransition, ev.EventDecodeError) as exc:
            problems.append(f"seq {recorded.seq} ({recorded.type}): {exc}; later events skipped")
            break
        if change is not None:
            changes.append(change)
    plan = state.plans.get(plan_id)
    if plan is None:
        raise AuditError(f"plan {plan_id!r} has no readable PlanProposed event")
    spec = plan.spec
    old_node = {r.replacement_id: r.old_node or "(added)" for r in spec.replacements}
    timeline = tuple(
        TimelineEntry(
            seq=c.seq,
            at=c.event.at,
            node=old_node.get(c.replacement_id, ""),
            replacement_id=c.replacement_id,
            event=type(c.event).type_name(),
            from_state=c.from_state,
            to_state=c.to_state,
            detail=describe(c.event),
        )
        for c in changes
    )
    decisions = [
        Decision(
            at=plan.proposed_at,
            kind="plan",
            action=str(spec.recommended_action),
            reasons=spec.action_reasons,
            checks=tuple((c.name, str(c.status), c.message) for c in spec.checks),
        )
    ]
    decisions += [
        Decision(
            at=c.event.at,
            kind=f"recheck {c.event.step}".strip(),
            action=str(c.event.action),
            reasons=c.event.reasons,
            checks=tuple((k.name, str(k.status), k.message) for k in c.event.checks),
        )
        for c in changes
        if isinstance(c.event, ev.SafetyChecksRun)
    ]
    statuses = [r.status for r in plan.replacements.values()]
    start = plan.started_at or plan.proposed_at
    return PlanReport(
        row=_row(plan),
        cluster=spec.cluster,
        opportunity=str(spec.opportunity),
        replacements=tuple(
            (
                r.replacement_id,
                r.old_node or "none (add)",
                "-" if r.adds_only else f"size {r.old_size_id} ${r.old_monthly_price}",
                "none (remove)"
                if r.new_size_id is None
                else f"size {r.new_size_id} {r.new_size_name} ${r.new_monthly_price}".replace(
                    "  ", " "
                ),
                str(plan.replacements[r.replacement_id].status),
            )
            for r in spec.replacements
        ),
        prices_seen=dict(spec.prices_seen),
        exclusions=tuple((x.node, x.reason, x.message) for x in spec.exclusions),
        decisions=tuple(decisions),
        timeline=timeline,
        replaced=statuses.count(ReplacementStatus.DONE),
        rolled_back=statuses.count(ReplacementStatus.ROLLED_BACK),
        failed=statuses.count(ReplacementStatus.FAILED),
        duration_s=_seconds_between(start, plan.finished_at) if plan.finished_at else None,
        problems=tuple(problems),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogCheck:
    ok: bool
    checked: int
    message: str


async def verify_log(store: EventStore) -> LogCheck:
    """The hash chain, then the meaning: every event decodes and folds."""
    report = await store.verify()
    if not report.ok:
        seq = report.first_bad_seq
        named = seq is None or f"seq {seq} " in report.problem
        where = "first bad event: " if named else f"first bad event seq {seq}: "
        return LogCheck(ok=False, checked=report.checked, message=where + report.problem)
    state = FoldState(keep_finished=False)
    checked = 0
    async for recorded in store.read_all():
        try:
            apply(state, recorded)
        except (IllegalTransition, ev.EventDecodeError) as exc:
            return LogCheck(
                ok=False,
                checked=checked,
                message=(
                    f"first bad event seq {recorded.seq} (stream {recorded.stream!r}, "
                    f"type {recorded.type!r}): {exc}"
                ),
            )
        checked += 1
    return LogCheck(ok=True, checked=checked, message=f"log verifies: {checked} events")


def require_log_file(path: str) -> None:
    if not os.path.exists(path):
        raise AuditError(f"{path}: no such event log")
    if os.path.isdir(path):
        raise AuditError(f"{path}: is a directory, not an event log")


async def open_existing(target: str, password_file: Path | None = None) -> EventStore:
    """Open a log that must already exist (the audit never creates one): a file or a DSN."""
    if not is_postgres(target):
        require_log_file(target)
    return await open_log_to_read(target, password_file)
