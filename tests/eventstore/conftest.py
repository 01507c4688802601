"""Fixtures for the event store contract: every test runs against SQLite (`:memory:` and a
file) and PostgreSQL (a fresh schema on the session's throwaway server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventstore import EventStore
from tests.eventstore.builders import StepClock
from tests.pgserver import drop_schema, fresh_schema, postgres_server

__all__ = ["postgres_server"]


async def _target(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "memory":
        yield ":memory:"
    elif kind == "file":
        yield str(tmp_path / "events.db")
    else:
        server = request.getfixturevalue("postgres_server")
        dsn = await fresh_schema(server)
        yield dsn
        await drop_schema(server, dsn)


@pytest.fixture(params=["memory", "file", "postgres"])
async def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Where a log lives: ":memory:", an SQLite file, or a PostgreSQL DSN."""
    async for target in _target(request.param, request, tmp_path):
        yield target


@pytest.fixture(params=["file", "postgres"])
async def shared_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A log that two stores (two daemons) can open at once."""
    async for target in _target(request.param, request, tmp_path):
        yield target


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
async def store(store_path: str, clock: StepClock) -> AsyncIterator[EventStore]:
    s = await EventStore.open(store_path, clock=clock)
    yield s
    await s.close()


@pytest.fixture
async def pg_dsn(postgres_server: str) -> AsyncIterator[str]:
    """A DSN to an empty schema of the session's PostgreSQL server."""
    dsn = await fresh_schema(postgres_server)
    yield dsn
    await drop_schema(postgres_server, dsn)
