"""Event store figures: durable append rate, group commit, and recovery cost vs log age.

    python bench/eventstore.py [--quick]      # exits 1 when a target below is missed

(a) sequential durable appends (one event each) vs plain sqlite3 doing the same inserts, same
    pragmas, one transaction per row, in the same run;
(b) 64 concurrent appenders (group commit) vs that plain sqlite3 figure;
(c) recovery read cost (open + load snapshot + read the tail after it + versions of the
    in-flight plans) on a 1,000,000-event log and on a 5,000,000-event log, each measured in
    a fresh process so peak memory is its own. What recovery does with each tail event is
    `measure_recovery`'s `on_event` parameter; plug the real fold in there.

Timing uses time.perf_counter (here only; the store takes an injected clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore import EventStore, NewEvent, RecordedEvent, Snapshot
from eventstore.chain import GENESIS, row_hash, snapshot_hash
from eventstore.schema import APPLICATION_ID, CURRENT_VERSION, SCHEMA_V3

EPOCH = 1_767_225_600.0
LIFECYCLE = (
    "ReplacementPlanned",
    "WorkerAddRequested",
    "WorkerAdded",
    "NodeJoined",
    "NodeCordonRequested",
    "NodeCordoned",
    "PodEvicted",
    "PodEvicted",
    "NodeDrained",
    "WorkerDeleteRequested",
    "WorkerDeleted",
    "ReplacementCompleted",
)


def payload(plan: int, step: int) -> bytes:
    """About 150 bytes of the JSON an executor event carries."""
    return orjson.dumps(
        {
            "plan": f"plan-{plan:07d}",
            "node": f"k8s-worker-{plan % 977:04d}",
            "worker_id": 80_000 + plan,
            "group": f"ng-{plan % 7}",
            "key": f"plan-{plan:07d}/{step}",
            "size": "standard-4-8",
            "ok": True,
        }
    )


def event_type(step: int) -> str:
    return LIFECYCLE[step % len(LIFECYCLE)]


# -- (a) and (b): append rates -------------------------------------------------------------


class PlainSqlite:
    """Plain sqlite3: the same rows and pragmas, BEGIN IMMEDIATE / INSERT / COMMIT per row."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        for statement in SCHEMA_V3:
            self.db.execute(statement)
        self.prev = GENESIS

    def insert(self, i: int) -> None:
        data = payload(i, 0)
        self.prev = row_hash(self.prev, i, f"plan-{i}", 1, "ReplacementPlanned", 1, data, EPOCH)
        row = (i, f"plan-{i}", 1, "ReplacementPlanned", 1, data, EPOCH, self.prev)
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,0)", row)
        self.db.execute("COMMIT")


async def sequential_rates(d: Path, n: int, rounds: int = 10) -> tuple[float, float]:
    """(ours, plain) appends/s, alternating in rounds so that disk drift hits both alike."""
    plain = PlainSqlite(d / "plain.db")
    ours_s = plain_s = 0.0
    per_round = n // rounds
    async with await EventStore.open(d / "seq.db", clock=lambda: EPOCH) as store:
        for r in range(rounds):
            ids = range(r * per_round + 1, (r + 1) * per_round + 1)
            start = time.perf_counter()
            for i in ids:
                plain.insert(i)
            plain_s += time.perf_counter() - start
            start = time.perf_counter()
            for i in ids:
                ev = NewEvent(type="ReplacementPlanned", schema_version=1, data=payload(i, 0))
                await store.append(f"plan-{i}", 0, [ev])
            ours_s += time.perf_counter() - start
    plain.db.close()
    total = per_round * rounds
    return total / ours_s, total / plain_s


async def concurrent_rate(path: Path, appenders: int, each: int) -> tuple[float, float]:
    """Appends/s with `appenders` tasks each appending `each` events to its own stream."""
    async with await EventStore.open(path, clock=lambda: EPOCH) as store:

        async def appender(a: int) -> None:
            for step in range(each):
                ev = NewEvent(type=event_type(step), schema_version=1, data=payload(a, step))
                await store.append(f"plan-{a}", step, [ev])

        before = store.transactions
        start = time.perf_counter()
        await asyncio.gather(*(appender(a) for a in range(appenders)))
        elapsed = time.perf_counter() - start
        per_txn = appenders * each / (store.transactions - before)
        return appenders * each / elapsed, per_txn


