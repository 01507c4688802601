"""The VPSie client against the simulated VPSie API on 127.0.0.1, with a clock that never waits."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.vpsie import VpsieClient
from simulator.clock import SimClock
from simulator.scenario import Scenario, load_scenario
from simulator.vpsie.server import build_vpsie_state, serve_vpsie, write_vpsie_credentials
from simulator.vpsie.state import VpsieState

SMALL = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "small.yaml"


class InstantClock:
    """The client's clock: `sleep` advances time at once and records how long it was asked."""

    def __init__(self) -> None:
        self._now = time.time()
        self._mono = 0.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], None] | None = None

    def now(self) -> float:
        return self._now + self._mono

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._mono += max(0.0, seconds)
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))
        await asyncio.sleep(0)


@dataclass
class VpsieWorld:
    state: VpsieState
    url: str
    credentials: Path
    clock: InstantClock
    make_client: Callable[..., VpsieClient]

    @property
    def cluster(self) -> str:
        return self.state.cluster.identifier


def small_scenario() -> Scenario:
    return load_scenario(SMALL)


async def _serve(
    scenario: Scenario, tmp_path: Path, speed: float = 100.0
) -> AsyncIterator[VpsieWorld]:
    state = build_vpsie_state(scenario, clock=SimClock(speed), rng=random.Random(7))
    async with serve_vpsie(state, rng=random.Random(11)) as url:
        credentials = tmp_path / "vpsie.json"
        write_vpsie_credentials(credentials, url=url, prefix="/apps/v2", state=state)
        clock = InstantClock()
        clients: list[VpsieClient] = []

        def make_client(**kwargs: object) -> VpsieClient:
            options: dict[str, object] = {"rate_limit_per_min": None, "timeout_s": 5}
            options.update(kwargs)
            client = VpsieClient.from_file(
                credentials,
                clock=clock,
                rng=random.Random(3),
                **options,  # type: ignore[arg-type]
            )
            clients.append(client)
            return client

        yield VpsieWorld(state, url, credentials, clock, make_client)
        for client in clients:
            await client.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[VpsieWorld]:
    """The small scenario's VPSie account, client-credentials auth, 2 rows per page."""
    async for w in _serve(small_scenario(), tmp_path):
        yield w


@pytest.fixture
def serve() -> Callable[..., AsyncIterator[VpsieWorld]]:
    """Serve a scenario of the test's own making."""
    return _serve
