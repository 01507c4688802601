"""One daemon at a time: leader election on a coordination.k8s.io/v1 Lease.

Two daemons acting on one cluster would each add workers and drain nodes the other is also
handling, so the executor acts only while `is_leader()`; a second daemon (a standby on another
host) waits. The algorithm is client-go's:

- every attempt reads the Lease; it is *free* when absent, released (no holder), ours, or when
  its record (holder, renewTime, resourceVersion) has not changed for `leaseDurationSeconds`
  as measured on *our* monotonic clock since we first saw it that way. Clocks of two hosts are
  never compared.
- a free Lease is taken by an update at the resourceVersion we read (create when absent); a 409
  Conflict means someone else was quicker.
- the leader renews every `renew_interval_s` (duration/3). When renewals fail it keeps trying
  until `renew_deadline_s` (2/3 of the duration) after the start of its last successful
  renewal; then it steps down, before any other daemon can consider the Lease expired. Seeing
  another holder, or a Conflict, steps down at once.

Stepping down sets `lost` (an `asyncio.Event` the executor watches) and calls `on_change(False)`;
the elector then keeps running as a candidate. Taking the lead clears `lost`, sets `leading`
and calls `on_change(True)`. `release()` on a clean shutdown empties the holder so that the
standby takes over at its next attempt instead of after a full lease duration.

Acting needs more than leading: `may_act()` is true only while the last renewal is younger
than the renew deadline minus a safety margin (`act_margin_s`, by default half the gap between
the renew interval and the deadline), so that an effect sent now reaches the world before any
other daemon can take the Lease. `ensure_may_act()` is what the service asks right before each
side effect: it returns at once while that holds, waits for the next renewal when the margin
is eaten (a slow renewal, a process that was stopped), and raises `NotLeading` as soon as the
elector steps down. `step_down(why)` is for the daemon itself: the event log refused an append
of its term, so another daemon leads whatever the Lease said at the last renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from adapters.errors import AdapterError, Conflict
from daemon.ports import Clock
from statemachine.world import LeaseInfo

log = logging.getLogger(__name__)


class NotLeading(Exception):
    """This daemon does not lead (any more): whatever was about to act must not."""


class LeaseStore(Protocol):
    """The lease half of the Cluster port."""

    async def get_lease(self, namespace: str, name: str) -> LeaseInfo | None: ...

    async def create_lease(self, lease: LeaseInfo) -> LeaseInfo: ...

    async def update_lease(self, lease: LeaseInfo) -> LeaseInfo: ...


def rfc3339_micro(unix_seconds: float) -> str:
    """MicroTime, the format of a Lease's acquireTime and renewTime."""
    return datetime.fromtimestamp(unix_seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """hostname_pid_random: unique per process, readable in `kubectl get lease`."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    """Campaigns for, holds and renews one Lease; see the module docstring for the rules."""

    def __init__(
        self,
        store: LeaseStore,
        clock: Clock,
        *,
        namespace: str,
        name: str,
        identity: str | None = None,
        lease_duration_s: int = 15,
        renew_interval_s: float | None = None,
        renew_deadline_s: float | None = None,
        retry_interval_s: float | None = None,
        on_change: Callable[[bool], None] | None = None,
        act_margin_s: float | None = None,
    ) -> None:
        if lease_duration_s < 1:
            raise ValueError(f"lease duration must be at least 1 s, got {lease_duration_s}")
        self._store = store
        self._clock = clock
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration_s = lease_duration_s
        self.renew_interval_s = renew_interval_s or lease_duration_s / 3
        self.renew_deadline_s = renew_deadline_s or lease_duration_s * 2 / 3
        self.retry_interval_s = retry_interval_s or lease_duration_s / 5
        if not self.renew_interval_s < self.renew_deadline_s < lease_duration_s:
            raise ValueError(
                "leader election needs renew interval < renew deadline < lease duration, got "
                f"{self.renew_interval_s} / {self.renew_deadline_s} / {lease_duration_s}"
            )
        if act_margin_s is None:
            act_margin_s = (self.renew_deadline_s - self.renew_interval_s) / 2
        if not 0 <= act_margin_s < self.renew_deadline_s - self.renew_interval_s:
            raise ValueError(
                "the acting margin must be below renew deadline - renew interval, got "
                f"{act_margin_s}"
            )
        self.act_margin_s = act_margin_s
        self._on_change = on_change
        self._renewed = asyncio.Event()  # set (and replaced) at every successful renewal
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self._leader = False
        self._last_renew: float | None = None  # monotonic start of the last good renewal
        self._observed: tuple[str, str, str] | None = None
        self._observed_at = 0.0
        self._lease: LeaseInfo | None = None

    def __repr__(self) -> str:
        return f"LeaderElector({self.namespace}/{self.name} as {self.identity})"

    def is_leader(self) -> bool:
        """True only while the last renewal is younger than the renew deadline."""
        if not self._leader or self._last_renew is None:
            return False
        return self._clock.monotonic() - self._last_renew < self.renew_deadline_s

    def may_act(self) -> bool:
        """Leading, with the safety margin: the last renewal is young enough to act now."""
        if not self._leader or self._last_renew is None:
            return False
        age = self._clock.monotonic() - self._last_renew
        return age < self.renew_deadline_s - self.act_margin_s

    async def ensure_may_act(self) -> None:
        """Return when acting is safe; NotLeading once this daemon does not lead.

        Called right before every side effect. When the margin is eaten but the elector has
        not stepped down yet (a slow renewal, a process that was stopped and continued), it
        waits for the outcome of the next renewal instead of acting on an old one.
        """
        while not self.may_act():
            if not self._leader:
                raise NotLeading("this daemon does not hold the lease")
            waits = [
                asyncio.ensure_future(self._renewed.wait()),
                asyncio.ensure_future(self.lost.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
                await asyncio.gather(*waits, return_exceptions=True)

    def step_down(self, why: str) -> None:
        """Stop leading now (the elector keeps running as a candidate)."""
        if self._leader:
            self._become(False, why)

    async def run(self) -> None:
        """Campaign and renew until cancelled."""
        while True:
            started = self._clock.monotonic()
            outcome = await self._attempt_within_deadline(started)
            if outcome is True:
                self._last_renew = started
                if not self._leader:
                    self._become(True, "acquired the lease")
                self._renewed.set()
                self._renewed = asyncio.Event()
                await self._clock.sleep(self.renew_interval_s)
                continue
            if self._leader:
                if outcome is False:
                    self._become(False, "another daemon holds the lease")
                elif self._clock.monotonic() - (self._last_renew or 0) >= self.renew_deadline_s:
                    self._become(False, f"could not renew the lease: {outcome}")
                else:
                    log.warning("lease renewal failed, retrying: %s", outcome)
            await self._clock.sleep(self.retry_interval_s)

    async def release(self) -> None:
        """Give the lease up (best effort); call on a clean shutdown."""
        lease = self._lease
        was_leader = self.is_leader()
        if self._leader:
            self._become(False, "released the lease")
        if not was_leader or lease is None or lease.holder != self.identity:
            return
        now = rfc3339_micro(self._clock.now())
        released = dataclasses.replace(lease, holder="", renew_time=now, duration_s=1)
        try:
            await self._store.update_lease(released)
        except AdapterError as exc:
            log.warning("could not release the lease (the standby will wait it out): %s", exc)

    def _become(self, leader: bool, why: str) -> None:
        self._leader = leader
        if leader:
            self.lost.clear()
            self.leading.set()
            log.info("leading: %s (%s/%s)", why, self.namespace, self.name)
        else:
            self.leading.clear()
            self.lost.set()
            self._last_renew = None
            log.warning("not leading any more: %s", why)
        if self._on_change is not None:
            self._on_change(leader)

    async def _attempt_within_deadline(self, started: float) -> bool | str:
        """True on success, False when the lease is someone else's, else the error text.

        A leader's attempt is cut off at its renew deadline: a hung API call must not keep it
        believing it leads.
        """
        attempt = asyncio.ensure_future(self._try_acquire_or_renew())
        if not self._leader or self._last_renew is None:
            try:
                return await attempt
            except AdapterError as exc:
                return str(exc)
        left = self._last_renew + self.renew_deadline_s - started
        timer = asyncio.ensure_future(self._clock.sleep(max(0.0, left)))
        try:
            done, _ = await asyncio.wait({attempt, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not attempt.done():
                attempt.cancel()
                with contextlib.suppress(asyncio.CancelledError, AdapterError):
                    await attempt
        if attempt not in done:
            return "the Kubernetes API did not answer before the renew deadline"
        try:
            return attempt.result()
        except AdapterError as exc:
            return str(exc)

    async def _try_acquire_or_renew(self) -> bool:
        now = self._clock.now()
        lease = await self._store.get_lease(self.namespace, self.name)
        if lease is None:
            fresh = LeaseInfo(
                namespace=self.namespace,
                name=self.name,
                holder=self.identity,
                duration_s=self.lease_duration_s,
                acquire_time=rfc3339_micro(now),
                renew_time=rfc3339_micro(now),
                transitions=0,
            )
            try:
                self._lease = await self._store.create_lease(fresh)
            except Conflict:
                return False
            self._observe(self._lease)
            return True
        self._observe(lease)
        mine = lease.holder == self.identity
        if not mine and lease.holder and not self._expired(lease):
            return False
        if mine:
            wanted = dataclasses.replace(
                lease, renew_time=rfc3339_micro(now), duration_s=self.lease_duration_s
            )
        else:
            wanted = dataclasses.replace(
                lease,
                holder=self.identity,
                duration_s=self.lease_duration_s,
                acquire_time=rfc3339_micro(now),
                renew_time=rfc3339_micro(now),
                transitions=lease.transitions + 1,
            )
        try:
            self._lease = await self._store.update_lease(wanted)
        except Conflict:
            return False
        self._observe(self._lease)
        return True

    def _observe(self, lease: LeaseInfo) -> None:
        record = (lease.holder, lease.renew_time, lease.resource_version)
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock.monotonic()

    def _expired(self, lease: LeaseInfo) -> bool:
        return self._clock.monotonic() - self._observed_at >= max(1, lease.duration_s)
