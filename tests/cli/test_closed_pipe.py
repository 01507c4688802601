"""Every command survives a closed pipe (`vpsie-rebalancer ... | head` after head exited):
exit 141, nothing on stderr, no traceback; and the daemon's own work does not stop with its
output (`run --progress` finishes its plan).

The adversary is the shell's reader: it goes away before the command has written a byte.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cli.main import EXIT_CLOSED_PIPE, _command_modules
from daemon.control import ControlServer, Readiness, Role
from daemon.service.recovery import Quarantined, Quarantines, record_quarantines
from eventstore import EventStore
from tests.audit.test_audit_cli import build
from tests.cli.support import TRACEBACK, Ran, run_cli
from tests.control.conftest import FakeTarget
from tests.crash.invariants import read_log
from tests.crash.rehearsal import REPO, rehearsal
from tests.pgserver import drop_schema, fresh_schema, postgres_server

__all__ = ["postgres_server"]

DEMO_SCENARIO = REPO / "simulator" / "scenarios" / "demo.yaml"
COVERED = {
    "approve", "reject", "pause", "resume", "cancel", "status",
    "audit", "verify-log", "plan", "run", "simulate", "demo", "migrate-log", "clear-quarantine",
}


def quiet_closed_pipe(ran: Ran) -> None:
    assert ran.code == EXIT_CLOSED_PIPE, ran
    assert TRACEBACK not in ran.stderr and ran.stderr == "", ran.stderr


def test_every_command_is_covered_here() -> None:
    assert set(_command_modules()) == COVERED


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[tuple[str, Path, FakeTarget]]:
    token = tmp_path / "token"
    token.write_text("closed-pipe-control-token-1234\n")
    token.chmod(0o600)
    target = FakeTarget(
        plans={
            "p-approve": "awaiting_approval",
            "p-reject": "awaiting_approval",
            "p-pause": "executing",
            "p-resume": "paused",
            "p-cancel": "executing",
        }
    )
    readiness = Readiness()
    readiness.set_role(Role.LEADER)
    readiness.mark_recovered()
    server = ControlServer(target, listen="127.0.0.1:0", readiness=readiness, token_file=token)
    address = await server.start()
    try:
        yield str(address), token, target
    finally:
        await server.stop()


async def test_control_commands(control: tuple[str, Path, FakeTarget]) -> None:
    address, token, target = control
    quiet_closed_pipe(await run_cli("status", "--control", address, stdout="closed-pipe"))
    quiet_closed_pipe(
        await run_cli("status", "--control", address, "--json", stdout="closed-pipe")
    )
    for action in ("approve", "reject", "pause", "resume", "cancel"):
        ran = await run_cli(
            action, f"p-{action}", "--control", address, "--token-file", str(token),
            stdout="closed-pipe",
        )
        quiet_closed_pipe(ran)
    # Each action was done although its confirmation could not be printed.
    assert [c[0] for c in target.calls] == ["approve", "reject", "pause", "resume", "cancel"]


async def test_audit_and_verify_log(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    await build(db, ("completed_rolling", "rolled_back"))
    for argv in (
        ("audit", "--db", str(db)),
        ("audit", "--db", str(db), "--json"),
        ("audit", "--db", str(db), "--plan", "golden-rolling"),
        ("audit", "--db", str(db), "--plan", "golden-rolling", "--json"),
        ("verify-log", "--db", str(db)),
    ):
        quiet_closed_pipe(await run_cli(*argv, stdout="closed-pipe"))


async def test_migrate_log(tmp_path: Path, postgres_server: str) -> None:
    db = tmp_path / "events.db"
    await build(db, ("completed_rolling",))
    dsn = await fresh_schema(postgres_server)
    try:
        ran = await run_cli("migrate-log", "--from", str(db), "--to", dsn, stdout="closed-pipe")
        copy = await EventStore.open(dsn, create=False)
        try:
            copied = await copy.head()
        finally:
            await copy.close()
    finally:
        await drop_schema(postgres_server, dsn)
    # Its progress goes to stderr (the one place it may write): the closed stdout is quiet.
    assert ran.code == EXIT_CLOSED_PIPE, ran
    assert TRACEBACK not in ran.stderr and "copied" in ran.stderr, ran.stderr
    assert copied > 0, "the closed pipe stopped the copy"


async def test_clear_quarantine(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        store = await EventStore.open(reh.db_path)
        try:
            await record_quarantines(
                store,
                (Quarantined(plan_id="p-odd", seq=1, stream="plan-p-odd", type="PlanApproved",
                             problem="an illegal transition", node_group="general"),),
                term=None,
            )
        finally:
            await store.close()
        ran = await run_cli("clear-quarantine", "--config", str(reh.config_path), "p-odd",
                            "--by", "alice", stdout="closed-pipe")
        store = await EventStore.open(reh.db_path)
        try:
            cleared = (await Quarantines.read(store)).cleared
        finally:
            await store.close()
    quiet_closed_pipe(ran)
    assert cleared == {"p-odd"}, "the closed pipe stopped the clearing"


async def test_plan_and_run_against_the_simulator(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        config = str(reh.config_path)
        quiet_closed_pipe(
            await run_cli("plan", "--config", config, "--no-record", stdout="closed-pipe")
        )
        quiet_closed_pipe(
            await run_cli("plan", "--config", config, "--json", "--no-record",
                          stdout="closed-pipe")
        )
        ran = await run_cli(*reh.daemon_argv("--progress"), stdout="closed-pipe", timeout_s=90)
        log = await read_log(reh.db_path)
    # `run` logs JSON lines on stderr: no traceback there, and the plan ran to its end.
    assert ran.code == EXIT_CLOSED_PIPE, ran
    assert TRACEBACK not in ran.stderr and '"exc"' not in ran.stderr, ran.stderr
    assert [p.status.value for p in log.state.plans.values()] == ["completed"]


async def test_simulate(tmp_path: Path) -> None:
    ran = await run_cli(
        "simulate", "--scenario", str(DEMO_SCENARIO), "--state-dir", str(tmp_path / "sim"),
        stdout="closed-pipe", timeout_s=60,
    )
    quiet_closed_pipe(ran)


async def test_demo(tmp_path: Path) -> None:
    ran = await run_cli(
        "demo", "--speed", "200", "--state-dir", str(tmp_path / "demo"),
        stdout="closed-pipe", timeout_s=120,
    )
    quiet_closed_pipe(ran)
    # Its lines are buffered, so the pipe shows closed at the first flush: a progress line,
    # while the daemon works. The printing stops there, the rebalance does not.
    logs = list((tmp_path / "demo").glob("events-*.db"))
    assert len(logs) == 1
    plans = (await read_log(logs[0])).state.plans.values()
    assert [p.status.value for p in plans] == ["completed"], "the demo stopped with its output"


async def test_a_closed_pipe_is_not_mistaken_for_an_error_of_the_command(tmp_path: Path) -> None:
    """The same audit with a reader: exit 0 and the whole report (the 141 above is the pipe)."""
    db = tmp_path / "events.db"
    await build(db, ("completed_rolling",))
    ran = await run_cli("audit", "--db", str(db))
    assert ran.code == 0 and "golden-rolling" in ran.stdout, ran
