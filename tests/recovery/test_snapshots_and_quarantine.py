"""Snapshots keep recovery proportional to the work in flight; bad logs are named, not acted on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from daemon.service.recovery import SNAPSHOT_NAME, RecoveryError, recover, write_snapshot
from eventstore import EventStore, NewEvent
from statemachine import events as ev
from statemachine.fold import STATE_SCHEMA_VERSION
from statemachine.histories import example_spec, forward_history


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    s = await EventStore.open(tmp_path / "log.db", synchronous="NORMAL")
    yield s
    await s.close()


async def append(store: EventStore, events: Sequence[ev.Event]) -> None:
    for event in events:
        stream = ev.stream_for(event.plan_id)
        version = await store.stream_version(stream)
        await store.append(stream, version, [NewEvent(**ev.encode(event)._asdict())])


def plan(plan_id: str, *, group: str = "workers", stop: int | None = None) -> list[ev.Event]:
    history = forward_history(example_spec(plan_id, node_group=group))
    return history if stop is None else history[:stop]


async def test_snapshot_holds_only_plans_in_flight_and_recovery_reads_only_the_tail(
    store: EventStore,
) -> None:
    finished = [plan(f"old{i}") for i in range(5)]
    for history in finished:
        await append(store, history)
    await append(store, plan("live", group="gpu", stop=12))
    first = await recover(store)
    assert list(first.in_flight) == ["live"]
    assert first.snapshot_seq is None
    await write_snapshot(store, first.state)

    snapshot = await store.load_snapshot(SNAPSHOT_NAME)
    assert snapshot is not None and snapshot.seq == first.head_seq
    assert b"old0" not in snapshot.data.replace(b'"last_plan_id":"old4"', b"")
    assert b'"live"' in snapshot.data

    await append(store, plan("next", group="gpu", stop=3))
    second = await recover(store)
    assert second.snapshot_seq == first.head_seq
    assert second.events_folded == 3
    assert sorted(second.in_flight) == ["live", "next"]
    live = second.in_flight["live"].replacements["live-r1"]
    assert live.status == "draining"
    assert isinstance(live.pending_intent, ev.PodEvictionRequested)
    assert second.last_finished("workers") == finished[-1][-1].at
    assert second.last_finished("gpu") is None


async def test_a_snapshot_of_another_schema_or_unreadable_is_ignored(store: EventStore) -> None:
    await append(store, plan("a", stop=6))
    head = await store.head()
    await store.save_snapshot(SNAPSHOT_NAME, head, STATE_SCHEMA_VERSION + 1, b"{}")
    result = await recover(store)
    assert result.snapshot_seq is None and result.events_folded == head
    await store.save_snapshot(SNAPSHOT_NAME, head, STATE_SCHEMA_VERSION, b'{"plans": 3}')
    result = await recover(store)
    assert result.snapshot_seq is None
    assert result.in_flight["a"].replacements["a-r1"].status == "ready"


async def test_a_plan_with_an_illegal_event_is_quarantined_not_resumed(store: EventStore) -> None:
    await append(store, plan("good", stop=5))
    await append(store, plan("bad", stop=2))  # proposed, approved
    joined = ev.NodeJoined(
        plan_id="bad", at="2026-01-05T03:00:00Z", replacement_id="bad-r1", node_name="n"
    )
    await append(store, [joined])
    await append(store, plan("bad")[2:3])  # PlanExecutionStarted, after the refused event
    result = await recover(store)
    assert list(result.in_flight) == ["good"]
    [q] = result.quarantined
    assert (q.plan_id, q.type, q.seq) == ("bad", "NodeJoined", 8)
    assert "NodeJoined in state plan approved" in q.problem


async def test_an_event_type_from_a_newer_build_stops_recovery(store: EventStore) -> None:
    await append(store, plan("a", stop=2))
    await store.append("plan-a", 2, [NewEvent(type="NodeHibernated", schema_version=1, data=b"{}")])
    with pytest.raises(RecoveryError, match=r"event seq 3 \(stream 'plan-a'\).*NodeHibernated"):
        await recover(store)


async def test_streams_that_are_not_plans_are_passed_over(store: EventStore) -> None:
    await store.append("daemon-lease", 0, [NewEvent(type="Whatever", schema_version=1, data=b"1")])
    await append(store, plan("a", stop=3))
    result = await recover(store)
    assert result.head_seq == 4 and list(result.in_flight) == ["a"]
