"""The daemon SIGKILLed at seeded random points through whole plans still leaves the world right.

For each strategy, and once through a rollback (a world whose api pods can never be evicted),
the real daemon (`vpsie-rebalancer run --once`, a separate process) runs against the simulator
and kills itself right after its Nth appended event, or right after the side-effect call that
follows it (`VPSIE_REBALANCER_CRASH_AT`), N drawn from a seeded random generator; it is
restarted until a run ends by itself. Then every invariant of ARCHITECTURE.md is checked from
the log, the world and the daemon's last report (tests/crash/invariants.py).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.crash.invariants import check, read_log
from tests.crash.rehearsal import Rehearsal, rehearsal, scenario_text

MAX_RUNS = 60
# A world where every plan must roll back: the api pods can never be evicted.
API_NEVER_EVICTABLE = '  faults:\n    evictionBlocked: ["shop/app=api"]\n'


async def kill_until_done(reh: Rehearsal, rng: random.Random, *, max_n: int) -> int:
    """Run the daemon with random crash points until a run finishes; return the kills."""
    kills = 0
    for _ in range(MAX_RUNS):
        n = rng.randint(1, max_n)
        crash = f"{n}:after-call" if rng.random() < 0.5 else str(n)
        run = await reh.run_daemon(crash_at=crash)
        if run.killed:
            kills += 1
            continue
        assert run.returncode == 0, f"run {len(reh.runs)} exited {run.returncode}: {run.log_path}"
        return kills
    raise AssertionError(f"no run finished in {MAX_RUNS} attempts; logs in {reh.dir}")


@pytest.mark.parametrize(
    ("strategy", "seed"),
    [("rolling", 11), ("surge", 12), ("blue-green", 13)],
)
async def test_killed_at_random_points_every_invariant_holds(
    tmp_path: Path, strategy: str, seed: int
) -> None:
    rng = random.Random(seed)
    async with rehearsal(tmp_path, seed=seed) as reh:
        reh.configure(strategy=strategy, max_concurrent=2, batch_size=2)
        kills = await kill_until_done(reh, rng, max_n=8)
        await reh.settle(30)
        await reh.sampler.sample()
        after = await reh.reader.picture()
        log = await read_log(reh.db_path)
        verdict = check(reh, log, after, report=reh.runs[-1].report())

    print(f"{strategy}: {kills} kills, {len(reh.runs)} runs, plans {verdict.plans}")
    assert verdict.ok, verdict.explain()
    assert kills >= 10, f"only {kills} kills happened"
    executed = [s for s in verdict.plans.values() if s in ("completed", "rolled_back")]
    assert executed, f"no plan ran: {verdict.plans}"
    if "completed" in executed:
        assert verdict.replaced > 0
        assert verdict.saving > 0


async def test_killed_while_rolling_back_every_invariant_holds(tmp_path: Path) -> None:
    rng = random.Random(14)
    scenario = scenario_text(faults=API_NEVER_EVICTABLE)
    async with rehearsal(tmp_path, scenario=scenario, seed=14) as reh:
        # The drain timeout counts only time a daemon was acting (a few seconds per run here).
        reh.configure(strategy="blue-green", max_concurrent=2, batch_size=2, drain_timeout="45s")
        kills = await kill_until_done(reh, rng, max_n=8)
        await reh.settle(30)
        await reh.sampler.sample()
        after = await reh.reader.picture()
        log = await read_log(reh.db_path)
        verdict = check(reh, log, after, report=reh.runs[-1].report())

    print(f"blue-green, rolling back: {kills} kills, plans {verdict.plans}")
    assert verdict.ok, verdict.explain()
    assert kills >= 10, f"only {kills} kills happened"
    assert "rolled_back" in verdict.plans.values(), verdict.plans
    assert after.workers.keys() == reh.before.workers.keys()
