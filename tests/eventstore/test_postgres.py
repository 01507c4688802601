"""What is PostgreSQL's own in the contract: the layout table, several connections writing at
once, a server process dying in the middle of a group commit, tampering inside the database."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from eventstore import (
    CorruptLogError,
    EventStore,
    EventStoreError,
    FencedError,
    SchemaTooNewError,
    StoreUnavailable,
)
from eventstore.pg_schema import PG_LAYOUT_VERSION, SCHEMA
from eventstore.postgres import redact_dsn
from eventstore.schema import APPLICATION_ID
from tests.eventstore.builders import StepClock, ev


async def sql(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def waiting_for_a_lock(conn: asyncpg.Connection, function: str) -> int:
    """The backend pid of the statement calling `function` once it waits for a row lock.

    Polls the server's own view of its sessions (the wait is the server's, not a timer).
    """
    for _ in range(1000):
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
            f"%{function}%",
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError(f"no call of {function} ever waited for the lock")


async def test_a_newer_layout_is_refused(pg_dsn: str) -> None:
    async with await EventStore.open(pg_dsn) as s:
        await s.append("p", 0, [ev()])
    await sql(pg_dsn, "UPDATE eventlog_layout SET version = 4")
    with pytest.raises(SchemaTooNewError, match="version 4 is newer than this build supports"):
        await EventStore.open(pg_dsn)


async def test_a_database_with_someone_elses_events_table_is_not_written(pg_dsn: str) -> None:
    await sql(pg_dsn, "CREATE TABLE events (id int)")
    with pytest.raises(EventStoreError, match="not an event log"):
        await EventStore.open(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('streams')") is None
    finally:
        await conn.close()


async def test_two_daemons_opening_an_empty_database_at_once_both_get_the_log(
    pg_dsn: str,
) -> None:
    """Adversary: a second daemon creates the layout while this one opens the same empty
    database: this one looks before the other commits (and finds nothing), then waits for the
    other's creation lock. Once it has the lock it must see the other's tables (a cached "no
    such table" from its first look made it refuse the log as someone else's)."""
    creator = await asyncpg.connect(pg_dsn)
    watcher = await asyncpg.connect(pg_dsn)
    try:
        tx = creator.transaction()
        await tx.start()
        await creator.execute("SELECT pg_advisory_xact_lock($1)", APPLICATION_ID)
        for statement in SCHEMA:
            await creator.execute(statement)
        await creator.execute(
            "INSERT INTO eventlog_layout (id, application_id, version) VALUES (1, $1, $2)",
            APPLICATION_ID,
            PG_LAYOUT_VERSION,
        )
        opening = asyncio.ensure_future(EventStore.open(pg_dsn, clock=StepClock()))
        await waiting_for_a_lock(watcher, "pg_advisory")
        await tx.commit()
        async with await opening as store:
            assert await store.append("p", 0, [ev()]) == 1
    finally:
        await creator.close()
        await watcher.close()


async def test_an_unreachable_server_is_one_clear_error_without_the_password() -> None:
    dsn = "postgresql://rebalancer:s3cret@/events?host=/nonexistent-socket-dir"
    with pytest.raises(EventStoreError) as info:
        await EventStore.open(dsn)
    assert "opening" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert redact_dsn(dsn) == "postgresql://rebalancer@/events?host=/nonexistent-socket-dir"


async def test_two_hosts_appending_at_once_keep_one_gap_free_order(pg_dsn: str) -> None:
    """Adversary: a second daemon's connection writes while this one does; a reader polls."""
    async with (
        await EventStore.open(pg_dsn, clock=StepClock()) as a,
        await EventStore.open(pg_dsn, clock=StepClock()) as b,
        await EventStore.open(pg_dsn) as reader,
    ):
        seen: list[list[int]] = []
        done = asyncio.Event()

        async def poll() -> None:
            while not done.is_set():
                seen.append([e.seq async for e in reader.read_all(batch=16)])
                await asyncio.sleep(0)

        poller = asyncio.ensure_future(poll())
        await asyncio.gather(
            *(a.append(f"a{i}", 0, [ev(), ev()]) for i in range(64)),
            *(b.append(f"b{i}", 0, [ev()]) for i in range(64)),
        )
        done.set()
        await poller
        for seqs in seen:
            assert seqs == list(range(1, len(seqs) + 1))  # a prefix, never a gap
        assert await reader.head() == 64 * 3
        report = await reader.verify()
        assert report.ok and report.checked == 192, report.problem
        assert a.transactions < 64  # grouped


async def test_a_server_process_dying_mid_group_commit_loses_the_whole_group(
    pg_dsn: str,
) -> None:
    """Adversary: the database server process serving the writer dies inside the transaction.

    Another connection holds the head row, so the group is certainly inside its transaction
    (waiting for the row) when its backend is terminated.
    """
    async with await EventStore.open(pg_dsn, clock=StepClock()) as s:
        await s.append("before", 0, [ev()])
        blocker = await asyncpg.connect(pg_dsn)
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("SELECT 1 FROM log_head WHERE id = 1 FOR UPDATE")
            group = [asyncio.ensure_future(s.append(f"g{i}", 0, [ev()])) for i in range(8)]
            pid = await waiting_for_a_lock(blocker, "eventlog_append")
            await blocker.execute("SELECT pg_terminate_backend($1)", pid)
            results = await asyncio.gather(*group, return_exceptions=True)
            await tx.rollback()
        finally:
            await blocker.close()
        assert all(isinstance(r, EventStoreError) for r in results), results
    async with await EventStore.open(pg_dsn) as again:
        assert await again.head() == 1
        assert await again.streams() == [("before", 1)]
        assert await again.append("after", 0, [ev()]) == 1
        report = await again.verify()
        assert report.ok and report.checked == 2, report.problem


async def test_a_store_whose_connections_were_dropped_connects_again(pg_dsn: str) -> None:
    """Adversary: the database ends every session of this store (what a server restart or a
    failover of the database does): once while idle, once in the middle of an append.

    Idle: the next read connects again and works (a read is repeated once on a new
    connection); the next append works, or, when the store had not noticed the cut yet, fails
    with StoreUnavailable (it cannot tell whether the server saw it) and the one after works.
    Mid-append: that append fails with StoreUnavailable (here it was not committed: the
    server rolled its transaction back), and the store goes on after it."""
    async with await EventStore.open(pg_dsn, clock=StepClock()) as s:
        await s.append("before", 0, [ev()])
        killer = await asyncpg.connect(pg_dsn)
        try:
            sessions = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity " + (
                "WHERE application_name = 'vpsie-rebalancer' AND pid <> pg_backend_pid()"
            )
            assert len(await killer.fetch(sessions)) == 2
            assert await s.head() == 1
            # Whether the store has noticed the cut before this append is the event loop's
            # business: either it connects again first, or the append says it cannot tell.
            with contextlib.suppress(StoreUnavailable):
                await s.append("idle", 0, [ev()])
            if await s.stream_version("idle") == 0:
                assert await s.append("idle", 0, [ev()]) == 1
            tx = killer.transaction()
            await tx.start()
            await killer.execute("SELECT 1 FROM log_head WHERE id = 1 FOR UPDATE")
            cut = asyncio.ensure_future(s.append("cut", 0, [ev()]))
            pid = await waiting_for_a_lock(killer, "eventlog_append")
            await killer.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(StoreUnavailable, match="unknown until the log is read again"):
                await cut
            await tx.rollback()
        finally:
            await killer.close()
        assert await s.append("after", 0, [ev()]) == 1
        assert await s.streams() == [("after", 1), ("before", 1), ("idle", 1)]
        assert s.reconnections >= 3  # writer and reader after the first cut, writer again
        report = await s.verify()
        assert report.ok and report.checked == 3, report.problem


