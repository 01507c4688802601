"""The fold: what the log means. Events in, the state of every plan out.

The live executor, recovery and the audit all use this one fold, so they cannot disagree about
what a log says. It is pure: no clock (times come from the events' `at`), no I/O, no
randomness. An event its machine does not allow, or whose intent/outcome bracketing does not
fit (an outcome with no matching intent, a second intent while one is pending, deleting a
worker this plan neither added nor was told to replace, uncordoning a node it did not cordon)
raises `IllegalTransition` and leaves the state exactly as it was.

`FoldState` can drop plans once they finish (`keep_finished=False`), keeping only a per node
group summary; that is what recovery and snapshots hold, so their size follows the work in
flight, not the age of the log. `encode_state` / `decode_state` turn it into snapshot bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

import orjson

from statemachine import events as ev
from statemachine.machines import (
    ADD_NEXT,
    PLAN_NEXT,
    PLAN_RUNNING,
    PLAN_TERMINAL,
    REPAIR_NEXT,
    REPLACEMENT_NEXT,
    REPLACEMENT_TERMINAL,
    IllegalTransition,
    PlanStatus,
    ReplacementStatus,
)
from statemachine.plan import Opportunity, PlanSpec, ReplacementSpec

# Bump when the encoded shape of FoldState changes; an older snapshot is then ignored (the
# log is refolded), never misread.
STATE_SCHEMA_VERSION = 1


class Recorded(Protocol):
    """What the fold needs of a stored event (the event store's `RecordedEvent` fits)."""

    @property
    def seq(self) -> int: ...
    @property
    def stream(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def schema_version(self) -> int: ...
    @property
    def data(self) -> bytes: ...


@dataclass(slots=True, kw_only=True)
class ReplacementState:
    replacement_id: str
    status: ReplacementStatus = ReplacementStatus.PLANNED
    group_id: int | None = None
    known_workers: tuple[str, ...] = ()
    new_worker: str = ""  # VPSie identifier of the worker this replacement added
    new_hostname: str = ""
    new_ip: str = ""
    new_node: str = ""  # its Kubernetes Node, once Ready
    prior_unschedulable: bool | None = None
    cordoned_by_us: bool = False
    drain_pods: tuple[str, ...] = ()
    evicted: tuple[str, ...] = ()  # "namespace/name"
    eviction_blocks: int = 0
    old_deleted: bool = False
    new_deleted: bool = False
    # The Kubernetes Node objects of the deleted workers (nothing on VPSie's side deletes them).
    old_node_deleted: bool = False
    new_node_deleted: bool = False
    prepared: bool = False  # the new Node got the old one's labels and taints
    out_of_service: bool = False  # repair: the lost Node carries the out-of-service taint
    # The last intent with no outcome yet: what recovery must reconcile with the world.
    pending_intent: ev.Event | None = None
    last_error: str = ""
    rollback_reason: str = ""
    failure_reason: str = ""
    monthly_saving: Decimal | None = None
    started_at: str = ""
    updated_at: str = ""
    finished_at: str = ""


@dataclass(slots=True, kw_only=True)
class PlanState:
    plan_id: str
    spec: PlanSpec
    status: PlanStatus = PlanStatus.PROPOSED
    version: int = 0  # events folded from this plan's stream; the next append expects it
    replacements: dict[str, ReplacementState] = field(default_factory=dict)
    proposed_at: str = ""
    approval_requested_reason: str = ""
    approved_by: str = ""
    approved_at: str = ""
    started_at: str = ""
    updated_at: str = ""
    finished_at: str = ""
    realised_monthly_saving: Decimal | None = None
    # (at, event type, by, reason) for approvals, rejections, pauses, rollbacks, failures.
    reasons: list[tuple[str, str, str, str]] = field(default_factory=list)
    last_checks: ev.SafetyChecksRun | None = None
    _specs: dict[str, ReplacementSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._specs = {r.replacement_id: r for r in self.spec.replacements}

    def spec_of(self, replacement_id: str) -> ReplacementSpec:
        return self._specs[replacement_id]

    @property
    def node_group(self) -> str:
        return self.spec.node_group

    @property
    def terminal(self) -> bool:
        return self.status in PLAN_TERMINAL


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSummary:
    """What a node group's finished plans leave behind (for the cooldown check)."""

    last_plan_id: str = ""
    last_outcome: str = ""
    last_finished_at: str = ""
    # When the last plan that started executing finished: the nodes last changed.
    last_changed_at: str = ""


@dataclass(slots=True, kw_only=True)
class FoldState:
    plans: dict[str, PlanState] = field(default_factory=dict)
    groups: dict[str, GroupSummary] = field(default_factory=dict)
    head_seq: int = 0
    keep_finished: bool = True
    # Workers our plans added and did not delete since: identifier -> size id. VPSie's listing
    # names no group, so this is the first source of such a worker's size (kept in snapshots).
    workers: dict[str, int] = field(default_factory=dict)


class Change(NamedTuple):
    """One applied event, as the audit's timeline shows it."""

    seq: int
    plan_id: str
    replacement_id: str
    event: ev.Event
    from_state: str
    to_state: str


def fold(events: Iterable[Recorded], *, keep_finished: bool = True) -> dict[str, PlanState]:
    state = FoldState(keep_finished=keep_finished)
    for recorded in events:
        apply(state, recorded)
    return state.plans


def apply(state: FoldState, recorded: Recorded) -> Change | None:
    """Fold one stored event in. None for events of streams that are not plans."""
    plan_id = ev.plan_id_of_stream(recorded.stream)
    if plan_id is None:
        state.head_seq = max(state.head_seq, recorded.seq)
        return None
    event = ev.decode(recorded.type, recorded.schema_version, recorded.data)
    return apply_event(
        state, event, stream=recorded.stream, seq=recorded.seq, version=recorded.version
    )


def apply_event(
    state: FoldState, event: ev.Event, *, stream: str, seq: int, version: int
) -> Change:
    """Fold one decoded event in; `IllegalTransition` (state untouched) when not allowed."""
    type_name = type(event).__name__
    plan = state.plans.get(event.plan_id)

    def illegal(current: str, detail: str = "") -> IllegalTransition:
        return IllegalTransition(
            stream=stream, seq=seq, state=current, event=type_name, detail=detail
        )

    if stream != ev.STREAM_PREFIX + event.plan_id:
        raise illegal(plan.status if plan else "unknown", f"plan_id {event.plan_id!r} in {stream}")
    if isinstance(event, ev.PlanProposed):
        if plan is not None:
            raise illegal(plan.status, "plan already proposed")
        _check_spec(event, illegal)
        _expect_version(version, 0, illegal, "none")
        new = PlanState(
            plan_id=event.plan_id,
            spec=event.plan,
            version=version,
            replacements={
                r.replacement_id: ReplacementState(replacement_id=r.replacement_id)
                for r in event.plan.replacements
            },
            proposed_at=event.at,
            updated_at=event.at,
        )
        state.plans[event.plan_id] = new
        state.head_seq = max(state.head_seq, seq)
        return Change(
            seq=seq,
            plan_id=event.plan_id,
            replacement_id="",
            event=event,
            from_state="",
            to_state=new.status,
        )
    if plan is None:
        raise illegal("unknown", f"no open plan {event.plan_id!r}")
    _expect_version(version, plan.version, illegal, plan.status)
    if isinstance(event, ev.ReplacementEvent):
        change = _apply_replacement(plan, event, seq, illegal)
        _track_worker(state, plan, event)
    else:
        change = _apply_plan(state, plan, event, seq, illegal)
    plan.version = version
    plan.updated_at = event.at
    state.head_seq = max(state.head_seq, seq)
    if plan.terminal:
        _finish(state, plan)
    return change


Illegal = Callable[..., IllegalTransition]


def _track_worker(state: FoldState, plan: PlanState, event: ev.ReplacementEvent) -> None:
    if isinstance(event, ev.WorkerAdded):
        size = plan.spec_of(event.replacement_id).new_size_id
        if size is not None:
            state.workers[event.worker_identifier] = size
    elif isinstance(event, ev.WorkerDeleted):
        state.workers.pop(event.worker_identifier, None)


def _expect_version(version: int, current: int, illegal: Illegal, status: str) -> None:
    if version != current + 1:
        raise illegal(status, f"stream version {version} does not follow {current}")


def _check_spec(event: ev.PlanProposed, illegal: Illegal) -> None:
    spec = event.plan
    if spec.plan_id != event.plan_id:
        raise illegal("none", f"spec plan_id {spec.plan_id!r} differs")
    ids = [r.replacement_id for r in spec.replacements]
    if len(set(ids)) != len(ids):
        raise illegal("none", "replacement ids are not unique")
    batched = [r for batch in spec.batches for r in batch]
    if sorted(batched) != sorted(ids):
        raise illegal("none", "batches do not list each replacement once")
    for r in spec.replacements:
        if r.adds_only and spec.opportunity is Opportunity.REPAIR:
            raise illegal("none", f"repair {r.replacement_id} has no lost node")
        problem = r.shape_problem() if r.adds_only else None
        if problem is not None:
            raise illegal("none", problem)


def _finish(state: FoldState, plan: PlanState) -> None:
    executed = bool(plan.started_at)
    previous = state.groups.get(plan.node_group, GroupSummary())
    state.groups[plan.node_group] = GroupSummary(
        last_plan_id=plan.plan_id,
        last_outcome=plan.status,
        last_finished_at=plan.finished_at,
        last_changed_at=plan.finished_at if executed else previous.last_changed_at,
    )
    if not state.keep_finished:
        del state.plans[plan.plan_id]


# --- plan events ---------------------------------------------------------------------------


def _apply_plan(
    state: FoldState, plan: PlanState, event: ev.Event, seq: int, illegal: Illegal
) -> Change:
    type_name = type(event).type_name()
    before = plan.status
    dest = _PLAN_NEXT.get((before, type_name))
    if dest is None:
        raise illegal(before)
    if isinstance(event, ev.PlanCompleted | ev.PlanRolledBack):
        busy = [
            r.replacement_id
            for r in plan.replacements.values()
            if r.status not in REPLACEMENT_TERMINAL and r.status is not ReplacementStatus.PLANNED
        ]
        if busy:
            raise illegal(before, f"replacements still in flight: {', '.join(sorted(busy))}")
    match event:
        case ev.PlanApprovalRequested(reason=reason):
            plan.approval_requested_reason = reason
            plan.reasons.append((event.at, type_name, "", reason))
        case ev.PlanApproved(by=by, reason=reason):
            plan.approved_by, plan.approved_at = by, event.at
            plan.reasons.append((event.at, type_name, by, reason))
        case ev.PlanRejected(by=by, reason=reason) | ev.PlanPaused(by=by, reason=reason):
            plan.reasons.append((event.at, type_name, by, reason))
        case ev.PlanCancelled(by=by, reason=reason):
            plan.reasons.append((event.at, type_name, by, reason))
        case ev.PlanResumed(by=by):
            plan.reasons.append((event.at, type_name, by, ""))
        case ev.PlanExecutionStarted():
            plan.started_at = event.at
        case ev.PlanRollbackStarted(reason=reason) | ev.PlanFailed(reason=reason):
            plan.reasons.append((event.at, type_name, "", reason))
        case ev.PlanCompleted(realised_monthly_saving=saving):
            plan.realised_monthly_saving = saving
        case ev.SafetyChecksRun():
            plan.last_checks = event
        case _:
            pass
    plan.status = dest
    if plan.status in PLAN_TERMINAL:
        plan.finished_at = event.at
    return Change(
        seq=seq,
        plan_id=plan.plan_id,
        replacement_id="",
        event=event,
        from_state=before,
        to_state=plan.status,
    )


# --- replacement events --------------------------------------------------------------------

_REPLACEMENT_NEXT = {
    (ReplacementStatus(s), t): ReplacementStatus(d) for (s, t), d in REPLACEMENT_NEXT.items()
}
_REPAIR_NEXT = {
    (ReplacementStatus(s), t): ReplacementStatus(d) for (s, t), d in REPAIR_NEXT.items()
}
_ADD_NEXT = {(ReplacementStatus(s), t): ReplacementStatus(d) for (s, t), d in ADD_NEXT.items()}
_PLAN_NEXT = {(PlanStatus(s), t): PlanStatus(d) for (s, t), d in PLAN_NEXT.items()}

Guard = Callable[[ReplacementState, ReplacementSpec, Any], str | None]
Mutate = Callable[[ReplacementState, ReplacementSpec, Any], None]


def _same_target(intent: ev.Event, outcome: ev.Event) -> bool:
    """Whether an outcome settles this intent (same pod, node or worker)."""
    match intent, outcome:
        case ev.PodEvictionRequested(), ev.PodEvicted() | ev.EvictionBlocked():
            return (intent.namespace, intent.pod) == (outcome.namespace, outcome.pod)
        case ev.CordonRequested(), ev.NodeCordoned() | ev.CordonFailed():
            return intent.node == outcome.node
        case ev.UncordonRequested(), ev.NodeUncordoned():
            return intent.node == outcome.node
        case ev.WorkerDeleteRequested(), ev.WorkerDeleted() | ev.WorkerDeleteFailed():
            return intent.worker_identifier == outcome.worker_identifier
        case ev.NodeDeleteRequested(), ev.NodeDeleted() | ev.NodeDeleteFailed():
            return intent.node == outcome.node
        case ev.NodePrepareRequested(), ev.NodePrepared():
            return intent.node == outcome.node
        case ev.StrayPodEvictionRequested(), ev.StrayPodSettled():
            return (intent.namespace, intent.pod) == (outcome.namespace, outcome.pod)
        case ev.OutOfServiceTaintRequested(), ev.NodeTaintedOutOfService():
            return intent.node == outcome.node
        case ev.PodDeleteRequested(), ev.PodDeleted():
            return (intent.namespace, intent.pod) == (outcome.namespace, outcome.pod)
        case _:
            return True


def _no_worker_for_consolidation(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    return "a consolidation adds no worker" if s.new_size_id is None else None


def _cordon_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    if r.status is ReplacementStatus.PLANNED and s.new_size_id is not None:
        return "the replacement node is not ready"
    return None if e.node == s.old_node else f"{e.node} is not this replacement's node"


def _uncordon_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    if e.node != s.old_node:
        return f"{e.node} is not this replacement's node"
    # Whether the node carries our cordon is decided by our mark on it, not by the log (a
    # cordon's answer may have been lost): allowed once this plan asked for a cordon of its own.
    return None if r.prior_unschedulable is False else "this plan did not cordon the node"


def _added_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    worker = e.worker_identifier
    return f"{worker} was already in the group" if worker in r.known_workers else None


def _delete_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    worker, rolling_back = e.worker_identifier, r.status is ReplacementStatus.ROLLING_BACK
    if s.adds_only and e.role == "old":
        return "an add-only replacement has no old worker to delete"
    if r.status is ReplacementStatus.PLANNED and s.new_size_id is not None:
        return "the replacement node is not ready"
    if e.role == "old" and not worker:
        return "no worker identifier to delete"
    if e.role == "old" and (worker != s.old_worker or rolling_back):
        return f"{worker} is not the worker to replace"
    if e.role == "new" and (not r.new_worker or worker != r.new_worker or not rolling_back):
        return f"{worker} is not a worker this replacement added"
    return None


def _node_delete_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    if e.role == "old" and s.adds_only:
        return "an add-only replacement has no old node to delete"
    if e.role == "old":
        if e.node != s.old_node or not r.old_deleted:
            return f"{e.node} is not the old node of a worker deleted by this replacement"
        return None
    # The new worker's Node: by name once it joined, else by the worker's hostname (any case).
    ours = e.node == r.new_node if r.new_node else e.node.lower() == r.new_hostname.lower()
    if not r.new_worker or not ours or not r.new_deleted:
        return f"{e.node} is not the node of a worker this replacement added and deleted"
    return None


def _loss_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    if r.status is ReplacementStatus.PLANNED and s.new_size_id is not None:
        return "the replacement node is not ready"
    if e.node != s.old_node or e.worker_identifier != s.old_worker:
        return f"{e.node} ({e.worker_identifier or 'no worker'}) is not this repair's lost node"
    return None


def _taint_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    return None if e.node == s.old_node else f"{e.node} is not this repair's lost node"


def _prepare_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    return None if e.node == r.new_node else f"{e.node} is not this replacement's new node"


def _stray_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    if e.node != r.new_node:
        return f"{e.node} is not this replacement's new node"
    return None if r.prepared else "the new node is not prepared yet"


def _settled_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    return "an intent is still pending" if r.pending_intent is not None else None


def _completed_guard(r: ReplacementState, s: ReplacementSpec, e: Any) -> str | None:
    if s.adds_only and not r.prepared:
        return "the added node is not prepared (labels and taints) yet"
    return _settled_guard(r, s, e)


_GUARDS: dict[type[ev.Event], Guard] = {
    ev.NodeGroupCreateRequested: _no_worker_for_consolidation,
    ev.WorkerAddRequested: _no_worker_for_consolidation,
    ev.CordonRequested: _cordon_guard,
    ev.UncordonRequested: _uncordon_guard,
    ev.WorkerAdded: _added_guard,
    ev.WorkerDeleteRequested: _delete_guard,
    ev.NodeDeleteRequested: _node_delete_guard,
    ev.NodePrepareRequested: _prepare_guard,
    ev.StrayPodEvictionRequested: _stray_guard,
    ev.WorkerLossConfirmed: _loss_guard,
    ev.OutOfServiceTaintRequested: _taint_guard,
    ev.ReplacementCompleted: _completed_guard,
    ev.ReplacementRolledBack: _settled_guard,
}


def _set_error(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.last_error = e.reason


def _worker_deleted(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    if e.worker_identifier == s.old_worker:
        r.old_deleted = True
    else:
        r.new_deleted = True


def _node_deleted(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    if e.node == s.old_node:
        r.old_node_deleted = True
    else:
        r.new_node_deleted = True


def _prepared(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.prepared = True


def _eviction_blocked(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.eviction_blocks += 1
    r.last_error = e.reason


def _pod_evicted(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.evicted = (*r.evicted, f"{e.namespace}/{e.pod}")


def _worker_added(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.new_worker, r.new_hostname, r.new_ip = e.worker_identifier, e.hostname, e.ip


def _add_requested(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.group_id, r.known_workers = e.group_id, e.known_workers


def _set(attr: str, source: str) -> Mutate:
    def mutate(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
        setattr(r, attr, getattr(e, source))

    return mutate


def _join_timed_out(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.last_error = f"new node not Ready after {e.waited_s:g} s"


def _drain_timed_out(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.last_error = f"drain timed out with {len(e.remaining)} pods left"


def _cordoned(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.cordoned_by_us = not r.prior_unschedulable


def _uncordoned(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.cordoned_by_us = False


def _loss_confirmed(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.old_deleted = True


def _tainted(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.out_of_service = True


def _pod_deleted(r: ReplacementState, s: ReplacementSpec, e: Any) -> None:
    r.evicted = (*r.evicted, f"{e.namespace}/{e.pod}")


_MUTATIONS: dict[type[ev.Event], Mutate] = {
    ev.WorkerLossConfirmed: _loss_confirmed,
    ev.NodeTaintedOutOfService: _tainted,
    ev.PodDeleted: _pod_deleted,
    ev.NodeGroupCreated: _set("group_id", "group_id"),
    ev.WorkerAddRequested: _add_requested,
    ev.WorkerAdded: _worker_added,
    ev.NodeJoined: _set("new_node", "node_name"),
    ev.NodeJoinTimedOut: _join_timed_out,
    ev.CordonRequested: _set("prior_unschedulable", "prior_unschedulable"),
    ev.NodeCordoned: _cordoned,
    ev.DrainStarted: _set("drain_pods", "pods"),
    ev.PodEvicted: _pod_evicted,
    ev.EvictionBlocked: _eviction_blocked,
    ev.DrainTimedOut: _drain_timed_out,
    ev.NodeUncordoned: _uncordoned,
    ev.WorkerDeleted: _worker_deleted,
    ev.NodeDeleted: _node_deleted,
    ev.NodePrepared: _prepared,
    ev.NodeGroupCreateFailed: _set_error,
    ev.WorkerAddFailed: _set_error,
    ev.CordonFailed: _set_error,
    ev.WorkerDeleteFailed: _set_error,
    ev.NodeDeleteFailed: _set_error,
    ev.ReplacementRollbackStarted: _set("rollback_reason", "reason"),
    ev.ReplacementFailed: _set("failure_reason", "reason"),
    ev.ReplacementCompleted: _set("monthly_saving", "monthly_saving"),
}


def _apply_replacement(
    plan: PlanState, event: ev.ReplacementEvent, seq: int, illegal: Illegal
) -> Change:
    cls = type(event)
    r = plan.replacements.get(event.replacement_id)
    if r is None:
        raise illegal(plan.status, f"no replacement {event.replacement_id!r} in the plan")
    if plan.status not in PLAN_RUNNING:
        raise illegal(f"plan {plan.status}")
    before = r.status
    spec = plan.spec_of(r.replacement_id)
    if plan.spec.opportunity is Opportunity.REPAIR:
        table = _REPAIR_NEXT
    else:
        table = _ADD_NEXT if spec.adds_only else _REPLACEMENT_NEXT
    dest = table.get((before, cls.__name__))
    if dest is None:
        raise illegal(before, "an add-only replacement" if spec.adds_only else "")
    is_intent = cls in ev.INTENT_OUTCOMES
    intent_cls = ev.OUTCOME_OF.get(cls)
    if is_intent and r.pending_intent is not None:
        raise illegal(before, f"{type(r.pending_intent).__name__} is still pending")
    if intent_cls is not None and not (
        isinstance(r.pending_intent, intent_cls) and _same_target(r.pending_intent, event)
    ):
        raise illegal(before, f"no pending {intent_cls.__name__} that it settles")
    guard = _GUARDS.get(cls)
    problem = guard(r, spec, event) if guard is not None else None
    if problem is not None:
        raise illegal(before, problem)

    if is_intent:
        r.pending_intent = event
    elif intent_cls is not None:
        r.pending_intent = None
    mutate = _MUTATIONS.get(cls)
    if mutate is not None:
        mutate(r, spec, event)
    r.status = dest
    if not r.started_at:
        r.started_at = event.at
    r.updated_at = event.at
    if r.status in REPLACEMENT_TERMINAL:
        r.finished_at = event.at
    return Change(
        seq=seq,
        plan_id=plan.plan_id,
        replacement_id=r.replacement_id,
        event=event,
        from_state=before,
        to_state=r.status,
    )


# --- snapshots -----------------------------------------------------------------------------


def _event_plain(event: ev.Event | None) -> dict[str, Any] | None:
    if event is None:
        return None
    encoded = ev.encode(event)
    return {
        "type": encoded.type,
        "v": encoded.schema_version,
        "data": orjson.Fragment(encoded.data),
    }


def _event_from_plain(value: Any) -> ev.Event | None:
    if value is None:
        return None
    return ev.decode(value["type"], value["v"], ev.to_json(value["data"]))


_R_FIELDS = tuple(
    f for f in ReplacementState.__dataclass_fields__ if f not in ("status", "pending_intent")
)


def _replacement_plain(r: ReplacementState) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(r, name) for name in _R_FIELDS}
    out["status"] = r.status.value
    out["pending_intent"] = _event_plain(r.pending_intent)
    return out


def _plan_plain(p: PlanState) -> dict[str, Any]:
    return {
        "plan_id": p.plan_id,
        "spec": p.spec,
        "status": p.status.value,
        "version": p.version,
        "replacements": [_replacement_plain(r) for r in p.replacements.values()],
        "proposed_at": p.proposed_at,
        "approval_requested_reason": p.approval_requested_reason,
        "approved_by": p.approved_by,
        "approved_at": p.approved_at,
        "started_at": p.started_at,
        "updated_at": p.updated_at,
        "finished_at": p.finished_at,
        "realised_monthly_saving": p.realised_monthly_saving,
        "reasons": p.reasons,
        "last_checks": _event_plain(p.last_checks),
    }


def state_to_plain(state: FoldState) -> dict[str, Any]:
    return {
        "head_seq": state.head_seq,
        "keep_finished": state.keep_finished,
        "plans": [_plan_plain(p) for p in state.plans.values()],
        "groups": {name: g for name, g in state.groups.items()},
        "workers": dict(state.workers),
    }


def encode_state(state: FoldState) -> bytes:
    return ev.to_json(state_to_plain(state))


# Fields added after snapshots were first written: an older snapshot lacks them.
_R_LATER_FIELDS = {
    "old_node_deleted": False,
    "new_node_deleted": False,
    "prepared": False,
    "out_of_service": False,
}


def _replacement_from_plain(value: dict[str, Any]) -> ReplacementState:
    kwargs: dict[str, Any] = {
        name: value[name] if name in value or name not in _R_LATER_FIELDS else _R_LATER_FIELDS[name]
        for name in _R_FIELDS
    }
    kwargs["known_workers"] = tuple(kwargs["known_workers"])
    kwargs["drain_pods"] = tuple(kwargs["drain_pods"])
    kwargs["evicted"] = tuple(kwargs["evicted"])
    saving = kwargs["monthly_saving"]
    kwargs["monthly_saving"] = None if saving is None else Decimal(saving)
    return ReplacementState(
        status=ReplacementStatus(value["status"]),
        pending_intent=_event_from_plain(value["pending_intent"]),
        **kwargs,
    )


def _plan_from_plain(value: dict[str, Any]) -> PlanState:
    saving = value["realised_monthly_saving"]
    checks = _event_from_plain(value["last_checks"])
    return PlanState(
        plan_id=value["plan_id"],
        spec=ev.plain_to(PlanSpec, value["spec"]),
        status=PlanStatus(value["status"]),
        version=value["version"],
        replacements={
            r["replacement_id"]: _replacement_from_plain(r) for r in value["replacements"]
        },
        proposed_at=value["proposed_at"],
        approval_requested_reason=value["approval_requested_reason"],
        approved_by=value["approved_by"],
        approved_at=value["approved_at"],
        started_at=value["started_at"],
        updated_at=value["updated_at"],
        finished_at=value["finished_at"],
        realised_monthly_saving=None if saving is None else Decimal(saving),
        reasons=[(a, b, c, d) for a, b, c, d in value["reasons"]],
        last_checks=checks if isinstance(checks, ev.SafetyChecksRun) else None,
    )


class StateDecodeError(ValueError):
    """Snapshot bytes that are not a fold state of this schema."""


def decode_state(data: bytes) -> FoldState:
    try:
        value = orjson.loads(data)
        return FoldState(
            head_seq=value["head_seq"],
            keep_finished=value["keep_finished"],
            plans={p["plan_id"]: _plan_from_plain(p) for p in value["plans"]},
            groups={name: ev.plain_to(GroupSummary, g) for name, g in value["groups"].items()},
            workers={str(k): int(v) for k, v in value.get("workers", {}).items()},
        )
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise StateDecodeError(f"not a fold state: {exc}") from None
