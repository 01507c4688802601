"""A token bucket on the injected clock: VPSie publishes no rate limits, so stay polite.

The public VPSie client kept to 100 requests a minute; so do we by default, with a small burst.
Waiting goes through the clock's `sleep`, so tests that run on a fake clock never really wait.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class TokenBucket:
    """`rate_per_min` requests a minute on average, at most `burst` at once."""

    def __init__(self, rate_per_min: float, clock: Clock, *, burst: int | None = None) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"rate_per_min must be positive, got {rate_per_min}")
        self._rate = rate_per_min / 60.0
        self._burst = float(burst if burst is not None else max(1, min(10, int(rate_per_min))))
        self._tokens = self._burst
        self._clock = clock
        self._last = clock.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock.monotonic()
                self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await self._clock.sleep((1 - self._tokens) / self._rate)
