"""Test builders: turn event histories into stored-event records, as the store would."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from eventstore import RecordedEvent
from statemachine import events as ev


def recorded(histories: Iterable[Sequence[ev.Event]]) -> list[RecordedEvent]:
    """The histories appended one after another, each to its plan's stream."""
    out: list[RecordedEvent] = []
    versions: dict[str, int] = {}
    for history in histories:
        for event in history:
            stream = ev.stream_for(event.plan_id)
            versions[stream] = versions.get(stream, 0) + 1
            out.append(record(event, seq=len(out) + 1, version=versions[stream]))
    return out


def record(event: ev.Event, *, seq: int, version: int) -> RecordedEvent:
    encoded = ev.encode(event)
    return RecordedEvent(
        seq=seq,
        stream=ev.stream_for(event.plan_id),
        version=version,
        type=encoded.type,
        schema_version=encoded.schema_version,
        data=encoded.data,
        recorded_at=float(seq),
    )