async def test_taking_the_term_waits_for_an_append_in_flight(pg_dsn: str) -> None:
    """The fence is a row lock: an append holding the leadership row delays the new term, and
    the appends after the new term are refused."""
    async with await EventStore.open(pg_dsn, clock=StepClock()) as s:
        old = await s.acquire_term("host-a")
        holder = await asyncpg.connect(pg_dsn)  # an append of host-a in flight
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT term FROM leadership WHERE id = 1 FOR SHARE")
            async with await EventStore.open(pg_dsn, clock=StepClock()) as standby:
                taking = asyncio.ensure_future(standby.acquire_term("host-b"))
                await waiting_for_a_lock(holder, "eventlog_acquire_term")
                assert not taking.done()  # waits for the row
                await tx.commit()
                new = await taking
        finally:
            await holder.close()
        assert new == old + 1
        with pytest.raises(FencedError):
            await s.append("p", 0, [ev()], term=old)
        assert await s.append("p", 0, [ev()], term=new) == 1


async def test_tampering_inside_the_database_is_named(pg_dsn: str) -> None:
    async with await EventStore.open(pg_dsn, clock=StepClock()) as s:
        term = await s.acquire_term("host-a")
        for i in range(5):
            await s.append("plan-1", i, [ev(f"E{i}", b'{"n":%d}' % i)], term=term)
    await sql(
        pg_dsn,
        "ALTER TABLE events DISABLE TRIGGER USER",
        "UPDATE events SET data = '\\x7b226e223a397d'::bytea WHERE seq = 4",
    )
    async with await EventStore.open(pg_dsn) as s:
        report = await s.verify()
        assert not report.ok and report.first_bad_seq == 4
        assert "stream 'plan-1', type 'E2'" in report.problem
        with pytest.raises(CorruptLogError, match="seq 4"):
            await s.read_stream("plan-1")


