"""Running `vpsie-rebalancer` as a person's shell would: a real subprocess, with stdout going
to a pipe whose reader has already gone (`| head` after it exited), to no terminal, or to a
pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    stdout: str
    stderr: str


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPSIE_REBALANCER")}
    env.pop("NO_COLOR", None)
    env.pop("PYTHONUNBUFFERED", None)  # as in a plain shell: stdout to a pipe is buffered
    env.update(extra)
    return env


async def run_cli(
    *argv: str,
    stdout: str = "pipe",
    env: dict[str, str] | None = None,
    timeout_s: float = 120,
) -> Ran:
    """Run the command line; `stdout` is "pipe" (read), "closed-pipe" (the reader has gone)."""
    read_fd, write_fd = os.pipe()
    if stdout == "closed-pipe":
        os.close(read_fd)
        out_target: int = write_fd
    else:
        out_target = asyncio.subprocess.PIPE
        os.close(read_fd)
        os.close(write_fd)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=out_target,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO),
        env=env if env is not None else environment(),
        start_new_session=True,  # no controlling terminal, as under cron or systemd
    )
    if stdout == "closed-pipe":
        os.close(write_fd)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise AssertionError(f"{' '.join(argv)}: no exit within {timeout_s} s") from None
    assert proc.returncode is not None
    return Ran(proc.returncode, (out or b"").decode(), err.decode())
