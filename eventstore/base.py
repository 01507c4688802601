"""What both backends share: the interface, argument checks, group commit, chain-checked reads.

`EventStore.open(target)` picks the backend: a `postgresql://` DSN opens `PostgresEventStore`,
anything else is an SQLite file path (or `":memory:"`). Both keep the same contract (see
docs/eventstore.md): an append is durable when it returns; stream versions are checked; `seq`
is one gap-free global order readers never see filling in later; the same hash chain; group
commit; snapshots; layout versions; the leadership term that fences a stale leader.

A backend supplies the SQL (`_sql`, in its own parameter style), `_fetch`, the write of one
group (`_attempt`), snapshots, the term, and closing; everything else lives here once.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

from eventstore.chain import GENESIS, row_hash, snapshot_hash
from eventstore.errors import CorruptLogError, EventStoreError, StoreUnavailable
from eventstore.records import NewEvent, RecordedEvent, Snapshot, VerifyReport
from eventstore.schema import LEADERSHIP_STREAM

MAX_BATCH = 512  # appends per group-commit transaction
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(target: str) -> bool:
    """Whether `target` names a PostgreSQL database (a DSN) rather than an SQLite file."""
    return target.startswith(POSTGRES_SCHEMES)


class Pending:
    """One append waiting for its transaction; `done` gets the new version or the error."""

    __slots__ = ("done", "events", "expected", "queued_at", "stream", "term")

    def __init__(self, stream: str, expected: int, events: Sequence[NewEvent], term: int) -> None:
        self.stream = stream
        self.expected = expected
        self.events = events
        self.term = term
        loop = asyncio.get_running_loop()
        self.queued_at = loop.time()
        self.done: asyncio.Future[int] = loop.create_future()


def check_events(
    stream: str, expected_version: int, events: Sequence[NewEvent], term: int | None
) -> None:
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"append: stream must be a non-empty string, got {stream!r}")
    if stream.startswith("$"):
        raise ValueError(f"append to {stream!r}: streams starting with '$' are the store's own")
    if term is not None and (isinstance(term, bool) or not isinstance(term, int) or term < 1):
        raise ValueError(f"append to {stream!r}: term must be an int >= 1 (or None), got {term!r}")
    if isinstance(expected_version, bool) or not isinstance(expected_version, int):
        raise TypeError(f"append to {stream!r}: expected_version must be an int")
    if expected_version < 0:
        raise ValueError(f"append to {stream!r}: expected_version must be >= 0")
    if not events:
        raise ValueError(f"append to {stream!r}: no events given")
    for i, e in enumerate(events):
        if not (
            isinstance(e, NewEvent)
            and type(e.type) is str
            and e.type
            and type(e.schema_version) is int
            and e.schema_version >= 1
            and type(e.data) is bytes
        ):
            _check_event(f"append to {stream!r}, event {i}", e)


def _check_event(where: str, e: object) -> None:
    """The slow path of `check_events`: says what is wrong with `e`, if anything."""
    if not isinstance(e, NewEvent):
        raise TypeError(f"{where}: expected a NewEvent, got {type(e).__name__}")
    if not isinstance(e.type, str) or not e.type:
        raise ValueError(f"{where}: type must be a non-empty string")
    if isinstance(e.schema_version, bool) or not isinstance(e.schema_version, int):
        raise TypeError(f"{where} ({e.type}): schema_version must be an int")
    if e.schema_version < 1:
        raise ValueError(f"{where} ({e.type}): schema_version must be >= 1")
    if not isinstance(e.data, bytes):
        raise TypeError(f"{where} ({e.type}): data must be bytes, got {type(e.data).__name__}")


def check_snapshot_args(doing: str, name: str, schema_version: int, data: bytes) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{doing}: name must be a non-empty string")
    if not isinstance(data, bytes):
        raise TypeError(f"{doing}: data must be bytes")
    if schema_version < 1:
        raise ValueError(f"{doing}: schema_version must be >= 1")


def check_holder(doing: str, holder: str) -> None:
    if not isinstance(holder, str) or not holder:
        raise ValueError(f"{doing}: holder must be a non-empty string, got {holder!r}")


def snapshot_mismatch(
    name: str, seq: int, sv: int, data: bytes, stored: bytes, chain: bytes | None
) -> str:
    """Why a stored snapshot row does not check out against the chain, or "" when it does."""
    chain = GENESIS if seq == 0 else chain
    if chain is None:
        return f"snapshot {name!r} ends at seq {seq}, which is not in the log"
    if snapshot_hash(name, seq, sv, bytes(data), bytes(chain)) != bytes(stored):
        return f"snapshot {name!r} (seq {seq}) does not match its hash: it was changed"
    return ""


def term_problem(where: str, stream: str, version: int, row_term: int, term: int) -> str:
    """Why an event's term does not fit the terms taken before it in the log, or ""."""
    if stream == LEADERSHIP_STREAM:
        if row_term != version:
            return f"{where} takes term {row_term}, but it is term number {version}"
        return ""
    if row_term not in (0, term):
        return (
            f"{where} was appended under term {row_term}, but term {term} was the "
            "current one then (a fenced append got through)"
        )
    return ""


