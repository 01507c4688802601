"""Small builders shared by the event store tests: a stepping clock and an event factory."""

from __future__ import annotations

from eventstore import NewEvent


class StepClock:
    """A clock that moves one second each time it is read."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def ev(type_: str = "Happened", data: bytes = b"{}", schema_version: int = 1) -> NewEvent:
    return NewEvent(type=type_, schema_version=schema_version, data=data)
