"""`vpsie-rebalancer simulate`: serve a simulated VPSie + Kubernetes world in the foreground.

Prints one `key: value` line per endpoint and file, then `ready`, and serves until SIGTERM or
SIGINT (exit 0). A scenario that cannot be loaded is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.scenario import Scenario

HELP = "Serve a simulated VPSie and Kubernetes API from a scenario file, until SIGTERM/SIGINT."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        required=True,
        type=Path,
        metavar="FILE",
        help="scenario YAML (see docs/simulator.md)",
    )
    parser.add_argument(
        "--state-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="where to write kubeconfig and vpsie.json (created, mode 0700)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help="simulated seconds per real second (default 1)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of every random choice and fault (default 0)",
    )
    parser.add_argument(
        "--kube-port",
        type=int,
        default=0,
        metavar="PORT",
        help="Kubernetes API port on 127.0.0.1 (default: any free port)",
    )
    parser.add_argument(
        "--vpsie-port",
        type=int,
        default=0,
        metavar="PORT",
        help="VPSie API port on 127.0.0.1 (default: any free port)",
    )


def main(args: argparse.Namespace) -> int:
    import asyncio

    from simulator.scenario import ScenarioError, load_scenario

    prog = "vpsie-rebalancer simulate"
    if not args.speed > 0:
        print(f"{prog}: --speed must be positive, got {args.speed}", file=sys.stderr)
        return 2
    for flag, port in (("--kube-port", args.kube_port), ("--vpsie-port", args.vpsie_port)):
        if not 0 <= port <= 65535:
            print(f"{prog}: {flag} must be 0..65535, got {port}", file=sys.stderr)
            return 2
    try:
        scenario = load_scenario(args.scenario)
        return asyncio.run(_serve(args, scenario))
    except ScenarioError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: cannot serve: {exc.strerror or exc}", file=sys.stderr)
        return 1


async def _serve(args: argparse.Namespace, scenario: Scenario) -> int:
    import asyncio
    import signal

    from simulator.serve import start_simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with start_simulator(
        scenario,
        speed=args.speed,
        state_dir=args.state_dir,
        seed=args.seed,
        kube_port=args.kube_port,
        vpsie_port=args.vpsie_port,
    ) as sim:
        print(f"kubernetes: {sim.kube_url}")
        print(f"vpsie: {sim.vpsie_url}{sim.vpsie_prefix}")
        print(f"kubeconfig: {sim.kubeconfig_path}")
        print(f"vpsie-credentials: {sim.vpsie_credentials_path}")
        print(f"cluster: {scenario.cluster.identifier}")
        print(
            f"ready: speed {args.speed:g}x, seed {args.seed}; SIGTERM or Ctrl-C stops", flush=True
        )
        await stop.wait()
    print("stopped", flush=True)
    return 0
