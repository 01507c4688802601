"""The event catalogue: every fact the rebalancer records, and how it is stored.

An event is a frozen, keyword-only dataclass named in the past tense. Its type name is the
class name and its schema version the class-level `VERSION`. Every event carries the plan it
belongs to (`plan_id`; its stream is `plan-<plan_id>`) and `at`, the RFC 3339 UTC time taken
from the caller's injected clock; the fold never reads a clock. Replacement events also carry
`replacement_id`, one of the plan's `ReplacementSpec`s.

Every side effect on the world is bracketed: an intent (`...Requested`) carrying everything
needed to reconcile after a crash is committed *before* the call, an outcome after it. A
crash between the two leaves the intent pending in the fold (`ReplacementState.pending_intent`)
and recovery asks the world what happened.

Stored form: orjson of the dataclass fields, Decimal as string, tuples as lists, enums as their
values, nested dataclasses (PlanSpec, CheckResult) as objects. For example::

    type=WorkerAddRequested schema_version=1
    {"plan_id":"p1","at":"2026-01-01T02:00:00Z","replacement_id":"r1",
     "idempotency_key":"p1/r1/add/1","cluster":"c-1","group_id":7,"size_id":3,
     "known_workers":["w-1","w-2"]}

Decoding an unknown type or a version newer than the code knows is an error
(`UnknownEventType`, `EventVersionTooNew`), never a silent skip; a payload that does not fit
is `MalformedEvent` naming the field. Older versions are upcast on read by the functions in
`UPCASTERS`, one step at a time.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import orjson

from statemachine.plan import Action, CheckResult, PlanSpec

STREAM_PREFIX = "plan-"


class EventDecodeError(ValueError):
    """A stored event could not be turned back into an Event."""


class UnknownEventType(EventDecodeError):
    def __init__(self, type_name: str) -> None:
        super().__init__(f"unknown event type {type_name!r}")
        self.type_name = type_name


class EventVersionTooNew(EventDecodeError):
    def __init__(self, type_name: str, version: int, known: int) -> None:
        super().__init__(
            f"event {type_name} has schema version {version}, newer than this program knows "
            f"({known}); upgrade vpsie-rebalancer"
        )
        self.type_name = type_name
        self.version = version


class MalformedEvent(EventDecodeError):
    def __init__(self, type_name: str, field: str, problem: str) -> None:
        super().__init__(f"malformed {type_name}: field {field!r}: {problem}")
        self.type_name = type_name
        self.field = field


def stream_for(plan_id: str) -> str:
    return STREAM_PREFIX + plan_id


def plan_id_of_stream(stream: str) -> str | None:
    """The plan id of a `plan-<id>` stream, or None for any other stream."""
    return stream[len(STREAM_PREFIX) :] if stream.startswith(STREAM_PREFIX) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every recorded fact."""

    VERSION: ClassVar[int] = 1

    plan_id: str
    at: str

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplacementEvent(Event):
    """A fact about one node replacement of a plan."""

    replacement_id: str


