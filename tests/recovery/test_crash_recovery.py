"""Crash anywhere, recover exactly the committed prefix.

Histories come from walking the machines for several plans, interleaved as a daemon would
append them (each append its own transaction, some carrying two events), with a snapshot
taken somewhere along the way. The crash is simulated on a copy of the database and its WAL
taken while the store is open: either cleanly after the last commit, or torn, with the WAL
cut somewhere inside the last transaction's frames, as a power loss mid-write leaves it.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.service.recovery import recover, write_snapshot
from eventstore import EventStore, NewEvent
from statemachine import events as ev
from statemachine.fold import FoldState, apply_event, encode_state
from statemachine.histories import example_spec, next_events, timestamp

WAL_HEADER = 32
FRAME_HEADER = 24


def commit_ends(wal: bytes) -> list[int]:
    """Byte offsets just past each commit frame of the WAL's current generation."""
    page_size = struct.unpack(">I", wal[8:12])[0]
    salts = wal[16:24]
    ends, offset = [], WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(wal):
        header = wal[offset : offset + FRAME_HEADER]
        if header[8:16] != salts:
            break
        offset += FRAME_HEADER + page_size
        if struct.unpack(">I", header[4:8])[0] != 0:
            ends.append(offset)
    return ends


Batch = tuple[ev.Event, ...]


@st.composite
def appends(draw: st.DrawFn) -> list[Batch]:
    """Interleaved appends of 1-3 plans, each a legal walk; batches of one or two events."""
    plans = draw(st.integers(1, 3))
    state = FoldState()
    for n in range(plans):
        pid = f"c{n}"
        spec = example_spec(pid, replacements=2, consolidations=draw(st.integers(0, 1)))
        first = ev.PlanProposed(plan_id=pid, at=timestamp(0), plan=spec)
        apply_event(state, first, stream=ev.stream_for(pid), seq=0, version=1)
    batches: list[Batch] = [
        (ev.PlanProposed(plan_id=p.plan_id, at=timestamp(0), plan=p.spec),)
        for p in state.plans.values()
    ]
    for step in range(1, draw(st.integers(1, 40))):
        live = [p for p in state.plans.values() if next_events(p, timestamp(step))]
        if not live:
            break
        plan = draw(st.sampled_from(live))
        batch: list[ev.Event] = []
        for _ in range(draw(st.integers(1, 2))):
            options = next_events(plan, timestamp(step))
            if not options:
                break
            forward = draw(st.integers(0, 3)) > 0
            event = options[0] if forward else draw(st.sampled_from(options))
            apply_event(
                state, event, stream=ev.stream_for(plan.plan_id), seq=0, version=plan.version + 1
            )
            batch.append(event)
        batches.append(tuple(batch))
    return batches


def expected_state(batches: list[Batch]) -> FoldState:
    state = FoldState(keep_finished=False)
    seq = 0
    versions: dict[str, int] = {}
    for batch in batches:
        for event in batch:
            seq += 1
            stream = ev.stream_for(event.plan_id)
            versions[stream] = versions.get(stream, 0) + 1
            apply_event(state, event, stream=stream, seq=seq, version=versions[stream])
    return state


def comparable(state: FoldState) -> bytes:
    in_flight = {pid: p for pid, p in state.plans.items() if not p.terminal}
    return encode_state(
        FoldState(
            plans=in_flight, groups=state.groups, head_seq=state.head_seq, keep_finished=False
        )
    )


async def write_log(path: Path, batches: list[Batch], snapshot_after: int) -> None:
    """Append `batches`, snapshotting the live fold after `snapshot_after` of them."""
    store = await EventStore.open(path, synchronous="NORMAL")
    versions: dict[str, int] = {}
    for i, batch in enumerate(batches):
        stream = ev.stream_for(batch[0].plan_id)
        current = versions.get(stream, 0)
        versions[stream] = await store.append(
            stream, current, [NewEvent(**ev.encode(e)._asdict()) for e in batch]
        )
        if i + 1 == snapshot_after:
            await write_snapshot(store, expected_state(batches[: i + 1]))
    # copy while open: the WAL still holds every transaction, as after a kill -9
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{path}{suffix}", f"{path}.crash{suffix}")
    await store.close()


async def recovered_state(path: Path) -> tuple[bytes, int]:
    store = await EventStore.open(path)
    try:
        result = await recover(store)
        return comparable(result.state), result.head_seq
    finally:
        await store.close()


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batches=appends(), data=st.data())
def test_recovery_yields_exactly_the_committed_prefix(
    batches: list[Batch], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(1, len(batches)), label="transactions before the crash")
    torn = data.draw(st.booleans(), label="last transaction torn")
    snapshot_after = data.draw(st.integers(0, cut - 1), label="snapshot after")
    prefix = batches[:cut]
    committed = prefix[:-1] if torn else prefix

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.db"
        asyncio.run(write_log(path, prefix, snapshot_after))
        crashed = Path(f"{path}.crash")
        if torn:
            wal_path = Path(f"{crashed}-wal")
            wal = wal_path.read_bytes()
            ends = commit_ends(wal)
            start = ends[-2] if len(ends) > 1 else WAL_HEADER
            where = data.draw(st.integers(start + 1, ends[-1] - 1), label="WAL cut at")
            wal_path.write_bytes(wal[:where])
        got, head = asyncio.run(recovered_state(crashed))
    want = expected_state(committed)
    assert head == sum(len(b) for b in committed)
    assert got == comparable(want)
