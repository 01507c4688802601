"""Leader election rules, against an in-test Lease store with resourceVersion semantics.

The store is a fake of the Cluster port's lease methods (the simulated Kubernetes API is used in
test_elector_over_http.py); time is a ScaledClock running 100x faster than real time.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from adapters.errors import Conflict, TemporaryError
from daemon.clock import ScaledClock
from daemon.service.leadership import LeaderElector
from statemachine.world import LeaseInfo

NS, NAME = "kube-system", "vpsie-rebalancer"


class FakeLeases:
    """One Lease, optimistic concurrency on resource_version."""

    def __init__(self) -> None:
        self.lease: LeaseInfo | None = None
        self.version = 0
        self.writes: list[LeaseInfo] = []

    async def get_lease(self, namespace: str, name: str) -> LeaseInfo | None:
        await asyncio.sleep(0)
        return self.lease

    async def create_lease(self, lease: LeaseInfo) -> LeaseInfo:
        await asyncio.sleep(0)
        if self.lease is not None:
            raise Conflict("exists", service="kubernetes", status=409)
        return self._store(lease)

    async def update_lease(self, lease: LeaseInfo) -> LeaseInfo:
        await asyncio.sleep(0)
        if self.lease is None or lease.resource_version != self.lease.resource_version:
            raise Conflict("modified", service="kubernetes", status=409)
        return self._store(lease)

    def _store(self, lease: LeaseInfo) -> LeaseInfo:
        self.version += 1
        self.lease = dataclasses.replace(lease, resource_version=str(self.version))
        self.writes.append(self.lease)
        return self.lease


class Cuttable:
    """A daemon's own path to the store, which a test can cut (errors) or black-hole (hangs)."""

    def __init__(self, inner: FakeLeases) -> None:
        self.inner = inner
        self.mode = "ok"

    async def _gate(self) -> None:
        if self.mode == "error":
            raise TemporaryError("connection refused", service="kubernetes")
        if self.mode == "hang":
            await asyncio.Event().wait()

    async def get_lease(self, namespace: str, name: str) -> LeaseInfo | None:
        await self._gate()
        return await self.inner.get_lease(namespace, name)

    async def create_lease(self, lease: LeaseInfo) -> LeaseInfo:
        await self._gate()
        return await self.inner.create_lease(lease)

    async def update_lease(self, lease: LeaseInfo) -> LeaseInfo:
        await self._gate()
        return await self.inner.update_lease(lease)


@dataclasses.dataclass
class Daemon:
    elector: LeaderElector
    path: Cuttable
    changes: list[tuple[float, bool]]
    task: asyncio.Task[None] | None = None


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock(100.0)


@pytest.fixture
async def world(clock: ScaledClock) -> AsyncIterator[tuple[FakeLeases, list[Daemon]]]:
    store = FakeLeases()
    daemons: list[Daemon] = []
    for ident in ("a", "b"):
        changes: list[tuple[float, bool]] = []
        path = Cuttable(store)

        def record(leader: bool, changes: list[tuple[float, bool]] = changes) -> None:
            changes.append((clock.monotonic(), leader))

        elector = LeaderElector(
            path, clock, namespace=NS, name=NAME, identity=ident, on_change=record
        )
        daemons.append(Daemon(elector, path, changes))
    yield store, daemons
    for d in daemons:
        if d.task is not None:
            d.task.cancel()
    await asyncio.gather(*(d.task for d in daemons if d.task), return_exceptions=True)


def _intervals(changes: list[tuple[float, bool]], end: float) -> list[tuple[float, float]]:
    out, start = [], None
    for t, leader in changes:
        if leader:
            start = t
        elif start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, end))
    return out


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    return any(x0 < y1 and y0 < x1 for x0, x1 in a for y0, y1 in b)


