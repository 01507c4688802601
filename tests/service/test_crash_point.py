"""The crash-injection variable: its two forms, and what is refused."""

from __future__ import annotations

import pytest

from statemachine import events as ev
from tests.crash.injection import (
    CRASH_ENV,
    CrashInjector,
    CrashPoint,
    crash_point_from_env,
    parse_crash_at,
)


def test_both_forms_parse() -> None:
    assert parse_crash_at("7") == CrashPoint(7)
    assert parse_crash_at(" 12:after-call ") == CrashPoint(12, after_call=True)
    assert crash_point_from_env({}) is None
    assert crash_point_from_env({CRASH_ENV: "3"}) == CrashPoint(3)


@pytest.mark.parametrize("text", ["0", "-1", "x", "3:before-call", "3:", ":after-call", "1.5"])
def test_malformed_values_name_the_variable(text: str) -> None:
    with pytest.raises(ValueError, match=CRASH_ENV):
        parse_crash_at(text)


def _event(n: int) -> ev.Event:
    return ev.PlanResumed(plan_id="p", at=f"2026-01-01T00:00:0{n}Z", by="t")


def test_the_nth_event_kills_and_after_call_waits_for_the_next_call() -> None:
    killed: list[int] = []
    now = CrashInjector(CrashPoint(2), kill=lambda: killed.append(1))
    now.on_event(None, _event(1))
    now.after_call("evict")
    assert killed == []
    now.on_event(None, _event(2))
    assert killed == [1]

    later: list[str] = []
    armed = CrashInjector(CrashPoint(1, after_call=True), kill=lambda: later.append("x"))
    armed.on_event(None, _event(1))
    assert later == []
    armed.after_call("add_worker")
    assert later == ["x"]
