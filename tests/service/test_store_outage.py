"""The daemon's event log on PostgreSQL drops its connections in the middle of appends.

Adversary: the database server ends the daemon's sessions (what a restart or a failover of the
database does) exactly while the daemon appends the outcome of a call it made: once after its
first worker add, once after its first worker delete. Another session holds the log's head row
so that the append is certainly inside the server when its session is ended; whether it was
committed is unknown to the daemon. The daemon must not die and must not go on from what it
had folded: it parks, connects again, takes a new term, folds the log anew, settles the open
intent from the world, and finishes the plan, with each add and delete made once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg

from tests.crash.invariants import check, read_log
from tests.crash.rehearsal import rehearsal
from tests.eventstore.test_postgres import waiting_for_a_lock
from tests.service.two_daemons import leadership_holders, terms_in_order, witnessed_daemon


async def test_the_daemon_parks_reconnects_and_refolds_when_the_database_drops_it(
    tmp_path: Path, dsn: str
) -> None:
    async with rehearsal(tmp_path, fork=False, database=dsn) as reh:
        reh.configure(strategy="rolling", max_concurrent=1, batch_size=1)
        async with witnessed_daemon(reh, "a") as wa:
            daemon = wa.daemon
            blockers: list[asyncpg.Connection] = []
            cut: set[str] = set()

            async def hold_the_log_while_it_calls(
                method: str, path: str, body: bytes
            ) -> tuple[int, bytes] | None:
                kind = "add" if method == "POST" and "/add/slave" in path else method
                if kind in ("add", "DELETE") and kind not in cut:
                    cut.add(kind)
                    blocker = await asyncpg.connect(dsn)
                    await blocker.execute("BEGIN")
                    await blocker.execute("SELECT 1 FROM log_head WHERE id = 1 FOR UPDATE")
                    blockers.append(blocker)
                return None  # forwarded: the call is made; its outcome's append will wait

            async def cut_the_waiting_append() -> None:
                blocker = blockers.pop()
                pid = await waiting_for_a_lock(blocker, "eventlog_append")
                await blocker.execute("SELECT pg_terminate_backend($1)", pid)
                await blocker.execute("ROLLBACK")
                await blocker.close()

            wa.vpsie_proxy.respond = hold_the_log_while_it_calls
            await daemon.start()
            for kind in ("add", "DELETE"):

                async def holding(kind: str = kind) -> bool:
                    return kind in cut and bool(blockers)

                await daemon.until(f"the daemon's {kind} to be made", holding, timeout_s=60)
                await cut_the_waiting_append()

                async def parked_and_back() -> bool:
                    text = daemon.log()
                    return text.count("the event log answers again") >= len(cut)

                await daemon.until("the daemon to fold the log anew", parked_and_back)

            async def finished() -> bool:
                status = await daemon.status()
                return bool(status["daemon"]["ready"]) and not status["plans"]

            await daemon.until("the plan to finish", finished, timeout_s=90)
            text = daemon.log()
            daemon.signal(signal.SIGTERM)
            assert daemon.proc is not None
            code = await asyncio.wait_for(daemon.proc.wait(), 20)
            for witness in (wa.kube,):  # the PDB invariant judges every eviction
                reh.proxy.witness.evictions += witness.evictions
        await reh.settle(30)
        await reh.sampler.sample()
        after = await reh.reader.picture()
        log = await read_log(dsn)
        verdict = check(reh, log, after, report=None)
        holders = await leadership_holders(dsn)
        late = await terms_in_order(dsn)

    assert code == 0, daemon.log_path
    assert text.count("the event log failed") >= 2, "the cut appends were not seen as failed"
    assert "stopped on an error" not in text
    assert verdict.ok, verdict.explain()
    assert log.verified, log.problem
    assert [p.status.value for p in log.state.plans.values()] == ["completed"]
    assert holders == ["a", "a", "a"]  # the first term, and one more after each cut
    assert late == []
