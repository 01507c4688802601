"""The ways an append reaches the file: in its caller's task, through the writer, in one
multi-row INSERT or in an explicit transaction; and what cancelling or closing does to them."""

from __future__ import annotations

import asyncio

import pytest

from eventstore import ConcurrencyError, EventStore
from tests.eventstore.builders import ev


async def test_a_lone_append_commits_in_one_transaction_and_is_durable_at_return(
    store_path: str,
) -> None:
    async with await EventStore.open(store_path) as s:
        before = s.transactions
        assert await s.append("p", 0, [ev("A"), ev("B")]) == 2
        assert s.transactions - before == 1
        assert [e.type for e in await s.read_stream("p")] == ["A", "B"]
        assert (await s.verify()).ok


async def test_an_append_larger_than_one_statement_is_still_all_or_nothing(
    store_path: str,
) -> None:
    async with await EventStore.open(store_path) as s:
        assert await s.append("big", 0, [ev(f"E{i}") for i in range(300)]) == 300
        assert [e.version for e in await s.read_stream("big")] == list(range(1, 301))
        results = await asyncio.gather(
            s.append("big", 300, [ev("Next")]),
            *(s.append(f"g{i}", 0, [ev(), ev()]) for i in range(100)),  # 200 rows queued
            s.append("big", 300, [ev("Stale")]),
            return_exceptions=True,
        )
        assert results[0] == 301
        assert results[1:-1] == [2] * 100
        assert isinstance(results[-1], ConcurrencyError)
        assert await s.head() == 300 + 1 + 200
        assert (await s.verify()).ok


async def test_a_cancelled_append_leaves_the_store_consistent(store_path: str) -> None:
    async with await EventStore.open(store_path) as s:
        await s.append("c", 0, [ev("First")])
        await s.acquire_term("host-a")  # forgets cached versions: the next append looks up
        task = asyncio.ensure_future(s.append("c", 1, [ev("MaybeWritten")]))
        await asyncio.sleep(0)  # the append waits one turn to see if others join it
        await asyncio.sleep(0)  # now its transaction is under way (looking up c's version)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        # Committed or not, the store knows it, or finds out.
        version = await s.stream_version("c")
        assert version in (1, 2)
        assert await s.append("other", 0, [ev()]) == 1
        assert await s.append("c", version, [ev("After")]) == version + 1
        with pytest.raises(ConcurrencyError) as stale:
            await s.append("c", version + 5, [ev("Stale")])
        assert stale.value.actual == version + 1
        assert await s.head() == version + 3  # c, the term, other
        report = await s.verify()
        assert report.ok, report.problem


async def test_close_waits_for_an_append_committing_in_its_callers_task(store_path: str) -> None:
    s = await EventStore.open(store_path)
    first = asyncio.ensure_future(s.append("p", 0, [ev()]))
    await asyncio.sleep(0)  # `first` is mid-INSERT, holding the store's lock
    await s.close()
    assert await first == 1
    if store_path != ":memory:":
        async with await EventStore.open(store_path) as again:
            assert await again.stream_version("p") == 1


async def test_a_cancelled_snapshot_leaves_the_store_usable(store_path: str) -> None:
    async with await EventStore.open(store_path) as s:
        await s.append("p", 0, [ev(), ev()])
        task = asyncio.ensure_future(s.save_snapshot("fold", 2, 1, b"{}"))
        await asyncio.sleep(0)  # its transaction is under way
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        snap = await s.load_snapshot("fold")
        assert snap is None or (snap.seq, snap.data) == (2, b"{}")
        assert await s.append("p", 2, [ev()]) == 3
        await s.save_snapshot("fold", 3, 1, b"{}")
        snap = await s.load_snapshot("fold")
        assert snap is not None and snap.seq == 3
        report = await s.verify()
        assert report.ok, report.problem
