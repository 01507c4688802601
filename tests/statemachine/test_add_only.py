"""An add-only replacement: a node added where none is removed (the fleet grows).

Its machine has no cordon, drain or delete of an old worker; the fold refuses them, refuses to
complete it before its node is prepared, and refuses a spec that names an old worker."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from statemachine import events as ev
from statemachine.fold import FoldState, apply_event, decode_state, encode_state
from statemachine.histories import example_spec, forward_history
from statemachine.machines import ADD_TRANSITIONS, IllegalTransition, ReplacementStatus

AT = "2026-01-05T09:00:00Z"
A = {"plan_id": "g", "at": AT, "replacement_id": "g-a1"}


def run_until(type_name: str, *, occurrence: int = 1) -> FoldState:
    """Fold the forward history of a plan replacing one node and adding one, up to and
    including the n-th `type_name` event of the add-only replacement (or of the plan)."""
    state = FoldState()
    seen = 0
    for i, event in enumerate(forward_history(example_spec("g", replacements=1, adds=1)), 1):
        apply_event(state, event, stream="plan-g", seq=i, version=i)
        mine = getattr(event, "replacement_id", "g-a1") == "g-a1"
        seen += mine and type(event).type_name() == type_name
        if seen == occurrence:
            return state
    raise AssertionError(f"{type_name} not in the history")


def step(state: FoldState, event: ev.Event) -> None:
    v = state.plans["g"].version + 1
    apply_event(state, event, stream="plan-g", seq=v, version=v)


def refuse(state: FoldState, event: ev.Event, match: str) -> None:
    before = encode_state(state)
    v = state.plans["g"].version + 1
    with pytest.raises(IllegalTransition, match=match):
        apply_event(state, event, stream="plan-g", seq=v, version=v)
    assert encode_state(state) == before


def test_the_add_machine_has_no_step_on_an_old_node() -> None:
    triggers = {t for t, _, _ in ADD_TRANSITIONS}
    forbidden = {"CordonRequested", "DrainStarted", "PodEvictionRequested", "NodeDrained",
                 "UncordonRequested", "WorkerLossConfirmed", "ReschedulingConfirmed"}
    assert not triggers & forbidden
    completes = [src for t, src, _ in ADD_TRANSITIONS if t == "ReplacementCompleted"]
    assert completes == [(ReplacementStatus.READY,)]


def test_an_add_only_replacement_runs_to_done_and_saves_negatively() -> None:
    history = forward_history(example_spec("g", replacements=1, adds=1))
    state = FoldState()
    for i, event in enumerate(history, 1):
        apply_event(state, event, stream="plan-g", seq=i, version=i)
    added = state.plans["g"].replacements["g-a1"]
    assert added.status is ReplacementStatus.DONE and added.prepared
    assert added.monthly_saving == Decimal("-12.00")
    kinds = [type(e).type_name() for e in history if getattr(e, "replacement_id", "") == "g-a1"]
    assert kinds == ["WorkerAddRequested", "WorkerAdded", "NodeJoined", "NodePrepareRequested",
                     "NodePrepared", "ReplacementCompleted"]
    assert decode_state(encode_state(state)).plans["g"].spec == state.plans["g"].spec


def test_it_may_not_cordon_drain_or_delete_an_old_worker() -> None:
    state = run_until("NodePrepared")
    refuse(state, ev.CordonRequested(**A, node="workers-node-1", prior_unschedulable=False),
           "add-only")
    refuse(state, ev.WorkerDeleteRequested(**A, worker_identifier="workers-w1", node="n",
                                           role="old"), "add-only")
    refuse(state, ev.DrainStarted(**A, node="workers-node-1", pods=()), "add-only")


def test_it_completes_only_once_its_node_is_prepared() -> None:
    state = run_until("NodeJoined")
    refuse(state, ev.ReplacementCompleted(**A, monthly_saving=Decimal("-12.00")), "not prepared")


def test_rolled_back_it_deletes_the_worker_it_added_and_no_other() -> None:
    state = run_until("NodePrepared")
    r = state.plans["g"].replacements["g-a1"]
    step(state, ev.ReplacementRollbackStarted(**A, reason="checks failed"))
    refuse(state, ev.WorkerDeleteRequested(**A, worker_identifier="workers-w1", node="n",
                                           role="new"), "not a worker this replacement added")
    refuse(state, ev.WorkerDeleteRequested(**A, worker_identifier=r.new_worker, node="n",
                                           role="old"), "no old worker")
    step(state, ev.WorkerDeleteRequested(**A, worker_identifier=r.new_worker, node=r.new_node,
                                         role="new"))
    step(state, ev.WorkerDeleted(**A, worker_identifier=r.new_worker))
    step(state, ev.ReplacementRolledBack(**A))
    assert state.plans["g"].replacements["g-a1"].status is ReplacementStatus.ROLLED_BACK


def _propose(spec_changes: dict[str, object], *, repair: bool = False) -> None:
    spec = example_spec("g", replacements=1, adds=1, repair=repair)
    reps = tuple(
        dataclasses.replace(r, **spec_changes) if r.adds_only else r for r in spec.replacements
    )
    spec = dataclasses.replace(spec, replacements=reps)
    apply_event(FoldState(), ev.PlanProposed(plan_id="g", at=AT, plan=spec), stream="plan-g",
                seq=1, version=1)


def test_a_spec_that_is_not_a_clean_add_is_refused() -> None:
    _propose({})  # the clean one is accepted
    with pytest.raises(IllegalTransition, match="names an old worker"):
        _propose({"old_worker": "workers-w9"})
    with pytest.raises(IllegalTransition, match="old size or price"):
        _propose({"old_monthly_price": Decimal(5)})
    with pytest.raises(IllegalTransition, match="adds no node"):
        _propose({"new_size_id": None, "new_size_name": "", "new_monthly_price": Decimal(0)})
    with pytest.raises(IllegalTransition, match="no lost node"):
        _propose({}, repair=True)
