"""A bad day: the daemon against a faulty VPSie, a worker that never turns Ready, and a
PodDisruptionBudget that never allows an eviction. Plans complete or roll back cleanly;
nothing is orphaned, nothing is left cordoned, and every other invariant holds.

The daemon runs as a separate process (`run --once`) against the simulator; the faults are the
simulator's own (scenario `faults:`), so the daemon cannot tell them from a real outage.
A client-side timeout takes real seconds, so "timeouts" are the simulator's 504 answers and an
outage (503 to everything for a simulated minute, from the first worker added), which the
client and the executor must ride out the same way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.crash.invariants import check, read_log
from tests.crash.rehearsal import Rehearsal, rehearsal, scenario_text

FLAKY_VPSIE = """\
  faults:
    rules:
      - {service: vpsie, errorRate: 0.10, errorStatus: 503}
      - {service: vpsie, errorRate: 0.05, errorStatus: 504}
      - {service: vpsie, throttleRate: 0.05, retryAfterSeconds: 2}
      - {service: vpsie, errorBodyRate: 0.03}
"""

# Workers are named <cluster>-<group>-<sequence>; the scenario's four are 0001-0004, so the
# first worker the daemon adds is 0005.
FIRST_NEW_WORKER_NEVER_READY = """\
  faults:
    neverReady: ["rh-*-0005"]
"""

WEB_NEVER_EVICTABLE = """\
  faults:
    evictionBlocked: ["shop/app=web"]
"""


async def outage_once_a_worker_is_added(reh: Rehearsal, seconds: float) -> None:
    """VPSie answers 503 to everything for `seconds` (simulated), starting mid-plan."""
    while len(reh.sim.vpsie.workers) <= len(reh.before.workers):
        await reh.sim.clock.sleep(1)
    reh.sim.faults.set_down("vpsie", True)
    await reh.sim.clock.sleep(seconds)
    reh.sim.faults.set_down("vpsie", False)


async def finish(reh: Rehearsal) -> tuple[dict[str, str], int]:
    run = await reh.run_daemon(timeout_s=100)
    assert run.returncode == 0, f"the daemon exited {run.returncode}; log: {run.log_path}"
    await reh.settle(30)
    await reh.sampler.sample()
    after = await reh.reader.picture()
    log = await read_log(reh.db_path)
    verdict = check(reh, log, after, report=run.report())
    assert verdict.ok, verdict.explain()
    return verdict.plans, verdict.replaced


async def test_vpsie_errors_throttling_and_an_outage_the_plan_still_completes(
    tmp_path: Path,
) -> None:
    async with rehearsal(tmp_path, scenario=scenario_text(faults=FLAKY_VPSIE), seed=21) as reh:
        reh.configure(strategy="rolling", max_concurrent=2, batch_size=2)
        outage = asyncio.create_task(outage_once_a_worker_is_added(reh, 60))
        plans, replaced = await finish(reh)
        assert outage.done()
    assert "completed" in plans.values(), plans
    assert replaced > 0


async def test_a_worker_that_never_turns_ready_is_rolled_back_and_deleted(
    tmp_path: Path,
) -> None:
    scenario = scenario_text(faults=FIRST_NEW_WORKER_NEVER_READY)
    async with rehearsal(tmp_path, scenario=scenario, seed=22) as reh:
        reh.configure(strategy="surge", provision_timeout="300s")
        plans, _ = await finish(reh)
        after = await reh.reader.picture()
    assert "rolled_back" in plans.values() or "failed" in plans.values(), plans
    assert not any(w.hostname.endswith("-0005") for w in after.workers.values())
    assert not any(name.endswith("-0005") for name in after.nodes)


async def test_a_pdb_that_never_allows_rolls_back_without_forcing_a_pod(tmp_path: Path) -> None:
    scenario = scenario_text(faults=WEB_NEVER_EVICTABLE)
    async with rehearsal(tmp_path, scenario=scenario, seed=23) as reh:
        reh.configure(strategy="rolling", drain_timeout="120s")
        plans, _ = await finish(reh)
        refused = [e for e in reh.proxy.witness.evictions if e.status == 429]
        deployments = await reh.reader.deployments()
    assert "rolled_back" in plans.values() or "failed" in plans.values(), plans
    assert refused, "the daemon never tried to evict a web pod"
    assert reh.proxy.witness.pod_deletes == []
    assert deployments["shop/web"] == (4, 4)
