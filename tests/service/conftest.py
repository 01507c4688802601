"""No daemon outlives its test, even one that failed half-way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.daemon_process import DaemonProcess


@pytest.fixture(autouse=True)
def _no_daemon_left_behind() -> Iterator[None]:
    yield
    for daemon in list(DaemonProcess.live):
        daemon.kill()
