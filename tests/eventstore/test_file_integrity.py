"""What only a file can show: reopening, damage on disk, foreign files, schema versions."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from eventstore import (
    ConcurrencyError,
    CorruptLogError,
    EventStore,
    EventStoreError,
    SchemaTooNewError,
)
from eventstore.chain import GENESIS, row_hash
from eventstore.schema import APPLICATION_ID, CURRENT_VERSION, SCHEMA_V1
from eventstore.store import (
    HEAD_SQL,
    READ_FROM_SEQ_SQL,
    READ_STREAM_SQL,
    STREAM_VERSION_SQL,
)
from tests.eventstore.builders import StepClock, ev


async def write_log(path: Path, plans: int = 5, per_plan: int = 4) -> None:
    async with await EventStore.open(path, clock=StepClock()) as s:
        for step in range(per_plan):
            for p in range(plans):
                data = b'{"plan":%d,"step":%d,"marker":"MARK-%02d-%02d"}' % (p, step, p, step)
                await s.append(f"plan-{p}", step, [ev(f"Step{step}", data)])


def flip_one_byte(path: Path, needle: bytes) -> None:
    raw = bytearray(path.read_bytes())
    at = raw.find(needle)
    assert at >= 0, f"{needle!r} not found in {path}"
    assert raw.find(needle, at + 1) < 0, f"{needle!r} found twice in {path}"
    raw[at + len(needle) - 1] ^= 0x01
    path.write_bytes(bytes(raw))


async def test_reopen_keeps_everything_and_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write_log(path)
    async with await EventStore.open(path) as s:
        assert await s.head() == 20
        assert await s.stream_version("plan-3") == 4
        with pytest.raises(ConcurrencyError):
            await s.append("plan-3", 3, [ev()])
        with pytest.raises(ConcurrencyError) as info:
            await s.append("plan-2", 0, [ev()])  # not cached since reopening: still checked
        assert info.value.actual == 4
        assert await s.append("plan-3", 4, [ev("After")]) == 5
        await s.save_snapshot("recovery", 21, 1, b"s")
    async with await EventStore.open(path) as s:
        report = await s.verify()
        assert report.ok, report.problem
        assert report.checked == 21
        snap = await s.load_snapshot("recovery")
        assert snap is not None and snap.seq == 21


def wal_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_opening_and_reading_an_existing_log_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write_log(path)
    before = path.read_bytes()
    async with await EventStore.open(path) as s:
        assert len([e async for e in s.read_all()]) == 20
        assert (await s.verify()).ok
    assert path.read_bytes() == before
    assert wal_size(path) == 0


async def test_a_flipped_payload_byte_is_named_by_verify_and_refused_on_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    await write_log(path)
    flip_one_byte(path, b"MARK-02-01")  # plan-2's second event: seq 8
    async with await EventStore.open(path) as s:
        report = await s.verify()
        assert not report.ok
        assert report.first_bad_seq == 8
        assert report.checked == 7
        assert "seq 8" in report.problem
        assert "'plan-2'" in report.problem and "'Step1'" in report.problem
        with pytest.raises(CorruptLogError, match=r"seq 8 \(stream 'plan-2', type 'Step1'\)"):
            await s.read_stream("plan-2")
        with pytest.raises(CorruptLogError, match="seq 8"):
            [e async for e in s.read_all()]
        assert len(await s.read_stream("plan-1")) == 4  # undamaged streams still read


async def test_a_changed_row_hash_breaks_the_chain_at_that_row(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write_log(path)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TRIGGER events_no_update")
        raw.execute("UPDATE events SET hash = ? WHERE seq = 12", (bytes(32),))
    async with await EventStore.open(path) as s:
        report = await s.verify()
        assert (report.ok, report.first_bad_seq) == (False, 12)


async def test_a_row_deleted_from_the_middle_is_named(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write_log(path)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TRIGGER events_no_delete")
        raw.execute("DELETE FROM events WHERE seq = 9")
    async with await EventStore.open(path) as s:
        report = await s.verify()
        assert (report.ok, report.first_bad_seq, report.checked) == (False, 9, 8)
        assert "event seq 9 is missing" in report.problem
        with pytest.raises(CorruptLogError, match="seq 9 is missing"):
            [e async for e in s.read_all()]
        with pytest.raises(CorruptLogError, match="seq 9 is missing"):
            [e async for e in s.read_all(10)]
        with pytest.raises(CorruptLogError, match=r"seq 10 .* follows a missing row"):
            await s.read_stream("plan-4")


async def test_events_refuse_update_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write_log(path, plans=1, per_plan=2)
    with sqlite3.connect(path) as raw:
        for sql in ("UPDATE events SET data = x'00'", "DELETE FROM events WHERE seq = 2"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                raw.execute(sql)


async def test_a_tampered_snapshot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write_log(path)
    async with await EventStore.open(path) as s:
        await s.save_snapshot("recovery", 10, 1, b'{"SNAPSHOT-STATE":1}')
    flip_one_byte(path, b"SNAPSHOT-STATE")
    async with await EventStore.open(path) as s:
        with pytest.raises(CorruptLogError, match="snapshot 'recovery'"):
            await s.load_snapshot("recovery")
        report = await s.verify()
        assert not report.ok
        assert report.checked == 20  # the events themselves are fine
        assert "snapshot 'recovery' (seq 10) does not match its hash" in report.problem


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.05])
async def test_a_truncated_file_is_a_clear_error(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "events.db"
    await write_log(path, plans=10, per_plan=30)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(CorruptLogError, match=str(path)) as info:
        await EventStore.open(path)
    assert "damaged" in str(info.value)


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_a_new_log_is_complete_on_disk_before_it_is_used(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    (tmp_path / "events.db.creating").write_bytes(b"left over by a crash")
    async with await EventStore.open(path) as s:
        assert await s.head() == 0
    assert names_in(tmp_path) == ["events.db"]
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == CURRENT_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_file_truncated_to_nothing_is_not_taken_for_a_new_log(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write_log(path, plans=1, per_plan=1)
    path.write_bytes(b"")
    with pytest.raises(CorruptLogError, match="empty"):
        await EventStore.open(path)


async def test_not_an_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the events you are looking for\n" * 100)
    with pytest.raises(CorruptLogError, match=str(path)):
        await EventStore.open(path)


async def test_another_programs_sqlite_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    with pytest.raises(EventStoreError, match="not an event log"):
        await EventStore.open(path)
    with sqlite3.connect(path) as raw:
        tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master")]
    assert tables == ["accounts"]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: tmp / "missing" / "events.db", "does not exist"),
        (lambda tmp: tmp / "file" / "events.db", "is not a directory"),
    ],
)
async def test_unusable_paths_are_named(tmp_path: Path, make: object, words: str) -> None:
    (tmp_path / "file").write_bytes(b"x")
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(EventStoreError, match=words) as info:
        await EventStore.open(path)
    assert os.fspath(path) in str(info.value) or os.fspath(tmp_path) in str(info.value)


async def test_a_path_sqlite_cannot_open_is_named() -> None:
    with pytest.raises(EventStoreError, match=r"/proc/events\.db: creating: unable to open"):
        await EventStore.open("/proc/events.db")


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write_log(path, plans=1, per_plan=1)
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version={CURRENT_VERSION + 1}")
    with pytest.raises(SchemaTooNewError) as info:
        await EventStore.open(path)
    message = str(info.value)
    assert f"version {CURRENT_VERSION + 1}" in message
    assert f"supports ({CURRENT_VERSION})" in message
    assert str(path) in message


def build_v1_file(path: Path, extra: int = 0) -> list[tuple[int, str, int, str, int, bytes, float]]:
    rows = [
        (1, "plan-a", 1, "Planned", 1, b'{"a":1}', 100.0),
        (2, "plan-b", 1, "Planned", 1, b'{"b":1}', 101.0),
        (3, "plan-a", 2, "Done", 2, b'{"a":2}', 102.5),
    ]
    rows += [(4 + i, "plan-c", 1 + i, "Step", 1, b"%d" % i, 200.0 + i) for i in range(extra)]
    with sqlite3.connect(path) as raw:
        raw.executescript(SCHEMA_V1)
        raw.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?)", rows)
        raw.execute("INSERT INTO snapshots VALUES ('recovery', 2, 1, x'7b7d')")
        raw.execute("PRAGMA user_version=1")
        raw.execute(f"PRAGMA application_id={APPLICATION_ID}")
    return rows


async def test_a_version_1_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    rows = build_v1_file(path)
    async with await EventStore.open(path) as s:
        events = [e async for e in s.read_all()]
        assert [(e.seq, e.stream, e.version, e.type, e.schema_version) for e in events] == [
            r[:5] for r in rows
        ]
        assert [e.recorded_at for e in events] == [100.0, 101.0, 102.5]
        assert await s.streams() == [("plan-a", 2), ("plan-b", 1)]
        snap = await s.load_snapshot("recovery")
        assert snap is not None and (snap.seq, snap.data) == (2, b"{}")
        assert await s.append("plan-b", 1, [ev("Done")]) == 2
        report = await s.verify()
        assert report.ok and report.checked == 4, report.problem
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == CURRENT_VERSION
        first = raw.execute("SELECT hash FROM events WHERE seq = 1").fetchone()[0]
    assert first == row_hash(GENESIS, *rows[0])


async def test_a_long_version_1_log_is_migrated_page_by_page(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    rows = build_v1_file(path, extra=12_000)
    async with await EventStore.open(path) as s:
        report = await s.verify()
        assert report.ok and report.checked == len(rows), report.problem
        assert await s.stream_version("plan-c") == 12_000
        assert await s.append("plan-c", 12_000, [ev("Last")]) == 12_001
    async with await EventStore.open(path) as s:
        assert (await s.verify()).ok


def plan_details(path: Path, sql: str, params: tuple[object, ...]) -> str:
    with sqlite3.connect(path) as raw:
        return " | ".join(r[3] for r in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params))


async def test_recovery_queries_are_index_lookups_and_range_scans(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write_log(path, plans=2, per_plan=2)
    tail = plan_details(path, READ_FROM_SEQ_SQL, (3, 100))
    assert "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)" in tail
    assert "SCAN" not in tail and "TEMP B-TREE" not in tail
    head = plan_details(path, HEAD_SQL, ())
    assert "SEARCH events USING INTEGER PRIMARY KEY (rowid=?)" in head
    assert "SCAN" not in head
    stream = plan_details(path, READ_STREAM_SQL, ("plan-1", 1))
    assert "SCAN" not in stream and "TEMP B-TREE" not in stream
    assert "SCAN" not in plan_details(path, STREAM_VERSION_SQL, ("plan-1",))


async def test_a_second_writer_on_the_same_file_is_detected_not_forked(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with (
        await EventStore.open(path) as first,
        await EventStore.open(path) as second,
    ):
        assert await first.append("plan", 0, [ev("One")]) == 1
        assert await second.stream_version("plan") == 1
        assert await second.append("other", 0, [ev("Other")]) == 1  # second's head was stale
        with pytest.raises(ConcurrencyError) as info:
            await first.append("other", 0, [ev("Twice")])  # first's cached version is stale
        assert info.value.actual == 1
        assert await first.append("plan", 1, [ev("Two")]) == 2
        report = await first.verify()
        assert report.ok and report.checked == 3, report.problem
