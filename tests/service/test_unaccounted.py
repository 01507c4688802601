"""A worker VPSie's listing did not show within the settle time is recorded, looked for at
every later round, and reported by name once it shows: never silently left to be billed.

Adversary: VPSie's listing, which lags: the added worker boots, joins and is billed, but the
cluster's listing shows it only 300 simulated seconds after the add (the daemon waits 60).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eventstore import EventStore
from tests.crash.rehearsal import rehearsal, scenario_text
from tests.service.daemon_process import DaemonProcess

LAGGING = "  faults:\n    listingLagSeconds: 300\n"


async def test_a_worker_listed_too_late_is_found_reported_and_resolved(tmp_path: Path) -> None:
    # 300x, a Lease of 180 s (0.6 s real, as at the usual 100x).
    async with rehearsal(
        tmp_path, scenario=scenario_text(faults=LAGGING), fork=False, speed=300.0
    ) as reh:
        reh.lease_s = 180
        reh.configure(strategy="rolling", max_concurrent=1, batch_size=1)
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        seen: dict[str, Any] = {}

        async def reported() -> bool:
            status = await daemon.status()
            found = [u for u in status.get("unaccounted_workers", []) if u["state"] == "found"]
            if found:
                seen.update(found[0])
            return bool(found)

        await daemon.until("the late worker reported", reported, timeout_s=60)
        extra = [w for w in reh.sim.vpsie.workers if w.identifier not in reh.before.workers]
        # A person deletes it, as the report says; the next round resolves the entry.
        reh.sim.vpsie.delete_worker(reh.sim.vpsie.cluster.identifier, seen["worker"])

        async def resolved() -> bool:
            return not (await daemon.status())["unaccounted_workers"]

        await daemon.until("the entry resolved", resolved, timeout_s=60)
        assert await daemon.stop() == 0
        async with await EventStore.open(reh.db_path) as store:
            recorded = await store.read_stream("unaccounted-workers")
        log = daemon.log()

    assert [w.identifier for w in extra] == [seen["worker"]]
    assert seen["plan_id"].startswith("plan-") and seen["group_id"]
    assert [r.type for r in recorded] == [
        "AddUnaccounted",
        "UnaccountedWorkerFound",
        "UnaccountedResolved",
    ]
    assert json.loads(recorded[2].data)["how"] == "no longer listed (deleted)"
    assert f"VPSie worker {seen['worker']}" in log and "is billed" in log
