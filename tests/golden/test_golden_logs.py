"""Golden event logs replayed: a change to the fold that changes what an old log means fails.

Fixtures (tests/golden/fixtures): `<name>.jsonl`, one stored event per line
(stream, type, schema_version, data), some in old schema versions; `<name>.expected.json`, the
folded state and every transition. Written once by `python -m tests.golden.regenerate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.audit import plan_report, verify_log
from daemon.service.recovery import recover
from eventstore import EventStore, NewEvent, RecordedEvent
from statemachine.fold import FoldState, apply, state_to_plain

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMES = ("completed_rolling", "rolled_back", "recovered_then_completed", "grown_then_completed")


def load(name: str) -> list[dict[str, Any]]:
    text = (FIXTURES / f"{name}.jsonl").read_bytes()
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def records_of(lines: Iterable[dict[str, Any]]) -> list[RecordedEvent]:
    versions: dict[str, int] = {}
    out = []
    for seq, line in enumerate(lines, start=1):
        versions[line["stream"]] = versions.get(line["stream"], 0) + 1
        out.append(
            RecordedEvent(
                seq=seq,
                stream=line["stream"],
                version=versions[line["stream"]],
                type=line["type"],
                schema_version=line["schema_version"],
                data=orjson.dumps(line["data"]),
                recorded_at=float(seq),
            )
        )
    return out


def normalised(value: object) -> object:
    from statemachine.events import to_json

    return orjson.loads(to_json(value))


@pytest.mark.parametrize("name", NAMES)
def test_replaying_the_log_gives_the_recorded_state(name: str) -> None:
    expected = orjson.loads((FIXTURES / f"{name}.expected.json").read_bytes())
    state = FoldState()
    transitions = []
    for record in records_of(load(name)):
        change = apply(state, record)
        assert change is not None
        transitions.append([change.seq, change.replacement_id, change.from_state, change.to_state])
    assert transitions == expected["transitions"]
    assert normalised(state_to_plain(state)) == expected["state"]


def test_the_logs_hold_old_schema_versions() -> None:
    old = {(line["type"], line["schema_version"]) for n in NAMES for line in load(n)}
    assert ("PlanApproved", 1) in old
    assert ("EvictionBlocked", 1) in old


@pytest.mark.parametrize(
    ("name", "outcome", "replaced", "rolled_back", "saving"),
    [
        ("completed_rolling", "completed", 2, 0, "32.00"),
        ("rolled_back", "rolled_back", 0, 1, None),
        ("recovered_then_completed", "completed", 2, 0, "56.00"),
        # 16.00 saved by the replacement, 12.00 spent on the node added
        ("grown_then_completed", "completed", 2, 0, "4.00"),
    ],
)
async def test_stored_golden_logs_verify_recover_and_audit(
    tmp_path: Path, name: str, outcome: str, replaced: int, rolled_back: int, saving: str | None
) -> None:
    store = await EventStore.open(tmp_path / "golden.db", synchronous="NORMAL")
    try:
        for line in load(name):
            version = await store.stream_version(line["stream"])
            event = NewEvent(
                type=line["type"],
                schema_version=line["schema_version"],
                data=orjson.dumps(line["data"]),
            )
            await store.append(line["stream"], version, [event])
        assert (await verify_log(store)).ok
        recovered = await recover(store)
        assert recovered.in_flight == {}
        plan_id = load(name)[0]["data"]["plan_id"]
        report = await plan_report(store, plan_id)
    finally:
        await store.close()
    assert report.row.outcome == outcome
    assert (report.replaced, report.rolled_back) == (replaced, rolled_back)
    assert str(report.row.realised_saving) == str(saving)
    assert report.timeline[-1].to_state == outcome
