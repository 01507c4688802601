"""The command line and the terminal: Ctrl-C, no terminal at all, stdout closed, colour only
on a terminal and never with NO_COLOR. Real subprocesses; the adversary is the person at the
keyboard (Ctrl-C while the command waits) or the job runner (no terminal, no stdout)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cli.main import EXIT_INTERRUPTED
from daemon.control import ControlServer, Readiness, Role
from tests.audit.test_audit_cli import build
from tests.cli.support import REPO, TRACEBACK, environment, run_cli
from tests.control.conftest import FakeTarget

ESC = "\x1b["


@pytest.fixture
async def control() -> AsyncIterator[str]:
    target = FakeTarget(plans={"p-wait": "awaiting_approval", "p-run": "executing"})
    readiness = Readiness()
    readiness.set_role(Role.LEADER)
    readiness.mark_recovered()
    server = ControlServer(target, listen="127.0.0.1:0", readiness=readiness)
    address = await server.start()
    try:
        yield str(address)
    finally:
        await server.stop()


async def test_ctrl_c_while_waiting_for_the_daemon_exits_130_without_a_traceback() -> None:
    # A "daemon" that accepts the connection and never answers: status waits for it.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    silent.setblocking(False)
    port = silent.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "status", "--control", f"127.0.0.1:{port}",
        "--timeout", "300",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=str(REPO), env=environment(),
    )
    loop = asyncio.get_running_loop()
    conn, _ = await asyncio.wait_for(loop.sock_accept(silent), 60)
    request = await asyncio.wait_for(loop.sock_recv(conn, 4096), 60)  # it is waiting now
    assert request.startswith(b"GET /v1/status")
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    conn.close()
    silent.close()
    assert proc.returncode == EXIT_INTERRUPTED
    assert err.decode() == "vpsie-rebalancer: interrupted\n" and TRACEBACK not in err.decode()
    assert out == b""


async def test_ctrl_c_stops_the_read_only_page_server_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    await build(db, ("completed_rolling",))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "audit", "--db", str(db), "--serve",
        "--listen", "127.0.0.1:0",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=str(REPO), env=environment(),
    )
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert b"(read-only): http://127.0.0.1:" in first
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert TRACEBACK not in err.decode()


async def test_no_terminal_and_stdout_closed(tmp_path: Path) -> None:
    """Started as `cmd >&-` without a terminal (cron, a unit): the work is done, no error."""
    db = tmp_path / "events.db"
    await build(db, ("completed_rolling",))
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "cli.main",
        "verify-log", "--db", str(db),
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=str(REPO),
        env=environment(), start_new_session=True,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert err == b""


async def _on_a_terminal(*argv: str, env: dict[str, str]) -> str:
    """Run with stdout on a pseudo-terminal; what it wrote there."""
    master, slave = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", *argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=slave, stderr=asyncio.subprocess.PIPE,
            cwd=str(REPO), env=env,
        )
        os.close(slave)
        slave = -1
        chunks: list[bytes] = []
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await loop.run_in_executor(None, os.read, master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        await asyncio.wait_for(proc.wait(), 60)
        assert proc.returncode == 0
        return b"".join(chunks).decode()
    finally:
        os.close(master)
        if slave != -1:
            with contextlib.suppress(OSError):
                os.close(slave)


async def test_colour_on_a_terminal_only_and_never_with_no_color(control: str) -> None:
    coloured = await _on_a_terminal("status", "--control", control, env=environment())
    assert ESC in coloured and "awaiting_approval" in coloured
    plain = await _on_a_terminal(
        "status", "--control", control, env=environment(NO_COLOR="1")
    )
    assert ESC not in plain and "awaiting_approval" in plain
    piped = await run_cli("status", "--control", control)
    assert piped.code == 0 and ESC not in piped.stdout and "awaiting_approval" in piped.stdout
    as_json = await _on_a_terminal("status", "--control", control, "--json", env=environment())
    assert ESC not in as_json
