"""No daemon outlives its test, even one that failed half-way; `dsn`: a fresh PostgreSQL
schema of the throwaway server for a test (dropped after it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.pgserver import drop_schema, fresh_schema, postgres_server
from tests.service.daemon_process import DaemonProcess

__all__ = ["postgres_server"]


@pytest.fixture
async def dsn(postgres_server: str) -> AsyncIterator[str]:
    target = await fresh_schema(postgres_server)
    yield target
    await drop_schema(postgres_server, target)


@pytest.fixture(autouse=True)
def _no_daemon_left_behind() -> Iterator[None]:
    yield
    for daemon in list(DaemonProcess.live):
        daemon.kill()
