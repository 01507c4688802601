"""A drain's deadline counts the time a daemon was acting on it, not the time it was down.

Adversary: an outage of the daemon itself. It is SIGKILLed in the middle of a drain (its first
eviction request in flight) and stays down for longer than the whole drain timeout; the daemon
that starts afterwards must carry the drain on, not time it out at once and roll back.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from statemachine import events as ev
from tests.crash.invariants import read_log
from tests.crash.rehearsal import rehearsal
from tests.service.test_service import verdict_ok
from tests.service.two_daemons import witnessed_daemon

DRAIN_TIMEOUT_S = 120
DOWN_S = 600  # five drain timeouts


async def test_a_long_outage_does_not_time_out_a_drain_in_progress(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(
            strategy="rolling", max_concurrent=1, batch_size=1, drain_timeout=f"{DRAIN_TIMEOUT_S}s"
        )
        async with witnessed_daemon(reh, "a") as wa:
            first = wa.daemon
            killed = asyncio.Event()

            def kill_in_eviction(method: str, path: str) -> None:
                if method == "POST" and path.endswith("/eviction") and not killed.is_set():
                    killed.set()
                    first.signal(signal.SIGKILL)

            assert wa.kube_proxy is not None
            wa.kube_proxy.on_request = kill_in_eviction
            await first.start()
            await asyncio.wait_for(killed.wait(), 90)
            assert first.proc is not None
            await first.proc.wait()
            wa.kube_proxy.on_request = None
            await reh.sim.clock.sleep(DOWN_S)
            again = wa.again("a2")
            await again.start()

            async def done() -> bool:  # once it leads and has recovered the plan
                status = await again.status()
                return bool(status["leader"] and status["daemon"]["ready"]) and not status["plans"]

            await again.until("the plan to finish after the outage", done, timeout_s=120)
            assert await again.stop() == 0
            await verdict_ok(reh)
            log = await read_log(reh.db_path)

    events = [e for _, e in log.order]
    assert not [e for e in events if isinstance(e, ev.DrainTimedOut)]
    assert not [e for e in events if isinstance(e, ev.PlanRollbackStarted)]
    assert [p.status.value for p in log.state.plans.values()] == ["completed"]
