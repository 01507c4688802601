"""Serving the simulated VPSie API on its own: build the account from a scenario, bind it on
127.0.0.1, and write the credentials file `adapters.vpsie` reads.

`simulator.serve` uses these to assemble the whole world; the VPSie client's tests use them
alone, since they need no Kubernetes side.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from simulator.clock import SimClock
from simulator.faults import fault_middleware
from simulator.scenario import Scenario
from simulator.vpsie.api import make_vpsie_app
from simulator.vpsie.state import NodeRegistry, VpsieState

HOST = "127.0.0.1"
VPSIE_PREFIX = "/apps/v2"


def build_vpsie_state(
    scenario: Scenario,
    *,
    clock: SimClock,
    rng: random.Random,
    nodes: NodeRegistry | None = None,
) -> VpsieState:
    """The VPSie account of `scenario`, its groups created and their workers already booted."""
    state = VpsieState(
        clock=clock,
        rng=rng,
        datacenters=list(scenario.datacenters),
        sizes=list(scenario.sizes),
        cluster=scenario.cluster,
        auth=scenario.auth,
        boot_delay_s=scenario.boot_delay_s,
        page_size=scenario.page_size,
        profile=scenario.profile,
        faults=scenario.faults,
        nodes=nodes,
    )
    for spec in scenario.groups:
        group = state.create_group(scenario.cluster.identifier, spec.name, spec.size_id)
        for _ in range(spec.workers):
            state.add_worker(scenario.cluster.identifier, group.id, booted=True)
    return state


@asynccontextmanager
async def serve_app(app: web.Application, *, port: int = 0) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 and yield its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        bound = runner.addresses[0]
        yield f"http://{HOST}:{bound[1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_vpsie(
    state: VpsieState, *, rng: random.Random, prefix: str = VPSIE_PREFIX, port: int = 0
) -> AsyncIterator[str]:
    """Serve the VPSie API of `state` (faults included) and yield its base URL."""
    faults = fault_middleware("vpsie", state.faults, state.clock, rng)
    try:
        async with serve_app(
            make_vpsie_app(state, prefix=prefix, middlewares=[faults]), port=port
        ) as url:
            yield url
    finally:
        state.stop()


def write_vpsie_credentials(path: Path, *, url: str, prefix: str, state: VpsieState) -> None:
    auth = state.auth
    data: dict[str, str] = {"base_url": url, "prefix": prefix}
    if auth.client_id:
        data |= {
            "auth": "client_credentials",
            "client_id": auth.client_id,
            "client_secret": auth.client_secret,
        }
    else:
        data |= {"auth": "token", "token": auth.token}
    data["cluster_identifier"] = state.cluster.identifier
    write_private(path, json.dumps(data, indent=2) + "\n")


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)
