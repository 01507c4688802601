"""The event store contract, run against `:memory:` and a file database."""

from __future__ import annotations

import asyncio

import pytest

from eventstore import (
    ConcurrencyError,
    EventStore,
    EventStoreError,
    NewEvent,
    RecordedEvent,
)
from tests.eventstore.builders import StepClock, ev


async def all_events(
    store: EventStore, from_seq: int = 1, batch: int = 5000
) -> list[RecordedEvent]:
    return [e async for e in store.read_all(from_seq, batch=batch)]


async def test_empty_store(store: EventStore) -> None:
    assert await store.head() == 0
    assert await store.streams() == []
    assert await store.stream_version("plan-1") == 0
    assert await store.read_stream("plan-1") == []
    assert await all_events(store) == []
    report = await store.verify()
    assert report.ok
    assert report.checked == 0


async def test_append_assigns_seq_version_and_clock_time(
    store: EventStore, clock: StepClock
) -> None:
    v = await store.append("plan-a", 0, [ev("A1", b'{"n":1}'), ev("A2", b'{"n":2}', 3)])
    assert v == 2
    t_first = clock.now
    v = await store.append("plan-b", 0, [ev("B1")])
    assert v == 1
    v = await store.append("plan-a", 2, [ev("A3")])
    assert v == 3
    events = await all_events(store)
    assert [(e.seq, e.stream, e.version, e.type) for e in events] == [
        (1, "plan-a", 1, "A1"),
        (2, "plan-a", 2, "A2"),
        (3, "plan-b", 1, "B1"),
        (4, "plan-a", 3, "A3"),
    ]
    assert events[0].data == b'{"n":1}'
    assert events[1].schema_version == 3
    assert events[0].recorded_at == events[1].recorded_at == t_first
    assert events[3].recorded_at > events[2].recorded_at > t_first
    assert await store.head() == 4
    assert await store.stream_version("plan-a") == 3
    assert await store.streams() == [("plan-a", 3), ("plan-b", 1)]
    assert await store.stream_versions(["plan-b", "plan-a", "nope"]) == {
        "plan-a": 3,
        "plan-b": 1,
        "nope": 0,
    }
    assert [e.version for e in await store.read_stream("plan-a")] == [1, 2, 3]
    assert [e.type for e in await store.read_stream("plan-a", from_version=2)] == ["A2", "A3"]


async def test_stale_expected_version_is_refused_and_writes_nothing(store: EventStore) -> None:
    await store.append("plan-a", 0, [ev(), ev()])
    with pytest.raises(ConcurrencyError) as info:
        await store.append("plan-a", 1, [ev("Late")])
    assert info.value.stream == "plan-a"
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert "'plan-a'" in str(info.value) and "1" in str(info.value) and "2" in str(info.value)
    with pytest.raises(ConcurrencyError):
        await store.append("plan-new", 3, [ev()])
    assert await store.head() == 2
    assert await store.stream_version("plan-new") == 0
    assert (await store.verify()).ok


async def test_concurrent_appends_share_transactions(store: EventStore) -> None:
    before = store.transactions
    versions = await asyncio.gather(
        *(store.append(f"plan-{i}", 0, [ev("Started"), ev("Next")]) for i in range(64))
    )
    assert versions == [2] * 64
    assert store.transactions - before < 64  # grouped, not one transaction each
    events = await all_events(store)
    assert [e.seq for e in events] == list(range(1, 129))
    for i in range(64):
        assert [e.type for e in await store.read_stream(f"plan-{i}")] == ["Started", "Next"]


async def test_a_stale_append_fails_alone_inside_a_group(store: EventStore) -> None:
    await store.append("busy", 0, [ev()])
    results = await asyncio.gather(
        store.append("fresh-1", 0, [ev()]),
        store.append("busy", 0, [ev("Stale")]),
        store.append("busy", 1, [ev("Current")]),
        store.append("busy", 1, [ev("LostRace")]),
        store.append("fresh-2", 0, [ev(), ev()]),
        return_exceptions=True,
    )
    assert results[0] == 1
    assert isinstance(results[1], ConcurrencyError)
    assert results[2] == 2
    assert isinstance(results[3], ConcurrencyError)
    assert results[3].actual == 2
    assert results[4] == 2
    assert [e.type for e in await store.read_stream("busy")] == ["Happened", "Current"]
    assert await store.head() == 5
    assert (await store.verify()).ok


