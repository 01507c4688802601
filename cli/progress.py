"""Live console output: one line per state change of a plan or of one of its replacements.

The demo (and `run` on a terminal, with `--progress`) subscribes a `ProgressPrinter` to each
plan's journal. It keeps the last status it printed per replacement and prints a line only when
the folded status moved, with the clock time since the printer started and a short detail:

    00:42 worker-03       draining -> drained (12 pods evicted)
    01:10 plan 3f2a9c1e   executing -> completed (saving $96.00/month)

Times are the daemon's clock (simulated seconds in the demo), so the column shows how long the
rebalance took in the world it ran against.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import IO, Protocol

from statemachine.events import (
    DrainStarted,
    Event,
    NodeJoined,
    PlanCompleted,
    PlanFailed,
    PlanProposed,
    PlanRejected,
    PodEvicted,
    ReplacementCompleted,
    ReplacementEvent,
    ReplacementFailed,
    ReplacementRollbackStarted,
    WorkerAdded,
    WorkerDeleteRequested,
)
from statemachine.plan import PlanSpec


class _Monotonic(Protocol):
    def monotonic(self) -> float: ...


class _HasStatus(Protocol):
    @property
    def status(self) -> object: ...


class _PlanView(Protocol):
    """What the printer reads of a folded plan (statemachine.fold.PlanState fits)."""

    @property
    def status(self) -> object: ...

    @property
    def spec(self) -> PlanSpec | None: ...

    @property
    def replacements(self) -> Mapping[str, _HasStatus]: ...


def money(amount: Decimal) -> str:
    return f"${amount:,.2f}"


def elapsed(seconds: float) -> str:
    """`mm:ss`, or `h:mm:ss` past an hour."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _value(status: object) -> str:
    return str(getattr(status, "value", status))


class ProgressPrinter:
    """Prints state changes as they are recorded; subscribe `on_event` to a journal."""

    def __init__(
        self,
        clock: _Monotonic,
        *,
        out: IO[str] | None = None,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self._clock = clock
        self._start = clock.monotonic()
        stream = out if out is not None else sys.stdout
        self._write = write if write is not None else line_writer(stream)
        self._plan_status: dict[str, str] = {}
        self._status: dict[tuple[str, str], str] = {}
        self._evicted: dict[tuple[str, str], int] = {}
        self.lines: list[str] = []

    def on_event(self, state: _PlanView, event: Event) -> None:
        plan_id = event.plan_id
        if isinstance(event, PodEvicted):
            key = (plan_id, event.replacement_id)
            self._evicted[key] = self._evicted.get(key, 0) + 1
        self._plan_line(state, event)
        if isinstance(event, ReplacementEvent):
            self._replacement_line(state, event)

    def _emit(self, who: str, before: str, after: str, detail: str) -> None:
        line = f"{elapsed(self._clock.monotonic() - self._start)} {who:<24} {before} -> {after}"
        if detail:
            line += f" ({detail})"
        self.lines.append(line)
        self._write(line)

    def _plan_line(self, state: _PlanView, event: Event) -> None:
        now = _value(state.status)
        before = self._plan_status.get(event.plan_id)
        if isinstance(event, PlanProposed):
            before = before or "new"
        if before == now:
            return
        self._plan_status[event.plan_id] = now
        if before is None:
            return  # first sight of a plan that was already under way: no change to show
        who = f"plan {event.plan_id.removeprefix('plan-')[:12]}"
        self._emit(who, before, now, _plan_detail(state, event))

    def _replacement_line(self, state: _PlanView, event: ReplacementEvent) -> None:
        key = (event.plan_id, event.replacement_id)
        replacement = state.replacements.get(event.replacement_id)
        if replacement is None:
            return
        now = _value(replacement.status)
        before = self._status.get(key, "planned")
        if before == now:
            return
        self._status[key] = now
        self._emit(_node_of(state.spec, event.replacement_id), before, now, self._detail(event))

    def _detail(self, event: ReplacementEvent) -> str:
        key = (event.plan_id, event.replacement_id)
        if isinstance(event, WorkerAdded):
            return f"worker {event.hostname or event.worker_identifier}"
        if isinstance(event, NodeJoined):
            return f"{event.node_name} Ready"
        if isinstance(event, DrainStarted):
            return f"{len(event.pods)} pods to evict"
        if event.type_name() == "NodeDrained":
            return f"{self._evicted.get(key, 0)} pods evicted"
        if isinstance(event, WorkerDeleteRequested):
            return f"deleting {event.role} worker {event.worker_identifier[:8]}"
        if isinstance(event, ReplacementCompleted):
            return f"saves {money(event.monthly_saving)}/month"
        if isinstance(event, ReplacementRollbackStarted | ReplacementFailed):
            return event.reason
        return ""


def _plan_detail(state: _PlanView, event: Event) -> str:
    spec = state.spec
    if isinstance(event, PlanProposed) and spec is not None:
        return (
            f"{spec.strategy.value}, {len(spec.replacements)} nodes, "
            f"{money(spec.monthly_saving)}/month, {spec.recommended_action.value}"
        )
    if isinstance(event, PlanCompleted):
        return f"saving {money(event.realised_monthly_saving)}/month"
    if isinstance(event, PlanFailed | PlanRejected):
        return event.reason
    reason = getattr(event, "reason", "")
    return reason if isinstance(reason, str) else ""


def _node_of(spec: PlanSpec | None, replacement_id: str) -> str:
    if spec is not None:
        for r in spec.replacements:
            if r.replacement_id == replacement_id:
                return r.old_node or f"added {r.new_size_name or r.new_size_id}"
    return replacement_id


def line_writer(stream: IO[str]) -> Callable[[str], None]:
    """Writes a line; once the reader has gone (`| head`), writes nothing more.

    The printer runs inside the daemon's journal subscribers: a closed pipe must not fail the
    step being recorded, so the error ends the printing, not the plan.
    """
    closed = False

    def write(line: str) -> None:
        nonlocal closed
        if closed:
            return
        try:
            stream.write(line + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            closed = True

    return write
