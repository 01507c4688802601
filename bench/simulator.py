"""How big a world the simulator holds, and how fast the adapters read it.

    python bench/simulator.py [--nodes 5000] [--pods 150000] [--seconds 2] [--runs 3]

Writes a scenario of `--nodes` workers in one VPSie group and Deployments totalling `--pods`
replicas, serves it with `vpsie-rebalancer simulate` in a child process (so the world and the
client each have their own interpreter and the client is measured alone), and prints:
- load: time until the child serves both APIs (every pod is bound and started by then);
- list all pods through `adapters.kubernetes.KubeClient.list_pods()` (target: <= 2 s), with
  the client's CPU time and the server's CPU time over the same call; then all workers
  through `adapters.vpsie.VpsieClient`;
- requests per second, sequentially for `--seconds` each: Kubernetes `get_node`, VPSie
  `list_node_groups`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0.0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def serve(scenario: Path, state_dir: Path) -> tuple[asyncio.subprocess.Process,
                                                          dict[str, str]]:
    """`vpsie-rebalancer simulate` in a child; its `key: value` lines up to `ready`."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "simulate", "--scenario", str(scenario),
        "--state-dir", str(state_dir), "--speed", "1000", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    info: dict[str, str] = {}
    while line := (await child.stdout.readline()).decode():
        key, _, value = line.partition(":")
        info[key] = value.strip()
        if key == "ready":
            return child, info
    await child.wait()
    raise SystemExit(f"the simulator exited ({child.returncode}) before it was ready")


async def main(nodes: int, pods: int, seconds: float, runs: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "scenario.yaml"
        scenario.write_text(scenario_text(nodes, pods))
        started = time.perf_counter()
        child, info = await serve(scenario, Path(tmp) / "state")
        try:
            print(f"load: {nodes} nodes, {pods} pods: serving after "
                  f"{time.perf_counter() - started:.2f} s (separate process)", flush=True)
            await measure(info, seconds, runs, child.pid)
        finally:
            child.send_signal(signal.SIGTERM)
            await child.wait()
    return 0


async def measure(info: dict[str, str], seconds: float, runs: int, server_pid: int) -> None:
    async with KubeClient.from_kubeconfig(info["kubeconfig"]) as kube:
        best = float("inf")
        for attempt in range(1, runs + 1):
            server0, cpu0 = cpu_seconds(server_pid), time.process_time()
            t0 = time.perf_counter()
            listed = await kube.list_pods()
            took = time.perf_counter() - t0
            cpu, server = time.process_time() - cpu0, cpu_seconds(server_pid) - server0
            best = min(best, took)
            bound = sum(1 for p in listed if p.node_name)
            print(f"kubernetes list_pods (all, run {attempt}): {len(listed)} pods "
                  f"({bound} bound) in {took:.2f} s; client CPU {cpu:.2f} s, "
                  f"server CPU {server:.2f} s")
            del listed
        verdict = "ok" if best <= 2.0 else "OVER the 2 s target"
        print(f"kubernetes list_pods: best of {runs}: {best:.2f} s ({verdict})")
        names = [n.name for n in await kube.list_nodes()]
        pick = random.Random(0)
        await rate("kubernetes get_node", seconds, lambda: kube.get_node(pick.choice(names)))

    async with VpsieClient.from_file(
        Path(info["vpsie-credentials"]),
        clock=RealClock(),
        rng=random.Random(0),
        rate_limit_per_min=None,
    ) as vpsie:
        cluster = info["cluster"]
        t0 = time.perf_counter()
        workers = await vpsie.list_workers(cluster)
        print(f"vpsie list_workers: {len(workers)} workers in {time.perf_counter() - t0:.2f} s")
        await rate("vpsie list_node_groups", seconds, lambda: vpsie.list_node_groups(cluster))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.nodes, args.pods, args.seconds, args.runs)))
