"""Fencing: the leadership term lives in the store, and the store refuses a stale leader.

The adversary is a second daemon that took the lead while the first one was stalled (a
SIGSTOP past its lease): the first one's next append carries the old term and must be refused
by the store itself, inside the inserting statement, whatever the first one has cached.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from eventstore import EventStore, EventStoreError, FencedError, SnapshotRangeError
from eventstore.chain import row_hash
from eventstore.schema import LEADERSHIP_EVENT, LEADERSHIP_STREAM
from tests.eventstore.builders import StepClock, ev


async def test_taking_the_lead_increments_the_term_and_records_it(store: EventStore) -> None:
    assert await store.current_term() == 0
    assert await store.acquire_term("host-a") == 1
    assert await store.acquire_term("host-b") == 2
    assert await store.current_term() == 2
    taken = await store.read_stream(LEADERSHIP_STREAM)
    assert [(e.type, e.version, e.term) for e in taken] == [
        (LEADERSHIP_EVENT, 1, 1),
        (LEADERSHIP_EVENT, 2, 2),
    ]
    assert [json.loads(e.data) for e in taken] == [
        {"term": 1, "holder": "host-a"},
        {"term": 2, "holder": "host-b"},
    ]
    report = await store.verify()
    assert report.ok and report.checked == 2, report.problem


async def test_an_append_under_the_current_term_records_it(store: EventStore) -> None:
    term = await store.acquire_term("host-a")
    assert await store.append("plan-1", 0, [ev("Planned")], term=term) == 1
    assert await store.append("plan-1", 1, [ev("Unfenced")]) == 2
    events = [e async for e in store.read_all()]
    assert [(e.stream, e.term) for e in events] == [
        (LEADERSHIP_STREAM, 1),
        ("plan-1", 1),
        ("plan-1", 0),
    ]
    assert (await store.verify()).ok


async def test_an_append_from_an_older_term_is_refused_and_writes_nothing(
    store: EventStore,
) -> None:
    old = await store.acquire_term("host-a")
    await store.append("plan-1", 0, [ev("Planned")], term=old)
    await store.acquire_term("host-b")
    head = await store.head()
    with pytest.raises(FencedError) as info:
        await store.append("plan-1", 1, [ev("CordonRequested")], term=old)
    assert (info.value.stream, info.value.term, info.value.current) == ("plan-1", 1, 2)
    assert "term 2 has been taken since" in str(info.value)
    assert isinstance(info.value, EventStoreError)
    assert await store.head() == head
    assert await store.stream_version("plan-1") == 1


async def test_a_term_never_taken_is_refused(store: EventStore) -> None:
    await store.acquire_term("host-a")
    with pytest.raises(FencedError, match="never taken"):
        await store.append("plan-1", 0, [ev()], term=5)
    assert await store.head() == 1


async def test_the_stale_leader_is_refused_by_the_database_not_by_its_cache(
    tmp_path: Path,
) -> None:
    """Adversary: a standby on the same log takes the lead while this daemon is stalled."""
    path = tmp_path / "events.db"
    async with (
        await EventStore.open(path, clock=StepClock()) as stalled,
        await EventStore.open(path, clock=StepClock()) as standby,
    ):
        old = await stalled.acquire_term("host-a")
        assert await stalled.append("plan-1", 0, [ev("Planned")], term=old) == 1
        new = await standby.acquire_term("host-b")
        assert await standby.append("plan-1", 1, [ev("Resumed")], term=new) == 2
        # `stalled` has seen nothing of this: its cached term is still 1.
        with pytest.raises(FencedError) as info:
            await stalled.append("plan-2", 0, [ev("Planned")], term=old)
        assert (info.value.term, info.value.current) == (1, 2)
        assert await standby.stream_version("plan-2") == 0
        report = await standby.verify()
        assert report.ok and report.checked == 4, report.problem


async def test_a_stale_append_fails_alone_inside_a_group(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with (
        await EventStore.open(path, clock=StepClock()) as store,
        await EventStore.open(path, clock=StepClock()) as other,
    ):
        old = await store.acquire_term("host-a")
        new = await other.acquire_term("host-a-again")  # store's cache does not know
        results = await asyncio.gather(
            store.append("p1", 0, [ev()], term=new),
            store.append("p2", 0, [ev()], term=old),
            store.append("p3", 0, [ev(), ev()], term=new),
            store.append("p4", 0, [ev()]),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 2 and results[3] == 1, results
        assert isinstance(results[1], FencedError)
        assert await store.stream_version("p2") == 0
        assert (await store.verify()).ok


@pytest.mark.parametrize(
    ("stream", "term", "error", "words"),
    [
        (LEADERSHIP_STREAM, None, ValueError, "store's own"),
        ("plan-1", 0, ValueError, "term must be"),
        ("plan-1", True, ValueError, "term must be"),
    ],
)
async def test_bad_terms_and_reserved_streams_are_named(
    store: EventStore, stream: str, term: int | None, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        await store.append(stream, 0, [ev()], term=term)
    with pytest.raises(ValueError, match="holder"):
        await store.acquire_term("")


def _tamper(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TRIGGER events_no_update")
        raw.execute("DROP TRIGGER events_fenced")
        for sql, params in statements:
            raw.execute(sql, params)


async def test_a_changed_term_breaks_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with await EventStore.open(path, clock=StepClock()) as s:
        term = await s.acquire_term("host-a")
        await s.append("plan-1", 0, [ev()], term=term)
    _tamper(path, ("UPDATE events SET term = 0 WHERE seq = 2", ()))
    async with await EventStore.open(path) as s:
        report = await s.verify()
    assert not report.ok and report.first_bad_seq == 2
    assert "chain hash" in report.problem


async def test_verify_names_a_fenced_append_that_got_through(tmp_path: Path) -> None:
    """A row from an old term after a newer one was taken, with a correct hash: found."""
    path = tmp_path / "events.db"
    async with await EventStore.open(path, clock=StepClock()) as s:
        await s.acquire_term("host-a")
        await s.acquire_term("host-b")
    with sqlite3.connect(path) as raw:
        prev = raw.execute("SELECT hash FROM events WHERE seq = 2").fetchone()[0]
    h = row_hash(prev, 3, "plan-1", 1, "Late", 1, b"{}", 5.0, 1)
    _tamper(
        path,
        ("INSERT INTO events VALUES (3, 'plan-1', 1, 'Late', 1, x'7b7d', 5.0, ?, 1)", (h,)),
    )
    async with await EventStore.open(path) as s:
        report = await s.verify()
    assert not report.ok and report.first_bad_seq == 3
    assert "under term 1, but term 2" in report.problem


async def test_snapshots_and_reads_use_the_real_head(tmp_path: Path) -> None:
    """Adversary: the other daemon on the log appended; this one has not written since."""
    path = tmp_path / "events.db"
    async with (
        await EventStore.open(path, clock=StepClock()) as idle,
        await EventStore.open(path, clock=StepClock()) as writer,
    ):
        for i in range(5):
            await writer.append("plan-1", i, [ev(f"E{i}")])
        await idle.save_snapshot("fold", 5, 1, b"{}")
        snap = await idle.load_snapshot("fold")
        assert snap is not None and snap.seq == 5
        assert [e.seq async for e in idle.read_all(5)] == [5]
        with pytest.raises(SnapshotRangeError, match="seq 6 is outside the log \\(head is 5\\)"):
            await idle.save_snapshot("fold", 6, 1, b"{}")


async def test_a_version_2_file_gains_terms_without_rewriting_rows(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with await EventStore.open(path, clock=StepClock()) as s:
        await s.append("plan-1", 0, [ev(), ev()])
    with sqlite3.connect(path) as raw:  # back to layout 2, as a version-2 build left it
        before = raw.execute("SELECT seq, hash FROM events ORDER BY seq").fetchall()
        raw.execute("DROP TRIGGER events_fenced")
        raw.execute("DROP TABLE leadership")
        raw.execute("ALTER TABLE events DROP COLUMN term")
        raw.execute("PRAGMA user_version=2")
    async with await EventStore.open(path, clock=StepClock()) as s:
        assert await s.current_term() == 0
        term = await s.acquire_term("host-a")
        assert await s.append("plan-1", 2, [ev()], term=term) == 3
        report = await s.verify()
        assert report.ok and report.checked == 4, report.problem
    with sqlite3.connect(path) as raw:
        after = raw.execute("SELECT seq, hash FROM events WHERE seq <= 2 ORDER BY seq").fetchall()
    assert after == before
