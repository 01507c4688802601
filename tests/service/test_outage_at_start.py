"""A VPSie outage while a restarted daemon settles what was in flight parks the plan; it never
ends it as failed with the worker it added left behind.

Adversary: an outage of the VPSie API (every request answered 503) that begins when the daemon
died in the middle of an add (its request reached VPSie, the answer never came back) and lasts
longer than the daemon's own retries.
"""

from __future__ import annotations

from pathlib import Path

from tests.crash.invariants import read_log
from tests.crash.rehearsal import rehearsal
from tests.service.test_service import verdict_ok
from tests.service.two_daemons import killed_in_its_first_add, witnessed_daemon

OUTAGE_S = 900  # longer than every retry deadline of the reconciliation (600 s)


async def test_an_outage_during_reconciliation_parks_the_plan(tmp_path: Path) -> None:
    # 300x (the 600 s retries and the 900 s outage in seconds); a Lease of 180 s, 0.6 s real.
    async with rehearsal(tmp_path, fork=False, speed=300.0) as reh:
        reh.lease_s = 180
        reh.configure(strategy="rolling", max_concurrent=1, batch_size=1)
        async with witnessed_daemon(reh, "a") as wa:
            await killed_in_its_first_add(wa)
            reh.sim.faults.set_down("vpsie", True)
            again = wa.again("a2")
            await again.start()

            async def parked() -> bool:
                plans = (await again.status())["plans"]
                return bool(plans) and plans[0]["runner"] == "restarting"

            await again.until("the plan to be parked", parked, timeout_s=60)
            await reh.sim.clock.sleep(OUTAGE_S)
            during = (await again.status())["plans"]
            reh.sim.faults.set_down("vpsie", False)

            async def done() -> bool:
                return not (await again.status())["plans"]

            await again.until("the plan to finish after the outage", done, timeout_s=90)
            assert await again.stop() == 0
            await verdict_ok(reh)
            log = await read_log(reh.db_path)

    assert [p["state"] for p in during] == ["executing"]
    assert "could not settle what was in flight" in during[0]["runner_error"]
    assert [p.status.value for p in log.state.plans.values()] == ["completed"]
