"""What `status` says a node group waits for, from the planner's own check results (so a
renamed detail in the planner cannot leave the daemon silently saying "the next analysis")."""

from __future__ import annotations

from datetime import UTC, datetime, time

from daemon.service.waiting import analysis_waiting, world_waiting
from planner.checks import NodeCountPath, check_node_group_health, check_timing
from planner.policy import MaintenanceWindow
from statemachine.plan import CheckResult

NOW = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)  # a Monday afternoon
NEXT = "2026-01-05T14:10:00.000Z"
PATH = NodeCountPath(current=6, peak=7, lowest=5)


def health(last_finished: datetime | None) -> CheckResult:
    return check_node_group_health(
        PATH, min_nodes=3, max_nodes=None, now=NOW, last_plan_finished_at=last_finished,
        cooldown_s=3600,
    )


def test_a_cooldown_names_its_end() -> None:
    checks = (health(datetime(2026, 1, 5, 13, 30, tzinfo=UTC)),)
    waiting = analysis_waiting(checks, "postponed", NEXT)
    assert waiting["reason"] == "cooldown"
    assert waiting["until"] == "2026-01-05T14:30:00Z"
    assert waiting["message"] == "the cooldown after the last plan to end at 2026-01-05 14:30:00Z"


def test_outside_the_windows_names_the_next_opening() -> None:
    night = MaintenanceWindow(start=time(2, 0), end=time(5, 0))
    checks = (health(None), check_timing((night,), NOW, 1800))
    waiting = analysis_waiting(checks, "postponed", NEXT)
    assert waiting["reason"] == "window"
    assert waiting["until"] == "2026-01-06T02:00:00Z"
    assert "opens at 2026-01-06 02:00:00Z" in waiting["message"]


def test_nothing_blocking_means_the_next_analysis_and_why_nothing_was_done() -> None:
    checks = (health(None), check_timing((), NOW, 1800))
    waiting = analysis_waiting(checks, "every node is already the cheapest fit", NEXT)
    assert waiting == {
        "reason": "analysis",
        "until": NEXT,
        "message": "the next analysis at 2026-01-05 14:10:00Z (nothing to do now: every node "
        "is already the cheapest fit)",
    }
    after_a_plan = analysis_waiting(checks, None, NEXT)
    assert after_a_plan["message"] == "the next analysis at 2026-01-05 14:10:00Z"


def test_an_unreadable_world_names_the_next_try() -> None:
    waiting = world_waiting("VPSie: list_workers: no answer within 30s", NEXT)
    assert waiting["reason"] == "world" and waiting["until"] == NEXT
    assert "no answer within 30s" in waiting["message"]