async def test_only_one_leads(clock: ScaledClock, world: tuple[FakeLeases, list[Daemon]]) -> None:
    store, (a, b) = world
    a.task = asyncio.create_task(a.elector.run())
    await asyncio.wait_for(a.elector.leading.wait(), 1)
    b.task = asyncio.create_task(b.elector.run())
    await clock.sleep(45)  # three lease durations
    assert a.elector.is_leader() and not b.elector.is_leader()
    assert b.changes == []
    assert store.lease is not None and store.lease.holder == "a"
    assert store.lease.transitions == 0
    renewals = [w for w in store.writes if w.holder == "a"]
    assert len(renewals) >= 8  # about every 5 s


@pytest.mark.parametrize("cut", ["error", "hang"])
async def test_cut_leader_steps_down_before_the_other_takes_over(
    clock: ScaledClock, world: tuple[FakeLeases, list[Daemon]], cut: str
) -> None:
    store, (a, b) = world
    a.task = asyncio.create_task(a.elector.run())
    await asyncio.wait_for(a.elector.leading.wait(), 1)
    b.task = asyncio.create_task(b.elector.run())
    await clock.sleep(10)
    a.path.mode = cut
    cut_at = clock.monotonic()
    await asyncio.wait_for(a.elector.lost.wait(), 2)
    lost_at = clock.monotonic()
    assert not a.elector.is_leader()
    assert lost_at - cut_at <= 15, "the leader must stop acting within the lease duration"
    await asyncio.wait_for(b.elector.leading.wait(), 2)
    assert store.lease is not None and store.lease.holder == "b"
    assert store.lease.transitions == 1
    end = clock.monotonic()
    assert not _overlap(_intervals(a.changes, end), _intervals(b.changes, end))
    # A, reconnected, stays a standby.
    a.path.mode = "ok"
    await clock.sleep(20)
    assert b.elector.is_leader() and not a.elector.is_leader()


async def test_brief_outage_is_ridden_out(
    clock: ScaledClock, world: tuple[FakeLeases, list[Daemon]]
) -> None:
    _, (a, _b) = world
    a.task = asyncio.create_task(a.elector.run())
    await asyncio.wait_for(a.elector.leading.wait(), 1)
    a.path.mode = "error"
    await clock.sleep(3)  # well under the 10 s renew deadline
    a.path.mode = "ok"
    await clock.sleep(15)
    assert a.elector.is_leader()
    assert a.changes == [(a.changes[0][0], True)]


async def test_release_hands_over_without_waiting(
    clock: ScaledClock, world: tuple[FakeLeases, list[Daemon]]
) -> None:
    _store, (a, b) = world
    a.task = asyncio.create_task(a.elector.run())
    await asyncio.wait_for(a.elector.leading.wait(), 1)
    b.task = asyncio.create_task(b.elector.run())
    await clock.sleep(1)
    a.task.cancel()
    await asyncio.gather(a.task, return_exceptions=True)
    await a.elector.release()
    released_at = clock.monotonic()
    assert a.elector.lost.is_set()
    await asyncio.wait_for(b.elector.leading.wait(), 2)
    assert clock.monotonic() - released_at < 15 / 2, "B should not wait out a lease duration"


async def test_someone_else_taking_the_lease_is_noticed_at_the_next_renewal(
    clock: ScaledClock, world: tuple[FakeLeases, list[Daemon]]
) -> None:
    store, (a, _b) = world
    a.task = asyncio.create_task(a.elector.run())
    await asyncio.wait_for(a.elector.leading.wait(), 1)
    assert store.lease is not None
    await store.update_lease(dataclasses.replace(store.lease, holder="intruder"))
    taken_at = clock.monotonic()
    await asyncio.wait_for(a.elector.lost.wait(), 2)
    assert clock.monotonic() - taken_at <= 15
    assert not a.elector.is_leader()


def test_bad_timings_are_refused() -> None:
    with pytest.raises(ValueError, match="renew interval < renew deadline < lease duration"):
        LeaderElector(
            FakeLeases(),
            ScaledClock(1.0),
            namespace=NS,
            name=NAME,
            lease_duration_s=15,
            renew_deadline_s=20,
        )
