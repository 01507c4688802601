"""Hundreds of SIGKILLs through whole plans; how many times was an invariant broken?

    python bench/crash.py [--kills 500] [--seed 1] [--speed 100] [--max-n 8]

Repeats the crash suite's rehearsal (tests/crash): a simulated world, the real daemon as a
separate process killing itself at seeded random points (`VPSIE_REBALANCER_CRASH_AT=N` or
`N:after-call`, N drawn from 1..--max-n), restarted until a run finishes; five kinds of world
in turn, a fresh one each time, until at least --kills kills happened: rolling, surge and
blue-green plans that complete, two that must roll back (api pods that can never be
evicted, under rolling; a new worker that never turns Ready, under surge), and three repair
worlds (a worker stopped, one vanished, a kubelet silent: the repair killed at every step).
After each world the invariants of ARCHITECTURE.md are checked (tests/crash/invariants.py).
Prints, per invariant, how many violations were found (target: zero), the kills per strategy,
the plan outcomes and the time taken.

    python bench/crash.py --only repair/ [--kills 100]

only the worlds whose label starts with the prefix (here the three repair worlds).

    python bench/crash.py --second-daemon [--kills 500]

The two-daemon mode: in each world two long-running daemons share one event log, each behind
recording proxies of its own (tests/service/two_daemons.py). Again and again the leader is
SIGKILLed (and started again as a standby) or SIGSTOPped past its lease until the other leads,
then SIGCONTed; every SIGKILL and every stall counts. Three more invariants: no call that
changes the world from a continued leader before it leads again, no event of an old leadership
term after a newer one, both daemons exit 0 on SIGTERM at the end.

    python bench/crash.py --adversary [--second-daemon] [--kills 500]

The adversarial mode (with either of the above): while plans run and daemons die, a second
actor (tests/crash/adversary.py) adds workers to the VPSie group the plans drain and deletes
them again, cordons and uncordons nodes (conditioned on the resourceVersion it read), and
annotates pods safe-to-evict=false and back. Its workers are not the daemon's to account for
(invariants 2 and 6 leave them out, except one a plan replaced: a member of the drained group
like any other); two more invariants: no worker deleted that no plan added or planned to
replace, no cordon of another actor cleared, taken
over or its node deleted. Also printed: what the adversary did, and how many evictions hit a
pod while it carried the adversary's annotation (a figure: the Eviction API ignores it, and
the daemon re-reads pods before each batch and each cordon, not before each eviction). The
repair worlds run without it: the group a repair adds to is the lost node's own, where a
foreign add parks the repair for a person by design (the add's rule, tested in
tests/executor/test_faithful.py), and a lost node is cordoned and deleted whatever another
actor's cordon says.

    python bench/crash.py --second-daemon --database postgresql [--kills 100]

The same on PostgreSQL: a throwaway server (scripts/pg-throwaway, Unix socket only, fsync on)
is started for the run and stopped at the end; each world's log is a schema of its own. In a
quarter of the rounds the server also ends every session the daemons have with it (a restart
or failover of the database): they park, connect again and fold the log anew.
Two daemons on one PostgreSQL log are the two-host setup of docs/operations.md (the daemons
of one world differ only in their directories and proxies, not in the host they run on).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.crash.adversary import Adversary  # noqa: E402
from tests.crash.invariants import INVARIANTS, check, read_log  # noqa: E402
from tests.crash.rehearsal import rehearsal, scenario_text  # noqa: E402
from tests.crash.test_crash_kills import API_NEVER_EVICTABLE, kill_until_done  # noqa: E402
from tests.crash.test_repair_kills import REPAIR_CONFIG, REPAIR_WORLDS  # noqa: E402
from tests.pgserver import drop_schema, fresh_schema  # noqa: E402
from tests.service.two_daemons import take_over_until_done, terms_in_order  # noqa: E402

NEW_WORKER_NEVER_READY = '  faults:\n    neverReady: ["rh-*-0006"]\n'
# (label, strategy, faults): plans that complete, and plans that must roll back; repair worlds
# (the provider loses a worker at once; no rebalance is worth it, so each run repairs).
WORLDS = (
    ("rolling", "rolling", ""),
    ("surge", "surge", ""),
    ("blue-green", "blue-green", ""),
    ("rolling/pdb-stuck", "rolling", API_NEVER_EVICTABLE),
    ("surge/never-ready", "surge", NEW_WORKER_NEVER_READY),
    *REPAIR_WORLDS,
)


TWO_DAEMON_INVARIANTS = (
    "8 no effect from a leader that lost the lease",
    "9 no append of an old leadership term",
    "10 both daemons exit 0 on SIGTERM",
)


ADVERSARY_INVARIANTS = (
    "11 no worker deleted that no plan added or replaced",
    "12 no cordon of another actor cleared or taken",
)


async def bench(
    kills_wanted: int,
    seed: int,
    speed: float,
    max_n: int,
    keep: bool,
    second_daemon: bool,
    adversarial: bool = False,
    only: str = "",
    postgres: str | None = None,
) -> int:
    """`postgres`: the DSN of a server on which each world's log gets a schema of its own."""
    worlds_run = tuple(w for w in WORLDS if w[0].startswith(only))
    if not worlds_run:
        raise SystemExit(f"no world's label starts with {only!r}: {[w[0] for w in WORLDS]}")
    rng = random.Random(seed)
    invariants = INVARIANTS + (TWO_DAEMON_INVARIANTS if second_daemon else ())
    invariants += ADVERSARY_INVARIANTS if adversarial else ()
    acted: Counter[str] = Counter()
    annotated_evictions = 0
    violations: Counter[str] = Counter({name: 0 for name in invariants})
    kills_by: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    examples: list[str] = []
    worlds = 0
    stalls = 0  # second-daemon mode: leaders SIGSTOPped past their lease (counted in kills)
    cuts = 0  # on PostgreSQL: every session of the daemons ended by the server (not counted)
    replaced = 0
    started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="bench-crash-"))
    while sum(kills_by.values()) < kills_wanted:
        label, strategy, faults = worlds_run[worlds % len(worlds_run)]
        world_seed = rng.getrandbits(32)
        directory = base / f"world-{worlds:03d}-{label.replace('/', '-')}"
        scenario = scenario_text(faults=faults)
        database = await fresh_schema(postgres) if postgres is not None else None
        async with rehearsal(
            directory,
            scenario=scenario,
            seed=world_seed,
            speed=speed,
            fork=not second_daemon,
            database=database,
        ) as reh:
            reh.configure(
                strategy=strategy,
                max_concurrent=2,
                batch_size=2,
                drain_timeout="120s",
                provision_timeout="300s",
                extra=REPAIR_CONFIG if label.startswith("repair/") else "",
            )
            extra: dict[str, list[str]] = {}
            # Not in the repair worlds: there the group a repair adds to is the lost node's own,
            # so a foreign add parks the repair for a person (by design: no worker is taken for
            # ours on an inferred identity), and a lost node is taken away whatever its cordon.
            adversary = (
                Adversary(reh, random.Random(world_seed ^ 0x5EED))
                if adversarial and not label.startswith("repair/")
                else None
            )
            if adversary is not None:
                await adversary.start()
            if second_daemon:
                taken = await take_over_until_done(reh, random.Random(world_seed))
                kills = taken.kills + taken.stalls
                stalls += taken.stalls
                cuts += taken.cuts
                for witness in taken.witnesses:  # the PDB check judges every daemon's evictions
                    reh.proxy.witness.evictions += witness.evictions
                extra = {
                    TWO_DAEMON_INVARIANTS[0]: taken.acted_after_losing,
                    TWO_DAEMON_INVARIANTS[1]: await terms_in_order(reh.log_target),
                    TWO_DAEMON_INVARIANTS[2]: taken.exits,
                }
            else:
                kills = await kill_until_done(reh, random.Random(world_seed), max_n=max_n)
            if adversary is not None:
                await adversary.stop()
            await reh.settle(30)
            await reh.sampler.sample()
            after = await reh.reader.picture()
            log = await read_log(reh.log_target)
            verdict = check(
                reh,
                log,
                after,
                report=None if second_daemon else reh.runs[-1].report(),
                foreign=adversary.prices if adversary is not None else None,
            )
            if adversary is not None:
                extra[ADVERSARY_INVARIANTS[0]] = adversary.deletions(
                    log.state.plans,
                    set(reh.before.workers),
                    reh.sampler.workers_seen,
                    set(after.workers),
                )
                extra[ADVERSARY_INVARIANTS[1]] = list(adversary.cleared)
                acted += adversary.actions
                annotated_evictions += adversary.annotated_evictions
            for name, found in extra.items():
                verdict.violations[name] = found
        if postgres is not None and database is not None and (verdict.ok and not keep):
            await drop_schema(postgres, database)
        elif database is not None:
            (directory / "database.txt").write_text(database + "\n")
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
    print(f"event log: {'PostgreSQL' if postgres is not None else 'SQLite'}")
    print(f"kills: {sum(kills_by.values())} in {worlds} worlds ({dict(kills_by)})")
    if second_daemon:
        print(f"  of which leaders stalled past their lease and continued: {stalls}")
        if postgres is not None:
            print(f"  database sessions of both daemons ended by the server: {cuts} times")
    print(f"plans: {dict(outcomes)}; nodes replaced: {replaced}")
    if adversarial:
        print(f"the adversary did: {dict(sorted(acted.items()))}")
        print(f"  evictions of a pod carrying its safe-to-evict=false: {annotated_evictions}")
    print(f"time: {elapsed:.1f} s ({elapsed / max(1, sum(kills_by.values())):.2f} s per kill)")
    print()
    print("violations per invariant (target 0):")
    for name in invariants:
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
    parser.add_argument(
        "--second-daemon",
        action="store_true",
        help="two daemons on one log; the leader killed or stalled past its lease, in turn",
    )
    parser.add_argument(
        "--adversary",
        action="store_true",
        help="a second actor adds/deletes workers, cordons/uncordons nodes, annotates pods",
    )
    parser.add_argument(
        "--only", default="", help="only the worlds whose label starts with this (e.g. repair/)"
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="where the event log lives (postgresql: a throwaway server for the run)",
    )
    args = parser.parse_args()

    def run(postgres: str | None = None) -> int:
        return asyncio.run(
            bench(
                args.kills,
                args.seed,
                args.speed,
                args.max_n,
                args.keep,
                args.second_daemon,
                args.adversary,
                args.only,
                postgres=postgres,
            )
        )

    if args.database == "sqlite":
        return run()
    server_dir = tempfile.mkdtemp(prefix="bench-crash-pg-")
    script = ROOT / "scripts" / "pg-throwaway"
    started = subprocess.run(
        [str(script), "start", server_dir], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        print(f"bench: PostgreSQL did not start: {started.stderr.strip()}", file=sys.stderr)
        return 1
    try:
        return run(started.stdout.strip())
    finally:
        subprocess.run([str(script), "stop", server_dir], check=False)
        shutil.rmtree(server_dir, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
