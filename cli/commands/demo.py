"""`vpsie-rebalancer demo`: a whole rebalance of a simulated cluster, in under a minute.

Starts the simulator with the built-in scenario (simulator/scenarios/demo.yaml: a dozen
oversized workers, Deployments with PodDisruptionBudgets) at a high speed, writes a
configuration and a fresh event log into the state directory (default ./demo-state, kept so the
audit can be read afterwards), runs the real daemon service against both simulated APIs over
HTTP on the simulator's timeline, prints the status page's address (the control API on a free
loopback port) and one line per state change, and ends with a summary: nodes replaced, the
saving, the duration (simulated and real), pods lost (Ready replicas of every Deployment before
and after; it should say zero) and the commands that show the audit and its page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.config import Config

HELP = "rebalance a simulated cluster end to end and show what happened (no real cloud)"

STRATEGIES = ("rolling", "surge", "blue-green")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--speed",
        type=float,
        default=40.0,
        help="simulated seconds per real second (default 40: about 20 s for the whole demo)",
    )
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default="rolling", help="replacement strategy"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("demo-state"),
        metavar="DIR",
        help="where the event log, configuration and simulator files go (default ./demo-state)",
    )
    parser.add_argument("--scenario", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")


def main(args: argparse.Namespace) -> int:
    import asyncio

    from simulator.scenario import ScenarioError

    if not args.speed > 0:
        print(f"demo: --speed must be positive, got {args.speed}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_demo(args))
    except ScenarioError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # the reader of stdout went away: cli.main ends quietly
    except OSError as exc:
        print(f"demo: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _config(cluster: str, strategy: str, database: Path) -> str:
    return f"""\
# Written by `vpsie-rebalancer demo`: the daemon against the simulated cluster.
cluster = "{cluster}"
kubeconfig = "sim/kubeconfig"
vpsie_credentials = "sim/vpsie.json"
database = "{database.name}"
# A free loopback port: the status page's address is printed when the daemon starts.
listen = "127.0.0.1:0"
analysis_interval = "10m"

