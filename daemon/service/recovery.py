"""Recovery: from the event log back to the work in flight, after a crash or a restart.

The log is the daemon's only memory. `recover` loads the latest fold snapshot, folds the
events after it, and returns every plan that has not reached a terminal state, each
replacement with its pending intent (the `...Requested` event with no outcome: what the
executor must now look up in the live world), plus, per node group, when its last plan
finished (for the cooldown check).

Snapshots (`write_snapshot`, taken periodically by the daemon) hold only the plans in flight
and the per-group summaries, so recovery costs what is in flight plus the tail since the last
snapshot, not the age of the log. A snapshot is a cache: one of an older or unknown schema,
or one that does not decode, is ignored and the log is folded from the start.

An event the fold refuses (an illegal transition or a malformed payload) quarantines its plan:
the plan is left out of the work in flight and reported, so a person can look, and nothing is
done to its nodes automatically. A quarantine is remembered in the log itself, on the stream
`quarantine` (`PlanQuarantined`, appended by the leader; `QuarantineCleared`, appended by
`vpsie-rebalancer clear-quarantine` once a person has looked), so it survives snapshots (which
leave the plan out) and restarts: every later recovery skips the events of a quarantined or
cleared plan, and the plan's node group gets no new plan until the quarantine is cleared.
An event type or version newer than this program is fatal (`RecoveryError`): a newer build
wrote the log and this one must not act on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from daemon.service.records import append_record, new_record, read_records
from eventstore import EventStore
from statemachine import events as ev
from statemachine.fold import (
    STATE_SCHEMA_VERSION,
    FoldState,
    GroupSummary,
    PlanState,
    StateDecodeError,
    apply,
    decode_state,
    encode_state,
)
from statemachine.machines import IllegalTransition

SNAPSHOT_NAME = "fold"
QUARANTINE_STREAM = "quarantine"
QUARANTINED = "PlanQuarantined"
CLEARED = "QuarantineCleared"


class RecoveryError(Exception):
    """The log cannot be acted on by this build; the message says why and where."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Quarantined:
    """A plan recovery refuses to continue, and the event that made it so."""

    plan_id: str
    seq: int
    stream: str
    type: str
    problem: str
    node_group: str = ""  # "" when the plan's group could not be read: every group waits


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered:
    """What recovery found. `state` is the live fold to keep applying new events to."""

    state: FoldState
    head_seq: int
    snapshot_seq: int | None  # where the snapshot ended; None when folded from the start
    events_folded: int  # events read after the snapshot
    quarantined: tuple[Quarantined, ...] = field(default=())  # remembered ones included
    # Found by this recovery and not yet on the quarantine stream: the leader records them.
    unrecorded: tuple[Quarantined, ...] = field(default=())

    @property
    def in_flight(self) -> dict[str, PlanState]:
        return {pid: p for pid, p in self.state.plans.items() if not p.terminal}

    @property
    def groups(self) -> dict[str, GroupSummary]:
        return self.state.groups

    def last_finished(self, node_group: str) -> str | None:
        """RFC 3339 time the group's last executed plan finished (cooldown), or None."""
        summary = self.state.groups.get(node_group)
        return summary.last_changed_at or None if summary else None


async def _load_snapshot(store: EventStore) -> tuple[FoldState, int | None]:
    snapshot = await store.load_snapshot(SNAPSHOT_NAME)
    if snapshot is None or snapshot.schema_version != STATE_SCHEMA_VERSION:
        return FoldState(keep_finished=False), None
    try:
        state = decode_state(snapshot.data)
    except (StateDecodeError, ev.EventDecodeError):
        return FoldState(keep_finished=False), None
    state.keep_finished = False
    state.head_seq = snapshot.seq
    return state, snapshot.seq


