"""Repairs killed at random points (the real daemon SIGKILLs itself, `run --once` restarted on
the same log until a run finishes): every invariant holds, the lost node is replaced once.

Adversary: the provider loses a worker at the world's start (stopped, vanished, or its kubelet
silent while the VM runs); the daemon dies after any event or any call of the repair.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from statemachine import events as ev
from statemachine.plan import Opportunity
from tests.crash.invariants import check, read_log
from tests.crash.rehearsal import rehearsal, scenario_text
from tests.crash.test_crash_kills import kill_until_done

# Due at once, no rebalance worth making: every run of the daemon is about the repair.
REPAIR_CONFIG = """minSavingMonthly = "100000"

[node_groups.repair]
readyUnknownAfter = "0s"
workerStoppedAfter = "0s"
workerGoneAfter = "0s"
"""


def _loss(kind: str, worker: str) -> str:
    # At 8 s: after the Node has been Ready a while (a Node lost within seconds of registering
    # counts as never Ready), before the rehearsal starts the daemon (15 s).
    return f"  faults:\n    losses:\n      - {{kind: {kind}, worker: \"{worker}\", at: 8}}\n"


REPAIR_WORLDS = (
    ("repair/stop", "rolling", _loss("stop", "#2")),
    ("repair/vanish", "rolling", _loss("vanish", "#3")),
    ("repair/kubelet", "rolling", _loss("kubelet", "#1")),
)


@pytest.mark.parametrize(("label", "faults", "seed"), [
    (label, faults, seed) for (label, _, faults), seed in zip(REPAIR_WORLDS, (21, 22, 23),
                                                              strict=True)
])
async def test_repair_killed_at_random_points(
    tmp_path: Path, label: str, faults: str, seed: int
) -> None:
    rng = random.Random(seed)
    async with rehearsal(tmp_path, scenario=scenario_text(faults=faults), seed=seed) as reh:
        reh.configure(extra=REPAIR_CONFIG)
        kills = await kill_until_done(reh, rng, max_n=6)
        await reh.settle(30)
        await reh.sampler.sample()
        after = await reh.reader.picture()
        log = await read_log(reh.db_path)
        verdict = check(reh, log, after, report=reh.runs[-1].report())
    print(f"{label}: {kills} kills, {len(reh.runs)} runs, plans {verdict.plans}")
    assert verdict.ok, verdict.explain()
    assert kills >= 3, f"only {kills} kills happened"
    repairs = [p for p in log.state.plans.values() if p.spec.opportunity is Opportunity.REPAIR]
    assert [p.status.value for p in repairs] == ["completed"]
    added = [e for _, e in log.order if isinstance(e, ev.WorkerAdded)]
    assert len(added) == 1  # the lost node replaced once, whatever the kills
    assert len(after.workers) == 4  # the scenario's four (a vanished one was gone before)
    lost = repairs[0].spec.replacements[0].old_node
    assert lost not in after.nodes
