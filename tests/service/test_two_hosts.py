"""Two daemons on two "hosts" sharing one PostgreSQL event log and one Lease.

Each daemon has its own directory (configuration, control socket, logs): nothing is shared but
the database and the cluster. Adversary: the host of the leader dies mid-plan (SIGKILL, after
a worker was added); the standby takes the Lease, folds the log from PostgreSQL and finishes
the plan. At the end the simulator shows each add and delete once per intent (the crash
suite's invariants) and the log verifies.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.crash.invariants import check, read_log
from tests.crash.rehearsal import Rehearsal, rehearsal
from tests.pgserver import drop_schema, fresh_schema, postgres_server
from tests.service.daemon_process import DaemonProcess

__all__ = ["postgres_server"]


@pytest.fixture
async def dsn(postgres_server: str) -> AsyncIterator[str]:
    target = await fresh_schema(postgres_server)
    yield target
    await drop_schema(postgres_server, target)


def host(reh: Rehearsal, name: str, dsn: str) -> DaemonProcess:
    """A daemon whose configuration and socket live in their own directory."""
    home = reh.dir / name
    home.mkdir()
    text = reh.config_path.read_text()
    for relative in ("kubeconfig.proxy", "sim/vpsie.json", "control.token"):
        text = text.replace(f'"{relative}"', f'"{reh.dir / relative}"')
    socket = home / "control.sock"
    assert reh.socket is not None
    text = text.replace(str(reh.socket), str(socket))
    text = text.replace('database = "events.db"', f'database = "{dsn}"')
    config = home / "config.toml"
    config.write_text(text)
    return DaemonProcess(reh, identity=name, config=config, socket_path=socket)


async def test_the_standby_host_finishes_the_plan_of_a_dead_leader(
    tmp_path: Path, dsn: str
) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(strategy="rolling", max_concurrent=2, batch_size=2)
        a, b = host(reh, "host-a", dsn), host(reh, "host-b", dsn)
        await a.start()
        plan = await a.plan("executing")
        await b.start()

        async def a_worker_added() -> bool:
            return len(reh.reader.workers()) > len(reh.before.workers)

        await a.until("host-a to add a worker", a_worker_added)
        a.signal(signal.SIGKILL)  # the host dies; nothing is released
        assert a.proc is not None
        await asyncio.wait_for(a.proc.wait(), 10)

        async def b_leads_the_plan() -> bool:
            status = await b.status()
            return bool(status["leader"]) and any(
                p["plan_id"] == plan["plan_id"] for p in status["plans"]
            )

        async def b_finished() -> bool:
            return not (await b.status())["plans"]

        await b.until("host-b to lead with host-a's plan", b_leads_the_plan, timeout_s=30)
        await b.until("host-b to finish the plan", b_finished, timeout_s=90)
        assert await b.stop() == 0
        await reh.settle(30)
        await reh.sampler.sample()
        after = await reh.reader.picture()
        log = await read_log(dsn)
        verdict = check(reh, log, after, report=None)
        assert verdict.ok, verdict.explain()
        assert log.verified, log.problem
        assert log.state.plans[plan["plan_id"]].status.value == "completed"