class Quarantines:
    """The quarantine stream, read: plans quarantined and not cleared, and plans cleared."""

    def __init__(self) -> None:
        self.active: dict[str, Quarantined] = {}
        self.cleared: set[str] = set()
        self.version = 0

    @classmethod
    async def read(cls, store: EventStore) -> Quarantines:
        found = cls()
        records, found.version = await read_records(store, QUARANTINE_STREAM)
        for type_name, data in records:
            if type_name == QUARANTINED:
                found.active[data["plan_id"]] = Quarantined(**data)
                found.cleared.discard(data["plan_id"])
            elif type_name == CLEARED:
                found.active.pop(data["plan_id"], None)
                found.cleared.add(data["plan_id"])
        return found

    def blocks(self, node_group: str) -> Quarantined | None:
        """The quarantined plan that keeps `node_group` from getting a new plan, if any."""
        return next((q for q in self.active.values() if q.node_group in (node_group, "")), None)


async def record_quarantines(
    store: EventStore, found: tuple[Quarantined, ...], *, term: int | None
) -> None:
    """Append `found` to the quarantine stream (the leader, with its term)."""
    if not found:
        return
    version = (await Quarantines.read(store)).version
    events = [new_record(QUARANTINED, asdict(q)) for q in found]
    await store.append(QUARANTINE_STREAM, version, events, term=term)


async def clear_quarantine(store: EventStore, plan_id: str, *, by: str, reason: str) -> None:
    """A person has looked: the plan's group may get plans again (its events stay skipped)."""
    known = await Quarantines.read(store)
    if plan_id not in known.active:
        raise LookupError(f"plan {plan_id} is not quarantined")
    data = {"plan_id": plan_id, "by": by, "reason": reason}
    await append_record(store, QUARANTINE_STREAM, known.version, CLEARED, data, term=None)


async def recover(store: EventStore) -> Recovered:
    state, snapshot_seq = await _load_snapshot(store)
    known = await Quarantines.read(store)
    quarantined: dict[str, Quarantined] = dict(known.active)
    skipped = set(quarantined) | known.cleared
    for skipped_id in skipped:
        state.plans.pop(skipped_id, None)
    folded = 0
    async for recorded in store.read_all(from_seq=state.head_seq + 1):
        folded += 1
        plan_id = ev.plan_id_of_stream(recorded.stream)
        if plan_id is not None and plan_id in skipped:
            state.head_seq = recorded.seq
            continue
        try:
            apply(state, recorded)
        except (ev.UnknownEventType, ev.EventVersionTooNew) as exc:
            raise RecoveryError(
                f"event seq {recorded.seq} (stream {recorded.stream!r}): {exc}"
            ) from None
        except (IllegalTransition, ev.MalformedEvent) as exc:
            assert plan_id is not None  # apply ignores streams that are not plans
            before = state.plans.get(plan_id)
            quarantined[plan_id] = Quarantined(
                plan_id=plan_id,
                seq=recorded.seq,
                stream=recorded.stream,
                type=recorded.type,
                problem=str(exc),
                node_group=before.spec.node_group if before is not None else "",
            )
            skipped.add(plan_id)
            state.plans.pop(plan_id, None)
            state.head_seq = recorded.seq
    return Recovered(
        state=state,
        head_seq=state.head_seq,
        snapshot_seq=snapshot_seq,
        events_folded=folded,
        quarantined=tuple(quarantined.values()),
        unrecorded=tuple(q for pid, q in quarantined.items() if pid not in known.active),
    )


async def write_snapshot(store: EventStore, state: FoldState) -> int:
    """Save the fold of the log up to `state.head_seq` (in-flight plans only); returns it."""
    in_flight = FoldState(
        plans={pid: p for pid, p in state.plans.items() if not p.terminal},
        groups=state.groups,
        head_seq=state.head_seq,
        keep_finished=False,
    )
    await store.save_snapshot(
        SNAPSHOT_NAME, state.head_seq, STATE_SCHEMA_VERSION, encode_state(in_flight)
    )
    return state.head_seq
