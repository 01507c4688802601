"""A long-running `vpsie-rebalancer run` for the service tests, and what it tells the world.

`DaemonProcess` starts the daemon as a subprocess on a rehearsal's timeline (not `--once`),
speaks to its control API over the Unix socket the configuration names, and listens as systemd
would on a notify socket of its own (`NOTIFY_SOCKET`), collecting READY=1, STATUS=, RELOADING=1
and STOPPING=1 messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import orjson

from tests.crash.rehearsal import REPO, Rehearsal

TOKEN = "rehearsal-control-token-7f3a9"


class Notifications:
    """An AF_UNIX datagram socket playing systemd's part."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="vr-notify-")
        self.path = os.path.join(self._dir, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                raw = self._sock.recv(65536)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def seen(self, key: str, value: str = "1") -> bool:
        return any(m.get(key) == value for m in self.drain())

    def close(self) -> None:
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class DaemonProcess:
    # Every daemon a test started and did not stop; tests/service/conftest.py kills them when a
    # test ends early, so a failure never leaves a daemon running.
    live: ClassVar[set[DaemonProcess]] = set()

    def __init__(
        self,
        reh: Rehearsal,
        *,
        identity: str,
        config: Path | None = None,
        socket_path: Path | None = None,
    ) -> None:
        self.reh = reh
        self.identity = identity
        self.config = config or reh.config_path
        self.socket_path = socket_path or reh.socket
        self.notify = Notifications()
        self.log_path = reh.dir / f"service-{identity}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *, env: dict[str, str] | None = None) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("VPSIE_REBALANCER")}
        environ["NOTIFY_SOCKET"] = self.notify.path
        environ.update(env or {})
        argv = self.reh.daemon_argv()
        argv = [a for a in argv if a != "--once"]
        argv[argv.index("--config") + 1] = str(self.config)
        argv[argv.index("--identity") + 1] = self.identity
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cli.main",
                *argv,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                env=environ,
                cwd=str(REPO),
            )
        DaemonProcess.live.add(self)

    def kill(self) -> None:
        """SIGKILL, if still running (teardown after a failed test)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        DaemonProcess.live.discard(self)
        self.notify.close()

    def log(self) -> str:
        return self.log_path.read_text()

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = TOKEN,
    ) -> tuple[int, Any]:
        assert self.socket_path is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=10)
            ) as session,
            session.request(
                method,
                f"http://daemon{path}",
                headers=headers,
                data=orjson.dumps(body) if body is not None else None,
            ) as resp,
        ):
            raw = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, orjson.loads(raw) if "json" in ctype else raw.decode()

    async def status(self) -> dict[str, Any]:
        code, body = await self.call("GET", "/v1/status")
        assert code == 200, body
        assert isinstance(body, dict)
        return body

    async def until(
        self, what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 30
    ) -> None:
        """Poll `check` until true; fail naming `what` and pointing at the daemon's log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.notify.drain()
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"the daemon exited ({self.proc.returncode}) before {what}")
            with contextlib.suppress(aiohttp.ClientError, OSError, AssertionError):
                if await check():
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; log: {self.log_path}")

    async def plan(self, state: str) -> dict[str, Any]:
        """Wait for a plan in `state` in /v1/status and return it."""
        found: dict[str, Any] = {}

        async def check() -> bool:
            for plan in (await self.status())["plans"]:
                if plan["state"] == state:
                    found.update(plan)
                    return True
            return False

        await self.until(f"a plan {state}", check)
        return found

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(
                f"no exit {timeout_s} s after SIGTERM; log: {self.log_path}"
            ) from None
        finally:
            self.notify.drain()
            self.notify.close()
            DaemonProcess.live.discard(self)
