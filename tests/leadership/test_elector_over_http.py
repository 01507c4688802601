"""Two electors against one simulated Kubernetes API, each through its own TCP path.

Each daemon reaches the simulator through a small TCP proxy the test controls, so "cut the
leader's API access" is a real network failure (connections refused, or a black hole that
accepts and never answers), seen through the real adapter (adapters.kubernetes.KubeClient).
Time for the electors is a ScaledClock 100x faster than real time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from adapters.kubernetes.client import KubeClient
from daemon.clock import ScaledClock
from daemon.service.leadership import LeaderElector
from simulator.serve import start_simulator

SCENARIO = Path(__file__).parents[2] / "simulator" / "scenarios" / "small.yaml"
NS, NAME = "kube-system", "vpsie-rebalancer"


class Proxy:
    """127.0.0.1:port -> upstream. `refuse()`, `black_hole()`, `restore()`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.dropping = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._abort_all()

    def black_hole(self) -> None:
        self.dropping = True

    async def restore(self) -> None:
        self.dropping = False
        self._abort_all()  # connections that lost bytes are unusable
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.refuse()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _abort_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.read(65536):
                if self.dropping:
                    continue
                dst.write(data)
                await dst.drain()


@dataclass
class Daemon:
    name: str
    proxy: Proxy
    client: KubeClient
    elector: LeaderElector
    changes: list[tuple[float, bool]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[tuple[ScaledClock, Daemon, Daemon]]:
    clock = ScaledClock(100.0)
    async with start_simulator(SCENARIO, state_dir=tmp_path / "sim") as sim:
        url = urlsplit(sim.kube_url)
        kubeconfig = yaml.safe_load(sim.kubeconfig_path.read_text())
        made: list[Daemon] = []
        async with contextlib.AsyncExitStack() as stack:
            for name in ("a", "b"):
                proxy = Proxy((url.hostname or "127.0.0.1", url.port or 80))
                port = await proxy.start()
                stack.push_async_callback(proxy.close)
                kubeconfig["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
                path = tmp_path / f"kubeconfig-{name}"
                path.write_text(yaml.safe_dump(kubeconfig))
                client = await stack.enter_async_context(
                    KubeClient.from_kubeconfig(str(path), request_timeout_s=5.0)
                )
                changes: list[tuple[float, bool]] = []

                def record(leader: bool, changes: list[tuple[float, bool]] = changes) -> None:
                    changes.append((clock.monotonic(), leader))

                elector = LeaderElector(
                    client, clock, namespace=NS, name=NAME, identity=name, on_change=record
                )
                made.append(Daemon(name, proxy, client, elector, changes))
            try:
                yield clock, made[0], made[1]
            finally:
                for d in made:
                    if d.task is not None:
                        d.task.cancel()
                await asyncio.gather(*(d.task for d in made if d.task), return_exceptions=True)


def _overlaps(a: list[tuple[float, bool]], b: list[tuple[float, bool]], end: float) -> bool:
    def spans(changes: list[tuple[float, bool]]) -> list[tuple[float, float]]:
        out, start = [], None
        for t, leader in changes:
            if leader:
                start = t
            elif start is not None:
                out.append((start, t))
                start = None
        return out + ([(start, end)] if start is not None else [])

    return any(x0 < y1 and y0 < x1 for x0, x1 in spans(a) for y0, y1 in spans(b))


async def test_only_one_leads_over_http(daemons: tuple[ScaledClock, Daemon, Daemon]) -> None:
    clock, a, b = daemons
    a.task = asyncio.create_task(a.elector.run())
    await asyncio.wait_for(a.elector.leading.wait(), 2)
    b.task = asyncio.create_task(b.elector.run())
    await clock.sleep(40)
    assert a.elector.is_leader() and not b.elector.is_leader()
    assert b.changes == []
    lease = await b.client.get_lease(NS, NAME)
    assert lease is not None
    assert (lease.holder, lease.duration_s, lease.transitions) == ("a", 15, 0)


@pytest.mark.parametrize("cut", ["refuse", "black_hole"])
async def test_cut_leader_loses_and_the_other_takes_over(
    daemons: tuple[ScaledClock, Daemon, Daemon], cut: str
) -> None:
    clock, a, b = daemons
    a.task = asyncio.create_task(a.elector.run())
    await asyncio.wait_for(a.elector.leading.wait(), 2)
    b.task = asyncio.create_task(b.elector.run())
    await clock.sleep(7)
    if cut == "refuse":
        await a.proxy.refuse()
    else:
        a.proxy.black_hole()
    cut_at = clock.monotonic()
    await asyncio.wait_for(a.elector.lost.wait(), 3)
    assert clock.monotonic() - cut_at <= 15, "must stop acting within the lease duration"
    assert not a.elector.is_leader()
    await asyncio.wait_for(b.elector.leading.wait(), 3)
    took_over_at = clock.monotonic()
    assert took_over_at - cut_at >= 15 - 5, "B waits for the lease to expire"
    assert not _overlaps(a.changes, b.changes, clock.monotonic())
    lease = await b.client.get_lease(NS, NAME)
    assert lease is not None and (lease.holder, lease.transitions) == ("b", 1)
    await a.proxy.restore()
    await clock.sleep(20)
    assert b.elector.is_leader() and not a.elector.is_leader()
