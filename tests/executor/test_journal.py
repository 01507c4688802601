"""PlanJournal on a real event store: append first, then fold; refusals write nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.executor.journal import RESTART_GAP_S, PlanJournal
from eventstore import ConcurrencyError, EventStore, NewEvent
from statemachine import events as ev
from statemachine.fold import PlanState, fold
from statemachine.machines import IllegalTransition, PlanStatus
from statemachine.plan import Action, Opportunity, PlanSpec, ReplacementSpec, Strategy

AT = "2026-01-01T00:00:00.000Z"


def _spec(plan_id: str = "j1") -> PlanSpec:
    r = ReplacementSpec(
        replacement_id=f"{plan_id}/n1",
        batch=0,
        old_node="n1",
        old_worker="w1",
        old_size_id=2,
        old_monthly_price=Decimal(48),
        new_size_id=1,
        new_monthly_price=Decimal(24),
    )
    return PlanSpec(
        plan_id=plan_id,
        cluster="c",
        node_group="g",
        strategy=Strategy.ROLLING,
        created_at=AT,
        opportunity=Opportunity.DOWNSIZE,
        replacements=(r,),
        batches=((r.replacement_id,),),
        max_concurrent=1,
        checks=(),
        recommended_action=Action.PROCEED,
        action_reasons=(),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    opened = await EventStore.open(tmp_path / "log.db")
    yield opened
    await opened.close()


async def test_record_appends_then_folds_and_load_agrees(store: EventStore) -> None:
    journal = await PlanJournal.load(store, "j1")
    assert not journal.exists and journal.version == 0
    with pytest.raises(LookupError, match="no events yet"):
        _ = journal.state
    await journal.record(
        ev.PlanProposed(plan_id="j1", at=AT, plan=_spec()),
        ev.PlanApproved(plan_id="j1", at=AT, by="alice"),
    )
    assert journal.state.status is PlanStatus.APPROVED and journal.version == 2
    assert await store.stream_version("plan-j1") == 2
    again = await PlanJournal.load(store, "j1")
    assert again.state.status is PlanStatus.APPROVED
    assert again.state.approved_by == "alice"


async def test_an_illegal_event_writes_nothing_not_even_its_predecessors(
    store: EventStore,
) -> None:
    journal = await PlanJournal.load(store, "j1")
    await journal.record(ev.PlanProposed(plan_id="j1", at=AT, plan=_spec()))
    with pytest.raises(IllegalTransition):
        await journal.record(
            ev.PlanApproved(plan_id="j1", at=AT, by="alice"),
            ev.PlanCompleted(plan_id="j1", at=AT, realised_monthly_saving=Decimal(1)),
        )
    assert journal.state.status is PlanStatus.PROPOSED
    assert await store.stream_version("plan-j1") == 1
    with pytest.raises(ValueError, match="plan 'other'"):
        await journal.record(ev.PlanApproved(plan_id="other", at=AT, by="x"))


async def test_concurrent_records_are_serialised(store: EventStore) -> None:
    journal = await PlanJournal.load(store, "j1")
    await journal.record(
        ev.PlanProposed(plan_id="j1", at=AT, plan=_spec()),
        ev.PlanApproved(plan_id="j1", at=AT, by="a"),
        ev.PlanExecutionStarted(plan_id="j1", at=AT),
    )
    checks = [
        ev.SafetyChecksRun(plan_id="j1", at=AT, checks=(), action=Action.PROCEED, step=str(i))
        for i in range(20)
    ]
    await asyncio.gather(*(journal.record(c) for c in checks))
    assert journal.version == 23
    plans = fold([e async for e in store.read_all()])
    assert plans["j1"].version == 23


async def test_another_writer_is_a_concurrency_error(store: EventStore) -> None:
    journal = await PlanJournal.load(store, "j1")
    await journal.record(ev.PlanProposed(plan_id="j1", at=AT, plan=_spec()))
    encoded = ev.encode(ev.PlanApproved(plan_id="j1", at=AT, by="someone else"))
    await store.append(
        "plan-j1",
        1,
        [NewEvent(type=encoded.type, schema_version=encoded.schema_version, data=encoded.data)],
    )
    with pytest.raises(ConcurrencyError):
        await journal.record(ev.PlanApproved(plan_id="j1", at=AT, by="alice"))
    assert journal.state.status is PlanStatus.PROPOSED


async def test_subscribers_see_each_event_and_a_broken_one_is_contained(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    journal = await PlanJournal.load(store, "j1")
    seen: list[tuple[str, str]] = []

    def broken(state: PlanState, event: ev.Event) -> None:
        raise RuntimeError("reporter down")

    journal.subscribe(broken)
    journal.subscribe(lambda state, event: seen.append((state.status, type(event).__name__)))
    with caplog.at_level(logging.ERROR, logger="daemon.executor.journal"):
        await journal.record(
            ev.PlanProposed(plan_id="j1", at=AT, plan=_spec()),
            ev.PlanApproved(plan_id="j1", at=AT, by="a"),
        )
    assert seen == [("approved", "PlanProposed"), ("approved", "PlanApproved")]
    assert "reporter down" in caplog.text


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(1_767_225_600 + seconds, UTC).isoformat()


async def test_acting_time_counts_a_restart_but_not_an_outage(store: EventStore) -> None:
    """Adversary: the daemon's own deaths. Term 1 drains for 10 s and dies; the daemon is down
    1,000 s; term 2 drains 5 s more and dies; term 3 asks 85 s later. Each gap between terms
    counts what a restart takes (at most RESTART_GAP_S), never the whole outage: a long outage
    does not time the drain out, and a crash loop inside it still reaches the timeout."""
    rid = "j1/n1"
    base = {"plan_id": "j1", "replacement_id": rid}
    spec = _spec()  # a consolidation: straight to the cordon and the drain
    only = dataclasses.replace(spec.replacements[0], new_size_id=None, new_monthly_price=Decimal(0))
    spec = dataclasses.replace(spec, replacements=(only,))
    term1 = await store.acquire_term("a")
    first = await PlanJournal.load(store, "j1", term=term1)
    await first.record(
        ev.PlanProposed(plan_id="j1", at=_at(0), plan=spec),
        ev.PlanApproved(plan_id="j1", at=_at(0), by="alice"),
        ev.PlanExecutionStarted(plan_id="j1", at=_at(0)),
        ev.CordonRequested(**base, at=_at(0), node="n1", prior_unschedulable=False),
        ev.NodeCordoned(**base, at=_at(0), node="n1"),
        ev.DrainStarted(**base, at=_at(0), node="n1", pods=("shop/web-1",)),
        ev.PodEvictionRequested(**base, at=_at(10), namespace="shop", pod="web-1"),
    )
    term2 = await store.acquire_term("a")
    second = await PlanJournal.load(store, "j1", term=term2)
    await second.record(
        ev.EvictionBlocked(**base, at=_at(1010), namespace="shop", pod="web-1", attempt=1),
        ev.PodEvictionRequested(**base, at=_at(1015), namespace="shop", pod="web-1"),
    )
    third = await PlanJournal.load(store, "j1", term=await store.acquire_term("a"))
    now = datetime.fromisoformat(_at(1100)).timestamp()
    assert RESTART_GAP_S == 30.0
    assert third.acting_s(rid, ev.DrainStarted, now) == pytest.approx(10 + 30 + 5 + 30)
    # In its own term, the time since its last event counts in full.
    assert second.acting_s(rid, ev.DrainStarted, now) == pytest.approx(10 + 30 + 5 + 85)
