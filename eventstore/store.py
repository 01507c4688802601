"""The SQLite backend: streams, a global order, group commit, a hash chain, in one file.

The group commit machinery and the chain-checked reads are shared (`eventstore.base`); this
module has what is SQLite's. One aiosqlite connection does everything, in autocommit mode.
An append made while nothing else is being written commits in its caller's task; otherwise it
queues for a single writer task: whatever has queued up while the previous transaction was
being made durable is written in the next one (group commit), each append checked on its own
against its stream's version, so a stale append fails alone. A transaction is
usually one multi-row INSERT (one trip to aiosqlite's thread). An append returns only after
the COMMIT of the transaction that holds it; with `synchronous=FULL` that COMMIT has been
fsynced.

A row as stored (version 3 of the layout, see `schema`):

    seq=42 stream="plan-3f2a" version=5 type="NodeCordoned" schema_version=1
    data=b'{"node":"w-1",...}' recorded_at=1767225600.0 term=3
    hash=sha256(hash of seq 41 || content)

Opening reads only the last row (for the head seq and chain hash): no work grows with the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Literal

import aiosqlite

from eventstore.base import (
    EventStore,
    Pending,
    check_holder,
    check_snapshot_args,
)
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


class _OutOfDate(EventStoreError):
    """Another connection wrote to the file: the cached head or versions were stale."""


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


def _check_path(path: str, *, create: bool) -> None:
    if path == ":memory:":
        return
    if not create and not os.path.exists(path):
        raise EventStoreError(f"{path}: no such event log")
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


def _check_readable(path: str) -> None:
    """What a read-only open needs: an existing, readable, non-empty file."""
    if not os.path.exists(path):
        raise EventStoreError(f"{path}: no such event log")
    if os.path.isdir(path):
        raise EventStoreError(f"{path}: is a directory, not an event log file")
    if not os.access(path, os.R_OK):
        raise EventStoreError(f"{path}: the event log file is not readable")
    wal = path + "-wal"
    if os.path.getsize(path) == 0 and (not os.path.exists(wal) or os.path.getsize(wal) == 0):
        raise CorruptLogError(f"{path}: the event log file is empty (truncated?)")


def _read_only_uri(path: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


def _inspect_read_only(path: str) -> tuple[bool, bool]:
    """(schema current, in WAL mode) of the log at `path`, read without writing anything.

    Refuses, still without writing, what is not an event log (EventStoreError) and a layout
    newer than this program (SchemaTooNewError)."""
    try:
        db = sqlite3.connect(_read_only_uri(path), uri=True)
        try:
            app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
            user_version = int(db.execute("PRAGMA user_version").fetchone()[0])
            mode = str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            tables = sorted(
                str(r[0])
                for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            )
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise translate(exc, path, "opening read-only") from None
    if app_id != APPLICATION_ID and not (app_id == 0 and user_version in (1, 2) and tables):
        raise EventStoreError(
            f"{path}: is an SQLite database but not an event log "
            f"(application_id {app_id}, tables {tables}); left untouched"
        )
    if user_version > CURRENT_VERSION:
        raise SchemaTooNewError(path, user_version, CURRENT_VERSION)
    return user_version == CURRENT_VERSION, mode == "wal"


def _copy_read_only(path: str, copy: str) -> None:
    """A consistent copy of the log at `path` (SQLite's backup), the source only read."""
    try:
        source = sqlite3.connect(_read_only_uri(path), uri=True)
        try:
            target = sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise translate(exc, path, "copying to read it") from None


class SqliteEventStore(EventStore):
    """The event log in one SQLite file. Open with `await EventStore.open(path)`."""

    _sql: ClassVar[dict[str, str]] = {
        "head": "SELECT max(seq) FROM events",
        "stream_version": STREAM_VERSION_SQL,
        "streams": "SELECT stream, version FROM streams ORDER BY stream",
        "term": TERM_SQL,
        "hash_at": "SELECT hash FROM events WHERE seq = ?",
        "read_from": READ_FROM_SEQ_SQL,
        "read_stream": READ_STREAM_SQL,
        "snapshot": "SELECT s.seq, s.schema_version, s.data, s.hash, e.hash FROM snapshots s "
        "LEFT JOIN events e ON e.seq = s.seq WHERE s.name = ?",
        "snapshots": "SELECT s.name, s.seq, s.schema_version, s.data, s.hash, e.hash "
        "FROM snapshots s LEFT JOIN events e ON e.seq = s.seq ORDER BY s.name",
    }

    def __init__(self, db: aiosqlite.Connection, path: str, clock: Callable[[], float]) -> None:
        super().__init__(path, clock)
        self._db = db
        self._versions: dict[str, int] = {}  # cache; the writer is the only one who changes them
        self._head_hash = GENESIS
        self._head_unsure = False  # a write was cancelled mid-flight: _settle before the next use
        self._term_seen = 0  # the newest leadership term this connection has seen
        self._cleanup = ""  # a directory to remove at close (open_read_only's copy)

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open_read_only(
        cls, path: str, *, clock: Callable[[], float] = time.time
    ) -> SqliteEventStore:
        """Open an existing log only to read it (audit, verify-log): nothing is written to
        the file, ever. A file that is not an event log is refused before anything else (not
        switched to WAL); a log of an older layout, or not in WAL mode, is read from a migrated
        copy in a temporary directory (removed at close), never migrated in place."""
        _check_readable(path)
        current, wal = await asyncio.to_thread(_inspect_read_only, path)
        if current and wal:
            try:
                db = await aiosqlite.connect(
                    _read_only_uri(path), uri=True, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise translate(exc, path, "opening read-only") from None
            store = cls(db, path, clock)
            try:
                await db.execute("PRAGMA busy_timeout=5000")
                await store._load_head()
            except sqlite3.Error as exc:
                await db.close()
                raise translate(exc, path, "reading the head of the log") from None
            store._start_writer()
            return store
        where = tempfile.mkdtemp(prefix="vpsie-rebalancer-read-")
        try:
            copy = os.path.join(where, "events.db")
            await asyncio.to_thread(_copy_read_only, path, copy)
            opened = await cls._open(
                copy, synchronous="NORMAL", clock=clock, password=None, create=False
            )
        except BaseException:
            shutil.rmtree(where, ignore_errors=True)
            raise
        assert isinstance(opened, SqliteEventStore)
        opened._cleanup = where
        return opened

    async def check_integrity(self) -> None:
        """SQLite's own check of every page of the file (`PRAGMA quick_check`): the recovery
        reads only the snapshot and the tail, so damage in the middle would otherwise go
        unseen until an audit. CorruptLogError naming the first problems."""
        self._ensure_open("checking the file's integrity")
        async with self._lock:
            try:
                rows = await self._db.execute_fetchall("PRAGMA quick_check")
            except sqlite3.Error as exc:
                raise CorruptLogError(
                    f"{self._path}: the file is damaged ({exc}); do not append to it: run "
                    "verify-log, and restore it from a backup"
                ) from None
        problems = [str(r[0]) for r in rows]
        if problems != ["ok"]:
            shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
            raise CorruptLogError(
                f"{self._path}: the file is damaged ({shown}); do not append to it: run "
                "verify-log, and restore it from a backup"
            )

    @classmethod
    async def _open(
        cls,
        target: str,
        *,
        synchronous: str,
        clock: Callable[[], float],
        password: str | None,
        create: bool,
    ) -> EventStore:
        """Open (creating or migrating) the log at `target`; `":memory:"` for a throwaway one."""
        p = target
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        _check_path(p, create=create)
        if p != ":memory:":
            await asyncio.to_thread(_ready_file, p)
        try:
            # check_same_thread=False: a lone append runs its INSERT on the loop's thread
            # (see _write); every use of the connection is serialized by the store's lock.
            db = await aiosqlite.connect(p, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise translate(exc, p, "opening") from None
        store = cls(db, p, clock)
        try:
            await store._prepare(synchronous)
        except BaseException:
            await db.close()
            raise
        store._start_writer()
        return store

    async def _close_connections(self) -> None:
        try:
            await self._db.close()
        except sqlite3.Error as exc:
            raise translate(exc, self._path, "closing") from None
        finally:
            if self._cleanup:  # the migrated copy a read-only open made
                shutil.rmtree(self._cleanup, ignore_errors=True)

    async def _prepare(self, synchronous: str) -> None:
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

    # -- writing ---------------------------------------------------------------------------

    async def acquire_term(self, holder: str) -> int:
        """See `EventStore.acquire_term`. BEGIN IMMEDIATE holds the file's write lock."""
        doing = "taking the leadership term"
        self._ensure_open(doing)
        check_holder(doing, holder)
        async with self._lock:
            db = self._db
            try:
                await self._settle()
                await db.execute("BEGIN IMMEDIATE")
                try:
                    await self._load_head()
                    term = int(await self._scalar(TERM_SQL) or 0) + 1
                    version = (
                        int(await self._scalar(STREAM_VERSION_SQL, (LEADERSHIP_STREAM,)) or 0) + 1
                    )
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

    async def _attempt(
        self, batch: list[Pending], *, alone: bool = False
    ) -> list[int | BaseException]:
        try:
            return await self._write(batch, optimistic=True, alone=alone)
        except _OutOfDate:
            # The head or a version we assumed was wrong; reloaded, now look everything up.
            return await self._write(batch, optimistic=False)

    async def _write(
        self, batch: list[Pending], *, optimistic: bool, alone: bool = False
    ) -> list[int | BaseException]:
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
                await self._settle()
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
                        results.append(FencedError(self._path, p.stream, p.term, self._term_seen))
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
                    # committed (fsynced) before it returns.
                    params = [v for r in rows for v in r]
                    raw = getattr(db, "_conn", None) if alone else None
                    if isinstance(raw, sqlite3.Connection):
                        # A lone append: run it right here on the loop's thread. The trip to
                        # aiosqlite's thread and back (two wake-ups) cost more than the write
                        # itself; the connection is idle there, as we hold the lock.
                        raw.execute(_INSERT_SQL[len(rows)], params)
                    else:  # a group: one trip to aiosqlite's thread, the loop keeps running
                        await db.execute(_INSERT_SQL[len(rows)], params)
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
                raise FencedError(self._path, fenced.stream, fenced.term, self._term_seen) from None
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

    async def _settle(self) -> None:
        """After a write cancelled mid-flight (the lock is held): its statements still ran on
        aiosqlite's thread after the cancel, so a transaction it began may be open now. Roll it
        back (nothing of it was committed) and re-read the head, before anything else."""
        if self._head_unsure:
            # A statement through aiosqlite's queue runs after the cancelled ones did, so
            # `in_transaction` is true to what they left.
            await self._db.execute("SELECT 1")
            await self._rollback_quietly()
            await self._load_head()
            self._head_unsure = False

    async def _fetch(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self._ensure_open(doing)
        async with self._lock:
            try:
                await self._settle()
                return list(await self._db.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise translate(exc, self._path, doing) from None

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

    # -- snapshots -------------------------------------------------------------------------

    async def save_snapshot(self, name: str, seq: int, schema_version: int, data: bytes) -> None:
        doing = f"saving snapshot {name!r}"
        self._ensure_open(doing)
        check_snapshot_args(doing, name, schema_version, data)
        async with self._lock:
            try:
                await self._settle()
                try:
                    await self._db.execute("BEGIN IMMEDIATE")
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
                except BaseException as exc:
                    if isinstance(exc, asyncio.CancelledError):
                        self._head_unsure = True  # its BEGIN may still run on the thread
                    await self._rollback_quietly()
                    raise
            except sqlite3.Error as exc:
                raise translate(exc, self._path, doing) from None
