"""Hundreds of SIGKILLs through whole plans; how many times was an invariant broken?

    python bench/crash.py [--kills 500] [--seed 1] [--speed 100] [--max-n 8]

Repeats the crash suite's rehearsal (tests/crash): a simulated world, the real daemon as a
separate process killing itself at seeded random points (`VPSIE_REBALANCER_CRASH_AT=N` or
`N:after-call`, N drawn from 1..--max-n), restarted until a run finishes; five kinds of world
in turn, a fresh one each time, until at least --kills kills happened: rolling, surge and
blue-green plans that complete, and two that must roll back (api pods that can never be
evicted, under rolling; a new worker that never turns Ready, under surge).
After each world the invariants of ARCHITECTURE.md are checked (tests/crash/invariants.py).
Prints, per invariant, how many violations were found (target: zero), the kills per strategy,
the plan outcomes and the time taken.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.crash.invariants import INVARIANTS, check, read_log  # noqa: E402
from tests.crash.rehearsal import rehearsal, scenario_text  # noqa: E402
from tests.crash.test_crash_kills import API_NEVER_EVICTABLE, kill_until_done  # noqa: E402

NEW_WORKER_NEVER_READY = '  faults:\n    neverReady: ["rh-*-0006"]\n'
# (label, strategy, faults): plans that complete, and plans that must roll back.
WORLDS = (
    ("rolling", "rolling", ""),
    ("surge", "surge", ""),
    ("blue-green", "blue-green", ""),
    ("rolling/pdb-stuck", "rolling", API_NEVER_EVICTABLE),
    ("surge/never-ready", "surge", NEW_WORKER_NEVER_READY),
)


async def bench(kills_wanted: int, seed: int, speed: float, max_n: int, keep: bool) -> int:
    rng = random.Random(seed)
    violations: Counter[str] = Counter({name: 0 for name in INVARIANTS})
    kills_by: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    examples: list[str] = []
    worlds = 0
    replaced = 0
    started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="bench-crash-"))
    while sum(kills_by.values()) < kills_wanted:
        label, strategy, faults = WORLDS[worlds % len(WORLDS)]
        world_seed = rng.getrandbits(32)
        directory = base / f"world-{worlds:03d}-{label.replace('/', '-')}"
        scenario = scenario_text(faults=faults)
        async with rehearsal(directory, scenario=scenario, seed=world_seed, speed=speed) as reh:
            reh.configure(
                strategy=strategy,
                max_concurrent=2,
                batch_size=2,
                drain_timeout="120s",
                provision_timeout="300s",
            )
            kills = await kill_until_done(reh, random.Random(world_seed), max_n=max_n)
            await reh.settle(30)
            await reh.sampler.sample()
            after = await reh.reader.picture()
            log = await read_log(reh.db_path)
            verdict = check(reh, log, after, report=reh.runs[-1].report())
        worlds += 1
        kills_by[label] += kills
        replaced += verdict.replaced
        for status in verdict.plans.values():
            outcomes[status] += 1
        for name, found in verdict.violations.items():
            violations[name] += len(found)
            examples += [f"{directory}: {name}: {p}" for p in found[:2]]
        if verdict.ok and not keep:
            shutil.rmtree(directory, ignore_errors=True)
        total = sum(kills_by.values())
        print(
            f"  world {worlds:3d} {label:<18} kills {kills:3d} (total {total:4d}) "
            f"replaced {verdict.replaced} violations {sum(verdict.counts().values())} "
            f"[{time.perf_counter() - started:6.1f} s]",
            flush=True,
        )
    elapsed = time.perf_counter() - started
    print()
    print(f"kills: {sum(kills_by.values())} in {worlds} worlds ({dict(kills_by)})")
    print(f"plans: {dict(outcomes)}; nodes replaced: {replaced}")
    print(f"time: {elapsed:.1f} s ({elapsed / max(1, sum(kills_by.values())):.2f} s per kill)")
    print()
    print("violations per invariant (target 0):")
    for name in INVARIANTS:
        print(f"  {violations[name]:5d}  {name}")
    for line in examples[:20]:
        print(f"  e.g. {line}")
    _tidy(base, keep)
    return 1 if sum(violations.values()) else 0


def _tidy(base: Path, keep: bool) -> None:
    if keep:
        print(f"logs and databases kept in {base}")
    elif not any(base.iterdir()):
        base.rmdir()
    else:
        print(f"worlds with violations kept in {base}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=100.0)
    parser.add_argument("--max-n", type=int, default=8, help="crash after 1..N events")
    parser.add_argument("--keep", action="store_true", help="print where the logs are kept")
    args = parser.parse_args()
    return asyncio.run(bench(args.kills, args.seed, args.speed, args.max_n, args.keep))


if __name__ == "__main__":
    sys.exit(main())
