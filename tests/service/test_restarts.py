"""What a daemon keeps doing across its own restarts and stops: the same decision is recorded
once however often it restarts; SIGTERM at any moment of `run --once` ends it cleanly; a plan
whose runner ended while it was still executing is picked up again. Real daemons against the
simulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from statemachine import events as ev
from tests.crash.invariants import read_log
from tests.crash.rehearsal import REPO, rehearsal
from tests.service.daemon_process import DaemonProcess
from tests.service.test_service import verdict_ok


@pytest.mark.parametrize("ending", ["clean", "killed"])
async def test_a_postponed_decision_is_recorded_once_across_restarts(
    tmp_path: Path, ending: str
) -> None:
    """Adversary: a crash loop (the daemon restarted again and again, nothing else moves):
    each run ends cleanly, or is SIGKILLed right after its decision (proposed, then rejected
    by the planner) is durable."""
    async with rehearsal(tmp_path) as reh:
        opens = datetime.fromtimestamp(reh.sim.clock.now(), tz=UTC) + timedelta(hours=6)
        closes = opens + timedelta(minutes=30)
        reh.configure(
            extra=(
                "[[node_groups.maintenanceWindows]]\n"
                f'start = "{opens:%H:%M}"\nend = "{closes:%H:%M}"\n'
            )
        )
        crash_at = "2" if ending == "killed" else None  # the second event: PlanRejected
        runs = [await reh.run_daemon(crash_at=crash_at) for _ in range(3)]
        runs.append(await reh.run_daemon())
        log = await read_log(reh.db_path)

    first = [r.returncode for r in runs[:1]]
    assert first == ([-signal.SIGKILL] if ending == "killed" else [0])
    assert [r.returncode for r in runs[1:]] == [0, 0, 0]  # no decision again: nothing to kill
    proposed = [e for _, e in log.order if isinstance(e, ev.PlanProposed)]
    assert len(proposed) == 1, [p.plan.action_reasons for p in proposed]
    assert proposed[0].plan.recommended_action.value == "postpone"


async def test_sigterm_at_any_moment_of_run_once_exits_0_with_the_report(tmp_path: Path) -> None:
    """Adversary: an impatient supervisor sending SIGTERM over and over until the process ends,
    from its first log line to its last instant (start-up, the plan, the report)."""
    async with rehearsal(tmp_path) as reh:
        reh.configure(strategy="rolling", max_concurrent=2, batch_size=2)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("VPSIE_REBALANCER")}
        environ.pop("NOTIFY_SOCKET", None)
        err = tmp_path / "sigterm.log"
        with err.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cli.main",
                *reh.daemon_argv(),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=environ,
                cwd=str(REPO),
            )
            out = asyncio.ensure_future(proc.communicate())
            for _ in range(10_000):  # until its first log line (the handlers are in place)
                if proc.returncode is not None or err.read_bytes():
                    break
                await asyncio.sleep(0.002)
            sent = 0
            while not out.done():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                    sent += 1
                await asyncio.sleep(0.003)
            stdout, _ = await out
        await verdict_ok(reh)

    assert sent > 1
    assert proc.returncode == 0, err.read_text()[-2000:]
    assert stdout.decode().strip().splitlines()[-1].startswith('{"plans":')
    assert "Traceback" not in err.read_text()


async def test_a_pause_and_resume_that_cross_leave_no_plan_without_a_runner(
    tmp_path: Path,
) -> None:
    """Adversary: an operator who pauses and at once resumes, again and again, while the runner
    is between two steps (the runner sees the pause and ends after the resume was recorded)."""
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(strategy="rolling", max_concurrent=1, batch_size=1)
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        plan = await daemon.plan("executing")
        path = f"/v1/plans/{plan['plan_id']}"
        for _ in range(8):
            await daemon.call("POST", f"{path}/pause", {"reason": "look"})
            await daemon.call("POST", f"{path}/resume")
            await reh.sim.clock.sleep(5)

        async def done() -> bool:
            return not (await daemon.status())["plans"]

        await daemon.until("the plan to finish", done, timeout_s=90)
        _, metrics = await daemon.call("GET", "/metrics")
        assert await daemon.stop() == 0
        await verdict_ok(reh)
        log = await read_log(reh.db_path)

    assert log.state.plans[plan["plan_id"]].status.value == "completed"
    assert "vpsie_rebalancing_plans_without_runner 0.0" in metrics
