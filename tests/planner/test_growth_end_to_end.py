"""Growing the node count, carried out by the real daemon (`run --once`, a subprocess) against
the simulator over HTTP, judged by the crash suite's invariants (no pod lost, nothing
orphaned, nothing left cordoned, the bill as the log says).

The world: two premium 8c/16g nodes ($100 a month each) run eight 1-CPU replicas and a
DaemonSet; three 4c/8g nodes ($40 each) carry them, and no fleet of two nodes is as cheap
(8c + 2c costs $122; two 4c/8g hold six of the replicas). The plan adds one 4c/8g where none is
removed (an add-only replacement, first), then replaces each 8c/16g by a 4c/8g.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from statemachine import events as ev
from tests.crash.invariants import read_log
from tests.crash.rehearsal import rehearsal
from tests.planner.test_fleet_end_to_end import deployment, finish
from tests.planner.test_fleet_end_to_end import world as fleet_world

SIZES = (
    (301, "k8s-2c-4g", 2, 4096, "22.00"),
    (302, "k8s-4c-8g", 4, 8192, "40.00"),
    (303, "k8s-8c-16g", 8, 16384, "100.00"),
)


def world() -> str:
    return fleet_world(
        2,
        303,
        deployment("api", 8, "1000m", "512Mi", "maxUnavailable: 4"),
        sizes_offered=SIZES,
        max_workers=8,
    )


async def test_the_daemon_grows_two_premium_nodes_into_three_cheaper_ones(tmp_path: Path) -> None:
    """Adversary: the simulator's own scheduler placing every moved replica (round robin, not
    the planner's packing), with the budget allowing four at a time."""
    async with rehearsal(tmp_path, scenario=world(), speed=100) as reh:
        reh.configure(strategy="rolling", min_nodes=1, drain_timeout="900s",
                      provision_timeout="900s")
        before = reh.before.monthly_cost()
        plans, replaced, _ = await finish(reh)
        after = await reh.reader.picture()
    assert list(plans.values()).count("completed") == 1, plans
    assert not {"rolled_back", "failed"} & set(plans.values()), plans
    assert replaced == 3  # one node added, two replaced
    assert before == Decimal(200) and after.monthly_cost() == Decimal(120)
    assert sorted(w.size_id for w in after.workers.values()) == [302, 302, 302]
    assert all(ready == total for ready, total in after.deployments.values()), after.deployments


async def test_a_daemon_killed_after_the_added_nodes_add_call_resumes(tmp_path: Path) -> None:
    """Adversary: SIGKILL right after VPSie accepted the add of the node added where none is
    removed, before its outcome was logged; the next daemon settles the add from the listing
    (one worker, never two) and completes the plan."""
    # Where to kill: the add-only replacement's add intent, found in an undisturbed run.
    async with rehearsal(tmp_path / "dry", scenario=world(), speed=100) as reh:
        reh.configure(strategy="rolling", min_nodes=1, drain_timeout="900s",
                      provision_timeout="900s")
        await reh.run_daemon(timeout_s=240)
        dry = await read_log(reh.db_path)
    point = next(
        i for i, (_, e) in enumerate(dry.order, start=1)
        if isinstance(e, ev.WorkerAddRequested)
        and dry.state.plans[e.plan_id].spec_of(e.replacement_id).adds_only
    )
    async with rehearsal(tmp_path / "kill", scenario=world(), speed=100) as reh:
        reh.configure(strategy="rolling", min_nodes=1, drain_timeout="900s",
                      provision_timeout="900s")
        killed = await reh.run_daemon(crash_at=f"{point}:after-call", timeout_s=240)
        log = await read_log(reh.db_path)
        _, last = log.order[-1]
        assert killed.returncode != 0 and isinstance(last, ev.WorkerAddRequested)
        assert log.state.plans[last.plan_id].spec_of(last.replacement_id).adds_only
        plans, replaced, _ = await finish(reh)
        after = await reh.reader.picture()
        final = await read_log(reh.db_path)
    assert "completed" in plans.values(), plans
    assert replaced == 3 and after.monthly_cost() == Decimal(120)
    adds = [e for _, e in final.order
            if isinstance(e, ev.WorkerAddRequested) and e.replacement_id == last.replacement_id]
    assert adds == [last]  # the intent the kill left open was settled, never made again
