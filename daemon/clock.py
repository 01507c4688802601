"""The daemon's clocks: real time, and real time run faster for rehearsals.

The executor never reads time directly; it is handed a `Clock` (daemon.ports.Clock). In
production that is `SystemClock`. The demo and the test suites run the simulator N times faster
than real time, and hand the daemon a `ScaledClock` with the same factor, so a 600 s provision
timeout means the same thing to both sides and nothing in a test really waits ten minutes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


class SystemClock:
    """Wall-clock and monotonic time of this machine."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Time that passes `speed` times faster than real time, from the moment it was made."""

    def __init__(self, speed: float, *, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        self._start_wall = time.time() if start is None else start
        self._start_mono = time.monotonic()

    def now(self) -> float:
        return self._start_wall + (time.monotonic() - self._start_mono) * self.speed

    def monotonic(self) -> float:
        return (time.monotonic() - self._start_mono) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


def rfc3339(unix_seconds: float) -> str:
    """UTC timestamp with millisecond precision, as events carry it."""
    dt = datetime.fromtimestamp(unix_seconds, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
