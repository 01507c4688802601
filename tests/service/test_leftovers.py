"""A Node object a plan could not delete is recorded, and deleted by a later round once the
world agrees, after the plan has ended: none is left without its worker.

Adversary: the Kubernetes API, which refuses every Node delete (503) while the plan runs, as an
admission webhook or an API server in trouble would; VPSie deletes no Node either. Once the
refusals stop, the daemon, not a person, deletes the Nodes of the workers its plan deleted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eventstore import EventStore
from tests.crash.invariants import read_log
from tests.crash.rehearsal import rehearsal, scenario_text
from tests.service.daemon_process import DaemonProcess

REFUSED = (
    "  faults:\n    rules:\n      - service: kubernetes\n        method: DELETE\n"
    '        path: "*/api/v1/nodes/*"\n        errorRate: 1.0\n'
)


async def test_nodes_a_plan_left_behind_are_deleted_by_a_later_round(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, scenario=scenario_text(faults=REFUSED), fork=False) as reh:
        reh.configure(strategy="rolling", max_concurrent=1, batch_size=1)
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        seen: list[dict[str, Any]] = []

        async def ended_leaving_nodes() -> bool:
            status = await daemon.status()
            seen[:] = status["leftover_nodes"]
            return bool(seen) and not status["plans"]

        await daemon.until("the plan ended, leftover Nodes reported", ended_leaving_nodes, 60)
        still = await reh.reader.nodes()
        assert {n["node"] for n in seen} <= set(still), "reported a Node that is not there"
        assert all(not still[n["node"]].ready for n in seen)
        # The refusals stop; the next rounds delete what the plan left behind.
        reh.sim.faults.clear()

        async def cleaned() -> bool:
            return not (await daemon.status())["leftover_nodes"]

        await daemon.until("the leftover Nodes deleted", cleaned, timeout_s=60)
        after = await reh.reader.nodes()
        assert await daemon.stop() == 0
        async with await EventStore.open(reh.db_path) as store:
            recorded = await store.read_stream("leftover-nodes")
        log = daemon.log()
        folded = await read_log(reh.db_path)

    noted = [json.loads(r.data) for r in recorded if r.type == "LeftoverNodeNoted"]
    resolved = {
        json.loads(r.data)["node"]: json.loads(r.data)["how"]
        for r in recorded
        if r.type == "LeftoverNodeResolved"
    }
    requested = [
        json.loads(r.data)["node"] for r in recorded if r.type == "LeftoverNodeDeleteRequested"
    ]
    left_behind = {n["node"] for n in noted}
    [completed] = folded.state.plans.values()
    assert completed.status.value == "completed"
    assert left_behind and all(n["plan_id"] == completed.plan_id for n in noted)
    assert all("its delete failed" in n["reason"] for n in noted), noted
    # Every one was deleted, each after its intent; none is in the world any more.
    assert resolved == dict.fromkeys(left_behind, "deleted")
    assert left_behind <= set(requested)
    assert not left_behind & set(after)
    # Each Node left in the world has a listed worker.
    hosts = {w.hostname.lower() for w in reh.sim.vpsie.workers}
    assert {name for name in after if name.lower() not in hosts} == set()
    assert f"plan {completed.plan_id} leaves the Node object" in log
