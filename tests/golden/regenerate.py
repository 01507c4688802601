"""Write the golden event logs and their expected folded states (run by hand, rarely).

    python -m tests.golden.regenerate            # only writes logs/expectations that are missing
    python -m tests.golden.regenerate --force    # rewrite everything: review the diff!

The logs are history: once committed, a log must keep meaning what it meant. Regenerate an
expectation only when a change of meaning is intended, and say so in the commit. Some events
are written in their old shapes (PlanApproved v1, EvictionBlocked v1) so the upcasters are
replayed too.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from statemachine import events as ev
from statemachine.fold import FoldState, apply, state_to_plain
from statemachine.histories import example_spec, walk
from statemachine.plan import Action, CheckResult, CheckStatus, Strategy

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def scripted(spec_plan: Any, script: Sequence[str], start_step: int = 0) -> list[ev.Event]:
    """Walk the machines, taking at each step the first option of the scripted type."""
    names = iter(script)

    def choose(options: list[ev.Event]) -> ev.Event:
        want = next(names)
        for option in options:
            if type(option).type_name() == want:
                return option
        raise ValueError(f"{want} is not possible here: {[type(o).__name__ for o in options]}")

    return list(walk(spec_plan, choose, steps=len(script) + 1, start_step=start_step))


REPLACE = [
    "WorkerAddRequested",
    "WorkerAdded",
    "NodeJoined",
    "NodeLabelled",
    "CordonRequested",
    "NodeCordoned",
    "DrainStarted",
    "PodEvictionRequested",
    "PodEvicted",
    "PodEvictionRequested",
    "PodEvicted",
    "NodeDrained",
    "ReschedulingConfirmed",
    "WorkerDeleteRequested",
    "WorkerDeleted",
    "ReplacementCompleted",
]


def completed_rolling() -> list[ev.Event]:
    spec = example_spec("golden-rolling", replacements=2)
    return scripted(
        spec, ["PlanApproved", "PlanExecutionStarted", *REPLACE, *REPLACE, "PlanCompleted"]
    )


def rolled_back() -> list[ev.Event]:
    spec = example_spec("golden-rollback", replacements=2, strategy=Strategy.SURGE)
    events = scripted(
        spec,
        [
            "PlanApprovalRequested",
            "PlanApproved",
            "PlanExecutionStarted",
            "NodeGroupCreateRequested",
            "NodeGroupCreated",
            "WorkerAddRequested",
            "WorkerAdded",
            "NodeJoined",
            "CordonRequested",
            "NodeCordoned",
            "DrainStarted",
            "PodEvictionRequested",
            "EvictionBlocked",
            "PodEvictionRequested",
            "EvictionBlocked",
            "DrainTimedOut",
            "SafetyChecksRun",
            "PlanRollbackStarted",
            "ReplacementRollbackStarted",
            "UncordonRequested",
            "NodeUncordoned",
            "WorkerDeleteRequested",
            "WorkerDeleted",
            "ReplacementRolledBack",
            "PlanRolledBack",
        ],
    )
    failed_check = CheckResult(
        name="disruption_budgets",
        status=CheckStatus.FAILED,
        message="PDB shop/web allows 0 disruptions",
        details={"pdb": "shop/web", "disruptions_allowed": 0},
    )
    return [
        dataclasses.replace(
            e,
            checks=(failed_check,),
            action=Action.REJECT,
            reasons=("drain timed out",),
            step="drain",
        )
        if isinstance(e, ev.SafetyChecksRun)
        else e
        for e in events
    ]


def recovered_then_completed() -> list[ev.Event]:
    spec = example_spec("golden-recovered", replacements=1, consolidations=1)
    events = scripted(
        spec,
        [
            "PlanApproved",
            "PlanExecutionStarted",
            "WorkerAddRequested",
            # the daemon was killed here; after restart it re-ran the checks and found the
            # worker in the group: the pending intent's outcome is recorded from the world
            "SafetyChecksRun",
            "WorkerAdded",
            *REPLACE[2:14],
            # killed again after asking VPSie to delete the old worker; it was gone on restart
            "WorkerDeleted",
            "ReplacementCompleted",
            "CordonRequested",
            "NodeCordoned",
            "DrainStarted",
            "PodEvictionRequested",
            "PodEvicted",
            "PodEvictionRequested",
            "PodEvicted",
            "NodeDrained",
            "WorkerDeleteRequested",
            "WorkerDeleted",
            "ReplacementCompleted",
            "PlanCompleted",
        ],
    )
    out: list[ev.Event] = []
    for event in events:
        if isinstance(event, ev.SafetyChecksRun):
            event = dataclasses.replace(event, step="resume-after-recovery")
        if isinstance(event, ev.WorkerDeleted) and event.replacement_id.endswith("r1"):
            event = dataclasses.replace(event, already_gone=True)
        out.append(event)
    return out


def grown_then_completed() -> list[ev.Event]:
    """A plan that grows the group: a node added where none is removed (add-only, first),
    then one node replaced."""
    spec = example_spec("golden-grown", replacements=1, adds=1)
    replaced, added = spec.replacements
    spec = dataclasses.replace(
        spec,
        replacements=(
            dataclasses.replace(added, batch=0),
            dataclasses.replace(replaced, batch=1),
        ),
        batches=((added.replacement_id,), (replaced.replacement_id,)),
    )
    return scripted(
        spec,
        [
            "PlanApproved",
            "PlanExecutionStarted",
            "WorkerAddRequested",
            "WorkerAdded",
            "NodeJoined",
            "NodePrepareRequested",
            "NodePrepared",
            "ReplacementCompleted",
            *REPLACE,
            "PlanCompleted",
        ],
    )


def old_shape(event: ev.Event) -> dict[str, Any]:
    """The stored line; some events in the shapes older builds wrote."""
    encoded = ev.encode(event)
    data: dict[str, Any] = orjson.loads(encoded.data)
    version = encoded.schema_version
    if isinstance(event, ev.PlanApproved):
        data["approved_by"] = data.pop("by")
        version = 1
    if isinstance(event, ev.EvictionBlocked):
        data["pod"] = f"{data.pop('namespace')}/{data['pod']}"
        del data["reason"]
        version = 1
    return {
        "stream": ev.stream_for(event.plan_id),
        "type": encoded.type,
        "schema_version": version,
        "data": data,
    }


LOGS = {
    "completed_rolling": completed_rolling,
    "rolled_back": rolled_back,
    "recovered_then_completed": recovered_then_completed,
    "grown_then_completed": grown_then_completed,
}


def expected_of(lines: list[dict[str, Any]]) -> dict[str, Any]:
    from tests.golden.test_golden_logs import records_of

    state = FoldState()
    transitions = []
    for record in records_of(lines):
        change = apply(state, record)
        assert change is not None
        transitions.append([change.seq, change.replacement_id, change.from_state, change.to_state])
    return {"state": state_to_plain(state), "transitions": transitions}


def dump(value: object) -> bytes:
    plain = orjson.loads(ev.to_json(value))
    return orjson.dumps(plain, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the golden event logs")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, build in LOGS.items():
        log, expected = FIXTURES / f"{name}.jsonl", FIXTURES / f"{name}.expected.json"
        if log.exists() and expected.exists() and not args.force:
            continue
        lines = [old_shape(e) for e in build()]
        log.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        expected.write_bytes(dump(expected_of(lines)) + b"\n")
        print(f"wrote {log.name} ({len(lines)} events) and {expected.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
