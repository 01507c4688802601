"""The leader election task dies mid-plan: nothing acts without a live elector.

Adversary: the Kubernetes API answers the daemon's Lease reads with a Lease the client cannot
decode (`leaseDurationSeconds: "fifteen"`), from the moment the daemon's first worker add is in
flight. The elector's task ends on it; the daemon stops every runner (nothing more is done to
the world; the add's outcome is recorded, or left for the next daemon to settle from the
world when the runner was stopped at the read before it) and exits 1 for systemd to restart
it. Restarted against a sane API, the next daemon finishes the plan, each add and
delete made once, and the log verifies.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.crash.invariants import read_log
from tests.crash.rehearsal import rehearsal
from tests.service.test_service import kube, verdict_ok
from tests.service.test_two_hosts import LEASE
from tests.service.two_daemons import witnessed_daemon


async def test_a_dead_elector_stops_the_runners_and_the_daemon_exits_1(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(strategy="rolling", max_concurrent=1, batch_size=1)
        async with witnessed_daemon(reh, "a") as wa:
            daemon = wa.daemon
            broken: dict[str, object] = {}
            marks: list[tuple[int, int]] = []

            async def garbled_lease(
                method: str, path: str, body: bytes
            ) -> tuple[int, bytes] | None:
                if path != LEASE or method != "GET" or not broken:
                    return None
                if not marks:
                    marks.append(wa.mark())
                return 200, json.dumps(broken).encode()

            async def break_the_lease_at_the_first_add(
                method: str, path: str, body: bytes
            ) -> tuple[int, bytes] | None:
                if method == "POST" and "/add/slave" in path and not broken:
                    code, lease = await kube(reh, "GET", LEASE)
                    assert code == 200, lease
                    lease["spec"]["leaseDurationSeconds"] = "fifteen"
                    broken.update(lease)
                return None

            wa.kube_proxy.respond = garbled_lease
            wa.vpsie_proxy.respond = break_the_lease_at_the_first_add
            await daemon.start()
            assert daemon.proc is not None
            code = await asyncio.wait_for(daemon.proc.wait(), 120)
            text = daemon.log()
            after_death = wa.effects_since(marks[0]) if marks else ["the lease was never read"]
            stopped = await read_log(reh.db_path)
            daemon.kill()
        restarted = await reh.run_daemon()
        await verdict_ok(reh)
        finished = await read_log(reh.db_path)

    assert code == 1, text[-2000:]
    assert "the leader elector stopped" in text
    assert after_death == [], "something acted after the elector died"
    plan_id = next(iter(stopped.state.plans))
    halted = stopped.state.plans[plan_id]
    assert halted.status.value == "executing"
    assert restarted.returncode == 0
    assert finished.state.plans[plan_id].status.value == "completed"
    assert finished.verified, finished.problem
