"""A simulated Kubernetes API on an ephemeral 127.0.0.1 port, and a kubeconfig pointing at it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.kubernetes import KubeClient
from simulator.clock import SimClock
from simulator.faults import FaultConfig, fault_middleware
from simulator.kube import KubeWorld, make_kube_app

TOKEN = "s3cr3t-bearer-token-do-not-log"


def web_deployment(name: str, replicas: int, ns: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{
                                      "name": "c", "image": "nginx",
                                      "resources": {"requests": {"cpu": "250m",
                                                                 "memory": "256Mi"}}}],
                                           **spec}}}}


def pdb(name: str, app: str, ns: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": app}}, **spec}}


def write_kubeconfig(path: Path, port: int, token: str = TOKEN) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: sim\n  cluster:\n    server: http://127.0.0.1:{port}\n"
        f"users:\n- name: u\n  user:\n    token: {token}\n"
        "contexts:\n- name: sim\n  context:\n    cluster: sim\n    user: u\n"
        "current-context: sim\n")
    return path


@dataclass
class Sim:
    world: KubeWorld
    faults: FaultConfig
    port: int
    kubeconfig: Path


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    clock = SimClock(2000)
    world = KubeWorld(clock, random.Random(7))
    for i in range(3):
        world.register_node(name=f"node-{i}", labels={"pool": "a"}, cpu=4, memory_mb=8192,
                            addresses=[f"10.0.0.{i + 1}", f"203.0.113.{i + 1}"])
    faults = FaultConfig()
    world.load_manifests([web_deployment("web", 4), pdb("web", "web", minAvailable=3)])
    await world.start()
    app = make_kube_app(world, token=TOKEN, middlewares=[
        fault_middleware("kubernetes", faults, clock, random.Random(3))])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield Sim(world, faults, port, write_kubeconfig(tmp_path / "kubeconfig", port))
    await world.stop()
    await runner.cleanup()


@pytest.fixture
async def kube(sim: Sim) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(str(sim.kubeconfig), page_size=2) as client:
        yield client