# --- plan ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanProposed(Event):
    """The planner's proposal, with every reason behind it."""

    plan: PlanSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanApprovalRequested(Event):
    """The plan waits for a person (require_approval, or the planner asked for review)."""

    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanApproved(Event):
    """Approved by a person (with the reason they gave), or by `policy` when no approval is
    required.

    Version 2 renamed v1's `approved_by` to `by`; version 3 added `reason` (empty before).
    """

    VERSION: ClassVar[int] = 3
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRejected(Event):
    by: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanExecutionStarted(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanPaused(Event):
    by: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanResumed(Event):
    by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanCancelled(Event):
    """Cancelled before any replacement began; after that, cancelling is a rollback."""

    by: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRollbackStarted(Event):
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRolledBack(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanCompleted(Event):
    realised_monthly_saving: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanFailed(Event):
    """Stopped in a state that needs a person; `reason` says what to look at."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SafetyChecksRun(Event):
    """The safety checks re-run before a step or after recovery, and what was decided.

    `replacement_id` is "" when the checks were for the plan as a whole; `step` names the
    step they guarded (e.g. "cordon", "resume-after-recovery").
    """

    checks: tuple[CheckResult, ...]
    action: Action
    reasons: tuple[str, ...] = ()
    replacement_id: str = ""
    step: str = ""


# --- replacement: provisioning -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeGroupCreateRequested(ReplacementEvent):
    """Intent: create the VPSie node group of the target size (one group per size)."""

    cluster: str
    group_name: str
    size_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeGroupCreated(ReplacementEvent):
    group_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeGroupCreateFailed(ReplacementEvent):
    reason: str
    permanent: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerAddRequested(ReplacementEvent):
    """Intent: add one worker to a VPSie group.

    The API returns no id, so `known_workers` (the group's worker identifiers before the
    call) is what identifies the new worker afterwards: the one not in this set and not
    claimed by another replacement.
    """

    idempotency_key: str
    cluster: str
    group_id: int
    size_id: int
    known_workers: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerAdded(ReplacementEvent):
    """The worker the add created. `identified_by` says how we know it is ours: "answer" (the
    add-worker answer named its identifier) or "listing" (the one worker that appeared after
    the intent, of the target size, not known before and claimed by no plan).

    Version 2 added `identified_by` (v1 events were all found by listing)."""

    VERSION: ClassVar[int] = 2
    worker_identifier: str
    hostname: str = ""
    ip: str = ""
    identified_by: Literal["answer", "listing"] = "listing"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerAddFailed(ReplacementEvent):
    reason: str
    permanent: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeJoined(ReplacementEvent):
    """The new worker's Kubernetes Node is Ready."""

    node_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeJoinTimedOut(ReplacementEvent):
    waited_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeLabelled(ReplacementEvent):
    """Observation kept for logs written before `NodePrepareRequested` existed."""

    node: str
    labels: dict[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePrepareRequested(ReplacementEvent):
    """Intent: make the new Node the old one's equal before it takes pods: these labels (the
    group's, our size and group labels) and the old node's taints ("key=value:Effect")."""

    node: str
    labels: dict[str, str]
    taints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePrepared(ReplacementEvent):
    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StrayPodEvictionRequested(ReplacementEvent):
    """Intent: evict a pod the scheduler placed on the new node between its join and its
    preparation (VPSie gives no way to register a worker tainted), which does not tolerate
    `taint`, one of the old node's taints the new node now carries. Through the Eviction API,
    so PodDisruptionBudgets hold; its controller makes it again where it belongs."""

    node: str
    namespace: str
    pod: str
    taint: str  # "key=value:Effect"


@dataclass(frozen=True, slots=True, kw_only=True)
class StrayPodSettled(ReplacementEvent):
    """The outcome: evicted (or gone), or left where it runs with the reason (a budget that
    did not allow it within the retry time)."""

    node: str
    namespace: str
    pod: str
    evicted: bool
    reason: str = ""


# --- replacement: cordon and drain ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CordonRequested(ReplacementEvent):
    """Intent: cordon the old node. `prior_unschedulable` says whether it already was, so a
    rollback uncordons only what this plan cordoned."""

    node: str
    prior_unschedulable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCordoned(ReplacementEvent):
    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CordonFailed(ReplacementEvent):
    node: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerReady:
    """A controller that had pods to evict on a drained node, and how many of its pods were
    Running and Ready in the whole cluster just before the drain."""

    namespace: str
    kind: str
    name: str
    ready: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainStarted(ReplacementEvent):
    """The pods to evict, as "namespace/name", and the rescheduling baseline: the ready pods
    of each of their controllers, which the drain waits to see again elsewhere (recorded here
    so a restart, a pause or a new leader confirms against the same numbers).

    Version 2 added `baseline`; version 1 events read as `baseline=None` (not recorded).
    """

    VERSION: ClassVar[int] = 2
    node: str
    pods: tuple[str, ...]
    baseline: tuple[OwnerReady, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PodEvictionRequested(ReplacementEvent):
    namespace: str
    pod: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PodEvicted(ReplacementEvent):
    namespace: str
    pod: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EvictionBlocked(ReplacementEvent):
    """The eviction was refused (a PodDisruptionBudget, HTTP 429); it may be retried.

    Version 2 split v1's `pod: "namespace/name"` into `namespace` and `pod`.
    """

    VERSION: ClassVar[int] = 2
    namespace: str
    pod: str
    attempt: int
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDrained(ReplacementEvent):
    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainTimedOut(ReplacementEvent):
    node: str
    remaining: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReschedulingConfirmed(ReplacementEvent):
    """The evicted pods' replacements are Running and Ready elsewhere."""

    pods: tuple[str, ...] = ()


# --- replacement: terminate, roll back, finish ---------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerDeleteRequested(ReplacementEvent):
    """Intent: delete a worker, either the old one (`role="old"`) or, in a rollback, the one
    this replacement added (`role="new"`)."""

    worker_identifier: str
    node: str
    role: Literal["old", "new"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerDeleted(ReplacementEvent):
    worker_identifier: str
    already_gone: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerDeleteFailed(ReplacementEvent):
    worker_identifier: str
    reason: str
    permanent: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDeleteRequested(ReplacementEvent):
    """Intent: delete the Kubernetes Node object of a worker that VPSie no longer lists
    (nothing on VPSie's side deletes Nodes). `uid` makes the delete hit only that Node."""

    node: str
    uid: str
    role: Literal["old", "new"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDeleted(ReplacementEvent):
    node: str
    already_gone: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDeleteFailed(ReplacementEvent):
    node: str
    reason: str


# --- repair: the lost node ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLossConfirmed(ReplacementEvent):
    """Repair: VPSie's listing has no worker for the lost node (by identifier, hostname or
    address): it is gone without our delete. An observation, made by listing."""

    node: str
    worker_identifier: str = ""  # the identifier the plan knew, "" when it knew none


@dataclass(frozen=True, slots=True, kw_only=True)
class OutOfServiceTaintRequested(ReplacementEvent):
    """Intent: taint the lost node `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`
    (its worker is confirmed gone), so that Kubernetes detaches its volumes and lets its pods
    go."""

    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeTaintedOutOfService(ReplacementEvent):
    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PodDeleteRequested(ReplacementEvent):
    """Intent: delete a pod of a node whose worker is confirmed gone (an eviction needs a
    kubelet to finish it; there is none). `uid` makes the delete hit only that pod."""

    namespace: str
    pod: str
    uid: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PodDeleted(ReplacementEvent):
    namespace: str
    pod: str
    already_gone: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UncordonRequested(ReplacementEvent):
    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeUncordoned(ReplacementEvent):
    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplacementRollbackStarted(ReplacementEvent):
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplacementRolledBack(ReplacementEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplacementCompleted(ReplacementEvent):
    monthly_saving: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplacementFailed(ReplacementEvent):
    reason: str


PLAN_EVENTS: tuple[type[Event], ...] = (
    PlanProposed,
    PlanApprovalRequested,
    PlanApproved,
    PlanRejected,
    PlanExecutionStarted,
    PlanPaused,
    PlanResumed,
    PlanCancelled,
    PlanRollbackStarted,
    PlanRolledBack,
    PlanCompleted,
    PlanFailed,
    SafetyChecksRun,
)

REPLACEMENT_EVENTS: tuple[type[ReplacementEvent], ...] = (
    NodeGroupCreateRequested,
    NodeGroupCreated,
    NodeGroupCreateFailed,
    WorkerAddRequested,
    WorkerAdded,
    WorkerAddFailed,
    NodeJoined,
    NodeJoinTimedOut,
    NodeLabelled,
    NodePrepareRequested,
    NodePrepared,
    StrayPodEvictionRequested,
    StrayPodSettled,
    CordonRequested,
    NodeCordoned,
    CordonFailed,
    DrainStarted,
    PodEvictionRequested,
    PodEvicted,
    EvictionBlocked,
    NodeDrained,
    DrainTimedOut,
    ReschedulingConfirmed,
    WorkerDeleteRequested,
    WorkerDeleted,
    WorkerDeleteFailed,
    NodeDeleteRequested,
    NodeDeleted,
    NodeDeleteFailed,
    UncordonRequested,
    NodeUncordoned,
    WorkerLossConfirmed,
    OutOfServiceTaintRequested,
    NodeTaintedOutOfService,
    PodDeleteRequested,
    PodDeleted,
    ReplacementRollbackStarted,
    ReplacementRolledBack,
    ReplacementCompleted,
    ReplacementFailed,
)

CATALOGUE: dict[str, type[Event]] = {
    cls.type_name(): cls for cls in (*PLAN_EVENTS, *REPLACEMENT_EVENTS)
}

# Intent -> the outcomes that settle it. An intent stays pending until one of them is recorded.
INTENT_OUTCOMES: dict[type[Event], tuple[type[Event], ...]] = {
    NodeGroupCreateRequested: (NodeGroupCreated, NodeGroupCreateFailed),
    WorkerAddRequested: (WorkerAdded, WorkerAddFailed),
    CordonRequested: (NodeCordoned, CordonFailed),
    PodEvictionRequested: (PodEvicted, EvictionBlocked),
    WorkerDeleteRequested: (WorkerDeleted, WorkerDeleteFailed),
    NodePrepareRequested: (NodePrepared,),
    StrayPodEvictionRequested: (StrayPodSettled,),
    NodeDeleteRequested: (NodeDeleted, NodeDeleteFailed),
    UncordonRequested: (NodeUncordoned,),
    OutOfServiceTaintRequested: (NodeTaintedOutOfService,),
    PodDeleteRequested: (PodDeleted,),
}
OUTCOME_OF: dict[type[Event], type[Event]] = {
    outcome: intent for intent, outcomes in INTENT_OUTCOMES.items() for outcome in outcomes
}


# --- upcasting -----------------------------------------------------------------------------

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _plan_approved_v1(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    out["by"] = out.pop("approved_by", "")
    return out


def _plan_approved_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "reason": ""}


def _drain_started_v1(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "baseline": None}


def _eviction_blocked_v1(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    qualified = str(out.pop("pod", ""))
    namespace, sep, name = qualified.partition("/")
    out["namespace"], out["pod"] = (namespace, name) if sep else ("default", qualified)
    return out


def _worker_added_v1(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "identified_by": "listing"}


# (type name, version) -> function turning that version's payload into the next version's.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("PlanApproved", 1): _plan_approved_v1,
    ("PlanApproved", 2): _plan_approved_v2,
    ("EvictionBlocked", 1): _eviction_blocked_v1,
    ("WorkerAdded", 1): _worker_added_v1,
    ("DrainStarted", 1): _drain_started_v1,
}


# --- encoding ------------------------------------------------------------------------------


class EncodedEvent(NamedTuple):
    """What the event store's `NewEvent` takes: `NewEvent(**encode(event)._asdict())`."""

    type: str
    schema_version: int
    data: bytes


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def to_json(value: object) -> bytes:
    """orjson with the log's conventions (Decimal as string)."""
    return orjson.dumps(value, default=_default)


def encode(event: Event) -> EncodedEvent:
    cls = type(event)
    if CATALOGUE.get(cls.type_name()) is not cls:
        raise TypeError(f"{cls.__name__} is not in the event catalogue")
    return EncodedEvent(cls.type_name(), cls.VERSION, to_json(event))


def decode(type_name: str, schema_version: int, data: bytes | str) -> Event:
    cls = CATALOGUE.get(type_name)
    if cls is None:
        raise UnknownEventType(type_name)
    if schema_version > cls.VERSION:
        raise EventVersionTooNew(type_name, schema_version, cls.VERSION)
    if schema_version < 1:
        raise MalformedEvent(type_name, "schema_version", f"{schema_version} is not >= 1")
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(type_name, "<payload>", f"not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise MalformedEvent(type_name, "<payload>", "not a JSON object")
    version = schema_version
    while version < cls.VERSION:
        upcast = UPCASTERS.get((type_name, version))
        if upcast is None:
            raise MalformedEvent(type_name, "schema_version", f"no upcaster from version {version}")
        payload = upcast(payload)
        version += 1
    try:
        event = from_plain(cls, payload)
    except _FieldError as exc:
        raise MalformedEvent(type_name, exc.path, exc.problem) from None
    return event


# --- type-directed decoding of plain JSON values ------------------------------------------

T = TypeVar("T")


class _FieldError(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem


Convert = Callable[[Any, str], Any]
_CONVERTERS: dict[object, Convert] = {}
_SCALARS = (str, int, float, bool, type(None))
_ABSENT = object()


def from_plain(cls: type[T], value: object, path: str = "") -> T:
    """Build a dataclass from decoded JSON, checking every field's type (`_FieldError`)."""
    result: T = _converter(cls)(value, path)
    return result


def plain_to(cls: type[T], value: object) -> T:
    """`from_plain` for callers outside this module; errors are `ValueError`s."""
    try:
        return from_plain(cls, value)
    except _FieldError as exc:
        raise ValueError(f"field {exc.path!r}: {exc.problem}") from None


def _name(value: object) -> str:
    return type(value).__name__


def _converter(tp: object) -> Convert:
    conv = _CONVERTERS.get(tp)
    if conv is None:
        conv = _build(tp)
        _CONVERTERS[tp] = conv
    return conv


def _build(tp: object) -> Convert:
    if tp is str:

        def conv_str(v: Any, path: str) -> Any:
            if type(v) is not str:
                raise _FieldError(path, f"expected a string, got {_name(v)}")
            return v

        return conv_str
    if tp is bool:

        def conv_bool(v: Any, path: str) -> Any:
            if type(v) is not bool:
                raise _FieldError(path, f"expected true or false, got {_name(v)}")
            return v

        return conv_bool
    if tp is int:

        def conv_int(v: Any, path: str) -> Any:
            if type(v) is not int:
                raise _FieldError(path, f"expected an integer, got {_name(v)}")
            return v

        return conv_int
    if tp is float:

        def conv_float(v: Any, path: str) -> Any:
            if type(v) is float:
                return v
            if type(v) is int:
                return float(v)
            raise _FieldError(path, f"expected a number, got {_name(v)}")

        return conv_float
    if tp is Decimal:

        def conv_decimal(v: Any, path: str) -> Any:
            if type(v) is not str:
                raise _FieldError(path, f"expected a decimal string, got {_name(v)}")
            try:
                d = Decimal(v)
            except InvalidOperation:
                raise _FieldError(path, f"{v!r} is not a decimal number") from None
            if not d.is_finite():
                raise _FieldError(path, f"{v!r} is not a finite number")
            return d

        return conv_decimal
    if isinstance(tp, type) and issubclass(tp, Enum):
        enum_cls = tp

        def conv_enum(v: Any, path: str) -> Any:
            try:
                return enum_cls(v)
            except ValueError:
                allowed = ", ".join(str(m.value) for m in enum_cls)
                raise _FieldError(path, f"{v!r} is not one of {allowed}") from None

        return conv_enum
    if isinstance(tp, type) and is_dataclass(tp):
        return _build_dataclass(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        allowed_values = args

        def conv_literal(v: Any, path: str) -> Any:
            if v not in allowed_values or type(v) is not type(allowed_values[0]):
                raise _FieldError(path, f"{v!r} is not one of {list(allowed_values)}")
            return v

        return conv_literal
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _converter(args[0])

            def conv_tuple(v: Any, path: str) -> Any:
                if type(v) is not list:
                    raise _FieldError(path, f"expected a list, got {_name(v)}")
                return tuple(item(x, f"{path}[{i}]") for i, x in enumerate(v))

            return conv_tuple
        items = [_converter(a) for a in args]

        def conv_fixed(v: Any, path: str) -> Any:
            if type(v) is not list or len(v) != len(items):
                raise _FieldError(path, f"expected a list of {len(items)}")
            pairs = enumerate(zip(items, v, strict=True))
            return tuple(c(x, f"{path}[{i}]") for i, (c, x) in pairs)

        return conv_fixed
    if origin is dict:
        value_conv = _converter(args[1])

        def conv_dict(v: Any, path: str) -> Any:
            if type(v) is not dict:
                raise _FieldError(path, f"expected an object, got {_name(v)}")
            return {k: value_conv(x, f"{path}.{k}") for k, x in v.items()}

        return conv_dict
    if origin in (typing.Union, types.UnionType):
        if all(a in _SCALARS for a in args):
            allowed_types = tuple(args)

            def conv_scalar(v: Any, path: str) -> Any:
                if not isinstance(v, allowed_types):
                    raise _FieldError(path, f"{_name(v)} is not allowed here")
                return v

            return conv_scalar
        options = [_converter(a) for a in args if a is not type(None)]
        nullable = type(None) in args

        def conv_union(v: Any, path: str) -> Any:
            if v is None and nullable:
                return None
            problems = []
            for option in options:
                try:
                    return option(v, path)
                except _FieldError as exc:
                    problems.append(exc.problem)
            raise _FieldError(path, "; ".join(problems))

        return conv_union
    if tp is type(None):

        def conv_none(v: Any, path: str) -> Any:
            if v is not None:
                raise _FieldError(path, f"expected null, got {_name(v)}")
            return None

        return conv_none
    raise TypeError(f"no JSON decoding for {tp!r}")


def _build_dataclass(cls: type) -> Convert:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    required = {
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    }
    known = set(names)
    # (name, converter, the plain type a value may pass through unconverted, or None)
    resolved: list[tuple[str, Convert, type | None]] = []

    def conv_dataclass(v: Any, path: str) -> Any:
        if type(v) is not dict:
            raise _FieldError(path or cls.__name__, f"expected an object, got {_name(v)}")
        if not resolved:
            for n in names:
                hint = hints[n]
                resolved.append((n, _converter(hint), hint if hint in (str, int, bool) else None))
        kwargs: dict[str, Any] = {}
        for name, conv, plain in resolved:
            x = v.get(name, _ABSENT)
            if x is not _ABSENT:
                if type(x) is plain:
                    kwargs[name] = x
                else:
                    kwargs[name] = conv(x, f"{path}.{name}" if path else name)
            elif name in required:
                raise _FieldError(f"{path}.{name}" if path else name, "missing")
        if len(v) != len(kwargs):
            extra = sorted(k for k in v if k not in known)
            if extra:
                where = f"{path}.{extra[0]}" if path else extra[0]
                raise _FieldError(where, "unknown field")
        return cls(**kwargs)

    return conv_dataclass


def describe(event: Event) -> Mapping[str, object]:
    """The event's fields as plain JSON values (for display)."""
    result: dict[str, object] = orjson.loads(to_json(event))
    return result
