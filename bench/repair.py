"""How fast is a lost node replaced, against the fastest it could be?

    python bench/repair.py [--speed 100] [--target 1.15]

For each world, the real daemon (`vpsie-rebalancer run`, a subprocess on the simulator's
timeline) watches a group of N workers; the simulated VPSie then loses K of them at once, their
kubelets falling silent (Ready=Unknown) while the VMs run. Measured: simulated seconds from the
loss until the last of the K replacement Nodes is Ready (the repairs' `NodeJoined` in the event
log). Lower bound: the toleration (`readyUnknownAfter`, the default 10 minutes) plus the
provisioning time (the world's boot delay): no repair may start before the toleration, and no
worker boots faster. Printed per world with the ratio; exits 1 when a ratio exceeds --target.

Worlds: one lost of six, and three lost of ten (40% of ten allows four at once). The daemon
runs with the default health-check interval (30 s) and tolerations.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from statemachine import events as ev  # noqa: E402
from statemachine.plan import Opportunity  # noqa: E402
from tests.crash.invariants import read_log  # noqa: E402
from tests.crash.rehearsal import config_text, rehearsal, scenario_text  # noqa: E402
from tests.service.daemon_process import DaemonProcess  # noqa: E402

TOLERATION_S = 600.0  # RepairPolicy.ready_unknown_s, the default
BOOT_S = 180  # the simulated VPSie's provisioning time
WORLDS = (("1 of 6", 6, 1), ("3 of 10", 10, 3))


def _ts(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


async def one(directory: Path, workers: int, lost: int, speed: float) -> tuple[float, int]:
    """(simulated seconds from the loss to the last replacement Ready, repairs recorded)."""
    scenario = scenario_text(
        workers=workers, boot_delay_s=BOOT_S, max_workers=workers + lost + 2, web_replicas=4
    )
    async with rehearsal(directory, scenario=scenario, fork=False, speed=speed) as reh:
        reh.write_config(
            config_text(listen=f"unix:{reh.socket}", extra='minSavingMonthly = "100000"')
        )
        daemon = DaemonProcess(reh, identity="bench")
        await daemon.start()

        async def leads() -> bool:
            repair = (await daemon.status()).get("repair") or {}
            return bool(repair.get("checked_at"))

        await daemon.until("the daemon leads", leads, timeout_s=60)
        victims = sorted(w.hostname for w in reh.sim.vpsie.workers)[:lost]
        lost_at = reh.sim.clock.now()
        for host in victims:
            reh.sim.vpsie.lose_worker(host, "kubelet")

        async def replaced() -> bool:
            nodes = await reh.reader.nodes()
            return (
                not set(victims) & set(nodes)
                and len(nodes) == workers
                and all(n.ready for n in nodes.values())
            )

        limit = (TOLERATION_S + BOOT_S) * 3 / speed + 60
        await daemon.until("every lost node replaced", replaced, timeout_s=limit)
        code = await daemon.stop()
        if code != 0:
            raise SystemExit(f"the daemon exited {code}; log: {daemon.log_path}")
        log = await read_log(reh.db_path)
        joined = []
        repairs = 0
        for plan in log.state.plans.values():
            if plan.spec.opportunity is not Opportunity.REPAIR:
                continue
            repairs += len(plan.spec.replacements)
            joined += [
                _ts(e.at)
                for _, e in log.order
                if isinstance(e, ev.NodeJoined) and e.plan_id == plan.plan_id
            ]
        if len(joined) != lost or repairs != lost:
            raise SystemExit(f"expected {lost} repairs, the log shows {repairs} ({len(joined)} "
                             "joined)")
        return max(joined) - lost_at, repairs


async def main_async(args: argparse.Namespace) -> int:
    lower = TOLERATION_S + BOOT_S
    print(f"lower bound: toleration {TOLERATION_S:.0f} s + provisioning {BOOT_S} s = {lower:.0f} s"
          f" (simulated, at {args.speed:g}x)")
    print(f"{'world':<8} {'measured s':>10} {'ratio':>6}  verdict")
    missed = 0
    base = Path(tempfile.mkdtemp(prefix="bench-repair-"))
    try:
        for label, workers, lost in WORLDS:
            started = time.perf_counter()
            took, _ = await one(base / label.replace(" ", "-"), workers, lost, args.speed)
            ratio = took / lower
            ok = ratio <= args.target
            missed += not ok
            print(f"{label:<8} {took:>10.1f} {ratio:>6.3f}  {'ok' if ok else 'MISSED'} "
                  f"(target <= {args.target}; {time.perf_counter() - started:.1f} s real)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--speed", type=float, default=100.0)
    parser.add_argument("--target", type=float, default=1.15)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
