"""Telling systemd how the daemon is doing: the sd_notify protocol, written in-house.

The protocol is one datagram of `KEY=VALUE` lines sent to the AF_UNIX socket named in
`$NOTIFY_SOCKET` (a path, or an abstract socket when it starts with `@`). The unit is
`Type=notify`, so `READY=1` must wait until recovery finished; `WatchdogSec=` makes systemd
kill the daemon when `WATCHDOG=1` stops arriving, which is why the ping comes from a task on the
event loop: a blocked loop stops the pings and gets the daemon restarted.

With `$NOTIFY_SOCKET` unset (a terminal, a test) every call is a no-op. A failed send is
swallowed and logged once: systemd being unreachable must never stop the daemon's work.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Protocol

log = logging.getLogger(__name__)


class _Sleeper(Protocol):
    async def sleep(self, seconds: float) -> None: ...


class Notifier:
    """Sends sd_notify messages; a no-op when not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None
        if not raw:
            self._address = None
        elif raw.startswith("@"):
            self._address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            self._address = raw
        else:
            raise ValueError(f"NOTIFY_SOCKET must be a path or start with '@', got {raw!r}")
        self._watchdog_usec = _watchdog_usec(env)
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one message; True when it was delivered. Keys are upper-cased."""
        if self._address is None:
            return False
        if any("\n" in str(v) for v in fields.values()):
            raise ValueError("sd_notify values must be single lines")
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                # Never block the event loop: a reader that stops reading (a full queue) costs
                # a dropped message, not a frozen daemon.
                s.setblocking(False)
                s.connect(self._address)
                s.sendall(payload.encode())
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd: %s", exc.strerror or exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, as systemd 253+ requires for Type=notify-reload."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec)

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of WatchdogSec), or None when no watchdog is asked for."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    async def watchdog_loop(self, clock: _Sleeper) -> None:
        """Ping WATCHDOG=1 every `watchdog_interval()` until cancelled; returns at once if none."""
        interval = self.watchdog_interval()
        if interval is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await clock.sleep(interval)


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. our parent)
    try:
        usec = int(raw)
    except ValueError:
        raise ValueError(f"WATCHDOG_USEC must be an integer, got {raw!r}") from None
    return usec if usec > 0 else None