# -- (c): recovery cost vs log age ---------------------------------------------------------


@dataclass(frozen=True)
class LogShape:
    finished_plans: int
    events_per_finished: int
    inflight_plans: int = 50
    inflight_events_before: int = 6  # per in-flight plan, before the snapshot
    tail_events: int = 2_000  # after the snapshot, spread over the in-flight plans

    @property
    def total(self) -> int:
        return (
            self.finished_plans * self.events_per_finished
            + self.inflight_plans * self.inflight_events_before
            + self.tail_events
        )


def shaped_rows(shape: LogShape) -> Iterator[tuple[str, int, int, str, bytes]]:
    """(stream, version, plan, type, data) in log order: plans run 50 at a time, interleaved."""
    wave = 50
    for first in range(0, shape.finished_plans, wave):
        plans = range(first, min(first + wave, shape.finished_plans))
        for step in range(shape.events_per_finished):
            for p in plans:
                yield f"plan-{p:07d}", step + 1, p, event_type(step), payload(p, step)
    base = shape.finished_plans
    for step in range(shape.inflight_events_before):
        for p in range(base, base + shape.inflight_plans):
            yield f"plan-{p:07d}", step + 1, p, event_type(step), payload(p, step)


def build_log(path: Path, shape: LogShape) -> int:
    """Write the log straight through sqlite3 (big transactions, chain computed here).

    Returns the seq of the snapshot. The tail after it is appended through the store API.
    """
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    for statement in SCHEMA_V3:
        db.execute(statement)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute(f"PRAGMA user_version={CURRENT_VERSION}")
    prev, seq, chunk = GENESIS, 0, []
    at = EPOCH
    insert = "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,0)"
    for stream, version, _, type_, data in shaped_rows(shape):
        seq += 1
        at += 0.5
        prev = row_hash(prev, seq, stream, version, type_, 1, data, at)
        chunk.append((seq, stream, version, type_, 1, data, at, prev))
        if len(chunk) == 200_000:
            db.execute("BEGIN")
            db.executemany(insert, chunk)
            db.execute("COMMIT")
            chunk.clear()
    db.execute("BEGIN")
    db.executemany(insert, chunk)
    inflight = [
        f"plan-{p:07d}"
        for p in range(shape.finished_plans, shape.finished_plans + shape.inflight_plans)
    ]
    state = orjson.dumps(
        {
            "plans": {
                s: {"state": "executing", "step": shape.inflight_events_before, "detail": "x" * 600}
                for s in inflight
            },
            "finished": shape.finished_plans,
        }
    )
    db.execute(
        "INSERT INTO snapshots VALUES (?,?,?,?,?,?)",
        ("recovery", seq, 1, state, at, snapshot_hash("recovery", seq, 1, state, prev)),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    return seq


async def append_tail(path: Path, shape: LogShape) -> None:
    async with await EventStore.open(path, synchronous="NORMAL", clock=lambda: EPOCH) as store:
        base = shape.finished_plans
        versions = {
            p: shape.inflight_events_before for p in range(base, base + shape.inflight_plans)
        }
        for i in range(shape.tail_events):
            p = base + i % shape.inflight_plans
            step = versions[p]
            ev = NewEvent(type=event_type(step), schema_version=1, data=payload(p, step))
            versions[p] = await store.append(f"plan-{p:07d}", step, [ev])


@dataclass(frozen=True)
class RecoveryResult:
    seconds: float
    tail_events: int
    inflight_streams: int


async def measure_recovery(
    path: Path,
    *,
    on_snapshot: Callable[[Snapshot | None], set[str]],
    on_event: Callable[[RecordedEvent], None],
) -> RecoveryResult:
    """Open, load the snapshot, read the tail after it, list the in-flight plans' versions.

    `on_snapshot` restores state and returns the in-flight streams it knows; `on_event` folds
    one tail event. Plug the statemachine fold into both.
    """
    start = time.perf_counter()
    async with await EventStore.open(path) as store:
        snap = await store.load_snapshot("recovery")
        streams = set(on_snapshot(snap))
        tail = 0
        async for event in store.read_all((snap.seq if snap else 0) + 1):
            on_event(event)
            streams.add(event.stream)
            tail += 1
        versions = await store.stream_versions(streams)
        assert all(v > 0 for v in versions.values())
    return RecoveryResult(time.perf_counter() - start, tail, len(versions))


def json_fold() -> tuple[Callable[[Snapshot | None], set[str]], Callable[[RecordedEvent], None]]:
    """A stand-in fold: decode the snapshot and every tail event, keep each plan's last step."""
    state: dict[str, tuple[str, int]] = {}

    def on_snapshot(snap: Snapshot | None) -> set[str]:
        if snap is None:
            return set()
        plans = orjson.loads(snap.data)["plans"]
        return set(plans)

    def on_event(event: RecordedEvent) -> None:
        body = orjson.loads(event.data)
        state[event.stream] = (event.type, len(body))

    return on_snapshot, on_event


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM): unlike ru_maxrss it is not inherited over fork+exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recover_in_this_process(path: Path, repeats: int) -> dict[str, float]:
    tracemalloc.start()
    times = []
    result = None
    for _ in range(repeats):
        on_snapshot, on_event = json_fold()
        result = asyncio.run(measure_recovery(path, on_snapshot=on_snapshot, on_event=on_event))
        times.append(result.seconds)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result is not None
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "tail": result.tail_events,
        "inflight": result.inflight_streams,
        "traced_peak_mib": traced_peak / 2**20,
        "peak_rss_mib": peak_rss_mib(),
    }


