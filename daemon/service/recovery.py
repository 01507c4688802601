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
done to its nodes automatically. An event type or version newer than this program is fatal
(`RecoveryError`): a newer build wrote the log and this one must not act on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered:
    """What recovery found. `state` is the live fold to keep applying new events to."""

    state: FoldState
    head_seq: int
    snapshot_seq: int | None  # where the snapshot ended; None when folded from the start
    events_folded: int  # events read after the snapshot
    quarantined: tuple[Quarantined, ...] = field(default=())

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


async def recover(store: EventStore) -> Recovered:
    state, snapshot_seq = await _load_snapshot(store)
    quarantined: dict[str, Quarantined] = {}
    folded = 0
    async for recorded in store.read_all(from_seq=state.head_seq + 1):
        folded += 1
        plan_id = ev.plan_id_of_stream(recorded.stream)
        if plan_id is not None and plan_id in quarantined:
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
            quarantined[plan_id] = Quarantined(
                plan_id=plan_id,
                seq=recorded.seq,
                stream=recorded.stream,
                type=recorded.type,
                problem=str(exc),
            )
            state.plans.pop(plan_id, None)
            state.head_seq = recorded.seq
    return Recovered(
        state=state,
        head_seq=state.head_seq,
        snapshot_seq=snapshot_seq,
        events_folded=folded,
        quarantined=tuple(quarantined.values()),
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
