"""Simulated time: a speed factor of simulated seconds per real second.

Everything in the simulated world that takes time (a worker booting, a pod starting) is
scheduled on this clock, so a ten-minute boot takes 0.6 s of real time at speed 1000.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class SimClock:
    """Simulated seconds since the world started, advancing `speed` times faster than real time."""

    def __init__(self, speed: float = 1.0, *, start: float = 1_767_225_600.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        self._start_sim = start  # 2026-01-01T00:00:00Z by default
        self._start_real = time.monotonic()

    def now(self) -> float:
        """Simulated wall-clock time (Unix seconds)."""
        return self._start_sim + (time.monotonic() - self._start_real) * self.speed

    def real_delay(self, sim_seconds: float) -> float:
        return max(0.0, sim_seconds / self.speed)

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(self.real_delay(sim_seconds))

    def call_later(self, sim_seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(self.real_delay(sim_seconds), callback)