[[node_groups]]
name = "general"
strategy = "{strategy}"
maxConcurrent = 3
batchSize = 3
drainTimeout = "10m"
provisionTimeout = "15m"
cooldownPeriod = "1h"
requireApproval = false
minHealthyPercent = 75
minNodes = 3
soakTime = "60s"
# The 4 and 2 vCPU sizes only: the demo shows nodes replaced by cheaper ones (left to
# itself the planner may prefer fewer nodes of today's size, which is no less valid).
allowedSizes = ["k8s-4c-8g", "k8s-4c-16g", "k8s-2c-4g"]
"""


def _bearer(kubeconfig: Path) -> str:
    import yaml

    token: str = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    return token


async def _ready_replicas(kube_url: str, kubeconfig: Path) -> dict[str, tuple[int, int]]:
    """Ready and desired replicas of every Deployment, read over the Kubernetes API."""
    import aiohttp
    import orjson

    token = _bearer(kubeconfig)
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{kube_url}/apis/apps/v1/deployments",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        body: dict[str, Any] = orjson.loads(await resp.read())
    out: dict[str, tuple[int, int]] = {}
    for dep in body.get("items", []):
        meta = dep["metadata"]
        out[f"{meta['namespace']}/{meta['name']}"] = (
            int(dep.get("status", {}).get("readyReplicas", 0)),
            int(dep.get("spec", {}).get("replicas", 0)),
        )
    return out


async def _nodes_without_worker(kube_url: str, kubeconfig: Path, credentials: Path) -> list[str]:
    """Node objects (Kubernetes API) whose VPSie worker (VPSie API) no longer exists; hostnames
    compared lower-cased, as VPSie lists them in another case."""
    import random

    import aiohttp
    import orjson

    from adapters.vpsie import VpsieClient
    from daemon.clock import SystemClock

    token = _bearer(kubeconfig)
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{kube_url}/api/v1/nodes", headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        body: dict[str, Any] = orjson.loads(await resp.read())
    async with VpsieClient.from_file(
        credentials, clock=SystemClock(), rng=random.Random(0), rate_limit_per_min=None
    ) as vpsie:
        cluster = vpsie.settings.cluster_identifier
        hosts = {w.hostname.lower() for w in await vpsie.list_workers(cluster)}
    names = [node["metadata"]["name"] for node in body.get("items", [])]
    return sorted(n for n in names if n.lower() not in hosts)


def _prepare(state_dir: Path) -> Path:
    resolved = state_dir.resolve()
    resolved.mkdir(parents=True, exist_ok=True)
    return resolved


def _write_config(path: Path, text: str) -> Config:
    from daemon.config import load_config

    path.write_text(text)
    return load_config(path)


async def _demo(args: argparse.Namespace) -> int:
    import logging
    import time
    from datetime import UTC, datetime
    from decimal import Decimal

    import simulator
    from cli.progress import ProgressPrinter, elapsed, line_writer, money
    from daemon.clock import ScaledClock
    from daemon.service.lifecycle import Service
    from simulator.serve import start_simulator

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="%(levelname)s %(message)s")
    scenario = args.scenario or Path(simulator.__file__).parent / "scenarios" / "demo.yaml"
    state_dir = _prepare(args.state_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    database = state_dir / f"events-{stamp}.db"
    speed = float(args.speed)
    real_start = time.perf_counter()
    print(f"Starting the simulated cluster ({scenario.name}, {speed:g}x real time) ...")
    async with start_simulator(
        scenario, speed=speed, state_dir=state_dir / "sim", seed=args.seed
    ) as sim:
        config_path = state_dir / "config.toml"
        text = _config(
            sim.scenario.cluster.identifier, args.strategy, database
        )
        config = _write_config(config_path, text)
        await sim.clock.sleep(20)  # pods start and PDBs report what they allow
        before = await _ready_replicas(sim.kube_url, sim.kubeconfig_path)
        workers_before = len(sim.vpsie.workers)
        sim_start = sim.clock.now()
        clock = ScaledClock(speed, start=sim.clock.now())
        # The daemon's console lines: once stdout's reader has gone they stop, the demo not.
        say = line_writer(sys.stdout)
        progress = ProgressPrinter(clock, write=say)
        print(
            f"{workers_before} workers, {sum(r for _, r in before.values())} replicas in "
            f"{len(before)} Deployments; strategy {args.strategy}. The daemon starts:\n"
        )
        service = Service(
            config,
            config_path=config_path,
            clock=clock,
            once=True,
            observers=(progress.on_event,),
            lease_duration_s=60,
            poll_interval_s=2.0,
            on_listening=lambda address: say(f"Status page while the demo runs: {address}/\n"),
        )
        code = await service.run()
        sim_end = sim.clock.now()
        after = before
        for _ in range(60):  # give evicted pods' replacements time to turn Ready
            after = await _ready_replicas(sim.kube_url, sim.kubeconfig_path)
            if all(ready >= want for ready, want in after.values()):
                break
            await sim.clock.sleep(5)
        workers_after = len(sim.vpsie.workers)
        orphans = await _nodes_without_worker(
            sim.kube_url, sim.kubeconfig_path, sim.vpsie_credentials_path
        )
    real_s = time.perf_counter() - real_start
    report = service.report()["plans"]
    executed = {pid: p for pid, p in report.items() if p["state"] not in ("rejected",)}
    replaced = sum(int(p["replacements_done"]) for p in executed.values())
    saving = sum(
        (Decimal(p["realised_monthly_saving"] or "0") for p in executed.values()), Decimal(0)
    )
    lost = sum(max(0, before[d][0] - after.get(d, (0, 0))[0]) for d in before)
    print()
    print("Summary")
    if not executed:
        print("  no plan ran; the reasons are in the log and the status below")
    for pid, plan in executed.items():
        print(f"  plan {pid}: {plan['state']} ({plan['strategy']})")
    print(f"  nodes replaced:  {replaced} (workers {workers_before} -> {workers_after})")
    print(f"  saving:          {money(saving)}/month")
    print(f"  duration:        {elapsed(sim_end - sim_start)} simulated, {real_s:.1f} s real")
    deployments = ", ".join(f"{d} {after[d][0]}/{after[d][1]}" for d in sorted(after))
    print(f"  pods lost:       {lost} (Ready replicas after: {deployments})")
    left = f" ({', '.join(orphans)})" if orphans else ""
    print(f"  Node objects without a worker: {len(orphans)}{left}")
    first = next(iter(executed), None)
    print()
    print("The audit trail, decision by decision:")
    if first is not None:
        print(f"  vpsie-rebalancer audit --db {database} --plan {first}")
    else:
        print(f"  vpsie-rebalancer audit --db {database}")
    print("The same as the status page, read-only:")
    print(f"  vpsie-rebalancer audit --db {database} --serve")
    return code if lost == 0 and not orphans else 1