async def test_read_all_pages_and_tail(store: EventStore) -> None:
    for i in range(23):
        await store.append(f"s{i % 4}", i // 4, [ev(f"E{i}")])
    every = await all_events(store, batch=5)
    assert [e.seq for e in every] == list(range(1, 24))
    tail = await all_events(store, from_seq=20, batch=2)
    assert [e.type for e in tail] == ["E19", "E20", "E21", "E22"]
    assert await all_events(store, from_seq=24) == []
    assert await all_events(store, from_seq=100) == []


async def test_reads_interleaved_with_appends_see_whole_transactions(store: EventStore) -> None:
    async def writer(i: int) -> None:
        await store.append(f"w{i}", 0, [ev("One"), ev("Two"), ev("Three")])

    async def reader() -> list[int]:
        sizes = []
        for _ in range(10):
            sizes.append(len(await all_events(store, batch=7)))
            await asyncio.sleep(0)
        return sizes

    *_, sizes = await asyncio.gather(*(writer(i) for i in range(20)), reader())
    assert all(n % 3 == 0 for n in sizes), sizes
    assert await store.head() == 60


async def test_snapshots_save_load_replace(store: EventStore) -> None:
    assert await store.load_snapshot("recovery") is None
    await store.save_snapshot("recovery", 0, 1, b"empty")
    snap = await store.load_snapshot("recovery")
    assert snap is not None and (snap.seq, snap.data) == (0, b"empty")
    for i in range(10):
        await store.append("p", i, [ev(f"E{i}")])
    await store.save_snapshot("recovery", 7, 2, b'{"state":7}')
    snap = await store.load_snapshot("recovery")
    assert snap is not None
    assert (snap.name, snap.seq, snap.schema_version, snap.data) == (
        "recovery",
        7,
        2,
        b'{"state":7}',
    )
    tail = await all_events(store, snap.seq + 1)
    assert [e.type for e in tail] == ["E7", "E8", "E9"]
    with pytest.raises(ValueError, match="outside the log"):
        await store.save_snapshot("recovery", 11, 1, b"")
    with pytest.raises(ValueError, match="outside the log"):
        await store.save_snapshot("recovery", -1, 1, b"")


@pytest.mark.parametrize(
    ("stream", "expected", "events", "error", "words"),
    [
        ("", 0, [ev()], ValueError, "stream"),
        ("p", -1, [ev()], ValueError, "expected_version"),
        ("p", 0, [], ValueError, "no events"),
        ("p", 0, [NewEvent(type="", schema_version=1, data=b"")], ValueError, "type"),
        ("p", 0, [NewEvent(type="T", schema_version=0, data=b"")], ValueError, "schema_version"),
        ("p", 0, [ev(), NewEvent(type="T", schema_version=1, data="s")], TypeError, "event 1"),
    ],
)
async def test_bad_append_arguments_are_named(
    store: EventStore,
    stream: str,
    expected: int,
    events: list[NewEvent],
    error: type[Exception],
    words: str,
) -> None:
    with pytest.raises(error, match=words):
        await store.append(stream, expected, events)
    assert await store.head() == 0


async def test_closed_store_refuses_work(store_path: str) -> None:
    async with await EventStore.open(store_path) as s:
        await s.append("p", 0, [ev()])
    with pytest.raises(EventStoreError, match="closed"):
        await s.append("p", 1, [ev()])
    with pytest.raises(EventStoreError, match="closed"):
        await s.head()
    await s.close()  # idempotent


async def test_close_finishes_queued_appends(store_path: str) -> None:
    s = await EventStore.open(store_path)
    pending = [asyncio.ensure_future(s.append(f"p{i}", 0, [ev()])) for i in range(10)]
    await asyncio.sleep(0)
    await s.close()
    assert [await p for p in pending] == [1] * 10


async def test_normal_synchronous_mode_works_and_bad_mode_is_refused(store_path: str) -> None:
    async with await EventStore.open(store_path, synchronous="NORMAL") as s:
        assert await s.append("p", 0, [ev()]) == 1
    with pytest.raises(ValueError, match="synchronous"):
        await EventStore.open(store_path, synchronous="OFF")  # type: ignore[arg-type]
