"""How fast and how lean a plan runs: makespan against its lower bound, peak memory, API calls.

    python bench/execute.py [--speed 100] [--nodes 50] [--quick]

1. Makespan, at 20x (at 100x every real millisecond of the daemon's own work, an fsync, a
   JSON parse, weighs a tenth of a simulated second). An 8-node world (workers boot in 150
   simulated seconds, pods start in 5), a rolling plan with batches of 2 run 2 at a time, the
   real daemon as a process. The makespan is PlanExecutionStarted -> PlanCompleted in the log
   (the daemon's clock is the simulator's). The lower bound is what the world allows at best
   with the plan's own batches and concurrency: per batch, the boot time when the batch adds
   nodes, plus the least time its drains can take: the pods the log shows drained, each
   budget allowing k evictions at once needing ceil(pods / k) pod starts (the next eviction
   waits until the previous pod's replacement is Ready), budgets in parallel; nothing for API
   calls or polling. Target: makespan <= 1.10 x the lower bound.
2. Peak memory. A 50-node world rebalanced by one daemon process (started as a plain
   `python -m cli.main run`, no fork), its VmHWM read from /proc while it runs. Target
   <= 100 MB.
3. Kubernetes API requests per replaced node, counted by the recording proxy in front of the
   simulated API (tests/crash/kubeproxy.py) for the 50-node run: everything the daemon asked,
   leases and Events included.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from statemachine import events as ev  # noqa: E402
from tests.crash.invariants import check, read_log  # noqa: E402
from tests.crash.kubeproxy import _matches  # noqa: E402
from tests.crash.rehearsal import Rehearsal, rehearsal, scenario_text  # noqa: E402

POD_START_S = 5.0  # the rehearsal scenario's podStartDelaySeconds


def _seconds(start: str, end: str) -> float:
    a = datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    return (b - a).total_seconds()


async def _allowances(reh: Rehearsal) -> dict[str, tuple[str, dict[str, Any], int]]:
    """PDB name -> (namespace, selector, disruptions allowed at the start, at least 1)."""
    body = await reh.reader.get("/apis/policy/v1/poddisruptionbudgets")
    return {
        pdb["metadata"]["name"]: (
            pdb["metadata"]["namespace"],
            pdb.get("spec", {}).get("selector") or {},
            max(1, int(pdb.get("status", {}).get("disruptionsAllowed", 1))),
        )
        for pdb in body.get("items", [])
    }


def _drain_floor(drained: list[str], pdbs: dict[str, tuple[str, dict[str, Any], int]]) -> float:
    """The least time draining these pods ("ns/name", all of one batch) can take.

    Each evicted pod's replacement needs a pod start before its budget allows the next
    eviction, so a budget allowing k at once needs ceil(pods / k) pod starts; budgets proceed
    in parallel. Pods are matched to budgets by their Deployment (the scenario labels pods
    app=<deployment>).
    """
    if not drained:
        return 0.0
    worst = 1
    for namespace, selector, allowed in pdbs.values():
        count = 0
        for ref in drained:
            ns, name = ref.split("/", 1)
            labels = {"app": name.rsplit("-", 2)[0]}
            if ns == namespace and _matches(selector, labels):
                count += 1
        worst = max(worst, -(-count // allowed))
    return worst * POD_START_S


async def makespan(speed: float, base: Path) -> dict[str, Any]:
    boot = 150
    scenario = scenario_text(workers=8, boot_delay_s=boot, web_replicas=8, api_replicas=6)
    async with rehearsal(base / "makespan", scenario=scenario, speed=speed, seed=5) as reh:
        reh.configure(strategy="rolling", max_concurrent=2, batch_size=2)
        pdbs = await _allowances(reh)
        run = await reh.run_daemon(timeout_s=300)
        log = await read_log(reh.db_path)
    assert run.returncode == 0, f"daemon exited {run.returncode}: {run.log_path}"
    plan = next(p for p in log.state.plans.values() if p.started_at)
    spec = plan.spec
    assert plan.status.value == "completed", f"plan ended {plan.status.value}"
    span = _seconds(plan.started_at, plan.finished_at)
    by_id = {r.replacement_id: r for r in spec.replacements}
    drained: dict[str, tuple[str, ...]] = {}
    for _, event in log.order:
        if isinstance(event, ev.DrainStarted):
            drained[event.replacement_id] = event.pods
    lower = 0.0
    per = max(1, spec.max_concurrent)
    for batch in spec.batches:
        reps = [by_id[rid] for rid in batch]
        waves = -(-len(reps) // per)
        adds = any(r.new_size_id is not None for r in reps)
        pods = [p for rid in batch for p in drained.get(rid, ())]
        lower += waves * (boot if adds else 0.0) + _drain_floor(pods, pdbs)
    steps = [e for _, e in log.order if isinstance(e, ev.NodeJoined)]
    return {
        "strategy": spec.strategy.value,
        "replacements": len(spec.replacements),
        "batches": len(spec.batches),
        "max_concurrent": spec.max_concurrent,
        "makespan_s": span,
        "lower_bound_s": lower,
        "ratio": span / lower if lower else float("nan"),
        "joined": len(steps),
    }


def _vm_hwm_kb(pid: int) -> int | None:
    """The process's peak resident set (VmHWM, kB), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def _watch_rss(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        kb = _vm_hwm_kb(pid)
        if kb is None:
            return
        peak[0] = max(peak[0], kb)
        await asyncio.sleep(0.05)


