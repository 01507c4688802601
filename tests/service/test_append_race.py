"""Two daemons race on one plan's stream: the old leader's outcome append against the new
leader's taking of its term.

Adversary: the old leader, made to believe it still leads (its Kubernetes API answers its Lease
renewals from a frozen view), finishes a worker add and appends the outcome at the very moment
the standby, which sees the real Lease expire, takes a new leadership term. PostgreSQL orders
the two; another session holds the log's head row until both wait for it, so each order is
forced in turn:

- old-first: the outcome append was queued first and lands under the old term; the new term
  is taken after it, and the new leader, folding the log after taking its term, goes on from
  that outcome (it does not add the worker again);
- new-first: the new term is being taken (it holds the leadership row) when the old leader's
  add is answered; the outcome append comes behind it and is refused (its term is old), the
  old leader stops acting, and the new leader settles the open add from the world.

A runner never sees another daemon's append land under it: taking the term comes before the
fold (the store's fence makes the old leader's write either part of what the new leader reads
or refused), so the new leader's runner continues from the log in both orders; no plan is left
executing without a runner, the plan completes under the new leader with each add and delete
made once, the log verifies and no event of an old term follows a newer one.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from eventstore import EventStore
from tests.crash.invariants import check, read_log
from tests.crash.rehearsal import rehearsal
from tests.eventstore.test_postgres import waiting_for_a_lock
from tests.service.test_service import kube
from tests.service.test_two_hosts import FENCED, LEASE, StaleLeaseView
from tests.service.two_daemons import leadership_holders, leads, terms_in_order, witnessed_daemon


async def waiting(conn: asyncpg.Connection, function: str) -> None:
    """Until a session's statement calling `function` waits for a lock (the server's view)."""
    try:
        await waiting_for_a_lock(conn, function)
    except AssertionError:
        rows = await conn.fetch(
            "SELECT pid, state, wait_event_type, wait_event, query FROM pg_stat_activity "
            "WHERE datname = current_database()"
        )
        raise AssertionError(
            f"{function} never waited; sessions: {[dict(r) for r in rows]}"
        ) from None


async def first_add_outcome_term(dsn: str) -> int:
    """The leadership term under which the first WorkerAdded was appended."""
    store = await EventStore.open(dsn)
    try:
        async for recorded in store.read_all():
            if recorded.type == "WorkerAdded":
                return recorded.term
    finally:
        await store.close()
    raise AssertionError("no WorkerAdded in the log")


@pytest.mark.parametrize("first", ["old-first", "new-first"])
async def test_the_old_leaders_outcome_and_the_new_term_race(
    tmp_path: Path, dsn: str, first: str
) -> None:
    async with rehearsal(tmp_path, fork=False, database=dsn) as reh:
        reh.configure(strategy="rolling", max_concurrent=1, batch_size=1)
        async with witnessed_daemon(reh, "a") as wa, witnessed_daemon(reh, "b") as wb:
            a, b = wa.daemon, wb.daemon
            stale = StaleLeaseView()
            holding = asyncio.Event()
            release_add = asyncio.Event()
            b_may_campaign = asyncio.Event()

            async def hold_the_first_add(
                method: str, path: str, body: bytes
            ) -> tuple[int, bytes] | None:
                if method != "POST" or "/add/slave" not in path or holding.is_set():
                    return None
                code, lease = await kube(reh, "GET", LEASE)
                assert code == 200 and lease["spec"]["holderIdentity"] == "a", lease
                stale.lease = lease  # from now on a's renewals never reach the API
                wa.kube_proxy.respond = stale
                holding.set()
                await release_add.wait()
                return None  # forwarded: the worker is added

            async def b_waits(method: str, path: str, body: bytes) -> tuple[int, bytes] | None:
                if path != LEASE or b_may_campaign.is_set():
                    return None
                return 503, json.dumps({"kind": "Status", "code": 503}).encode()

            wa.vpsie_proxy.respond = hold_the_first_add
            wb.kube_proxy.respond = b_waits
            await a.start()
            await a.until("a to lead", lambda: leads(a), timeout_s=60)
            await b.start()

            async def a_holding() -> bool:
                return holding.is_set()

            await a.until("a's first add to be in flight", a_holding, timeout_s=60)
            mark = wa.mark()
            head = await asyncpg.connect(dsn)
            # Polled from a session of its own: inside a transaction the server's view of the
            # other sessions is a snapshot taken once.
            watch = await asyncpg.connect(dsn)
            try:
                await head.execute("BEGIN")
                await head.execute("SELECT 1 FROM log_head WHERE id = 1 FOR UPDATE")
                if first == "old-first":
                    release_add.set()
                    await waiting(watch, "eventlog_append")
                    b_may_campaign.set()
                    await waiting(watch, "eventlog_acquire_term")
                else:
                    b_may_campaign.set()
                    await waiting(watch, "eventlog_acquire_term")
                    release_add.set()

                    async def a_reads_after_its_add() -> bool:
                        # Its next request, reading the workers to record the outcome: the
                        # append follows it, behind b's term (b holds the leadership row).
                        return len(wa.vpsie.calls) > mark[1]

                    await a.until("a to read after its add", a_reads_after_its_add)
                stale.lease = None  # a sees the real Lease again: b holds it
                await head.execute("ROLLBACK")
            finally:
                await head.close()
                await watch.close()

            async def b_leads_and_finished() -> bool:
                status = await b.status()
                return bool(status["leader"] and status["daemon"]["ready"]) and not (
                    status["plans"]
                )

            await b.until("b to finish the plan", b_leads_and_finished, timeout_s=90)

            async def a_stepped_down() -> bool:
                return "not leading any more" in a.log() and not await leads(a)

            await a.until("a to step down", a_stepped_down, timeout_s=30)
            a_after = wa.effects_since(mark)
            _, b_metrics = await b.call("GET", "/metrics")
            assert await b.stop() == 0, b.log_path
            assert await a.stop() == 0, a.log_path
            a_log, b_log = a.log(), b.log()
            for witness in (wa.kube, wb.kube):  # the PDB invariant judges every eviction
                reh.proxy.witness.evictions += witness.evictions
        await reh.settle(30)
        await reh.sampler.sample()
        after = await reh.reader.picture()
        log = await read_log(dsn)
        verdict = check(reh, log, after, report=None)
        holders = await leadership_holders(dsn)
        late = await terms_in_order(dsn)
        outcome_term = await first_add_outcome_term(dsn)

    assert verdict.ok, verdict.explain()
    assert log.verified, log.problem
    assert [p.status.value for p in log.state.plans.values()] == ["completed"]
    # a (again, when a loaded machine made it miss a renewal before the race), then b.
    assert holders[0] == "a" and "b" in holders
    assert late == []
    assert a_after == [], "the old leader changed the world after its add"
    if first == "old-first":
        assert holders[holders.index("b") - 1] == "a"
        assert outcome_term == holders.index("b")  # a's outcome landed, and b went on from it
    else:
        assert FENCED in a_log, "the old leader's outcome append was not refused"
        assert outcome_term == holders.index("b") + 1  # b settled the add from the world
    assert "stopped on an error" not in b_log and "with no runner" not in b_log
    assert "vpsie_rebalancing_plans_without_runner 0.0" in b_metrics
