"""The in-house sd_notify speaks the protocol to a real AF_UNIX datagram socket."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.systemd_notify import Notifier


class _Sleeps:
    """A clock whose sleeps return at once, counting them."""

    def __init__(self, stop_after: int) -> None:
        self.slept: list[float] = []
        self.stop_after = stop_after

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if len(self.slept) >= self.stop_after:
            raise asyncio.CancelledError
        await asyncio.sleep(0)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(1.0)
    yield s, str(path)
    s.close()


def _recv(s: socket.socket) -> dict[str, str]:
    data = s.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_messages_reach_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    s, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("recovered 2 plans")
    assert _recv(s) == {"READY": "1", "STATUS": "recovered 2 plans"}
    assert n.status("leader; 1 plan executing")
    assert _recv(s) == {"STATUS": "leader; 1 plan executing"}
    assert n.watchdog()
    assert _recv(s) == {"WATCHDOG": "1"}
    assert n.stopping()
    assert _recv(s) == {"STOPPING": "1"}


def test_reloading_carries_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    s, path = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier({"NOTIFY_SOCKET": path}).reloading()
    got = _recv(s)
    assert got["RELOADING"] == "1"
    assert int(got["MONOTONIC_USEC"]) >= before


def test_abstract_socket() -> None:
    name = f"vpsie-rebalancer-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + name.encode())
        s.settimeout(1.0)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert _recv(s) == {"READY": "1"}


def test_unset_socket_is_a_noop() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()
    assert n.watchdog_interval() is None


def test_missing_socket_does_not_raise(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent")})
    assert n.enabled
    assert not n.ready()
    assert not n.watchdog()


def test_bad_values_are_refused(listener: tuple[socket.socket, str]) -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        Notifier({"NOTIFY_SOCKET": "relative/path"})
    with pytest.raises(ValueError, match="WATCHDOG_USEC"):
        Notifier({"NOTIFY_SOCKET": listener[1], "WATCHDOG_USEC": "soon"})
    with pytest.raises(ValueError, match="single lines"):
        Notifier({"NOTIFY_SOCKET": listener[1]}).status("two\nlines")


def test_watchdog_interval_is_half_the_period_for_this_pid() -> None:
    mine = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval() == 15.0
    assert Notifier({"WATCHDOG_USEC": "4000000"}).watchdog_interval() == 2.0
    other = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_interval() is None


async def test_watchdog_loop_pings_at_the_interval(listener: tuple[socket.socket, str]) -> None:
    s, path = listener
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    clock = _Sleeps(stop_after=3)
    with pytest.raises(asyncio.CancelledError):
        await n.watchdog_loop(clock)
    assert clock.slept == [5.0, 5.0, 5.0]
    assert [_recv(s) for _ in range(3)] == [{"WATCHDOG": "1"}] * 3


async def test_watchdog_loop_returns_without_a_watchdog(
    listener: tuple[socket.socket, str],
) -> None:
    clock = _Sleeps(stop_after=1)
    await Notifier({"NOTIFY_SOCKET": listener[1]}).watchdog_loop(clock)
    assert clock.slept == []
