"""Fixtures for the event store contract: every test runs against `:memory:` and a file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventstore import EventStore
from tests.eventstore.builders import StepClock


@pytest.fixture(params=["memory", "file"])
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return ":memory:" if request.param == "memory" else str(tmp_path / "events.db")


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
async def store(store_path: str, clock: StepClock) -> AsyncIterator[EventStore]:
    s = await EventStore.open(store_path, clock=clock)
    yield s
    await s.close()
