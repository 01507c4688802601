"""The real kubectl against the simulated API: a server on an ephemeral port and a runner."""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from simulator.clock import SimClock
from simulator.kube import KubeWorld, make_kube_app


def _deployment(name: str, replicas: int) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{
                                      "name": "c", "image": "nginx",
                                      "resources": {"requests": {"cpu": "200m",
                                                                 "memory": "128Mi"}}}],
                                           "volumes": [{"name": "scratch", "emptyDir": {}}]}}}}


@dataclass
class Kubectl:
    world: KubeWorld
    kubeconfig: Path
    cache: Path

    async def run(self, *args: str) -> tuple[int, str, str]:
        exe = shutil.which("kubectl")
        assert exe, "kubectl must be installed (.ci/run installs kubernetes-client)"
        proc = await asyncio.create_subprocess_exec(
            exe, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache}", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def kubectl(tmp_path: Path) -> AsyncIterator[Kubectl]:
    world = KubeWorld(SimClock(200), random.Random(11))
    for i in range(3):
        world.register_node(name=f"worker-{i}", labels={}, cpu=4, memory_mb=8192,
                            addresses=[f"10.1.0.{i + 1}"])
    world.load_manifests([
        _deployment("web", 3),
        _deployment("db", 3),
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": "db", "namespace": "shop"},
         "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "db"}}}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "node-agent", "namespace": "kube-system"},
         "spec": {"selector": {"matchLabels": {"app": "node-agent"}},
                  "template": {"metadata": {"labels": {"app": "node-agent"}},
                               "spec": {"containers": [{"name": "a", "image": "agent"}]}}}},
    ])
    await world.start()
    runner = web.AppRunner(make_kube_app(world))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    kc = tmp_path / "kubeconfig"
    kc.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: sim\n  cluster:\n    server: http://127.0.0.1:{port}\n"
        "users:\n- name: u\n  user:\n    token: not-a-real-token\n"
        "contexts:\n- name: sim\n  context:\n    cluster: sim\n    user: u\n"
        "current-context: sim\n")
    yield Kubectl(world, kc, tmp_path / "cache")
    await world.stop()
    await runner.cleanup()
