"""Events survive the log: encode/decode round trips, clear errors, upcasting of old shapes."""

from __future__ import annotations

import random
from decimal import Decimal

import orjson
import pytest

from statemachine import events as ev
from statemachine.histories import example_spec, walk
from statemachine.machines import PLAN_NEXT, REPAIR_NEXT, REPLACEMENT_NEXT


def _sample_events() -> list[ev.Event]:
    rng = random.Random(7)
    seen: dict[str, ev.Event] = {}
    for i in range(400):
        spec = example_spec(f"p{i}", replacements=2, consolidations=i % 2, repair=i % 3 == 2)

        def choose(options: list[ev.Event]) -> ev.Event:
            return options[0] if rng.random() < 0.75 else rng.choice(options)

        for event in walk(spec, choose, steps=80):
            seen.setdefault(type(event).type_name(), event)
    return list(seen.values())


SAMPLES = _sample_events()


def test_every_catalogued_type_is_a_trigger_and_every_trigger_is_catalogued() -> None:
    triggers = {t for _, t in PLAN_NEXT} | {t for _, t in REPLACEMENT_NEXT} | {"PlanProposed"}
    triggers |= {t for _, t in REPAIR_NEXT}
    assert triggers == set(ev.CATALOGUE)


def test_the_walk_reaches_every_event_type() -> None:
    assert {type(e).type_name() for e in SAMPLES} == set(ev.CATALOGUE)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).type_name())
def test_round_trip(event: ev.Event) -> None:
    encoded = ev.encode(event)
    assert encoded.type == type(event).type_name()
    assert encoded.schema_version == type(event).VERSION
    assert ev.decode(*encoded) == event


def test_plan_spec_round_trips_with_decimals_enums_and_nested_tuples() -> None:
    spec = example_spec("p1", replacements=2, consolidations=1)
    event = ev.PlanProposed(plan_id="p1", at="2026-01-05T02:00:00Z", plan=spec)
    data = orjson.loads(ev.encode(event).data)
    assert data["plan"]["replacements"][0]["old_monthly_price"] == "40.00"
    assert data["plan"]["batches"] == [["p1-r1"], ["p1-r2"], ["p1-r3"]]
    assert data["plan"]["strategy"] == "rolling"
    decoded = ev.decode(*ev.encode(event))
    assert isinstance(decoded, ev.PlanProposed)
    assert decoded.plan == spec
    assert decoded.plan.replacements[2].new_size_id is None
    assert decoded.plan.monthly_saving == Decimal("72.00")


def test_unknown_type_is_an_error() -> None:
    with pytest.raises(ev.UnknownEventType, match="NodeTeleported"):
        ev.decode("NodeTeleported", 1, b"{}")


def test_newer_version_is_an_error() -> None:
    data = ev.encode(ev.PlanResumed(plan_id="p", at="t", by="a")).data
    with pytest.raises(ev.EventVersionTooNew, match="PlanResumed has schema version 2"):
        ev.decode("PlanResumed", 2, data)


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        ({"plan_id": "p", "at": "t", "replacement_id": "r"}, "node_name", "missing"),
        (
            {"plan_id": "p", "at": "t", "replacement_id": 5, "node_name": "n"},
            "replacement_id",
            "expected a string",
        ),
        (
            {"plan_id": "p", "at": "t", "replacement_id": "r", "node_name": "n", "x": 1},
            "x",
            "unknown field",
        ),
    ],
)
def test_malformed_payload_names_the_field(
    payload: dict[str, object], field: str, problem: str
) -> None:
    with pytest.raises(ev.MalformedEvent) as info:
        ev.decode("NodeJoined", 1, orjson.dumps(payload))
    assert info.value.field == field
    assert problem in str(info.value)
    assert "NodeJoined" in str(info.value)


def test_malformed_nested_field_is_named_by_path() -> None:
    data = orjson.loads(
        ev.encode(ev.PlanProposed(plan_id="p1", at="t", plan=example_spec("p1"))).data
    )
    data["plan"]["replacements"][1]["old_monthly_price"] = "forty"
    with pytest.raises(ev.MalformedEvent) as info:
        ev.decode("PlanProposed", 1, orjson.dumps(data))
    assert info.value.field == "plan.replacements[1].old_monthly_price"


def test_bad_enum_and_literal_values_are_refused() -> None:
    base = {"plan_id": "p", "at": "t", "replacement_id": "r", "worker_identifier": "w"}
    with pytest.raises(ev.MalformedEvent, match="'middle' is not one of"):
        ev.decode("WorkerDeleteRequested", 1, orjson.dumps({**base, "node": "n", "role": "middle"}))
    checks = {"plan_id": "p", "at": "t", "checks": [], "action": "hurry"}
    with pytest.raises(ev.MalformedEvent, match="'hurry' is not one of"):
        ev.decode("SafetyChecksRun", 1, orjson.dumps(checks))


def test_not_json_is_malformed() -> None:
    with pytest.raises(ev.MalformedEvent, match="not JSON"):
        ev.decode("PlanResumed", 1, b"{nope")


def test_plan_approved_v1_is_upcast() -> None:
    v1 = orjson.dumps({"plan_id": "p", "at": "t", "approved_by": "alice"})
    assert ev.decode("PlanApproved", 1, v1) == ev.PlanApproved(plan_id="p", at="t", by="alice")


def test_eviction_blocked_v1_is_upcast() -> None:
    v1 = orjson.dumps(
        {"plan_id": "p", "at": "t", "replacement_id": "r", "pod": "shop/web-1", "attempt": 3}
    )
    assert ev.decode("EvictionBlocked", 1, v1) == ev.EvictionBlocked(
        plan_id="p", at="t", replacement_id="r", namespace="shop", pod="web-1", attempt=3
    )


def test_a_version_below_one_is_malformed() -> None:
    with pytest.raises(ev.MalformedEvent, match="schema_version"):
        ev.decode("PlanResumed", 0, b"{}")


def test_encoding_an_event_outside_the_catalogue_is_refused() -> None:
    with pytest.raises(TypeError, match="not in the event catalogue"):
        ev.encode(ev.ReplacementEvent(plan_id="p", at="t", replacement_id="r"))


def test_streams_are_one_per_plan() -> None:
    assert ev.stream_for("abc") == "plan-abc"
    assert ev.plan_id_of_stream("plan-abc") == "abc"
    assert ev.plan_id_of_stream("lease-x") is None
