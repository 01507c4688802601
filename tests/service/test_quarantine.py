"""A plan whose log cannot be folded stays quarantined until a person clears it.

Adversary: a log written by a build with a bug (an event the machines refuse: a plan completed
while it was awaiting approval). The quarantine must survive the snapshot written at the next
stop and the restarts after it, keep the node group from getting a new plan, be listed by
`status`, and end only with `clear-quarantine`.
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventstore import EventStore, NewEvent
from statemachine import events as ev
from tests.crash.invariants import read_log
from tests.crash.rehearsal import REPO, rehearsal
from tests.service.daemon_process import DaemonProcess


async def _refused_event(db: Path, plan_id: str) -> None:
    store = await EventStore.open(db)
    try:
        stream = ev.stream_for(plan_id)
        version = len(await store.read_stream(stream))
        bad = ev.encode(
            ev.PlanCompleted(
                plan_id=plan_id, at="2026-01-01T00:00:00Z", realised_monthly_saving=Decimal(0)
            )
        )
        await store.append(
            stream,
            version,
            [NewEvent(type=bad.type, schema_version=bad.schema_version, data=bad.data)],
        )
    finally:
        await store.close()


async def _quarantine_records(db: Path) -> list[str]:
    store = await EventStore.open(db)
    try:
        return [r.type for r in await store.read_stream("quarantine")]
    finally:
        await store.close()


async def test_a_quarantine_survives_snapshots_and_restarts_until_cleared(tmp_path: Path) -> None:
    async with rehearsal(tmp_path) as reh:
        reh.configure(require_approval=True)
        first = await reh.run_daemon()
        (plan_id,) = (await read_log(reh.db_path)).state.plans
        await _refused_event(reh.db_path, plan_id)
        reh.configure(require_approval=False)  # a plan the daemon would run at once
        runs = [await reh.run_daemon() for _ in range(2)]  # each stop writes a snapshot
        untouched = reh.reader.workers().keys() == reh.before.workers.keys()
        proposed_while_quarantined = len(await _outcomes(reh.db_path))

        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        status: dict[str, Any] = {}

        async def listed() -> bool:
            status.update(await daemon.status())
            return bool(status.get("quarantined")) and "quarantined" in str(
                status["node_groups"].get("general", {}).get("last_decision", "")
            )

        await daemon.until("status to list the quarantine", listed)
        assert await daemon.stop() == 0

        config = str(reh.config_path)
        cleared = await _cli("clear-quarantine", "--config", config, plan_id, "--by", "alice")
        again = await _cli("clear-quarantine", "--config", config, plan_id)
        after = await reh.run_daemon()
        outcomes = await _outcomes(reh.db_path)
        records = await _quarantine_records(reh.db_path)

    assert first.returncode == 0 and [r.returncode for r in runs] == [0, 0]
    assert untouched, "a group with a quarantined plan got a new plan"
    assert proposed_while_quarantined == 1
    assert status["quarantined"][0]["plan_id"] == plan_id
    assert status["quarantined"][0]["node_group"] == "general"
    assert cleared[0] == 0, cleared[1]
    assert again[0] == 1 and "is not quarantined" in again[1]
    assert "Traceback" not in again[1]
    assert records == ["PlanQuarantined", "QuarantineCleared"]
    assert after.returncode == 0
    assert outcomes.pop(plan_id) == "PlanCompleted"  # the refused event, still in the log
    assert list(outcomes.values()) == ["PlanCompleted"]


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO),
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def _outcomes(db: Path) -> dict[str, str]:
    """Each plan stream's last event type, read without folding (one plan cannot be)."""
    store = await EventStore.open(db)
    try:
        last: dict[str, str] = {}
        async for recorded in store.read_all():
            plan_id = ev.plan_id_of_stream(recorded.stream)
            if plan_id is not None:
                last[plan_id] = recorded.type
        return last
    finally:
        await store.close()
