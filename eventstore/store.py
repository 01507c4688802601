"""The append-only event log on SQLite: streams, a global order, group commit, a hash chain.

One aiosqlite connection does everything, in autocommit mode. An append made while nothing
else is being written commits in its caller's task; otherwise it queues for a single writer
task: whatever has queued up while the previous transaction was being made durable is written
in the next one (group commit), each append checked on its own against its stream's version,
so a stale append fails alone while the others in its transaction commit. A transaction is
usually one multi-row INSERT (one trip to aiosqlite's thread). An append returns only after
the COMMIT of the transaction that holds it; with `synchronous=FULL` that COMMIT has been
fsynced.

A row as stored (version 2 of the layout, see `schema`):

    seq=42 stream="plan-3f2a" version=5 type="NodeCordoned" schema_version=1
    data=b'{"node":"w-1",...}' recorded_at=1767225600.0 hash=sha256(hash of seq 41 || content)

Opening reads only the last row (for the head seq and chain hash): no work grows with the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, Self

import aiosqlite

from eventstore.chain import GENESIS, row_hash, snapshot_hash
from eventstore.errors import (
    ConcurrencyError,
    CorruptLogError,
    EventStoreError,
    FencedError,
    SchemaTooNewError,
    SnapshotRangeError,
    translate,
)
from eventstore.records import NewEvent, RecordedEvent, Snapshot, VerifyReport
from eventstore.schema import (
    APPLICATION_ID,
    CURRENT_VERSION,
    FENCED_MESSAGE,
    LEADERSHIP_EVENT,
    LEADERSHIP_STREAM,
    SCHEMA_V3,
    V1_TO_V2_BEFORE_BACKFILL,
    V2_TO_V3,
    V2_TRIGGERS,
)

Synchronous = Literal["FULL", "NORMAL"]

_MAX_BATCH = 512  # appends per group-commit transaction
_IN_LIMIT = 500  # parameters per IN (...) lookup
_EVENT_COLUMNS = "seq, stream, version, type, schema_version, data, recorded_at, hash, term"

# The queries recovery depends on; tests check their plans are index lookups and range scans.
HEAD_SQL = "SELECT seq, hash FROM events WHERE seq = (SELECT max(seq) FROM events)"
READ_FROM_SEQ_SQL = f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq >= ? ORDER BY seq LIMIT ?"
READ_STREAM_SQL = (
    "SELECT e.seq, e.stream, e.version, e.type, e.schema_version, e.data, e.recorded_at, "
    "e.hash, e.term, p.hash FROM events e LEFT JOIN events p ON p.seq = e.seq - 1 "
    "WHERE e.stream = ? AND e.version >= ? ORDER BY e.version"
)
STREAM_VERSION_SQL = "SELECT version FROM streams WHERE stream = ?"
_INSERT_ONE_SQL = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
_ROWS_PER_STATEMENT = 999 // 9  # SQLite's smallest bound-parameter limit, 9 per row
TERM_SQL = "SELECT term FROM leadership WHERE id = 1"


# INSERT statements of 0..111 rows, built once: the same string lets sqlite3 reuse the
# prepared statement.
_INSERT_SQL = tuple(
    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?)"] * n)
    for n in range(_ROWS_PER_STATEMENT + 1)
)


class _Pending:
    """One append waiting for its transaction; `done` gets the new version or the error."""

    __slots__ = ("done", "events", "expected", "stream", "term")

    def __init__(
        self, stream: str, expected: int, events: Sequence[NewEvent], term: int
    ) -> None:
        self.stream = stream
        self.expected = expected
        self.events = events
        self.term = term
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()


class _OutOfDate(EventStoreError):
    """Another connection wrote to the file: the cached head or versions were stale."""


def _check_events(
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
    """The slow path of `_check_events`: says what is wrong with `e`, if anything."""
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


def _ready_file(path: str) -> None:
    """Create the log if it is missing, then open it once with plain sqlite3.

    A failing aiosqlite.connect leaves its thread to finish after we return (and complain if
    the loop is gone by then), so failures to open are found here first.
    """
    doing = "opening"
    try:
        if not os.path.exists(path):
            doing = "creating"
            _create_new(path)
            doing = "opening"
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise translate(exc, path, doing) from None
    except OSError as exc:
        raise EventStoreError(f"{path}: {doing}: {exc.strerror or exc}") from None


def _create_new(path: str) -> None:
    """Make an empty log beside `path`, then link it into place.

    A crash at any point leaves either no file at `path` or a complete empty log, never a
    half-made one; so an empty file at `path` always means damage, and is refused.
    """
    tmp = path + ".creating"
    for leftover in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA_V3:
            db.execute(statement)
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        db.execute(f"PRAGMA user_version={CURRENT_VERSION}")
        db.execute("COMMIT")
    finally:
        db.close()  # the last connection: checkpoints and removes the -wal file
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # unlike rename, never replaces a log another process just made
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_path(path: str) -> None:
    if path == ":memory:":
        return
    if os.path.isdir(path):
        raise EventStoreError(f"{path}: is a directory, not an event log file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise EventStoreError(f"{path}: cannot create the event log: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EventStoreError(f"{path}: directory {parent} is not writable (WAL needs it)")
    if not os.path.exists(path):
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise EventStoreError(f"{path}: the event log file is not readable and writable")
    wal = path + "-wal"
    if os.path.getsize(path) == 0 and (not os.path.exists(wal) or os.path.getsize(wal) == 0):
        # SQLite would take an empty file for a new database; a log truncated to nothing
        # must not silently become a fresh one.
        raise CorruptLogError(
            f"{path}: the event log file is empty (truncated?); "
            "delete it if a new, empty log is really intended"
        )


def _snapshot_mismatch(
    name: str, seq: int, sv: int, data: bytes, stored: bytes, chain: bytes | None
) -> str:
    """Why a stored snapshot row does not check out against the chain, or "" when it does."""
    chain = GENESIS if seq == 0 else chain
    if chain is None:
        return f"snapshot {name!r} ends at seq {seq}, which is not in the log"
    if snapshot_hash(name, seq, sv, bytes(data), bytes(chain)) != bytes(stored):
        return f"snapshot {name!r} (seq {seq}) does not match its hash: it was changed"
    return ""


def _term_problem(where: str, stream: str, version: int, row_term: int, term: int) -> str:
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


class EventStore:
    """The event log. Open with `await EventStore.open(path)`; close with `await close()`."""

    def __init__(self, db: aiosqlite.Connection, path: str, clock: Callable[[], float]) -> None:
        self._db = db
        self._path = path
        self._clock = clock
        self._lock = asyncio.Lock()  # one transaction or read at a time on the connection
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._versions: dict[str, int] = {}  # cache; the writer is the only one who changes them
        self._head = 0
        self._head_hash = GENESIS
        self._closed = False
        self._writer_stopped = False
        self._writer_busy = False  # the writer task holds a batch
        self._head_unsure = False  # a write was cancelled mid-flight: reload before the next
        self._term_seen = 0  # the newest leadership term this connection has seen
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0  # append transactions committed since open (group commit shows)

    def __repr__(self) -> str:
        return f"EventStore({self._path!r}, head={self._head})"

    @property
    def path(self) -> str:
        return self._path

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> EventStore:
        """Open (creating or migrating) the log at `path`; `":memory:"` for a throwaway one."""
        p = os.fspath(path)
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        _check_path(p)
        if p != ":memory:":
            await asyncio.to_thread(_ready_file, p)
        try:
            db = await aiosqlite.connect(p, isolation_level=None)
        except sqlite3.Error as exc:
            raise translate(exc, p, "opening") from None
        store = cls(db, p, clock)
        try:
            await store._prepare(synchronous)
        except BaseException:
            await db.close()
            raise
        store._writer = asyncio.create_task(store._write_loop(), name=f"eventstore-writer {p}")
        return store

    async def _prepare(self, synchronous: Synchronous) -> None:
        doing = "opening"
        try:
            db = self._db
            async with db.execute("PRAGMA journal_mode=WAL") as cur:
                row = await cur.fetchone()
            mode = str(row[0]).lower() if row else ""
            if self._path != ":memory:" and mode != "wal":
                raise EventStoreError(f"{self._path}: cannot switch to WAL (journal mode {mode})")
            await db.execute(f"PRAGMA synchronous={synchronous}")
            await db.execute("PRAGMA busy_timeout=5000")
            doing = "checking the schema"
            if not await self._schema_is_current():  # a plain open writes nothing
                await db.execute("BEGIN IMMEDIATE")
                try:
                    await self._ensure_schema()
                    await db.execute("COMMIT")
                except BaseException:
                    await self._rollback_quietly()
                    raise
            doing = "reading the head of the log"
            await self._load_head()
        except sqlite3.Error as exc:
            raise translate(exc, self._path, doing) from None

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._db.execute(sql, params) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def _schema_is_current(self) -> bool:
        user_version = int(await self._scalar("PRAGMA user_version"))
        app_id = int(await self._scalar("PRAGMA application_id"))
        if app_id == APPLICATION_ID and user_version > CURRENT_VERSION:
            raise SchemaTooNewError(self._path, user_version, CURRENT_VERSION)
        return app_id == APPLICATION_ID and user_version == CURRENT_VERSION

    async def _ensure_schema(self) -> None:
        """Create or migrate the layout; runs inside BEGIN IMMEDIATE, so it re-reads all."""
        user_version = int(await self._scalar("PRAGMA user_version"))
        app_id = int(await self._scalar("PRAGMA application_id"))
        tables = [
            str(r[0])
            for r in await self._db.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        ]
        if app_id not in (0, APPLICATION_ID) or (user_version == 0 and tables):
            raise EventStoreError(
                f"{self._path}: is an SQLite database but not an event log "
                f"(application_id {app_id}, tables {sorted(tables)})"
            )
        if user_version > CURRENT_VERSION:
            raise SchemaTooNewError(self._path, user_version, CURRENT_VERSION)
        if user_version == 0:
            for statement in SCHEMA_V3:
                await self._db.execute(statement)
        if user_version == 1:
            await self._migrate_v1_to_v2()
        if user_version in (1, 2):
            for statement in V2_TO_V3:  # no row is rewritten: term 0 hashes as before
                await self._db.execute(statement)
        await self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        await self._db.execute(f"PRAGMA user_version={CURRENT_VERSION}")

    async def _migrate_v1_to_v2(self) -> None:
        """Backfill the hash chain over every existing row: O(log size), once."""
        db = self._db
        for statement in V1_TO_V2_BEFORE_BACKFILL:
            await db.execute(statement)
        prev, after, now = GENESIS, 0, self._clock()
        while True:
            rows = await db.execute_fetchall(
                "SELECT seq, stream, version, type, schema_version, data, recorded_at "
                "FROM events WHERE seq > ? ORDER BY seq LIMIT 5000",
                (after,),
            )
            if not rows:
                break
            updates = []
            for seq, stream, version, type_, sv, data, at in rows:
                prev = row_hash(prev, seq, stream, version, type_, sv, bytes(data), float(at))
                updates.append((prev, seq))
                after = seq
            await db.executemany("UPDATE events SET hash = ? WHERE seq = ?", updates)
        snaps = await db.execute_fetchall("SELECT name, seq, schema_version, data FROM snapshots")
        for name, seq, sv, data in snaps:
            chain = await self._chain_hash_at(int(seq))
            if chain is None:
                continue  # a snapshot past the end of the log: load_snapshot reports it
            h = snapshot_hash(name, seq, sv, bytes(data), chain)
            await db.execute(
                "UPDATE snapshots SET hash = ?, saved_at = ? WHERE name = ?", (h, now, name)
            )
        for statement in V2_TRIGGERS:
            await db.execute(statement)

    async def _chain_hash_at(self, seq: int) -> bytes | None:
        if seq == 0:
            return GENESIS
        h = await self._scalar("SELECT hash FROM events WHERE seq = ?", (seq,))
        return None if h is None else bytes(h)

    async def _load_head(self) -> None:
        """Re-read the head, its hash and the term from the database; forget cached versions."""
        async with self._db.execute(HEAD_SQL) as cur:
            row = await cur.fetchone()
        self._head, self._head_hash = (0, GENESIS) if row is None else (row[0], bytes(row[1]))
        self._term_seen = max(self._term_seen, int(await self._scalar(TERM_SQL) or 0))
        self._versions.clear()

    async def close(self) -> None:
        """Finish the appends already queued, then close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None and not self._writer.done():
            self._queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await self._writer
        try:
            async with self._lock:  # an append committing in its caller's task finishes first
                await self._db.close()
        except sqlite3.Error as exc:
            raise translate(exc, self._path, "closing") from None

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
        raised; the check runs inside the inserting statement, not before it. `None` is an
        unfenced append (a tool that does not lead, such as `plan`), recorded with term 0.
        """
        if self._closed:
            self._ensure_open(f"append to {stream!r}")
        if self._writer_stopped:
            raise EventStoreError(f"{self._path}: append to {stream!r}: the writer has stopped")
        _check_events(stream, expected_version, events, term)
        pending = _Pending(stream, expected_version, tuple(events), term or 0)
        if not self._writer_busy and self._queue.empty() and not self._lock.locked():
            # Nothing else is being written: commit here, sparing a hop through the writer task.
            async with self._lock:
                await self._commit_locked([pending])
        else:
            self._queue.put_nowait(pending)
        return await pending.done

    async def acquire_term(self, holder: str) -> int:
        """Take the lead: increment the leadership term and return it.

        One transaction increments the term in the `leadership` row and appends a
        `LeadershipAcquired` event (stream `$leadership`, version = term, data
        `{"term": N, "holder": ...}`) so the audit trail shows every change of leader. From
        its COMMIT on, every append carrying an older term is refused (FencedError), from any
        connection or process. The head, versions and term are re-read from the database
        first: a daemon taking the lead must not trust what it cached while it waited.
        """
        doing = "taking the leadership term"
        self._ensure_open(doing)
        if not isinstance(holder, str) or not holder:
            raise ValueError(f"{doing}: holder must be a non-empty string, got {holder!r}")
        async with self._lock:
            db = self._db
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    await self._load_head()
                    term = int(await self._scalar(TERM_SQL) or 0) + 1
                    version = int(
                        await self._scalar(STREAM_VERSION_SQL, (LEADERSHIP_STREAM,)) or 0
                    ) + 1
                    now = self._clock()
                    data = json.dumps({"term": term, "holder": holder}).encode()
                    seq = self._head + 1
                    h = row_hash(
                        self._head_hash,
                        seq,
                        LEADERSHIP_STREAM,
                        version,
                        LEADERSHIP_EVENT,
                        1,
                        data,
                        now,
                        term,
                    )
                    await db.execute(
                        "UPDATE leadership SET term = ?, holder = ?, acquired_at = ? WHERE id = 1",
                        (term, holder, now),
                    )
                    await db.execute(
                        _INSERT_ONE_SQL,
                        (seq, LEADERSHIP_STREAM, version, LEADERSHIP_EVENT, 1, data, now, h, term),
                    )
                    await db.execute("COMMIT")
                except BaseException as exc:
                    if isinstance(exc, asyncio.CancelledError):
                        self._head_unsure = True
                    await self._rollback_quietly()
                    raise
            except sqlite3.Error as exc:
                await self._reload_after_failure()
                raise translate(exc, self._path, doing) from None
            self.transactions += 1
            self._head, self._head_hash, self._term_seen = seq, h, term
            return term

    async def current_term(self) -> int:
        """The leadership term as the database has it now (0 before anyone took the lead)."""
        rows = await self._fetch("reading the leadership term", TERM_SQL)
        return int(rows[0][0]) if rows else 0

    async def _write_loop(self) -> None:
        stop = False
        batch: list[_Pending] = []
        try:
            while not stop:
                item = await self._queue.get()
                if item is None:
                    break
                self._writer_busy = True
                async with self._lock:
                    # Whatever queued while the lock was held joins this transaction.
                    batch = [item]
                    while len(batch) < _MAX_BATCH and not self._queue.empty():
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

    async def _commit_locked(self, batch: list[_Pending]) -> None:
        """Commit `batch` (the lock is held) and hand each caller its result."""
        results: list[int | BaseException]
        try:
            results = await self._attempt(batch)
        except Exception as exc:
            if len(batch) == 1:
                results = [exc]
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

    async def _attempt(self, batch: list[_Pending]) -> list[int | BaseException]:
        try:
            return await self._write(batch, optimistic=True)
        except _OutOfDate:
            # The head or a version we assumed was wrong; reloaded, now look everything up.
            return await self._write(batch, optimistic=False)

    async def _write(self, batch: list[_Pending], *, optimistic: bool) -> list[int | BaseException]:
        """One transaction for the whole batch.

        A stream missing from the version cache is looked up, except that an append with
        expected_version 0 optimistically takes it for new: if it exists after all, inserting
        its version 1 violates UNIQUE (stream, version) and the batch is retried with lookups.
        That saves a round trip on the first append of every plan.
        """
        db = self._db
        cached = self._versions
        versions: dict[str, int] = {}  # looked up or changed in this batch; merged on commit
        try:
            try:
                if self._head_unsure:
                    await self._load_head()
                    self._head_unsure = False
                missing = list(
                    {
                        p.stream
                        for p in batch
                        if p.stream not in cached and not (optimistic and p.expected == 0)
                    }
                )
                if missing:  # look up and insert in one transaction
                    await db.execute("BEGIN IMMEDIATE")
                for i in range(0, len(missing), _IN_LIMIT):
                    chunk = missing[i : i + _IN_LIMIT]
                    marks = ",".join("?" * len(chunk))
                    for s, v in await db.execute_fetchall(
                        f"SELECT stream, version FROM streams WHERE stream IN ({marks})", chunk
                    ):
                        versions[s] = int(v)
                now = self._clock()
                seq, prev = self._head, self._head_hash
                rows: list[tuple[Any, ...]] = []
                results: list[int | BaseException] = []
                for p in batch:
                    if p.term and p.term < self._term_seen:  # known stale: no trip needed
                        results.append(
                            FencedError(self._path, p.stream, p.term, self._term_seen)
                        )
                        continue
                    actual = versions.get(p.stream)
                    if actual is None:
                        actual = cached.get(p.stream, 0)
                    if actual != p.expected:
                        results.append(ConcurrencyError(p.stream, p.expected, actual))
                        continue
                    t = p.term
                    for e in p.events:
                        seq += 1
                        actual += 1
                        prev = row_hash(
                            prev, seq, p.stream, actual, e.type, e.schema_version, e.data, now, t
                        )
                        rows.append(
                            (seq, p.stream, actual, e.type, e.schema_version, e.data, now, prev, t)
                        )
                    versions[p.stream] = actual
                    results.append(actual)
                if rows and not missing and len(rows) <= _ROWS_PER_STATEMENT:
                    # One statement in autocommit mode is its own transaction: atomic, and
                    # committed (fsynced) before it returns. One trip to aiosqlite's thread.
                    await db.execute(_INSERT_SQL[len(rows)], [v for r in rows for v in r])
                else:
                    if rows and not db.in_transaction:
                        await db.execute("BEGIN IMMEDIATE")
                    if rows:
                        await db.executemany(_INSERT_ONE_SQL, rows)
                    if db.in_transaction:
                        await db.execute("COMMIT")
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    self._head_unsure = True  # the statement may still commit on its thread
                await self._rollback_quietly()
                raise
        except sqlite3.IntegrityError as exc:
            await self._reload_after_failure()
            if FENCED_MESSAGE in str(exc):  # the trigger: a newer term was taken meanwhile
                fenced = min((p for p in batch if p.term), key=lambda p: p.term)
                raise FencedError(
                    self._path, fenced.stream, fenced.term, self._term_seen
                ) from None
            raise _OutOfDate(f"{self._path}: another writer changed the log ({exc})") from None
        except sqlite3.Error as exc:
            await self._reload_after_failure()
            raise translate(exc, self._path, f"appending to {batch[0].stream!r}") from None
        if rows:
            self.transactions += 1
        self._head, self._head_hash = seq, prev
        cached.update(versions)
        return results

    async def _rollback_quietly(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                await self._db.execute("ROLLBACK")

    async def _reload_after_failure(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # the next operation reports the cause
            await self._load_head()

    # -- reading ---------------------------------------------------------------------------

    async def _fetch(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self._ensure_open(doing)
        async with self._lock:
            try:
                return list(await self._db.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise translate(exc, self._path, doing) from None

    async def head(self) -> int:
        """The last seq in the log, 0 when it is empty.

        Read from the file, not the writer's cache: in `verify-log` another process writes.
        """
        rows = await self._fetch("reading the head", "SELECT max(seq) FROM events")
        return int(rows[0][0] or 0)

    async def stream_version(self, stream: str) -> int:
        """The version of `stream` (its number of events), 0 when it does not exist."""
        rows = await self._fetch(
            f"reading the version of stream {stream!r}",
            STREAM_VERSION_SQL,
            (stream,),
        )
        return int(rows[0][0]) if rows else 0

    async def stream_versions(self, streams: Iterable[str]) -> dict[str, int]:
        """The versions of several streams in one query; 0 for those that do not exist."""
        names = sorted(set(streams))
        found: dict[str, int] = dict.fromkeys(names, 0)
        for i in range(0, len(names), _IN_LIMIT):
            chunk = names[i : i + _IN_LIMIT]
            marks = ",".join("?" * len(chunk))
            rows = await self._fetch(
                f"reading the versions of {len(names)} streams",
                f"SELECT stream, version FROM streams WHERE stream IN ({marks})",
                chunk,
            )
            found.update((str(s), int(v)) for s, v in rows)
        return found

    async def streams(self) -> list[tuple[str, int]]:
        """Every stream with its version, ordered by name."""
        rows = await self._fetch(
            "listing streams", "SELECT stream, version FROM streams ORDER BY stream"
        )
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
            f"reading stream {stream!r}",
            READ_STREAM_SQL,
            (stream, from_version),
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
        prev_rows = await self._fetch(
            doing, "SELECT hash FROM events WHERE seq = ?", (from_seq - 1,)
        )
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
            rows = await self._fetch(
                doing,
                READ_FROM_SEQ_SQL,
                (expected, batch),
            )
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

    async def save_snapshot(self, name: str, seq: int, schema_version: int, data: bytes) -> None:
        """Save (or replace) the snapshot `name`: a fold of the log up to and including `seq`."""
        doing = f"saving snapshot {name!r}"
        self._ensure_open(doing)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{doing}: name must be a non-empty string")
        if not isinstance(data, bytes):
            raise TypeError(f"{doing}: data must be bytes")
        if schema_version < 1:
            raise ValueError(f"{doing}: schema_version must be >= 1")
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    # The head as the database has it now (another daemon may have appended),
                    # read under the write lock, so it cannot change before the COMMIT.
                    head = int(await self._scalar("SELECT max(seq) FROM events") or 0)
                    if not 0 <= seq <= head:
                        raise SnapshotRangeError(
                            f"{self._path}: {doing}: seq {seq} is outside the log (head is {head})"
                        )
                    chain = await self._chain_hash_at(seq)
                    if chain is None:
                        raise CorruptLogError(f"{self._path}: {doing}: event seq {seq} is missing")
                    await self._db.execute(
                        "INSERT OR REPLACE INTO snapshots "
                        "(name, seq, schema_version, data, saved_at, hash) VALUES (?,?,?,?,?,?)",
                        (
                            name,
                            seq,
                            schema_version,
                            data,
                            self._clock(),
                            snapshot_hash(name, seq, schema_version, data, chain),
                        ),
                    )
                    await self._db.execute("COMMIT")
                except BaseException:
                    await self._rollback_quietly()
                    raise
            except sqlite3.Error as exc:
                raise translate(exc, self._path, doing) from None

    async def load_snapshot(self, name: str) -> Snapshot | None:
        """The snapshot `name`, checked against the chain; None when there is none."""
        doing = f"loading snapshot {name!r}"
        rows = await self._fetch(
            doing,
            "SELECT s.seq, s.schema_version, s.data, s.hash, e.hash FROM snapshots s "
            "LEFT JOIN events e ON e.seq = s.seq WHERE s.name = ?",
            (name,),
        )
        if not rows:
            return None
        problem = _snapshot_mismatch(name, *rows[0])
        if problem:
            raise CorruptLogError(f"{self._path}: {problem}")
        seq, sv, data = rows[0][0], rows[0][1], bytes(rows[0][2])
        return Snapshot(name=name, seq=seq, schema_version=sv, data=data)

    # -- verification ----------------------------------------------------------------------

    async def _snapshot_problem(self) -> str:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT s.name, s.seq, s.schema_version, s.data, s.hash, e.hash FROM snapshots s "
                "LEFT JOIN events e ON e.seq = s.seq ORDER BY s.name"
            )
        for name, *rest in rows:
            problem = _snapshot_mismatch(name, *rest)
            if problem:
                return problem
        return ""

    async def verify(self, *, batch: int = 5000) -> VerifyReport:
        """Walk the whole chain; report the first bad row instead of raising."""
        self._ensure_open("verifying")
        checked, prev, expected, term = 0, GENESIS, 1, 0
        versions: dict[str, int] = {}

        def bad(seq: int, problem: str) -> VerifyReport:
            return VerifyReport(ok=False, checked=checked, first_bad_seq=seq, problem=problem)

        try:
            while True:
                async with self._lock:
                    rows = list(
                        await self._db.execute_fetchall(READ_FROM_SEQ_SQL, (expected, batch))
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
                    problem = _term_problem(where, stream, version, int(row[8]), term)
                    if problem:
                        return bad(seq, problem)
                    if stream == LEADERSHIP_STREAM:
                        term = version
                    versions[stream] = version
                    checked += 1
                    expected += 1
                if len(rows) < batch:
                    break
            async with self._lock:
                listed: dict[str, int] = {
                    str(r[0]): int(r[1])
                    for r in await self._db.execute_fetchall("SELECT stream, version FROM streams")
                }
            if listed != versions:
                wrong = sorted(set(listed.items()) ^ set(versions.items()))[:3]
                return VerifyReport(
                    ok=False,
                    checked=checked,
                    first_bad_seq=None,
                    problem=f"the streams table disagrees with the events (e.g. {wrong})",
                )
            async with self._lock:
                stored_term = int(await self._scalar(TERM_SQL) or 0)
            if stored_term != term:
                return VerifyReport(
                    ok=False,
                    checked=checked,
                    first_bad_seq=None,
                    problem=f"the leadership term is {stored_term}, but the log records "
                    f"{term} terms taken",
                )
            problem = await self._snapshot_problem()
            if problem:
                return VerifyReport(ok=False, checked=checked, first_bad_seq=None, problem=problem)
            if expected - 1 < self._head:
                return VerifyReport(
                    ok=False,
                    checked=checked,
                    first_bad_seq=None,
                    problem=f"the log ends at seq {expected - 1}, but seq {self._head} was written",
                )
        except sqlite3.Error as exc:
            err = translate(exc, self._path, f"verifying at seq {expected}")
            return bad(expected, str(err))
        return VerifyReport(
            ok=True,
            checked=checked,
            first_bad_seq=None,
            problem=f"all {checked} events verified; the chain is intact",
        )
