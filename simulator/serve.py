"""Assemble and serve a simulated world: the Kubernetes API and the VPSie API over real HTTP.

`start_simulator(scenario, state_dir=...)` loads the scenario, builds both worlds on one
`SimClock`, seeds the node groups' workers (already booted, registered as Nodes), binds both
servers on 127.0.0.1 (ephemeral ports unless given) and writes, into `state_dir`:

- `kubeconfig`: an http server URL and a bearer token, which the API checks (other
  credentials get 401; see docs/simulator-kube.md); works for kubectl and kubernetes-asyncio;
- `vpsie.json` (mode 0600): the VPSie endpoint and secrets, in the format
  `adapters.vpsie` reads (`base_url`, `prefix`, `auth`, `token` or `client_id` +
  `client_secret`, `cluster_identifier`).

Tests that only need VPSie use `simulator.vpsie.server` directly.
"""

from __future__ import annotations

import functools
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from simulator.clock import SimClock
from simulator.faults import FaultConfig, fault_middleware
from simulator.kube import KubeWorld, make_kube_app
from simulator.scenario import Scenario, ScenarioError, load_scenario
from simulator.vpsie.server import (
    VPSIE_PREFIX,
    build_vpsie_state,
    serve_app,
    serve_vpsie,
    write_private,
    write_vpsie_credentials,
)
from simulator.vpsie.state import VpsieState

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningSimulator:
    scenario: Scenario
    kube_url: str
    vpsie_url: str
    vpsie_prefix: str
    kubeconfig_path: Path
    vpsie_credentials_path: Path
    clock: SimClock
    kube: KubeWorld
    vpsie: VpsieState
    faults: FaultConfig


def write_kubeconfig(path: Path, *, url: str, token: str, name: str) -> None:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": f"{name}-admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
        "current-context": name,
        "preferences": {},
    }
    write_private(path, yaml.safe_dump(config, sort_keys=False))


def _lose(vpsie: VpsieState, worker: str, kind: str) -> None:
    try:
        vpsie.lose_worker(worker, kind)
    except KeyError:
        _log.warning("scenario loss %s of worker %s: no such worker", kind, worker)


@asynccontextmanager
async def start_simulator(
    scenario: Scenario | str | Path,
    *,
    speed: float = 1.0,
    state_dir: Path,
    seed: int = 0,
    kube_port: int = 0,
    vpsie_port: int = 0,
) -> AsyncIterator[RunningSimulator]:
    """Both simulated APIs, serving until the context exits. ScenarioError on a bad scenario."""
    loaded = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    clock = SimClock(speed, start=time.time())
    rng = random.Random(seed)
    kube = KubeWorld(
        clock, random.Random(rng.getrandbits(64)), pod_start_delay_s=loaded.pod_start_delay_s
    )
    try:
        kube.load_manifests(loaded.manifests)
    except ValueError as exc:
        raise ScenarioError(f"{loaded.source}: Kubernetes manifests: {exc}") from None
    for blocked in sorted(loaded.faults.eviction_blocked):
        namespace, _, selector = blocked.partition("/")
        try:
            kube.block_evictions(namespace, selector)
        except ValueError as exc:
            raise ScenarioError(
                f"{loaded.source}: spec.faults.evictionBlocked: {blocked!r}: {exc}"
            ) from None
    vpsie = build_vpsie_state(
        loaded, clock=clock, rng=random.Random(rng.getrandbits(64)), nodes=kube
    )
    for loss in loaded.faults.losses:
        clock.call_later(loss.at, functools.partial(_lose, vpsie, loss.worker, loss.kind))
    kube_token = secrets.token_urlsafe(24)
    kube_faults = fault_middleware(
        "kubernetes", loaded.faults, clock, random.Random(rng.getrandbits(64))
    )
    await kube.start()
    kube_app = make_kube_app(kube, middlewares=[kube_faults], token=kube_token)
    try:
        async with (
            serve_app(kube_app, port=kube_port) as kube_url,
            serve_vpsie(
                vpsie, rng=random.Random(rng.getrandbits(64)), port=vpsie_port
            ) as vpsie_url,
        ):
            kubeconfig = state_dir / "kubeconfig"
            credentials = state_dir / "vpsie.json"
            write_kubeconfig(kubeconfig, url=kube_url, token=kube_token, name=loaded.cluster.name)
            write_vpsie_credentials(credentials, url=vpsie_url, prefix=VPSIE_PREFIX, state=vpsie)
            yield RunningSimulator(
                scenario=loaded,
                kube_url=kube_url,
                vpsie_url=vpsie_url,
                vpsie_prefix=VPSIE_PREFIX,
                kubeconfig_path=kubeconfig,
                vpsie_credentials_path=credentials,
                clock=clock,
                kube=kube,
                vpsie=vpsie,
                faults=loaded.faults,
            )
    finally:
        await kube.stop()
