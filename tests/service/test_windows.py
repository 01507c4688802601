"""Outside a maintenance window a plan pauses at its next safe point and resumes by itself when
the next window opens; it never rolls back the work in flight.

Adversary: time. The window closes while the daemon is down with a worker half-added (the
daemon was SIGKILLed inside the add call), or while a blue-green plan soaks; the daemon that
carries on finds no window open.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from statemachine import events as ev
from tests.crash.invariants import LogView, read_log
from tests.crash.rehearsal import Rehearsal, rehearsal
from tests.service.daemon_process import DaemonProcess
from tests.service.test_service import verdict_ok
from tests.service.two_daemons import killed_in_its_first_add, witnessed_daemon

WINDOW_PAUSER = "maintenance-window"


def window(start: datetime, end: datetime) -> str:
    """One maintenance window (UTC, every day) as the configuration's TOML."""
    return (
        "\n[[node_groups.maintenanceWindows]]\n"
        f'start = "{start:%H:%M}"\nend = "{end:%H:%M}"\ntimeZone = "UTC"\n'
    )


def sim_now(reh: Rehearsal) -> datetime:
    return datetime.fromtimestamp(reh.sim.clock.now(), tz=UTC)


def when(event: ev.Event) -> datetime:
    return datetime.fromisoformat(event.at)


def minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


async def paused_then_done(daemon: DaemonProcess, timeout_s: float) -> dict[str, Any]:
    """Wait for the plan to be paused (returns the status then), then to end."""
    seen: dict[str, Any] = {}

    async def paused() -> bool:
        status = await daemon.status()
        plans = status["plans"]
        if plans and plans[0]["state"] == "paused":
            seen.update(status)
            return True
        return False

    await daemon.until("the plan to pause outside the window", paused, timeout_s=timeout_s)

    async def done() -> bool:
        return not (await daemon.status())["plans"]

    await daemon.until("the plan to finish in the next window", done, timeout_s=timeout_s)
    return seen


def pauses_and_effects(log: LogView) -> tuple[list[ev.Event], list[ev.Event], list[ev.Event]]:
    events = [e for _, e in log.order]
    pauses = [e for e in events if isinstance(e, ev.PlanPaused | ev.PlanResumed)]
    rollbacks = [
        e for e in events if isinstance(e, ev.PlanRollbackStarted | ev.ReplacementRollbackStarted)
    ]
    drains = [e for e in events if isinstance(e, ev.CordonRequested | ev.DrainStarted)]
    return pauses, rollbacks, drains


async def test_a_restart_outside_the_window_pauses_until_the_next_opens(tmp_path: Path) -> None:
    """Adversaries: the host kills the daemon in its add (the answer is lost with it), and an
    operator narrows the maintenance windows while it is down. The restarted daemon pauses the
    plan until the next window opens; it does not roll back the work in flight."""
    async with rehearsal(tmp_path, fork=False, speed=300.0) as reh:  # as below
        reh.lease_s = 180
        reh.configure(strategy="rolling", max_concurrent=1, batch_size=1)
        async with witnessed_daemon(reh, "a") as wa:
            await killed_in_its_first_add(wa)
            # While it was down, the only window left is one that opens in 20 minutes.
            opens = minute(sim_now(reh)) + timedelta(minutes=20)
            wa.config.write_text(wa.config.read_text() + window(opens, opens + timedelta(hours=6)))
            again = wa.again("a2")
            await again.start()
            seen = await paused_then_done(again, timeout_s=90)
            assert await again.stop() == 0
            await verdict_ok(reh)
            log = await read_log(reh.db_path)

    pauses, rollbacks, drains = pauses_and_effects(log)
    assert seen["node_groups"]["general"]["waiting"]["reason"] == "window", seen
    assert rollbacks == [], rollbacks
    assert [type(e).__name__ for e in pauses] == ["PlanPaused", "PlanResumed"]
    assert {getattr(e, "by", "") for e in pauses} == {WINDOW_PAUSER}
    assert when(pauses[0]) < opens <= when(pauses[1])
    assert drains and all(when(e) >= opens for e in drains)
    assert [p.status.value for p in log.state.plans.values()] == ["completed"]


async def test_blue_green_does_not_drain_after_the_window_ends(tmp_path: Path) -> None:
    """Adversary: a person who approves a blue-green plan whose estimate runs past the window's
    end. The soak ends outside the window: the plan pauses before its drains and resumes when
    the next window opens."""
    # 300x (its 80 simulated minutes in about 16 s); a Lease of 180 s, 0.6 s real as usual.
    async with rehearsal(tmp_path, fork=False, speed=300.0) as reh:
        reh.lease_s = 180
        now = minute(sim_now(reh))
        closes, reopens = now + timedelta(minutes=15), now + timedelta(minutes=50)
        windows = window(now - timedelta(minutes=1), closes) + window(
            reopens, reopens + timedelta(hours=6)
        )
        reh.configure(
            strategy="blue-green", max_concurrent=2, batch_size=2, soak="25m", extra=windows
        )
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        # Its estimate runs past the window's end: a person approves it all the same.
        waiting = await daemon.plan("awaiting_approval")
        code, body = await daemon.call("POST", f"/v1/plans/{waiting['plan_id']}/approve")
        assert code == 200, body
        seen = await paused_then_done(daemon, timeout_s=60)
        assert await daemon.stop() == 0
        await verdict_ok(reh)
        log = await read_log(reh.db_path)

    pauses, rollbacks, _ = pauses_and_effects(log)
    assert seen["node_groups"]["general"]["waiting"]["reason"] == "window", seen
    drains = [e for _, e in log.order if isinstance(e, ev.DrainStarted)]
    assert rollbacks == [], rollbacks
    assert [type(e).__name__ for e in pauses] == ["PlanPaused", "PlanResumed"]
    assert drains and all(when(e) >= reopens for e in drains)
    assert [p.status.value for p in log.state.plans.values()] == ["completed"]
