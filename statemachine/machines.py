"""The state machines: a plan, one node replacement within it, and one node repair.

Each machine is one explicit table of (trigger, sources, dest); the triggers are event type
names from `statemachine.events`, so "which event may follow which state" is written once.
`transitions` builds the machines from the tables; they serve live use (a model you can fire
triggers on), validation and the Mermaid diagrams (`python -m statemachine.diagrams`). The
fold does not create a Machine per event: `PLAN_NEXT` / `REPLACEMENT_NEXT` are flat
(state, trigger) -> dest lookups read out of the built machines once, at import.

A repair (a plan whose opportunity is `repair`, planner/health.py) replaces a node the provider
lost. Its machine shares the replacement's states and events but orders them for a dead node:
the new worker first (as a replacement), then the lost worker deleted and confirmed gone by
listing (or found gone: `WorkerLossConfirmed`), and only then the Node cordoned, tainted
`node.kubernetes.io/out-of-service`, its pods deleted (their controllers recreate them), and
the Node object deleted. Its point of no return is the lost worker's delete.

An add-only replacement (`ReplacementSpec.adds_only`: a node added where none is removed, the
fleet growing) has its own table, a part of the replacement's: group, worker, join and prepare,
then `ReplacementCompleted` from ready. It has no cordon, drain or delete of an old worker at
all; rolled back, it deletes the worker it added (the replacement's rollback rows).

A dest of "=" keeps the state (the event is recorded, e.g. a pod evicted while draining).
A model is restored into a folded state with `restore`, which fires no callbacks.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from transitions import Machine


class PlanStatus(StrEnum):
    PROPOSED = "proposed"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    EXECUTING = "executing"
    PAUSED = "paused"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class ReplacementStatus(StrEnum):
    PLANNED = "planned"
    CREATING_GROUP = "creating_group"  # the VPSie group of the target size is being created
    PROVISIONING = "provisioning"  # a worker add was requested
    JOINING = "joining"  # the worker exists; waiting for its Node to be Ready
    READY = "ready"  # replacement capacity is in place (or none is needed)
    CORDONING = "cordoning"
    CORDONED = "cordoned"
    DRAINING = "draining"
    DRAINED = "drained"
    TERMINATING = "terminating"  # the old worker's delete was requested
    TERMINATED = "terminated"
    DONE = "done"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


PLAN_TERMINAL = frozenset(
    {
        PlanStatus.COMPLETED,
        PlanStatus.REJECTED,
        PlanStatus.CANCELLED,
        PlanStatus.ROLLED_BACK,
        PlanStatus.FAILED,
    }
)
REPLACEMENT_TERMINAL = frozenset(
    {ReplacementStatus.DONE, ReplacementStatus.ROLLED_BACK, ReplacementStatus.FAILED}
)
# Plan states in which replacement events may be recorded.
PLAN_RUNNING = frozenset({PlanStatus.EXECUTING, PlanStatus.PAUSED, PlanStatus.ROLLING_BACK})

Row = tuple[str, tuple[str, ...], str]

_P = PlanStatus
PLAN_TRANSITIONS: tuple[Row, ...] = (
    ("PlanApprovalRequested", (_P.PROPOSED,), _P.AWAITING_APPROVAL),
    ("PlanApproved", (_P.PROPOSED, _P.AWAITING_APPROVAL), _P.APPROVED),
    ("PlanRejected", (_P.PROPOSED, _P.AWAITING_APPROVAL), _P.REJECTED),
    ("PlanCancelled", (_P.PROPOSED, _P.AWAITING_APPROVAL, _P.APPROVED), _P.CANCELLED),
    ("PlanExecutionStarted", (_P.APPROVED,), _P.EXECUTING),
    ("PlanPaused", (_P.EXECUTING,), _P.PAUSED),
    ("PlanResumed", (_P.PAUSED,), _P.EXECUTING),
    ("PlanCompleted", (_P.EXECUTING,), _P.COMPLETED),
    ("PlanRollbackStarted", (_P.EXECUTING, _P.PAUSED), _P.ROLLING_BACK),
    ("PlanRolledBack", (_P.ROLLING_BACK,), _P.ROLLED_BACK),
    (
        "PlanFailed",
        (_P.PROPOSED, _P.AWAITING_APPROVAL, _P.APPROVED, _P.EXECUTING, _P.PAUSED, _P.ROLLING_BACK),
        _P.FAILED,
    ),
    (
        "SafetyChecksRun",
        (_P.PROPOSED, _P.AWAITING_APPROVAL, _P.APPROVED, _P.EXECUTING, _P.PAUSED, _P.ROLLING_BACK),
        "=",
    ),
)

_R = ReplacementStatus
_R_LIVE = tuple(s for s in ReplacementStatus if s not in REPLACEMENT_TERMINAL)
_R_FORWARD = tuple(s for s in _R_LIVE if s is not _R.ROLLING_BACK)
REPLACEMENT_TRANSITIONS: tuple[Row, ...] = (
    ("NodeGroupCreateRequested", (_R.PLANNED,), _R.CREATING_GROUP),
    ("NodeGroupCreated", (_R.CREATING_GROUP,), _R.PLANNED),
    ("NodeGroupCreateFailed", (_R.CREATING_GROUP,), _R.PLANNED),
    ("WorkerAddRequested", (_R.PLANNED,), _R.PROVISIONING),
    ("WorkerAdded", (_R.PROVISIONING,), _R.JOINING),
    ("WorkerAddFailed", (_R.PROVISIONING,), _R.PLANNED),
    ("NodeJoined", (_R.JOINING,), _R.READY),
    ("NodeJoinTimedOut", (_R.JOINING,), "="),
    ("NodeLabelled", (_R.READY,), "="),
    ("NodePrepareRequested", (_R.READY,), "="),
    ("NodePrepared", (_R.READY,), "="),
    # Pods that landed on the new node before it carried the old node's taints, moved away.
    ("StrayPodEvictionRequested", (_R.READY,), "="),
    ("StrayPodSettled", (_R.READY,), "="),
    # Consolidation (no new size) goes from planned straight to cordoning.
    ("CordonRequested", (_R.PLANNED, _R.READY), _R.CORDONING),
    ("NodeCordoned", (_R.CORDONING,), _R.CORDONED),
    ("CordonFailed", (_R.CORDONING,), _R.READY),
    ("DrainStarted", (_R.CORDONED,), _R.DRAINING),
    ("PodEvictionRequested", (_R.DRAINING,), "="),
    ("PodEvicted", (_R.DRAINING,), "="),
    ("EvictionBlocked", (_R.DRAINING,), "="),
    ("DrainTimedOut", (_R.DRAINING,), "="),
    ("NodeDrained", (_R.DRAINING,), _R.DRAINED),
    ("ReschedulingConfirmed", (_R.DRAINED,), "="),
    ("WorkerDeleteRequested", (_R.DRAINED,), _R.TERMINATING),
    ("WorkerDeleted", (_R.TERMINATING,), _R.TERMINATED),
    ("WorkerDeleteFailed", (_R.TERMINATING,), _R.DRAINED),
    # The old worker is gone from VPSie's listing; its Node object is deleted next.
    ("NodeDeleteRequested", (_R.TERMINATED,), "="),
    ("NodeDeleted", (_R.TERMINATED,), "="),
    ("NodeDeleteFailed", (_R.TERMINATED,), "="),
    ("ReplacementCompleted", (_R.TERMINATED,), _R.DONE),
    # A rollback may start from any forward state except after the old worker is gone.
    (
        "ReplacementRollbackStarted",
        tuple(s for s in _R_FORWARD if s not in (_R.TERMINATING, _R.TERMINATED)),
        _R.ROLLING_BACK,
    ),
    # While rolling back: settle a pending intent, uncordon, delete the worker we added.
    ("NodeGroupCreated", (_R.ROLLING_BACK,), "="),
    ("NodeGroupCreateFailed", (_R.ROLLING_BACK,), "="),
    ("WorkerAdded", (_R.ROLLING_BACK,), "="),
    ("WorkerAddFailed", (_R.ROLLING_BACK,), "="),
    ("NodeCordoned", (_R.ROLLING_BACK,), "="),
    ("CordonFailed", (_R.ROLLING_BACK,), "="),
    ("PodEvicted", (_R.ROLLING_BACK,), "="),
    ("EvictionBlocked", (_R.ROLLING_BACK,), "="),
    ("UncordonRequested", (_R.ROLLING_BACK,), "="),
    ("NodeUncordoned", (_R.ROLLING_BACK,), "="),
    ("WorkerDeleteRequested", (_R.ROLLING_BACK,), "="),
    ("WorkerDeleted", (_R.ROLLING_BACK,), "="),
    ("WorkerDeleteFailed", (_R.ROLLING_BACK,), "="),
    ("NodeDeleteRequested", (_R.ROLLING_BACK,), "="),
    ("NodeDeleted", (_R.ROLLING_BACK,), "="),
    ("NodeDeleteFailed", (_R.ROLLING_BACK,), "="),
    ("NodePrepared", (_R.ROLLING_BACK,), "="),
    ("StrayPodSettled", (_R.ROLLING_BACK,), "="),
    ("ReplacementRolledBack", (_R.ROLLING_BACK,), _R.ROLLED_BACK),
    ("ReplacementFailed", _R_LIVE, _R.FAILED),
)


_REPAIR_BEFORE_LOSS = (_R.PLANNED, _R.CREATING_GROUP, _R.PROVISIONING, _R.JOINING, _R.READY)
REPAIR_TRANSITIONS: tuple[Row, ...] = (
    *(row for row in REPLACEMENT_TRANSITIONS if row[0] in (
        "NodeGroupCreateRequested", "NodeGroupCreated", "NodeGroupCreateFailed",
        "WorkerAddRequested", "WorkerAdded", "WorkerAddFailed", "NodeJoined",
        "NodeJoinTimedOut", "NodePrepareRequested", "NodePrepared",
        "StrayPodEvictionRequested", "StrayPodSettled",
    ) and row[1] != (_R.ROLLING_BACK,)),
    # The lost worker: deleted and confirmed gone by listing, or already gone. Without a new
    # worker to wait for (addFirst off), straight from planned.
    ("WorkerDeleteRequested", (_R.PLANNED, _R.READY), _R.TERMINATING),
    ("WorkerDeleted", (_R.TERMINATING,), _R.TERMINATED),
    ("WorkerDeleteFailed", (_R.TERMINATING,), _R.READY),
    ("WorkerLossConfirmed", (_R.PLANNED, _R.READY), _R.TERMINATED),
    # Only a node whose worker is confirmed gone is cordoned and taken out of service.
    ("CordonRequested", (_R.TERMINATED,), _R.CORDONING),
    ("NodeCordoned", (_R.CORDONING,), _R.CORDONED),
    ("CordonFailed", (_R.CORDONING,), _R.TERMINATED),
    ("OutOfServiceTaintRequested", (_R.CORDONED,), "="),
    ("NodeTaintedOutOfService", (_R.CORDONED,), "="),
    ("DrainStarted", (_R.CORDONED,), _R.DRAINING),
    ("PodDeleteRequested", (_R.DRAINING,), "="),
    ("PodDeleted", (_R.DRAINING,), "="),
    ("NodeDrained", (_R.DRAINING,), _R.DRAINED),
    ("NodeDeleteRequested", (_R.DRAINED,), "="),
    ("NodeDeleted", (_R.DRAINED,), "="),
    ("NodeDeleteFailed", (_R.DRAINED,), "="),
    # From terminated when the Node object is gone already (nothing to cordon or empty).
    ("ReplacementCompleted", (_R.TERMINATED, _R.DRAINED), _R.DONE),
    # Before the lost worker's delete, a repair can be undone (the worker it added removed).
    ("ReplacementRollbackStarted", _REPAIR_BEFORE_LOSS, _R.ROLLING_BACK),
    *(row for row in REPLACEMENT_TRANSITIONS if row[1] == (_R.ROLLING_BACK,)),
    ("ReplacementFailed", _R_LIVE, _R.FAILED),
)


# The replacement's steps up to ready (group, worker, join, prepare, and whatever else a new
# node goes through before the old one is touched): rows that leave and reach only these states.
_UP_TO_READY = (_R.PLANNED, _R.CREATING_GROUP, _R.PROVISIONING, _R.JOINING, _R.READY)
# Outcomes of the old node's steps: an add-only replacement never asks for them.
_OLD_NODE_STEPS = (
    "NodeCordoned", "CordonFailed", "PodEvicted", "EvictionBlocked", "UncordonRequested",
    "NodeUncordoned",
)
ADD_TRANSITIONS: tuple[Row, ...] = (
    *(row for row in REPLACEMENT_TRANSITIONS
      if set(row[1]) <= set(_UP_TO_READY) and (row[2] == "=" or row[2] in _UP_TO_READY)),
    # Joined and prepared (the fold checks `prepared`): the added node is the whole job.
    ("ReplacementCompleted", (_R.READY,), _R.DONE),
    ("ReplacementRollbackStarted", _UP_TO_READY, _R.ROLLING_BACK),
    *(row for row in REPLACEMENT_TRANSITIONS
      if row[1] == (_R.ROLLING_BACK,) and row[0] not in _OLD_NODE_STEPS),
    ("ReplacementFailed", (*_UP_TO_READY, _R.ROLLING_BACK), _R.FAILED),
)


class IllegalTransition(Exception):
    """An event that its machine does not allow in the current state. Never applied."""

    def __init__(self, *, stream: str, seq: int, state: str, event: str, detail: str = "") -> None:
        message = f"illegal transition in {stream} at seq {seq}: {event} in state {state}"
        super().__init__(message + (f" ({detail})" if detail else ""))
        self.stream = stream
        self.seq = seq
        self.state = state
        self.event = event
        self.detail = detail


def _machine(
    states: type[StrEnum], table: tuple[Row, ...], initial: str, model: Any = None
) -> Machine:
    return Machine(
        model=model if model is not None else Machine.self_literal,
        states=[s.value for s in states],
        transitions=[
            {"trigger": t, "source": [str(s) for s in src], "dest": str(dest)}
            for t, src, dest in table
        ],
        initial=initial,
        auto_transitions=False,
        ignore_invalid_triggers=False,
    )


def plan_machine(model: Any = None) -> Machine:
    """A live plan machine (for `model`, or the machine itself as model)."""
    return _machine(PlanStatus, PLAN_TRANSITIONS, PlanStatus.PROPOSED.value, model)


def replacement_machine(model: Any = None) -> Machine:
    return _machine(
        ReplacementStatus, REPLACEMENT_TRANSITIONS, ReplacementStatus.PLANNED.value, model
    )


def repair_machine(model: Any = None) -> Machine:
    return _machine(ReplacementStatus, REPAIR_TRANSITIONS, ReplacementStatus.PLANNED.value, model)


def add_machine(model: Any = None) -> Machine:
    """An add-only replacement (a node added, none removed)."""
    return _machine(ReplacementStatus, ADD_TRANSITIONS, ReplacementStatus.PLANNED.value, model)


def restore(machine: Machine, model: Any, state: str) -> None:
    """Put `model` into a folded `state` without firing any callback."""
    machine.set_state(state, model=model)


def _lookup(machine: Machine) -> dict[tuple[str, str], str]:
    table: dict[tuple[str, str], str] = {}
    for trigger, event in machine.events.items():
        for source, found in event.transitions.items():
            for transition in found:
                dest = transition.dest if transition.dest is not None else source
                key = (source, trigger)
                if key in table and table[key] != dest:
                    raise ValueError(f"{trigger} from {source} has two destinations")
                table[key] = dest
    return table


PLAN_NEXT: dict[tuple[str, str], str] = _lookup(plan_machine())
REPLACEMENT_NEXT: dict[tuple[str, str], str] = _lookup(replacement_machine())
REPAIR_NEXT: dict[tuple[str, str], str] = _lookup(repair_machine())
ADD_NEXT: dict[tuple[str, str], str] = _lookup(add_machine())
