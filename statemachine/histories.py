"""Event histories made by walking the machines: for tests, golden logs and benchmarks.

`next_events(plan, at)` lists every event the fold would accept next for a plan (plan events
and, for each replacement, the events its machine allows, with fields that satisfy the
intent/outcome guards), the one that makes forward progress first. Property tests draw from
it to explore legal histories; `forward_history` always takes the first choice, giving a plan
that runs to completion; the recovery benchmark builds its large logs from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from statemachine import events as ev
from statemachine.fold import FoldState, PlanState, ReplacementState, apply_event
from statemachine.machines import (
    REPLACEMENT_TERMINAL,
    PlanStatus,
    ReplacementStatus,
)
from statemachine.plan import (
    Action,
    CheckResult,
    CheckStatus,
    Opportunity,
    PlanSpec,
    ReplacementSpec,
    Strategy,
)

EPOCH = datetime(2026, 1, 5, 2, 0, 0, tzinfo=UTC)


def timestamp(step: int, *, start: datetime = EPOCH, seconds: int = 7) -> str:
    """RFC 3339 UTC time `step * seconds` after `start` (histories need no clock)."""
    return (start + timedelta(seconds=step * seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def example_spec(
    plan_id: str,
    *,
    node_group: str = "workers",
    replacements: int = 2,
    consolidations: int = 0,
    strategy: Strategy = Strategy.ROLLING,
    created_at: str = "2026-01-05T02:00:00Z",
    repair: bool = False,
    adds: int = 0,
) -> PlanSpec:
    """A plausible plan: replace `replacements` nodes of size 3 by size 2, remove others,
    then add `adds` nodes of size 1 where none is removed (add-only replacements).
    With `repair`, a repair plan: the lost nodes replaced (the "removals" by nothing)."""
    specs: list[ReplacementSpec] = []
    for i in range(replacements + consolidations):
        consolidate = i >= replacements
        specs.append(
            ReplacementSpec(
                replacement_id=f"{plan_id}-r{i + 1}",
                batch=i,
                old_node=f"{node_group}-node-{i + 1}",
                old_worker=f"{node_group}-w{i + 1}",
                old_size_id=3,
                old_monthly_price=Decimal("40.00"),
                new_size_id=None if consolidate else 2,
                new_size_name="" if consolidate else "2c-4g",
                new_monthly_price=Decimal("0") if consolidate else Decimal("24.00"),
                reason="consolidate: pods fit elsewhere" if consolidate else "downsize: p95 35%",
            )
        )
    for i in range(adds):
        specs.append(
            ReplacementSpec(
                replacement_id=f"{plan_id}-a{i + 1}",
                batch=len(specs),
                old_node="",
                old_worker="",
                old_size_id=0,
                old_monthly_price=Decimal(0),
                new_size_id=1,
                new_size_name="1c-2g",
                new_monthly_price=Decimal("12.00"),
                reason="add: more, smaller nodes cost less",
            )
        )
    saving = sum((s.monthly_saving for s in specs), Decimal(0))
    return PlanSpec(
        plan_id=plan_id,
        cluster="k8s-cluster-1",
        node_group=node_group,
        strategy=strategy,
        created_at=created_at,
        opportunity=(
            Opportunity.REPAIR
            if repair
            else Opportunity.CONSOLIDATE if consolidations else Opportunity.DOWNSIZE
        ),
        replacements=tuple(specs),
        batches=tuple((s.replacement_id,) for s in specs),
        max_concurrent=1,
        checks=(
            CheckResult(
                name="capacity",
                status=CheckStatus.PASSED,
                message="pods fit on the remaining nodes",
                details={"headroom_cpu_millis": 1500, "headroom_ratio": 0.4},
            ),
            CheckResult(name="timing", status=CheckStatus.PASSED, message="in window"),
        ),
        recommended_action=Action.PROCEED,
        action_reasons=("all safety checks passed",),
        monthly_saving=saving,
        estimated_duration_s=600.0,
        min_nodes=1,
        snapshot_summary={"nodes": 3, "pods": 12},
        prices_seen={"2": "24.00", "3": "40.00"},
    )


def _spec_of(plan: PlanState, r: ReplacementState) -> ReplacementSpec:
    return next(s for s in plan.spec.replacements if s.replacement_id == r.replacement_id)


def _busy(plan: PlanState) -> bool:
    return any(
        r.status not in REPLACEMENT_TERMINAL and r.status is not ReplacementStatus.PLANNED
        for r in plan.replacements.values()
    )


def _outcomes(pid: str, at: str, r: ReplacementState, spec: ReplacementSpec) -> list[ev.Event]:
    base: dict[str, Any] = {"plan_id": pid, "at": at, "replacement_id": r.replacement_id}
    match r.pending_intent:
        case ev.NodeGroupCreateRequested():
            return [
                ev.NodeGroupCreated(**base, group_id=7),
                ev.NodeGroupCreateFailed(**base, reason="simulated failure", permanent=False),
            ]
        case ev.WorkerAddRequested():
            worker = f"{spec.old_worker}-new"
            return [
                ev.WorkerAdded(**base, worker_identifier=worker, hostname=worker, ip="10.0.0.9"),
                ev.WorkerAddFailed(**base, reason="quota exceeded", permanent=True),
            ]
        case ev.CordonRequested(node=node):
            return [
                ev.NodeCordoned(**base, node=node),
                ev.CordonFailed(**base, node=node, reason="x"),
            ]
        case ev.PodEvictionRequested(namespace=ns, pod=pod):
            return [
                ev.PodEvicted(**base, namespace=ns, pod=pod),
                ev.EvictionBlocked(**base, namespace=ns, pod=pod, attempt=1, reason="PDB"),
            ]
        case ev.WorkerDeleteRequested(worker_identifier=worker):
            return [
                ev.WorkerDeleted(**base, worker_identifier=worker, already_gone=False),
                ev.WorkerDeleteFailed(**base, worker_identifier=worker, reason="HTTP 503"),
            ]
        case ev.UncordonRequested(node=node):
            return [ev.NodeUncordoned(**base, node=node)]
        case ev.NodePrepareRequested(node=node):
            return [ev.NodePrepared(**base, node=node)]
        case ev.StrayPodEvictionRequested(node=node, namespace=ns, pod=pod):
            return [
                ev.StrayPodSettled(**base, node=node, namespace=ns, pod=pod, evicted=True),
                ev.StrayPodSettled(
                    **base, node=node, namespace=ns, pod=pod, evicted=False, reason="HTTP 429"
                ),
            ]
        case ev.NodeDeleteRequested(node=node):
            return [
                ev.NodeDeleted(**base, node=node, already_gone=False),
                ev.NodeDeleteFailed(**base, node=node, reason="HTTP 503"),
            ]
        case ev.OutOfServiceTaintRequested(node=node):
            return [ev.NodeTaintedOutOfService(**base, node=node)]
        case ev.PodDeleteRequested(namespace=ns, pod=pod):
            return [ev.PodDeleted(**base, namespace=ns, pod=pod)]
        case _:
            return []


def _repair_next(plan: PlanState, r: ReplacementState, at: str) -> list[ev.Event]:
    """The repair machine's forward steps (provisioning and rollback as a replacement's)."""
    pid, spec = plan.plan_id, _spec_of(plan, r)
    base: dict[str, Any] = {"plan_id": pid, "at": at, "replacement_id": r.replacement_id}
    S = ReplacementStatus
    out: list[ev.Event] = []
    match r.status:
        case S.PLANNED if spec.new_size_id is None:
            out.append(ev.WorkerLossConfirmed(
                **base, node=spec.old_node, worker_identifier=spec.old_worker))
            out.append(ev.WorkerDeleteRequested(
                **base, worker_identifier=spec.old_worker, node=spec.old_node, role="old"))
        case S.READY:
            if not r.prepared:
                out.append(ev.NodePrepareRequested(**base, node=r.new_node, labels={"a": "b"}))
            out.append(ev.WorkerDeleteRequested(
                **base, worker_identifier=spec.old_worker, node=spec.old_node, role="old"))
            out.append(ev.WorkerLossConfirmed(
                **base, node=spec.old_node, worker_identifier=spec.old_worker))
        case S.TERMINATED:
            out.append(ev.CordonRequested(**base, node=spec.old_node, prior_unschedulable=False))
        case S.CORDONED:
            if not r.out_of_service:
                out.append(ev.OutOfServiceTaintRequested(**base, node=spec.old_node))
            pods = (f"default/{spec.old_node}-app-1",)
            out.append(ev.DrainStarted(**base, node=spec.old_node, pods=pods))
        case S.DRAINING:
            left = [p for p in r.drain_pods if p not in r.evicted]
            if left:
                ns, _, name = left[0].partition("/")
                out.append(ev.PodDeleteRequested(**base, namespace=ns, pod=name, uid="u"))
            else:
                out.append(ev.NodeDrained(**base, node=spec.old_node))
        case S.DRAINED:
            if not r.old_node_deleted:
                out.append(ev.NodeDeleteRequested(
                    **base, node=spec.old_node, uid=f"uid-{spec.old_node}", role="old"))
            out.append(ev.ReplacementCompleted(**base, monthly_saving=spec.monthly_saving))
        case _:
            return []
    return out


def _replacement_next(plan: PlanState, r: ReplacementState, at: str) -> list[ev.Event]:
    pid, spec = plan.plan_id, _spec_of(plan, r)
    base: dict[str, Any] = {"plan_id": pid, "at": at, "replacement_id": r.replacement_id}
    status = r.status
    S = ReplacementStatus
    if status in REPLACEMENT_TERMINAL:
        return []
    out: list[ev.Event] = _outcomes(pid, at, r, spec) if r.pending_intent else []
    repair = plan.spec.opportunity is Opportunity.REPAIR
    forward = _repair_next(plan, r, at) if repair and not r.pending_intent else []
    if forward:
        out.extend(forward)
    elif not r.pending_intent:
        match status:
            case S.PLANNED if spec.new_size_id is None:
                out.append(
                    ev.CordonRequested(**base, node=spec.old_node, prior_unschedulable=False)
                )
            case S.PLANNED if spec.new_size_id is not None:
                out.append(
                    ev.WorkerAddRequested(
                        **base,
                        idempotency_key=f"{r.replacement_id}/add",
                        cluster=plan.spec.cluster,
                        group_id=r.group_id or 7,
                        size_id=spec.new_size_id,
                        known_workers=tuple(w for w in (spec.old_worker,) if w),
                    )
                )
                if r.group_id is None:
                    out.append(
                        ev.NodeGroupCreateRequested(
                            **base,
                            cluster=plan.spec.cluster,
                            group_name=f"{plan.spec.node_group}-{spec.new_size_name}",
                            size_id=spec.new_size_id,
                        )
                    )
            case S.JOINING:
                out.append(ev.NodeJoined(**base, node_name=r.new_hostname or "new-node"))
                out.append(ev.NodeJoinTimedOut(**base, waited_s=600.0))
            case S.READY if spec.adds_only:
                if not r.prepared:
                    out.append(
                        ev.NodePrepareRequested(**base, node=r.new_node, labels={"a": "b"})
                    )
                else:
                    out.append(
                        ev.ReplacementCompleted(**base, monthly_saving=spec.monthly_saving)
                    )
            case S.READY:
                if not r.prepared:
                    out.append(
                        ev.NodePrepareRequested(
                            **base, node=r.new_node, labels={"a": "b"}, taints=("k=v:NoSchedule",)
                        )
                    )
                out.append(
                    ev.CordonRequested(**base, node=spec.old_node, prior_unschedulable=False)
                )
                out.append(ev.NodeLabelled(**base, node=r.new_node, labels={"a": "b"}))
                if r.prepared:
                    out.append(
                        ev.StrayPodEvictionRequested(
                            **base, node=r.new_node, namespace="default", pod="stray",
                            taint="k=v:NoSchedule",
                        )
                    )
            case S.CORDONED:
                pods = (f"default/{spec.old_node}-app-1", f"default/{spec.old_node}-app-2")
                out.append(ev.DrainStarted(**base, node=spec.old_node, pods=pods))
            case S.DRAINING:
                left = [p for p in r.drain_pods if p not in r.evicted]
                if left:
                    ns, _, name = left[0].partition("/")
                    out.append(ev.PodEvictionRequested(**base, namespace=ns, pod=name))
                else:
                    out.append(ev.NodeDrained(**base, node=spec.old_node))
                out.append(ev.DrainTimedOut(**base, node=spec.old_node, remaining=tuple(left)))
            case S.DRAINED:
                out.append(
                    ev.WorkerDeleteRequested(
                        **base, worker_identifier=spec.old_worker, node=spec.old_node, role="old"
                    )
                )
                out.append(ev.ReschedulingConfirmed(**base, pods=r.evicted))
            case S.TERMINATED:
                if not r.old_node_deleted:
                    out.append(
                        ev.NodeDeleteRequested(
                            **base, node=spec.old_node, uid=f"uid-{spec.old_node}", role="old"
                        )
                    )
                out.append(ev.ReplacementCompleted(**base, monthly_saving=spec.monthly_saving))
            case S.ROLLING_BACK:
                if r.cordoned_by_us:
                    out.append(ev.UncordonRequested(**base, node=spec.old_node))
                elif r.new_worker and not r.new_deleted:
                    out.append(
                        ev.WorkerDeleteRequested(
                            **base, worker_identifier=r.new_worker, node=r.new_node, role="new"
                        )
                    )
                elif r.new_deleted and r.new_node and not r.new_node_deleted:
                    out.append(
                        ev.NodeDeleteRequested(
                            **base, node=r.new_node, uid=f"uid-{r.new_node}", role="new"
                        )
                    )
                else:
                    out.append(ev.ReplacementRolledBack(**base))
            case _:
                pass
    undoable = (
        status in (S.PLANNED, S.CREATING_GROUP, S.PROVISIONING, S.JOINING, S.READY)
        if repair or spec.adds_only
        else status not in (S.TERMINATING, S.TERMINATED, S.ROLLING_BACK)
    )
    if undoable:
        out.append(ev.ReplacementRollbackStarted(**base, reason="safety check failed"))
    out.append(ev.ReplacementFailed(**base, reason="needs a person"))
    return out


def next_events(plan: PlanState, at: str) -> list[ev.Event]:
    """Every event the fold accepts next for `plan`; forward progress first."""
    pid = plan.plan_id
    P = PlanStatus
    base: dict[str, Any] = {"plan_id": pid, "at": at}
    checks = ev.SafetyChecksRun(
        **base, checks=plan.spec.checks, action=Action.PROCEED, reasons=("re-checked",)
    )
    match plan.status:
        case P.PROPOSED:
            return [
                ev.PlanApproved(**base, by="policy"),
                ev.PlanApprovalRequested(**base, reason="approval required"),
                ev.PlanRejected(**base, by="alice", reason="not now"),
                ev.PlanCancelled(**base, by="alice", reason="superseded"),
                ev.PlanFailed(**base, reason="planner error"),
                checks,
            ]
        case P.AWAITING_APPROVAL:
            return [
                ev.PlanApproved(**base, by="alice"),
                ev.PlanRejected(**base, by="alice", reason="not now"),
                ev.PlanCancelled(**base, by="bob", reason="superseded"),
            ]
        case P.APPROVED:
            return [ev.PlanExecutionStarted(**base), ev.PlanCancelled(**base, by="bob", reason="x")]
        case P.EXECUTING | P.PAUSED | P.ROLLING_BACK:
            pass
        case _:
            return []
    out: list[ev.Event] = []
    rolling_back = plan.status is P.ROLLING_BACK
    for r in plan.replacements.values():
        options = _replacement_next(plan, r, at)
        if rolling_back and r.status is ReplacementStatus.PLANNED:
            continue  # a rollback does not start new replacements
        if options:
            out.extend(options)
            if not rolling_back and r.status is not ReplacementStatus.PLANNED:
                break  # one replacement at a time, like a rolling plan with max_concurrent 1
    if not _busy(plan):
        if plan.status is P.EXECUTING:
            saving = sum(
                (r.monthly_saving or Decimal(0) for r in plan.replacements.values()), Decimal(0)
            )
            done = all(r.status in REPLACEMENT_TERMINAL for r in plan.replacements.values())
            completed = ev.PlanCompleted(**base, realised_monthly_saving=saving)
            out.insert(0 if done else len(out), completed)
        if rolling_back:
            out.insert(0, ev.PlanRolledBack(**base))
    if plan.status is P.EXECUTING:
        out.append(ev.PlanPaused(**base, by="alice", reason="investigating"))
        out.append(ev.PlanRollbackStarted(**base, reason="operator asked"))
    elif plan.status is P.PAUSED:
        out.insert(0, ev.PlanResumed(**base, by="alice"))
        out.append(ev.PlanRollbackStarted(**base, reason="operator asked"))
    out.append(ev.PlanFailed(**base, reason="unexpected state"))
    out.append(checks)
    return out


Chooser = Callable[[list[ev.Event]], ev.Event]


def walk(spec: PlanSpec, choose: Chooser, *, steps: int, start_step: int = 0) -> Iterator[ev.Event]:
    """Up to `steps` legal events for a new plan, each picked by `choose` (stops at the end)."""
    state = FoldState()
    first = ev.PlanProposed(plan_id=spec.plan_id, at=timestamp(start_step), plan=spec)
    stream = ev.stream_for(spec.plan_id)
    apply_event(state, first, stream=stream, seq=1, version=1)
    yield first
    for i in range(1, steps):
        plan = state.plans[spec.plan_id]
        options = next_events(plan, timestamp(start_step + i))
        if not options:
            return
        event = choose(options)
        apply_event(state, event, stream=stream, seq=i + 1, version=i + 1)
        yield event


def forward_history(spec: PlanSpec, *, start_step: int = 0, limit: int = 10_000) -> list[ev.Event]:
    """The events of `spec` run to completion, always taking the forward step."""
    return list(walk(spec, lambda options: options[0], steps=limit, start_step=start_step))
