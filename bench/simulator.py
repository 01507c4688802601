"""How big a world the simulator holds, and how fast the adapters read it.

    python bench/simulator.py [--nodes 5000] [--pods 150000] [--seconds 2]

Builds a scenario of `--nodes` workers in one VPSie group and Deployments totalling `--pods`
replicas, serves it (`simulator.serve.start_simulator`), and prints:
- load: time until both APIs serve, and until every pod is bound to a node;
- list all pods through `adapters.kubernetes.KubeClient` (target: <= 2 s), and all workers
  through `adapters.vpsie.VpsieClient`;
- requests per second, sequentially for `--seconds` each: VPSie `list_node_groups`,
  Kubernetes `get_node`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.kubernetes import KubeClient  # noqa: E402
from adapters.vpsie import VpsieClient  # noqa: E402
from simulator.scenario import parse_scenario  # noqa: E402
from simulator.serve import start_simulator  # noqa: E402

DEPLOYMENT_REPLICAS = 100


def scenario_text(nodes: int, pods: int) -> str:
    dc = "bench-dc"
    docs = [
        f"""\
apiVersion: sim.vpsie-rebalancer.io/v1
kind: World
spec:
  datacenters: [{{identifier: {dc}, name: Bench}}]
  sizes:
    - {{id: 1, name: k8s-32c-128g, cpu: 32, ramMB: 131072, diskGB: 640,
       prices: {{{dc}: {{monthly: "384.00"}}}}}}
    - {{id: 2, name: k8s-16c-64g, cpu: 16, ramMB: 65536, diskGB: 320,
       prices: {{{dc}: {{monthly: "192.00"}}}}}}
  cluster: {{identifier: bench-cluster, name: bench, datacenter: {dc}, maxWorkers: {nodes + 100}}}
  nodeGroups: [{{name: pool, sizeId: 1, workers: {nodes}}}]
  pageSize: 100
  auth: {{token: bench-token}}
""",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n",
    ]
    left, i = pods, 0
    while left > 0:
        replicas = min(DEPLOYMENT_REPLICAS, left)
        docs.append(
            f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app-{i}, namespace: bench}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: app-{i}}}}}
  template:
    metadata: {{labels: {{app: app-{i}}}}}
    spec:
      containers:
        - name: app
          image: registry.example/app:1
          resources: {{requests: {{cpu: 100m, memory: 128Mi}}}}
"""
        )
        left -= replicas
        i += 1
    return "---\n".join(docs)


async def rate(name: str, seconds: float, call: Callable[[], Awaitable[Any]]) -> None:
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        await call()
        count += 1
    print(f"{name}: {count / elapsed:,.0f} requests/s ({count} in {elapsed:.2f} s, sequential)")


class RealClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def main(nodes: int, pods: int, seconds: float) -> int:
    scenario = parse_scenario(scenario_text(nodes, pods), source="bench")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as state_dir:
        async with start_simulator(scenario, speed=1000, state_dir=Path(state_dir)) as sim:
            served = time.perf_counter() - started
            print(f"load: {nodes} nodes, {pods} pods: serving after {served:.2f} s", flush=True)
            while True:
                bound = sum(1 for p in sim.kube.pods("bench") if p["spec"].get("nodeName"))
                if bound >= pods:
                    break
                await asyncio.sleep(0.2)
            print(f"load: every pod bound to a node after {time.perf_counter() - started:.2f} s")

            async with KubeClient.from_kubeconfig(str(sim.kubeconfig_path)) as kube:
                for attempt in (1, 2):
                    t0 = time.perf_counter()
                    listed = await kube.list_pods()
                    took = time.perf_counter() - t0
                    verdict = "ok" if took <= 2.0 else "OVER the 2 s target"
                    print(
                        f"kubernetes list_pods (all, run {attempt}): {len(listed)} pods "
                        f"in {took:.2f} s ({verdict})"
                    )
                names = [n.name for n in await kube.list_nodes()]
                pick = random.Random(0)
                await rate(
                    "kubernetes get_node", seconds, lambda: kube.get_node(pick.choice(names))
                )

            async with VpsieClient.from_file(
                sim.vpsie_credentials_path,
                clock=RealClock(),
                rng=random.Random(0),
                rate_limit_per_min=None,
            ) as vpsie:
                cluster = sim.scenario.cluster.identifier
                t0 = time.perf_counter()
                workers = await vpsie.list_workers(cluster)
                print(
                    f"vpsie list_workers: {len(workers)} workers "
                    f"in {time.perf_counter() - t0:.2f} s"
                )
                await rate(
                    "vpsie list_node_groups", seconds, lambda: vpsie.list_node_groups(cluster)
                )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.nodes, args.pods, args.seconds)))
