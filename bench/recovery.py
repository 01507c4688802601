"""Recovery cost vs log age, with the real events, the real fold and a real snapshot.

    python bench/recovery.py            # 1,000,000 and 5,000,000 events (a few minutes)
    python bench/recovery.py --quick    # 100,000 and 500,000 events

Each log holds finished plans (about 100 events each: 10,000 of them at 1M) and 50 plans in
flight, a `fold` snapshot taken by `daemon.service.recovery.write_snapshot`'s format after all
but the last 10 events of each in-flight plan, and those 500 events as the tail. `recover()`
is timed in a fresh process per log (so peak RSS is its own), 15 times; the ratio uses the best
run of each, since the median follows whatever else the machine runs. Targets: <= 1 s, ratio <= 1.3.
Separately, the raw fold rate (decode + apply, no snapshot) over the first 300,000 events.
And the integrity check that `run` and `plan` make before acting (`PRAGMA quick_check` over
every page, `EventStore.check_integrity`), timed in a fresh process (3 runs, the best): it
grows with the file, unlike recovery; target: at least 100 MB/s, so a 1 GB log is checked in
about 10 s at start.

The logs are written straight through sqlite3 with the store's schema and hash chain (the
store's append path is measured by bench/eventstore.py); every event is a real encoded event
from `statemachine.histories`, re-addressed to its plan by replacing a fixed-width plan id.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.service.recovery import SNAPSHOT_NAME, recover
from eventstore import EventStore
from eventstore.chain import GENESIS, row_hash, snapshot_hash
from eventstore.schema import APPLICATION_ID, CURRENT_VERSION, SCHEMA_V3
from statemachine import events as ev
from statemachine.fold import STATE_SCHEMA_VERSION, FoldState, apply, encode_state
from statemachine.histories import example_spec, forward_history

TEMPLATE_ID = "P" * 12
INFLIGHT = 50
TAIL_PER_PLAN = 10
EPOCH = 1_767_225_600.0

Row = tuple[str, int, str, int, bytes]  # stream, version, type, schema_version, data


def template(node_group: str) -> list[Row]:
    spec = example_spec(TEMPLATE_ID, node_group=node_group, replacements=7)
    rows = []
    for version, event in enumerate(forward_history(spec), start=1):
        encoded = ev.encode(event)
        rows.append(
            (
                ev.stream_for(TEMPLATE_ID),
                version,
                encoded.type,
                encoded.schema_version,
                encoded.data,
            )
        )
    return rows


def readdress(rows: list[Row], plan_number: int) -> Iterator[Row]:
    new_id = f"{plan_number:012d}"
    raw = TEMPLATE_ID.encode()
    for stream, version, type_, sv, data in rows:
        yield (
            stream.replace(TEMPLATE_ID, new_id),
            version,
            type_,
            sv,
            data.replace(raw, new_id.encode()),
        )


def inflight_cut(i: int, length: int) -> int:
    """How many events in-flight plan `i` has before the snapshot (varied along its life)."""
    return 4 + (i * 7) % (length - TAIL_PER_PLAN - 6)


def build(path: Path, total: int) -> dict[str, int]:
    finished_rows = template("workers")
    live_rows = template("gpu")
    finished = max(1, total // 100)  # 10,000 finished plans per million events
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    for statement in SCHEMA_V3:
        db.execute(statement)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute(f"PRAGMA user_version={CURRENT_VERSION}")
    insert = "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,0)"
    seq, prev, chunk = 0, GENESIS, []
    fold = FoldState(keep_finished=False)

    def emit(rows: Iterator[Row], *, track: bool) -> None:
        nonlocal seq, prev
        for stream, version, type_, sv, data in rows:
            seq += 1
            at = EPOCH + seq * 0.5
            prev = row_hash(prev, seq, stream, version, type_, sv, data, at)
            chunk.append((seq, stream, version, type_, sv, data, at, prev))
            if track:
                apply(fold, _Rec(seq, stream, version, type_, sv, data))
            if len(chunk) >= 100_000:
                db.execute("BEGIN")
                db.executemany(insert, chunk)
                db.execute("COMMIT")
                chunk.clear()

    for p in range(finished):
        # only the last finished plan matters to the fold (its group summary)
        emit(readdress(finished_rows, p), track=p == finished - 1)
    live = range(finished, finished + INFLIGHT)
    for i, p in enumerate(live):
        emit(readdress(live_rows[: inflight_cut(i, len(live_rows))], p), track=True)
    snapshot_seq, snapshot_prev = seq, prev
    fold.head_seq = seq
    state = encode_state(fold)
    for i, p in enumerate(live):
        cut = inflight_cut(i, len(live_rows))
        emit(readdress(live_rows[cut : cut + TAIL_PER_PLAN], p), track=False)
    db.execute("BEGIN")
    db.executemany(insert, chunk)
    db.execute(
        "INSERT INTO snapshots VALUES (?,?,?,?,?,?)",
        (
            SNAPSHOT_NAME,
            snapshot_seq,
            STATE_SCHEMA_VERSION,
            state,
            EPOCH,
            snapshot_hash(SNAPSHOT_NAME, snapshot_seq, STATE_SCHEMA_VERSION, state, snapshot_prev),
        ),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    return {"events": seq, "finished_plans": finished, "snapshot_bytes": len(state)}


class _Rec:
    __slots__ = ("data", "schema_version", "seq", "stream", "type", "version")

    def __init__(
        self, seq: int, stream: str, version: int, type_: str, sv: int, data: bytes
    ) -> None:
        self.seq, self.stream, self.version = seq, stream, version
        self.type, self.schema_version, self.data = type_, sv, data


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def time_recover(path: Path, repeats: int) -> dict[str, float]:
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        store = await EventStore.open(path)
        try:
            result = await recover(store)
        finally:
            await store.close()
        times.append(time.perf_counter() - start)
    assert result is not None and len(result.in_flight) == INFLIGHT, "wrong recovery"
    assert result.quarantined == ()
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "tail_events": result.events_folded,
        "in_flight": len(result.in_flight),
        "peak_rss_mib": peak_rss_mib(),
    }


async def fold_rate(path: Path, limit: int) -> dict[str, float]:
    """Events/s for: reading from the store alone; decode + apply alone; both together."""
    store = await EventStore.open(path)
    records = []
    try:
        start = time.perf_counter()
        async for recorded in store.read_all():
            records.append(recorded)
            if len(records) >= limit:
                break
        read_s = time.perf_counter() - start
    finally:
        await store.close()
    gc.freeze()  # the 300,000 records held here are the bench's, not recovery's: keep GC off them
    state = FoldState(keep_finished=False)
    start = time.perf_counter()
    for recorded in records:
        apply(state, recorded)
    fold_s = time.perf_counter() - start
    n = len(records)
    return {"read": n / read_s, "fold": n / fold_s, "both": n / (read_s + fold_s)}


async def time_integrity(path: Path, repeats: int) -> dict[str, float]:
    size = float(path.stat().st_size)  # noqa: ASYNC240 (before the clock starts)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        store = await EventStore.open(path)
        try:
            await store.check_integrity()
        finally:
            await store.close()
        times.append(time.perf_counter() - start)
    return {"min_s": min(times), "bytes": size}


INTEGRITY_MB_S = 100.0


def in_fresh_process(*args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--recover", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fold-rate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--integrity", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    if args.recover:
        print(json.dumps(asyncio.run(time_recover(args.recover, args.repeats))))
        return 0
    if args.fold_rate:
        print(json.dumps(asyncio.run(fold_rate(args.fold_rate, 300_000))))
        return 0
    if args.integrity:
        print(json.dumps(asyncio.run(time_integrity(args.integrity, 3))))
        return 0
    sizes = (100_000, 500_000) if args.quick else (1_000_000, 5_000_000)
    results = []
    slowest_mb_s = float("inf")
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        for size in sizes:
            path = Path(tmp) / f"log-{size}.db"
            start = time.perf_counter()
            shape = build(path, size)
            built = time.perf_counter() - start
            figures = in_fresh_process("--recover", str(path), "--repeats", str(args.repeats))
            results.append(figures["min_s"])
            print(
                f"{shape['events']:>9,} events ({shape['finished_plans']:,} finished plans, "
                f"{INFLIGHT} in flight, snapshot {shape['snapshot_bytes']:,} B; built in "
                f"{built:.0f} s): recover() median {figures['median_s'] * 1000:.1f} ms "
                f"(min {figures['min_s'] * 1000:.1f}), tail {figures['tail_events']:.0f} events, "
                f"peak RSS {figures['peak_rss_mib']:.0f} MiB"
            )
            if size == sizes[0]:
                rate = in_fresh_process("--fold-rate", str(path))
                print(
                    f"without a snapshot, first 300,000 events: store read_all {rate['read']:,.0f}"
                    f"/s, decode + fold {rate['fold']:,.0f}/s, together {rate['both']:,.0f}/s"
                )
            check = in_fresh_process("--integrity", str(path))
            mb_s = check["bytes"] / 1e6 / check["min_s"]
            slowest_mb_s = min(slowest_mb_s, mb_s)
            print(
                f"  integrity check at open (quick_check, {check['bytes'] / 1e6:,.0f} MB): "
                f"{check['min_s']:.2f} s, {mb_s:,.0f} MB/s (target >= {INTEGRITY_MB_S:.0f})"
            )
            path.unlink()
    ratio = results[1] / results[0]
    print(
        f"ratio {sizes[1]:,} / {sizes[0]:,}: {ratio:.2f} (target <= 1.3); "
        f"largest {max(results) * 1000:.0f} ms (target <= 1000)"
    )
    missed = ratio > 1.3 or max(results) > 1.0 or slowest_mb_s < INTEGRITY_MB_S
    print("MISSED a target" if missed else "all targets met")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