def recover_in_fresh_process(path: Path, repeats: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--recover", str(path), "--repeats", str(repeats)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


# -- driver --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--recover", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recover:
        print(json.dumps(recover_in_this_process(args.recover, args.repeats)))
        return 0

    quick = args.quick
    n_seq = 300 if quick else 2_000
    each = 10 if quick else 40
    finished = 1_000 if quick else 10_000
    # The older log has had more plans of the same length; in flight and tail are the same.
    small = LogShape(
        finished_plans=finished, events_per_finished=(100_000 if quick else 1_000_000) // finished
    )
    big = LogShape(finished_plans=5 * finished, events_per_finished=small.events_per_finished)

    with tempfile.TemporaryDirectory(prefix="bench-eventstore-") as tmp:
        d = Path(tmp)
        print(f"SQLite {sqlite3.sqlite_version}, synchronous=FULL, WAL, in {tmp}")

        ours, plain = asyncio.run(sequential_rates(d, n_seq))
        print(
            f"(a) sequential durable appends: {ours:8.0f}/s  plain sqlite3 {plain:8.0f}/s  "
            f"ratio {ours / plain:.2f} (target >= 0.7, {_verdict(ours / plain >= 0.7)})"
        )
        ok = ours / plain >= 0.7

        grouped, per_txn = asyncio.run(concurrent_rate(d / "group.db", 64, each))
        print(
            f"(b) 64 concurrent appenders:    {grouped:8.0f}/s  vs plain {plain:8.0f}/s  "
            f"ratio {grouped / plain:.1f}x (target >= 3x, {_verdict(grouped / plain >= 3)}), "
            f"{per_txn:.1f} appends/transaction"
        )
        ok &= grouped / plain >= 3

        results = []
        for shape in (small, big):
            path = d / f"log-{shape.total}.db"
            t0 = time.perf_counter()
            build_log(path, shape)
            asyncio.run(append_tail(path, shape))
            built = time.perf_counter() - t0
            figures = recover_in_fresh_process(path, repeats=5)
            results.append(figures)
            size_mib = path.stat().st_size / 2**20
            print(
                f"(c) {shape.total:>9,} events ({shape.finished_plans:,} finished plans, "
                f"{shape.inflight_plans} in flight, {size_mib:.0f} MiB, built in {built:.1f}s): "
                f"recovery {figures['median_s'] * 1000:.1f} ms median "
                f"(tail {int(figures['tail'])} events, {int(figures['inflight'])} plans), "
                f"peak RSS {figures['peak_rss_mib']:.0f} MiB, "
                f"traced peak {figures['traced_peak_mib']:.1f} MiB"
            )
            path.unlink()
        ratio = results[1]["median_s"] / results[0]["median_s"]
        print(
            f"(c) recovery time ratio {big.total:,} / {small.total:,} events: {ratio:.2f}x "
            f"(target <= 1.3x, {_verdict(ratio <= 1.3)})"
        )
        ok &= ratio <= 1.3
    return 0 if ok else 1


def _verdict(met: bool) -> str:
    return "ok" if met else "MISSED"


if __name__ == "__main__":
    raise SystemExit(main())
