"""The repair machine: a lost node is cordoned, tainted and emptied only once its worker is
confirmed gone; past the worker's delete there is no way back."""

from __future__ import annotations

from typing import Any

import pytest

from statemachine import events as ev
from statemachine.fold import FoldState, apply_event
from statemachine.histories import example_spec, forward_history
from statemachine.machines import IllegalTransition, PlanStatus, ReplacementStatus


def _fold(events: list[ev.Event]) -> FoldState:
    state = FoldState()
    for i, e in enumerate(events, start=1):
        apply_event(state, e, stream=ev.stream_for(e.plan_id), seq=i, version=i)
    return state


def _until(history: list[ev.Event], cls: type[ev.Event]) -> list[ev.Event]:
    index = next(i for i, e in enumerate(history) if isinstance(e, cls))
    return history[:index]


SPEC = example_spec("rp", replacements=1, consolidations=1, repair=True)
HISTORY = forward_history(SPEC)


def test_a_repair_runs_to_completion_in_its_order() -> None:
    state = _fold(HISTORY)
    plan = state.plans["rp"]
    assert plan.status is PlanStatus.COMPLETED
    assert all(r.status is ReplacementStatus.DONE for r in plan.replacements.values())
    names = [type(e).__name__ for e in HISTORY if getattr(e, "replacement_id", "") == "rp-r1"]
    order = [
        "WorkerAddRequested", "WorkerAdded", "NodeJoined", "NodePrepareRequested",
        "WorkerDeleteRequested", "WorkerDeleted", "CordonRequested", "NodeCordoned",
        "OutOfServiceTaintRequested", "NodeTaintedOutOfService", "DrainStarted",
        "PodDeleteRequested", "PodDeleted", "NodeDrained", "NodeDeleteRequested",
        "NodeDeleted", "ReplacementCompleted",
    ]
    assert [n for n in names if n in order] == order


def _base(rid: str = "rp-r1") -> dict[str, Any]:
    return {"plan_id": "rp", "at": "2026-01-05T03:00:00Z", "replacement_id": rid}


def test_no_cordon_before_the_worker_is_confirmed_gone() -> None:
    before = _until(HISTORY, ev.WorkerDeleteRequested)
    state = _fold(before)
    assert state.plans["rp"].replacements["rp-r1"].status is ReplacementStatus.READY
    cordon = ev.CordonRequested(**_base(), node=SPEC.replacements[0].old_node,
                                prior_unschedulable=False)
    with pytest.raises(IllegalTransition):
        apply_event(state, cordon, stream="plan-rp", seq=999, version=len(before) + 1)


def test_the_lost_worker_is_not_deleted_before_the_new_one_is_ready() -> None:
    before = _until(HISTORY, ev.WorkerAddRequested)
    state = _fold(before)
    spec = SPEC.replacements[0]
    delete = ev.WorkerDeleteRequested(**_base(), worker_identifier=spec.old_worker,
                                      node=spec.old_node, role="old")
    with pytest.raises(IllegalTransition, match="not ready"):
        apply_event(state, delete, stream="plan-rp", seq=999, version=len(before) + 1)
    loss = ev.WorkerLossConfirmed(**_base(), node=spec.old_node,
                                  worker_identifier=spec.old_worker)
    with pytest.raises(IllegalTransition, match="not ready"):
        apply_event(state, loss, stream="plan-rp", seq=999, version=len(before) + 1)


def test_no_rollback_once_the_lost_worker_is_being_deleted() -> None:
    upto = _until(HISTORY, ev.WorkerDeleted)
    state = _fold(upto)
    rollback = ev.ReplacementRollbackStarted(**_base(), reason="x")
    with pytest.raises(IllegalTransition):
        apply_event(state, rollback, stream="plan-rp", seq=999, version=len(upto) + 1)


def test_a_loss_must_name_the_planned_node_and_worker() -> None:
    removal = SPEC.replacements[1]  # no new size: straight from planned
    started = [
        ev.PlanApproved(plan_id="rp", at="t", by="policy"),
        ev.PlanExecutionStarted(plan_id="rp", at="t"),
    ]
    state = _fold([*HISTORY[:1], *started])
    wrong = ev.WorkerLossConfirmed(**_base("rp-r2"), node="other", worker_identifier="w")
    with pytest.raises(IllegalTransition, match="not this repair's lost node"):
        apply_event(state, wrong, stream="plan-rp", seq=99, version=4)
    right = ev.WorkerLossConfirmed(**_base("rp-r2"), node=removal.old_node,
                                   worker_identifier=removal.old_worker)
    apply_event(state, right, stream="plan-rp", seq=99, version=4)
    r = state.plans["rp"].replacements["rp-r2"]
    assert r.status is ReplacementStatus.TERMINATED and r.old_deleted
