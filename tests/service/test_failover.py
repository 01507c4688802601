"""Two daemons on one event log (docs/running.md), the leader stopped or killed mid-plan.

The adversary is a leader stalled past its lease: SIGSTOPped while it adds a worker, or while it
retries a worker delete VPSie keeps refusing, then SIGCONTed once the standby has taken the
Lease and the plan (or SIGKILLed). The continued daemon must not touch the world again nor
write to the log (its term is fenced); the new leader finishes the plan; both daemons run
across two snapshot intervals and each ends with SIGTERM, exit 0; the log verifies and no
event of an old term follows a newer one.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from eventstore import EventStore
from simulator.faults import FaultRule
from tests.crash.invariants import read_log
from tests.crash.rehearsal import rehearsal
from tests.service.daemon_process import DaemonProcess
from tests.service.test_service import verdict_ok
from tests.service.two_daemons import (
    leadership_holders,
    leads,
    terms_in_order,
    witnessed_daemon,
)

SNAPSHOT_INTERVAL_S = 60  # the configuration's snapshot_interval, below


async def standby(daemon: DaemonProcess) -> bool:
    code, ready = await daemon.call("GET", "/readyz")
    return code == 200 and ready["reason"] == "standby"


@pytest.mark.parametrize("adversary", ["stopped-during-add", "stopped-during-delete", "killed"])
async def test_a_standby_takes_over_and_the_old_leader_is_fenced(
    tmp_path: Path, adversary: str
) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(
            strategy="rolling", max_concurrent=1, batch_size=1,
            snapshot_interval=f"{SNAPSHOT_INTERVAL_S}s",
        )
        b = DaemonProcess(reh, identity="b")
        async with witnessed_daemon(reh, "a") as wa:
            a = wa.daemon
            stopped = asyncio.Event()
            if adversary == "stopped-during-delete":
                # VPSie refuses every delete: a's delete sits in its retry loop; a is stopped
                # while its first delete is in flight.
                reh.sim.faults.add_rule(FaultRule(service="vpsie", method="DELETE", error_rate=1.0))
            wanted = "DELETE" if adversary == "stopped-during-delete" else "POST"

            def stop_a_in_flight(method: str, path: str) -> None:
                if (
                    stopped.is_set()
                    or method != wanted
                    or (wanted == "POST" and "/add/slave" not in path)
                ):
                    return
                stopped.set()
                a.signal(signal.SIGKILL if adversary == "killed" else signal.SIGSTOP)

            wa.vpsie_proxy.on_request = stop_a_in_flight
            await a.start()

            async def a_leads_or_stopped() -> bool:
                return stopped.is_set() or await leads(a)

            await a.until("a to lead", a_leads_or_stopped, timeout_s=60)
            await b.start()

            async def a_stopped() -> bool:
                return stopped.is_set()

            await b.until("a to be stopped in a VPSie call", a_stopped, timeout_s=180)
            reh.sim.faults.clear()
            await b.until("b to take the lease", lambda: leads(b), timeout_s=30)
            mark = wa.mark()
            if adversary != "killed":
                a.signal(signal.SIGCONT)

            async def b_done() -> bool:
                return not (await b.status())["plans"]

            await b.until("b to finish the plan", b_done, timeout_s=90)
            if adversary == "killed":
                assert a.proc is not None
                await a.proc.wait()
                a = wa.again("a2")
                await a.start()
            else:

                async def a_stepped_down() -> bool:
                    return not await leads(a) and "not leading any more" in a.log()

                await a.until("a to step down", a_stepped_down)
            await reh.sim.clock.sleep(2 * SNAPSHOT_INTERVAL_S + 60)
            after_continue = wa.effects_since(mark)
            assert await b.stop() == 0, b.log_path
            await a.until("a to lead after b stopped", lambda: leads(a), timeout_s=30)
            await reh.sim.clock.sleep(SNAPSHOT_INTERVAL_S + 60)
            assert await a.stop() == 0, a.log_path
            await verdict_ok(reh)
            log = await read_log(reh.db_path)
            late = await terms_in_order(reh.db_path)
            store = await EventStore.open(reh.db_path)
            try:
                snapshot = await store.load_snapshot("fold")
            finally:
                await store.close()
            holders = await leadership_holders(reh.db_path)
            a_evictions = [e for e in wa.kube.accepted_evictions() if not e.allowed]

    assert after_continue == [], "the stalled leader acted after it lost the lease"
    assert snapshot is not None and snapshot.seq > 0, "no snapshot was saved"
    assert late == []
    assert [p.status.value for p in log.state.plans.values()] == ["completed"]
    # Terms in order of the holders; a may renew its own lead more than once (a slow renewal on a
    # loaded machine lets its Lease lapse before the stall), which takes a new term but changes
    # nobody: compare the runs of one holder.
    runs = [h for i, h in enumerate(holders) if i == 0 or holders[i - 1] != h]
    assert runs[:2] == ["a", "b"] and runs[-1] in ("a", "a2"), holders
    assert a_evictions == []
