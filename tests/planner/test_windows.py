"""Maintenance windows across a daylight-saving jump (planner/windows.py, pure)."""

from __future__ import annotations

from datetime import UTC, datetime, time

from planner.policy import MaintenanceWindow
from planner.windows import window_state

# Europe/Berlin springs forward on 2026-03-29: 02:00 CET (01:00 UTC) becomes 03:00 CEST.
SPRING = (MaintenanceWindow(start=time(2, 30), end=time(3, 30), timezone="Europe/Berlin"),)


def test_a_window_starting_in_the_spring_forward_gap_opens_when_the_gap_ends() -> None:
    before = window_state(SPRING, datetime(2026, 3, 29, 0, 50, tzinfo=UTC))  # 01:50 CET
    inside = window_state(SPRING, datetime(2026, 3, 29, 1, 10, tzinfo=UTC))  # 03:10 CEST
    after = window_state(SPRING, datetime(2026, 3, 29, 1, 30, tzinfo=UTC))  # 03:30 CEST

    assert not before.open_now and before.next_start == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert inside.open_now and inside.current_end == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert not after.open_now
    # the next day the window is the usual hour: 02:30 CEST
    assert after.next_start == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


def test_a_window_wholly_inside_the_gap_does_not_open_that_day() -> None:
    gap_only = (MaintenanceWindow(start=time(2, 10), end=time(2, 50), timezone="Europe/Berlin"),)
    state = window_state(gap_only, datetime(2026, 3, 29, 0, 50, tzinfo=UTC))
    assert not state.open_now
    assert state.next_start == datetime(2026, 3, 30, 0, 10, tzinfo=UTC)