async def big_run(speed: float, nodes: int, base: Path) -> dict[str, Any]:
    scenario = scenario_text(
        workers=nodes,
        max_workers=nodes * 3,
        web_replicas=nodes * 2,
        web_min_available="90%",
        api_replicas=nodes,
        api_max_unavailable="10%",
        boot_delay_s=60,
    )
    async with rehearsal(base / "big", scenario=scenario, speed=speed, seed=6, fork=False) as reh:
        reh.configure(
            strategy="rolling", max_concurrent=5, batch_size=5, min_nodes=3, drain_timeout="600s"
        )
        env = {k: v for k, v in __import__("os").environ.items() if k != "NOTIFY_SOCKET"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            *reh.daemon_argv(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=str(ROOT),
            env=env,
        )
        stop = asyncio.Event()
        peak = [0]
        watcher = asyncio.create_task(_watch_rss(proc.pid, stop, peak))
        started = time.perf_counter()
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
        real = time.perf_counter() - started
        stop.set()
        await watcher
        await reh.settle(30)
        await reh.sampler.sample()
        after = await reh.reader.picture()
        log = await read_log(reh.db_path)
        verdict = check(reh, log, after, report=None)
        requests = dict(reh.proxy.witness.requests)
    total = sum(requests.values())
    return {
        "returncode": proc.returncode,
        "nodes": nodes,
        "replaced": verdict.replaced,
        "plans": verdict.plans,
        "invariants_ok": verdict.ok,
        "violations": verdict.explain() if not verdict.ok else "",
        "peak_rss_mb": peak[0] / 1024,
        "real_s": real,
        "requests": total,
        "per_node": total / verdict.replaced if verdict.replaced else float("nan"),
        "top": sorted(requests.items(), key=lambda kv: -kv[1])[:8],
        "report": out.decode()[-200:],
    }


async def main_async(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="bench-execute-"))
    print(
        f"makespan at {args.makespan_speed:g}x, the 50-node run at {args.speed:g}x; the daemon "
        "polls every 2 s (simulated)"
    )
    m = await makespan(args.makespan_speed, base)
    print()
    print("1. makespan (rolling, 8 nodes, batches of 2, 2 at a time, boot 150 s)")
    print(
        f"   {m['replacements']} replacements in {m['batches']} batches: makespan "
        f"{m['makespan_s']:.0f} s, lower bound {m['lower_bound_s']:.0f} s, "
        f"ratio {m['ratio']:.3f} (target <= 1.10)"
    )
    nodes = 20 if args.quick else args.nodes
    b = await big_run(args.speed, nodes, base)
    print()
    print(f"2. peak memory, {nodes}-node rebalance (one daemon process)")
    print(
        f"   VmHWM {b['peak_rss_mb']:.1f} MB (target <= 100 MB); {b['replaced']} nodes "
        f"replaced in {b['real_s']:.1f} s real; plans {b['plans']}; exit {b['returncode']}"
    )
    if not b["invariants_ok"]:
        print(f"   invariants: {b['violations']}")
    print()
    print("3. Kubernetes API requests")
    print(
        f"   {b['requests']} requests for {b['replaced']} replaced nodes: "
        f"{b['per_node']:.1f} per replaced node"
    )
    for what, count in b["top"]:
        print(f"     {count:6d}  {what}")
    ok = m["ratio"] <= 1.10 and b["peak_rss_mb"] <= 100 and b["invariants_ok"]
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speed", type=float, default=100.0, help="for the 50-node run")
    # Every real millisecond the daemon spends (an fsync, a JSON parse) is `speed` ms of
    # simulated time: the makespan is measured slower so that it shows the plan, not the CPU.
    parser.add_argument("--makespan-speed", type=float, default=20.0)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="20 nodes instead of 50")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
