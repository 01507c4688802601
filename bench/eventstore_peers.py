"""The event store next to the `eventsourcing` library's recorders, and on PostgreSQL.

Imported by bench/eventstore.py (which prints and judges the figures). Same durability on
both sides (SQLite: WAL with synchronous=FULL, checked; PostgreSQL: synchronous_commit=on,
checked), same payload per event (the ~150-byte JSON of `payload`, as `state` there and `data`
here), one event per append, one transaction per append when appends are sequential.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from eventstore import EventStore, NewEvent

try:
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
except ImportError:  # pragma: no cover - said clearly by require_eventsourcing
    StoredEvent = None

REPO = Path(__file__).resolve().parent.parent
EPOCH = 1_767_225_600.0
TOPIC = "daemon.events:ReplacementPlanned"


def require_eventsourcing() -> None:
    if StoredEvent is None:
        raise SystemExit(
            "bench/eventstore.py needs the eventsourcing library for its comparisons: "
            "pip install 'eventsourcing[postgres]' (or pip install -e '.[bench]')"
        )


# -- a PostgreSQL server for the run -------------------------------------------------------


class Server:
    """The DSN given, or a throwaway server (scripts/pg-throwaway) for the run."""

    def __init__(self, dsn: str | None) -> None:
        self.dir: Path | None = None
        if dsn is None:
            # Its own directory under /tmp: the server may run as another user (as root it
            # runs as postgres), who must reach the socket directory.
            self.dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
            out = subprocess.run(
                [str(REPO / "scripts" / "pg-throwaway"), "start", str(self.dir)],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                raise SystemExit(f"cannot start PostgreSQL: {out.stderr.strip()}")
            dsn = out.stdout.strip()
        self.dsn = dsn

    def stop(self) -> None:
        if self.dir is not None:
            subprocess.run(
                [str(REPO / "scripts" / "pg-throwaway"), "stop", str(self.dir)], check=False
            )
            shutil.rmtree(self.dir, ignore_errors=True)

    async def fresh_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name}")
            await conn.execute(f"CREATE DATABASE {name}")
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
            assert await conn.fetchval("SHOW fsync") == "on"
        finally:
            await conn.close()
        parts = urlsplit(self.dsn)
        return f"{parts.scheme}://{parts.netloc}/{name}?{parts.query}"

    def psycopg_kwargs(self, dsn: str) -> dict[str, Any]:
        parts = urlsplit(dsn)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        return {
            "dbname": parts.path.lstrip("/"),
            "host": query.get("host", parts.hostname or ""),
            "port": str(parts.port or 5432),
            "user": query.get("user", parts.username or ""),
            "password": "",
        }


def payload_event(data: bytes) -> NewEvent:
    return NewEvent(type="ReplacementPlanned", schema_version=1, data=data)


def stored(data: bytes, originator: uuid.UUID, version: int = 1) -> Any:
    return StoredEvent(
        originator_id=originator, originator_version=version, topic=TOPIC, state=data
    )


# -- sequential ----------------------------------------------------------------------------


def sqlite_recorder(path: Path) -> Any:
    datastore = SQLiteDatastore(str(path))
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    with datastore.transaction(commit=False) as c:
        c.execute("PRAGMA synchronous")
        mode = c.fetchone()[0]
        c.execute("PRAGMA journal_mode")
        journal = c.fetchone()[0]
    assert (mode, str(journal).lower()) == (2, "wal"), (mode, journal)  # FULL, WAL: as ours
    return recorder


async def sequential_pair(
    ours_target: str,
    theirs: Any,
    payloads: Callable[[int], bytes],
    n: int,
    rounds: int = 10,
) -> tuple[float, float]:
    """(ours, theirs) appends/s, alternating in rounds so drift hits both alike."""
    ours_s = theirs_s = 0.0
    per_round = n // rounds
    async with await EventStore.open(ours_target, clock=lambda: EPOCH) as store:
        for r in range(rounds):
            ids = range(r * per_round, (r + 1) * per_round)
            batch = [(uuid.uuid4(), payloads(i)) for i in ids]
            start = time.perf_counter()
            for originator, data in batch:
                theirs.insert_events([stored(data, originator)])
            theirs_s += time.perf_counter() - start
            start = time.perf_counter()
            for i, (_, data) in zip(ids, batch, strict=True):
                await store.append(f"plan-{i}", 0, [payload_event(data)])
            ours_s += time.perf_counter() - start
    total = per_round * rounds
    return total / ours_s, total / theirs_s


# -- concurrent (PostgreSQL) ---------------------------------------------------------------


async def ours_concurrent(target: str, appenders: int, each: int, data: bytes) -> float:
    async with await EventStore.open(target, clock=lambda: EPOCH) as store:

        async def appender(a: int) -> None:
            for step in range(each):
                await store.append(f"plan-c{a}", step, [payload_event(data)])

        start = time.perf_counter()
        await asyncio.gather(*(appender(a) for a in range(appenders)))
        return appenders * each / (time.perf_counter() - start)


def theirs_concurrent(recorder: Any, appenders: int, each: int, data: bytes) -> float:
    """`appenders` threads (the library is synchronous), each with a pooled connection."""

    def appender() -> None:
        originator = uuid.uuid4()
        for step in range(each):
            recorder.insert_events([stored(data, originator, step + 1)])

    threads = [threading.Thread(target=appender) for _ in range(appenders)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return appenders * each / (time.perf_counter() - start)


def postgres_recorder(server: Server, dsn: str, pool: int) -> Any:
    datastore = PostgresDatastore(**server.psycopg_kwargs(dsn), pool_size=pool)
    recorder = PostgresApplicationRecorder(datastore)
    recorder.create_table()
    return recorder


def sqlite_synchronous_default() -> int:
    return int(sqlite3.connect(":memory:").execute("PRAGMA synchronous").fetchone()[0])
