"""The fold's guards beyond the machine tables: intent/outcome bracketing and ownership."""

from __future__ import annotations

from decimal import Decimal

import pytest

from statemachine import events as ev
from statemachine.fold import FoldState, apply_event, encode_state
from statemachine.histories import example_spec, forward_history
from statemachine.machines import IllegalTransition

AT = "2026-01-05T09:00:00Z"


def run_until(type_name: str, *, consolidations: int = 0, occurrence: int = 1) -> FoldState:
    """Fold a forward history of plan "g" up to and including the n-th `type_name` event."""
    state = FoldState()
    seen = 0
    spec = example_spec("g", replacements=1, consolidations=consolidations)
    for i, event in enumerate(forward_history(spec), start=1):
        apply_event(state, event, stream="plan-g", seq=i, version=i)
        seen += type(event).type_name() == type_name
        if seen == occurrence:
            return state
    raise AssertionError(f"{type_name} not in the history")


def refuse(state: FoldState, event: ev.Event, match: str, *, version: int | None = None) -> None:
    before = encode_state(state)
    v = state.plans["g"].version + 1 if version is None else version
    with pytest.raises(IllegalTransition, match=match) as info:
        apply_event(state, event, stream="plan-g", seq=999, version=v)
    assert info.value.seq == 999 and info.value.stream == "plan-g"
    assert encode_state(state) == before


R = {"plan_id": "g", "at": AT, "replacement_id": "g-r1"}


def test_a_second_intent_while_one_is_pending() -> None:
    state = run_until("PodEvictionRequested")
    refuse(
        state,
        ev.PodEvictionRequested(**R, namespace="default", pod="other"),
        "PodEvictionRequested is still pending",
    )


def test_an_outcome_with_no_intent() -> None:
    state = run_until("DrainStarted")
    refuse(
        state,
        ev.PodEvicted(**R, namespace="default", pod="g-node-1-app-1"),
        "no pending PodEvictionRequested",
    )


def test_an_outcome_for_another_pod() -> None:
    state = run_until("PodEvictionRequested")
    refuse(state, ev.PodEvicted(**R, namespace="default", pod="nope"), "no pending")


def test_deleting_a_worker_the_plan_was_not_told_to_replace() -> None:
    state = run_until("NodeDrained")
    refuse(
        state,
        ev.WorkerDeleteRequested(**R, worker_identifier="workers-w9", node="x", role="old"),
        "not the worker to replace",
    )


def test_deleting_as_new_a_worker_this_replacement_did_not_add() -> None:
    state = run_until("NodeJoined")
    version = state.plans["g"].version + 1
    rollback = ev.ReplacementRollbackStarted(**R, reason="r")
    apply_event(state, rollback, stream="plan-g", seq=version, version=version)
    refuse(
        state,
        ev.WorkerDeleteRequested(**R, worker_identifier="workers-w1", node="n", role="new"),
        "not a worker this replacement added",
    )


def test_uncordoning_a_node_someone_else_cordoned() -> None:
    state = run_until("NodeJoined")
    steps: list[ev.Event] = [
        ev.CordonRequested(**R, node="workers-node-1", prior_unschedulable=True),
        ev.NodeCordoned(**R, node="workers-node-1"),
        ev.ReplacementRollbackStarted(**R, reason="checks failed"),
    ]
    for event in steps:
        version = state.plans["g"].version + 1
        apply_event(state, event, stream="plan-g", seq=version, version=version)
    assert state.plans["g"].replacements["g-r1"].cordoned_by_us is False
    refuse(state, ev.UncordonRequested(**R, node="workers-node-1"), "did not cordon")


def test_a_worker_that_was_already_in_the_group_is_not_the_new_one() -> None:
    state = run_until("WorkerAddRequested")
    refuse(state, ev.WorkerAdded(**R, worker_identifier="workers-w1"), "already in the group")


def test_a_consolidation_adds_no_worker() -> None:
    state = run_until("PlanExecutionStarted", consolidations=1)
    refuse(
        state,
        ev.WorkerAddRequested(
            plan_id="g",
            at=AT,
            replacement_id="g-r2",
            idempotency_key="k",
            cluster="c",
            group_id=1,
            size_id=2,
            known_workers=(),
        ),
        "adds no worker",
    )


def test_nothing_follows_a_finished_plan() -> None:
    state = run_until("PlanCompleted")
    refuse(state, ev.PlanPaused(plan_id="g", at=AT, by="a", reason="r"), "in state completed")


def test_replacement_events_wait_for_execution() -> None:
    state = run_until("PlanApproved")
    refuse(state, ev.NodeJoined(**R, node_name="n"), "in state plan approved")


def test_a_plan_does_not_complete_with_a_replacement_in_flight() -> None:
    state = run_until("NodeJoined")
    refuse(
        state,
        ev.PlanCompleted(plan_id="g", at=AT, realised_monthly_saving=Decimal(0)),
        "still in flight: g-r1",
    )


def test_stream_versions_must_follow() -> None:
    state = run_until("PlanApproved")
    refuse(state, ev.PlanExecutionStarted(plan_id="g", at=AT), "does not follow", version=9)


def test_a_plan_is_proposed_once() -> None:
    state = run_until("PlanApproved")
    refuse(state, ev.PlanProposed(plan_id="g", at=AT, plan=example_spec("g")), "already proposed")


def test_an_event_for_another_plan_in_this_stream() -> None:
    state = run_until("PlanApproved")
    refuse(state, ev.PlanExecutionStarted(plan_id="h", at=AT), "plan_id 'h' in plan-g")
