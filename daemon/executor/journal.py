"""One plan's journal: the only way the executor changes a plan's state.

`record(*events)` first folds the events into a copy of the plan's state (an event the
machines refuse raises `IllegalTransition` and nothing is written), then appends them to the
plan's stream with the stream version it last saw as `expected_version`, and only after the
append has committed replaces the state with the copy and tells the subscribers. So the state
a caller reads is always a fold of what is durable, and nothing is acted on before it is.

One writer per plan: records are serialised by an asyncio.Lock, so the concurrent
replacements of one plan cannot interleave a read-modify-append. A second process writing the
same stream shows as `eventstore.ConcurrencyError`; `reload()` then folds the stream again
from the log, so that the runner goes on from what the log now says.

Fencing: a journal opened by the leader carries its leadership `term`, and every append is
made with it; the store refuses it (`eventstore.FencedError`, nothing written) once another
daemon has taken a newer term. `term=None` appends unfenced (the `plan` command, tests of
the executor alone).

Subscribers (`subscribe(callback)`) are called with the new state and each event, in order;
they are for progress lines, metrics and Kubernetes Events, must not block, and an exception
in one is logged and ignored (a broken reporter never stops a replacement).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from eventstore import EventStore, NewEvent
from statemachine import events as ev
from statemachine.fold import FoldState, PlanState, apply, apply_event

# Of the time between two leadership terms' events on one step, the most counted as acting:
# about what a run killed mid-step and its restart take (systemd's RestartSec, start-up,
# recovery). More than that is the daemon down, not acting.
RESTART_GAP_S = 30.0

log = logging.getLogger(__name__)

Subscriber = Callable[[PlanState, ev.Event], None]
E = TypeVar("E", bound=ev.Event)


class PlanJournal:
    """A plan's stream, folded; `record` appends then applies."""

    def __init__(
        self, store: EventStore, plan_id: str, fold: FoldState, *, term: int | None = None
    ) -> None:
        self._store = store
        self._term = term
        self._plan_id = plan_id
        self._stream = ev.stream_for(plan_id)
        self._fold = fold
        self._lock = asyncio.Lock()
        self._subscribers: list[Subscriber] = []
        # (replacement id, event type) -> its latest such event, for deadlines and baselines
        # that must survive restarts (the fold keeps only the latest update of a replacement).
        self._last: dict[tuple[str, str], ev.ReplacementEvent] = {}
        # Per replacement, every event's (leadership term, type, at), in order: how long the
        # daemon was acting on a step, downtime left out (`acting_s`).
        self._history: dict[str, list[tuple[int, str, str]]] = {}

    def __repr__(self) -> str:
        state = self._fold.plans.get(self._plan_id)
        status = state.status.value if state is not None else "none"
        return f"PlanJournal({self._plan_id!r}, {status})"

    @classmethod
    async def load(cls, store: EventStore, plan_id: str, *, term: int | None = None) -> PlanJournal:
        """Fold the plan's stream (empty for a plan not proposed yet); appends carry `term`."""
        journal = cls(store, plan_id, FoldState(keep_finished=True), term=term)
        await journal._fold_from_log()
        return journal

    async def _fold_from_log(self) -> None:
        records = await self._store.read_stream(self._stream)
        self._fold = FoldState(keep_finished=True)
        self._last = {}
        self._history = {}
        for recorded in records:
            change = apply(self._fold, recorded)
            if change is not None:
                self._remember(change.event, recorded.term)

    async def reload(self) -> None:
        """Fold the stream again from the log (someone else appended to it)."""
        async with self._lock:
            await self._fold_from_log()

    @property
    def term(self) -> int | None:
        return self._term

    @property
    def plan_id(self) -> str:
        return self._plan_id

    @property
    def exists(self) -> bool:
        """Whether the plan has been proposed (its stream is not empty)."""
        return self._plan_id in self._fold.plans

    @property
    def state(self) -> PlanState:
        state = self._fold.plans.get(self._plan_id)
        if state is None:
            raise LookupError(f"plan {self._plan_id} has no events yet (record PlanProposed)")
        return state

    @property
    def version(self) -> int:
        state = self._fold.plans.get(self._plan_id)
        return state.version if state is not None else 0

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    async def record(self, *events: ev.Event) -> None:
        """Append `events` atomically, then fold them in; IllegalTransition: nothing written."""
        if not events:
            return
        async with self._lock:
            expected = self.version
            # Specs are immutable and can be large: share them instead of copying.
            memo: dict[int, object] = {id(p.spec): p.spec for p in self._fold.plans.values()}
            candidate = copy.deepcopy(self._fold, memo)
            for offset, event in enumerate(events, start=1):
                if event.plan_id != self._plan_id:
                    raise ValueError(
                        f"{type(event).type_name()} of plan {event.plan_id!r} recorded in the "
                        f"journal of plan {self._plan_id!r}"
                    )
                version = expected + offset
                apply_event(candidate, event, stream=self._stream, seq=version, version=version)
            encoded = [
                NewEvent(type=e.type, schema_version=e.schema_version, data=e.data)
                for e in map(ev.encode, events)
            ]
            await self._store.append(self._stream, expected, encoded, term=self._term)
            self._fold = candidate
            state = candidate.plans[self._plan_id]
            for event in events:
                self._remember(event, self._term or 0)
            for event in events:
                self._notify(state, event)

    def _remember(self, event: ev.Event, term: int) -> None:
        if isinstance(event, ev.ReplacementEvent):
            self._last[(event.replacement_id, type(event).type_name())] = event
            self._history.setdefault(event.replacement_id, []).append(
                (term, type(event).type_name(), event.at)
            )

    def acting_s(self, replacement_id: str, event_type: type[ev.Event], now: float) -> float:
        """Seconds this replacement's step has been worked on since `event_type` was last
        recorded for it (0 if never), counting only time a daemon was acting on it: within
        each leadership term, from the first to the last event of the replacement recorded in
        it (and, in this daemon's own term, on to `now`). Of the time between a term's last
        event and the next term's first (the rest of that run, a restart, or the daemon down,
        or another waiting for the Lease) at most `RESTART_GAP_S` is counted: a restart after a
        long outage does not time out a step that was making progress, and a daemon that
        crash-loops inside one step still reaches its timeout (each restart counts what a
        restart takes, not nothing). Without leadership terms (term 0 throughout) this is the
        time since the event."""
        history = self._history.get(replacement_id, [])
        name = event_type.type_name()
        start = next((i for i in range(len(history) - 1, -1, -1) if history[i][1] == name), None)
        if start is None:
            return 0.0
        try:
            times = [(term, datetime.fromisoformat(at).timestamp()) for term, _, at in history]
        except ValueError:
            return 0.0
        used = 0.0
        for (term_a, at_a), (term_b, at_b) in zip(times[start:], times[start + 1 :], strict=False):
            gap = max(0.0, at_b - at_a)
            used += gap if term_a == term_b else min(gap, RESTART_GAP_S)
        last_term, last_at = times[-1]
        gap = max(0.0, now - last_at)
        used += gap if last_term == (self._term or 0) else min(gap, RESTART_GAP_S)
        return used

    def last(self, replacement_id: str, event_type: type[E]) -> E | None:
        """The latest `event_type` recorded for a replacement, or None."""
        found = self._last.get((replacement_id, event_type.type_name()))
        return found if isinstance(found, event_type) else None

    def last_at(self, replacement_id: str, event_type: type[ev.Event]) -> str | None:
        """When `event_type` was last recorded for a replacement (RFC 3339), or None."""
        found = self._last.get((replacement_id, event_type.type_name()))
        return found.at if found is not None else None

    def _notify(self, state: PlanState, event: ev.Event) -> None:
        for callback in self._subscribers:
            try:
                callback(state, event)
            except Exception:
                log.exception(
                    "journal subscriber %r failed on %s",
                    callback,
                    type(event).type_name(),
                    extra={"plan_id": self._plan_id},
                )