async def test_events_refuse_update_delete_and_truncate(pg_dsn: str) -> None:
    async with await EventStore.open(pg_dsn) as s:
        await s.append("p", 0, [ev()])
    for statement in (
        "UPDATE events SET type = 'X'",
        "DELETE FROM events",
        "TRUNCATE events",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await sql(pg_dsn, statement)


async def test_a_log_is_copied_with_its_chain_into_an_empty_database_only(
    tmp_path: Path, pg_dsn: str
) -> None:
    source_path = tmp_path / "events.db"
    async with await EventStore.open(source_path, clock=StepClock()) as src:
        term = await src.acquire_term("host-a")
        for i in range(30):
            await src.append(f"plan-{i % 4}", i // 4, [ev(f"E{i}")], term=term)
        await src.append("plan-x", 0, [ev("Unfenced")])
        await src.save_snapshot("fold", 10, 1, b"{}")
        async with await EventStore.open(pg_dsn) as dst:
            seen: list[int] = []
            assert await dst.copy_from(src, batch=7, progress=seen.append) == 32
            assert seen[-1] == 32
            assert [e async for e in dst.read_all()] == [e async for e in src.read_all()]
            assert await dst.hash_at(32) == await src.hash_at(32)
            assert await dst.current_term() == 1
            assert await dst.streams() == await src.streams()
            report = await dst.verify()
            assert report.ok and report.checked == 32, report.problem
            with pytest.raises(EventStoreError, match="not empty"):
                await dst.copy_from(src)
            # the copy goes on as a log: the next term fences the old one there too
            new = await dst.acquire_term("host-b")
            with pytest.raises(FencedError):
                await dst.append("plan-0", 8, [ev()], term=term)
            assert await dst.append("plan-0", 8, [ev()], term=new) == 9


async def test_a_damaged_source_is_not_copied(tmp_path: Path, pg_dsn: str) -> None:
    source_path = tmp_path / "events.db"
    async with await EventStore.open(source_path, clock=StepClock()) as src:
        for i in range(5):
            await src.append("plan-1", i, [ev(f"E{i}")])
    with sqlite3.connect(source_path) as raw:
        raw.execute("DROP TRIGGER events_no_update")
        raw.execute("UPDATE events SET data = x'00' WHERE seq = 3")
    async with (
        await EventStore.open(source_path) as src,
        await EventStore.open(pg_dsn) as dst,
    ):
        with pytest.raises(CorruptLogError, match="seq 3"):
            await dst.copy_from(src)
        assert await dst.head() == 0  # all or nothing


async def test_the_audit_tools_do_not_create_a_log(pg_dsn: str) -> None:
    with pytest.raises(EventStoreError, match="no event log in this database"):
        await EventStore.open(pg_dsn, create=False)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('events')") is None
    finally:
        await conn.close()