class EventStore(abc.ABC):
    """The event log. Open with `await EventStore.open(target)`; close with `await close()`.

    `target` is an SQLite file path (or ":memory:") or a `postgresql://` DSN.
    """

    # Queries by name, in the backend's parameter style; rows of "read_from" and
    # "read_stream" are (seq, stream, version, type, schema_version, data, recorded_at,
    # hash, term) and read_stream adds the previous row's hash.
    _sql: ClassVar[dict[str, str]]

    def __init__(self, where: str, clock: Callable[[], float]) -> None:
        self._path = where
        self._clock = clock
        self._lock = asyncio.Lock()  # one transaction or read at a time on the connection
        self._queue: asyncio.Queue[Pending | None] = asyncio.Queue()
        self._head = 0  # the highest seq this store has written or read as the head
        self._closed = False
        self._writer_stopped = False
        self._writer_busy = False  # the writer task holds a batch
        self._writer: asyncio.Task[None] | None = None
        self._alone: Pending | None = None  # an append deciding whether to commit on its own
        self.transactions = 0  # append transactions committed since open (group commit shows)
        # Called after each write transaction with how long each of its appends waited from
        # `append()` to its answer (one entry per append: the group size is the length).
        # The daemon's metrics set it; it must not raise or block.
        self.on_commit: Callable[[Sequence[float]], None] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r}, head={self._head})"

    @property
    def path(self) -> str:
        """The SQLite file, or the PostgreSQL DSN without its password."""
        return self._path

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        target: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        password: str | None = None,
        create: bool = True,
    ) -> EventStore:
        """Open (creating or migrating) the log at `target`: a path, ":memory:", or a DSN.

        `synchronous` is "FULL" (an append is on disk when it returns) or "NORMAL" (see
        docs/eventstore.md); `password` is PostgreSQL's (read by the caller from a
        credentials file, so it is never part of the DSN or argv); `create=False` refuses a
        log that does not exist yet instead of making an empty one (the audit tools).
        """
        t = os.fspath(target)
        backend: type[EventStore] = cls
        if cls is EventStore:
            if is_postgres(t):
                from eventstore.postgres import PostgresEventStore

                backend = PostgresEventStore
            else:
                from eventstore.store import SqliteEventStore

                backend = SqliteEventStore
        return await backend._open(
            t, synchronous=synchronous, clock=clock, password=password, create=create
        )

    @classmethod
    @abc.abstractmethod
    async def _open(
        cls,
        target: str,
        *,
        synchronous: str,
        clock: Callable[[], float],
        password: str | None,
        create: bool,
    ) -> EventStore: ...

    async def check_integrity(self) -> None:
        """Check the storage itself before acting on the log (CorruptLogError if damaged).
        SQLite checks every page of its file; a database server checks its own pages."""
        self._ensure_open("checking the log's integrity")

    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"eventstore-writer {self}")

    @abc.abstractmethod
    async def _close_connections(self) -> None:
        """Close the database connections (the lock is held)."""

    async def close(self) -> None:
        """Finish the appends already queued, then close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None and not self._writer.done():
            self._queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await self._writer
        async with self._lock:  # an append committing in its caller's task finishes first
            await self._close_connections()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _ensure_open(self, doing: str) -> None:
        if self._closed:
            raise EventStoreError(f"{self._path}: {doing}: the event store is closed")

    # -- writing ---------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        term: int | None = None,
    ) -> int:
        """Append `events` to `stream` atomically; returns the stream's new version.

        `expected_version` is the version the caller last saw (0 for a new stream); if the
        stream has moved on, nothing is written and ConcurrencyError is raised. Returns only
        once the transaction holding these events has committed.

        `term` is the leadership term the caller acts under (from `acquire_term`). If a newer
        term has been taken since, by any connection, nothing is written and FencedError is
        raised; the check runs inside the writing transaction, not before it. `None` is an
        unfenced append (a tool that does not lead, such as `plan`), recorded with term 0.
        """
        if self._closed:
            self._ensure_open(f"append to {stream!r}")
        if self._writer_stopped:
            raise EventStoreError(f"{self._path}: append to {stream!r}: the writer has stopped")
        check_events(stream, expected_version, events, term)
        pending = Pending(stream, expected_version, tuple(events), term or 0)
        if self._alone is not None:
            # Another append is deciding whether to commit on its own: it is first in line,
            # and now not alone; both go to the writer, in the order they were made.
            self._queue.put_nowait(self._alone)
            self._alone = None
        elif self._idle():
            # Nothing else is being written. Let the other tasks that are ready run first; if
            # one of them appends meanwhile, it queues this append ahead of its own (above).
            # Still alone after that: commit here, in this task.
            self._alone = pending
            try:
                await asyncio.sleep(0)
            finally:
                queued = self._alone is not pending
                self._alone = None
            if queued:
                return await pending.done
            if self._idle() or self._closed:  # closing: close() waits for the lock
                async with self._lock:
                    await self._commit_locked([pending], alone=True)
                return await pending.done
        self._queue.put_nowait(pending)
        return await pending.done

    def _idle(self) -> bool:
        return not self._writer_busy and self._queue.empty() and not self._lock.locked()

    @abc.abstractmethod
    async def acquire_term(self, holder: str) -> int:
        """Take the lead: increment the leadership term and return it.

        One transaction increments the term and appends a `LeadershipAcquired` event (stream
        `$leadership`, version = term, data `{"term": N, "holder": ...}`) so the audit trail
        shows every change of leader. From its COMMIT on, every append carrying an older term
        is refused (FencedError), from any connection or process. The head is re-read from the
        database: a daemon taking the lead must not trust what it cached while it waited.
        """

    async def current_term(self) -> int:
        """The leadership term as the database has it now (0 before anyone took the lead)."""
        rows = await self._fetch("reading the leadership term", self._sql["term"])
        return int(rows[0][0]) if rows else 0

    async def _write_loop(self) -> None:
        stop = False
        batch: list[Pending] = []
        try:
            while not stop:
                item = await self._queue.get()
                if item is None:
                    break
                self._writer_busy = True
                async with self._lock:
                    # Whatever queued while the lock was held joins this transaction.
                    batch = [item]
                    while len(batch) < MAX_BATCH and not self._queue.empty():
                        nxt = self._queue.get_nowait()
                        if nxt is None:
                            stop = True
                            break
                        batch.append(nxt)
                    await self._commit_locked(batch)
                batch = []
                # Let the callers just answered run first: their next appends queue for the
                # next batch instead of one of them committing alone in its own task.
                await asyncio.sleep(0)
                self._writer_busy = False
        finally:
            # Cancelled or broken: nobody may wait forever for an append.
            self._writer_stopped = True
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    batch.append(item)
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(
                        EventStoreError(
                            f"{self._path}: append to {pending.stream!r}: the writer stopped; "
                            "the append may or may not have been committed"
                        )
                    )

    async def _commit_locked(self, batch: list[Pending], *, alone: bool = False) -> None:
        """Commit `batch` (the lock is held) and hand each caller its result.

        `alone`: a single append, committed in its caller's task with nothing else waiting;
        a backend may then write it without leaving the event loop (see SqliteEventStore).
        """
        results: list[int | BaseException]
        try:
            results = await self._attempt(batch, alone=alone)
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, StoreUnavailable):
                # Unreachable: whether the group committed is unknown, and trying each append
                # again on its own could write one twice; every caller learns it must re-read.
                results = [exc] * len(batch)
            else:  # find the culprit: each append on its own
                results = []
                for pending in batch:
                    try:
                        results.extend(await self._attempt([pending]))
                    except Exception as single:
                        results.append(single)
        for pending, result in zip(batch, results, strict=True):
            if pending.done.done():
                continue  # the caller was cancelled; its events may still be committed
            if isinstance(result, BaseException):
                pending.done.set_exception(result)
            else:
                pending.done.set_result(result)
        if self.on_commit is not None:
            now = asyncio.get_running_loop().time()
            waits = [
                now - p.queued_at
                for p, r in zip(batch, results, strict=True)
                if not isinstance(r, BaseException)
            ]
            if waits:  # only what was committed
                self.on_commit(waits)

    @abc.abstractmethod
    async def _attempt(
        self, batch: list[Pending], *, alone: bool = False
    ) -> list[int | BaseException]:
        """Write `batch` in one transaction: per append its new version or its own error."""

    # -- reading ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def _fetch(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one query (the lock is taken) and return its rows; errors become ours."""

    async def head(self) -> int:
        """The last seq in the log, 0 when it is empty.

        Read from the database, not the writer's cache: another process may write.
        """
        rows = await self._fetch("reading the head", self._sql["head"])
        return int(rows[0][0] or 0)

    async def stream_version(self, stream: str) -> int:
        """The version of `stream` (its number of events), 0 when it does not exist."""
        rows = await self._fetch(
            f"reading the version of stream {stream!r}", self._sql["stream_version"], (stream,)
        )
        return int(rows[0][0]) if rows else 0

    async def hash_at(self, seq: int) -> bytes | None:
        """The chain hash stored with event `seq` (GENESIS for 0), None when there is none.

        Compare it with an external record to detect a log cut short (see docs/eventstore.md).
        """
        if seq == 0:
            return GENESIS
        rows = await self._fetch(f"reading the hash of seq {seq}", self._sql["hash_at"], (seq,))
        return bytes(rows[0][0]) if rows else None

    @abc.abstractmethod
    async def stream_versions(self, streams: Iterable[str]) -> dict[str, int]:
        """The versions of several streams in one query; 0 for those that do not exist."""

    async def streams(self) -> list[tuple[str, int]]:
        """Every stream with its version, ordered by name."""
        rows = await self._fetch("listing streams", self._sql["streams"])
        return [(str(s), int(v)) for s, v in rows]

    def _corrupt(self, seq: int, stream: str, type_: str, what: str) -> CorruptLogError:
        return CorruptLogError(
            f"{self._path}: event seq {seq} (stream {stream!r}, type {type_!r}) {what}; "
            "the log was altered or damaged (run verify-log)"
        )

    def _to_event(self, row: Sequence[Any], prev: bytes) -> tuple[RecordedEvent, bytes]:
        seq, stream, version, type_, sv, data, at, stored, term = row
        data = bytes(data)
        h = row_hash(prev, seq, stream, version, type_, sv, data, float(at), int(term))
        if h != bytes(stored):
            raise self._corrupt(seq, stream, type_, "does not match its chain hash")
        event = RecordedEvent(
            seq=seq,
            stream=stream,
            version=version,
            type=type_,
            schema_version=sv,
            data=data,
            recorded_at=float(at),
            term=int(term),
        )
        return event, h

    async def read_stream(self, stream: str, from_version: int = 1) -> list[RecordedEvent]:
        """The events of `stream` from `from_version` on, each checked against the chain."""
        if from_version < 1:
            raise ValueError(f"read_stream {stream!r}: from_version must be >= 1")
        rows = await self._fetch(
            f"reading stream {stream!r}", self._sql["read_stream"], (stream, from_version)
        )
        out: list[RecordedEvent] = []
        expected = from_version
        for row in rows:
            seq, _, version, type_ = row[0], row[1], row[2], row[3]
            prev = GENESIS if seq == 1 else row[9]
            if prev is None:
                raise self._corrupt(seq, stream, type_, "follows a missing row")
            if version != expected:
                raise self._corrupt(seq, stream, type_, f"has version {version}, not {expected}")
            event, _ = self._to_event(row[:9], bytes(prev))
            out.append(event)
            expected += 1
        return out

    async def read_all(
        self, from_seq: int = 1, *, batch: int = 5000
    ) -> AsyncIterator[RecordedEvent]:
        """Every event from `from_seq` on, in seq order, read `batch` rows at a time.

        An index range scan on seq: reading the tail after a snapshot costs the tail only.
        """
        if from_seq < 1 or batch < 1:
            raise ValueError("read_all: from_seq and batch must be >= 1")
        doing = f"reading events from seq {from_seq}"
        prev_rows = await self._fetch(doing, self._sql["hash_at"], (from_seq - 1,))
        if from_seq == 1:
            prev = GENESIS
        elif prev_rows:
            prev = bytes(prev_rows[0][0])
        elif from_seq - 1 > await self.head():  # the real head: other processes append too
            return
        else:
            raise CorruptLogError(f"{self._path}: event seq {from_seq - 1} is missing")
        expected = from_seq
        while True:
            rows = await self._fetch(doing, self._sql["read_from"], (expected, batch))
            for row in rows:
                if row[0] != expected:
                    raise CorruptLogError(
                        f"{self._path}: event seq {expected} is missing (next is {row[0]})"
                    )
                event, prev = self._to_event(row, prev)
                expected += 1
                yield event
            if len(rows) < batch:
                return

    # -- snapshots -------------------------------------------------------------------------

    @abc.abstractmethod
    async def save_snapshot(self, name: str, seq: int, schema_version: int, data: bytes) -> None:
        """Save (or replace) the snapshot `name`: a fold of the log up to and including `seq`.

        `seq` is checked against the head as the database has it at the write (not a cache);
        outside it, SnapshotRangeError (an EventStoreError and a ValueError).
        """

    async def load_snapshot(self, name: str) -> Snapshot | None:
        """The snapshot `name`, checked against the chain; None when there is none."""
        rows = await self._fetch(f"loading snapshot {name!r}", self._sql["snapshot"], (name,))
        if not rows:
            return None
        problem = snapshot_mismatch(name, *rows[0])
        if problem:
            raise CorruptLogError(f"{self._path}: {problem}")
        seq, sv, data = rows[0][0], rows[0][1], bytes(rows[0][2])
        return Snapshot(name=name, seq=seq, schema_version=sv, data=data)

    # -- verification ----------------------------------------------------------------------

    async def verify(self, *, batch: int = 5000) -> VerifyReport:
        """Walk the whole chain; report the first bad row instead of raising."""
        self._ensure_open("verifying")
        checked, prev, expected, term = 0, GENESIS, 1, 0
        versions: dict[str, int] = {}

        def bad(seq: int | None, problem: str) -> VerifyReport:
            return VerifyReport(ok=False, checked=checked, first_bad_seq=seq, problem=problem)

        try:
            while True:
                rows = await self._fetch(
                    f"verifying at seq {expected}", self._sql["read_from"], (expected, batch)
                )
                for row in rows:
                    seq, stream, version, type_ = row[0], row[1], row[2], row[3]
                    where = f"event seq {seq} (stream {stream!r}, type {type_!r})"
                    if seq != expected:
                        return bad(expected, f"event seq {expected} is missing (next is {seq})")
                    want = versions.get(stream, 0) + 1
                    if version != want:
                        return bad(seq, f"{where} has version {version}, expected {want}")
                    try:
                        _, prev = self._to_event(row, prev)
                    except CorruptLogError:
                        return bad(
                            seq,
                            f"{where} does not match its chain hash: its content "
                            "(or its stored hash) was changed",
                        )
                    problem = term_problem(where, stream, version, int(row[8]), term)
                    if problem:
                        return bad(seq, problem)
                    if stream == LEADERSHIP_STREAM:
                        term = version
                    versions[stream] = version
                    checked += 1
                    expected += 1
                if len(rows) < batch:
                    break
            listed = dict(await self.streams())
            if listed != versions:
                wrong = sorted(set(listed.items()) ^ set(versions.items()))[:3]
                return bad(None, f"the streams table disagrees with the events (e.g. {wrong})")
            stored_term = await self.current_term()
            if stored_term != term:
                return bad(
                    None,
                    f"the leadership term is {stored_term}, but the log records {term} terms taken",
                )
            for name, *rest in await self._fetch("verifying snapshots", self._sql["snapshots"]):
                problem = snapshot_mismatch(name, *rest)
                if problem:
                    return bad(None, problem)
            if expected - 1 < self._head:
                return bad(
                    None, f"the log ends at seq {expected - 1}, but seq {self._head} was written"
                )
        except EventStoreError as err:
            return bad(expected, str(err))
        return VerifyReport(
            ok=True,
            checked=checked,
            first_bad_seq=None,
            problem=f"all {checked} events verified; the chain is intact",
        )
