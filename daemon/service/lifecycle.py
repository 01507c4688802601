"""The daemon service: what `vpsie-rebalancer run` is, from start to SIGTERM.

Start: JSON logs, open the event log, `recover()` (the log is the only memory), connect to
VPSie and Kubernetes, start the control API, tell systemd READY=1 (recovery has finished; a
standby daemon is ready too: it waits for the Lease), take the Lease, then for every plan the
log shows in flight load its journal and run it on (`PlanRunner` reconciles pending intents with
the live world first, then resumes or rolls back).

Then, per node group, on the configured interval, an analysis round and a decision
(decisions.py); before each batch a plan's runner asks for the checks again (recheck.py); every
journal reports to metrics and Kubernetes Events (reporter.py); the control API's calls are
answered by control_target.py. So "why does nothing happen?" is answered by the log, by
`audit`, and by Kubernetes Events on the node group.

Signals: SIGTERM/SIGINT ask every runner to finish its current step (recorded), then STOPPING=1
and exit 0. SIGHUP reloads the configuration (RELOADING=1 ... READY=1); an invalid file is
logged and the old configuration kept. Losing the Lease stops every runner the same way,
within the lease duration, and the daemon goes back to waiting for it.

Hooks given from outside (rehearsals): `observers` are subscribed to every journal (console
progress for `--progress` and the demo), `wrap_world` wraps the Cloud and Cluster ports (the
crash suite's injector, tests/crash/injection.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Awaitable
from typing import Any

from adapters.kubernetes import KubeClient
from adapters.vpsie import VpsieClient
from daemon.clock import SystemClock
from daemon.config import ConfigError, load_config
from daemon.control import ControlServer, Role
from daemon.ports import Cloud, Cluster
from daemon.service.control_target import PlanControl, plan_summary
from daemon.service.leadership import LeaderElector
from daemon.service.recovery import RecoveryError, recover, write_snapshot
from daemon.service.reporter import Regarding, Reporter
from daemon.service.state import GroupView, Tracked
from eventstore import EventStore, EventStoreError

log = logging.getLogger(__name__)


SNAPSHOT_EVERY_S = 600.0
LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "vpsie-rebalancer"


class Service(PlanControl):
    """`vpsie-rebalancer run`; also the control API's `ControlTarget`."""

    def request_stop(self) -> None:
        """SIGTERM: finish the current steps, record them, exit."""
        if not self._stopping.is_set():
            log.info("stopping: finishing the current steps")
            self._notifier.stopping()
            self._stopping.set()
            for tracked in self._plans.values():
                if tracked.runner is not None:
                    tracked.runner.request_stop()
            self._wake.set()

    def request_reload(self) -> None:
        """SIGHUP: read the configuration again now (leader or standby)."""
        self._reload()
        self._wake.set()

    async def run(self) -> int:
        """Run until stopped (or, with `once`, until one round per group is done)."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for signum, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.request_reload),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, handler)
                installed.append(signum)
        watchdog = asyncio.create_task(self._notifier.watchdog_loop(SystemClock()))
        try:
            self._notifier.status("opening the event log")
            self._store = await EventStore.open(self.config.database)
            try:
                return await self._with_store(self._store)
            finally:
                await self._store.close()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            for signum in installed:
                loop.remove_signal_handler(signum)

    async def _with_store(self, store: EventStore) -> int:
        self._notifier.status("recovering: folding the event log")
        recovered = await recover(store)
        for q in recovered.quarantined:
            log.error(
                "plan %s is quarantined and will not be touched: %s (seq %d, %s)",
                q.plan_id,
                q.problem,
                q.seq,
                q.type,
                extra={"plan_id": q.plan_id},
            )
        self._remember_groups(recovered)
        log.info(
            "recovered: %d plans in flight, %d events folded after the snapshot",
            len(recovered.in_flight),
            recovered.events_folded,
        )
        async with (
            VpsieClient.from_file(
                self.config.vpsie_credentials, clock=self._clock, rng=self._rng
            ) as vpsie,
            KubeClient.from_kubeconfig(str(self.config.kubeconfig), now=self._clock.now) as kube,
        ):
            cloud: Cloud = vpsie
            cluster: Cluster = kube
            if self._wrap_world is not None:
                cloud, cluster = self._wrap_world(cloud, cluster)
            self._cloud, self._cluster = cloud, cluster
            return await self._connected(cluster, len(recovered.in_flight))

    async def _connected(self, cluster: Cluster, in_flight: int) -> int:
        self._reporter = Reporter(
            cluster, self.metrics, Regarding("Lease", LEASE_NAME, LEASE_NAMESPACE)
        )
        control = ControlServer(
            self,
            listen=str(self.config.listen),
            readiness=self.readiness,
            metrics=self.metrics,
            token_file=self.config.token_file,
        )
        await control.start()
        reporter_task = asyncio.create_task(self._reporter.run())
        self._elector = LeaderElector(
            cluster,
            self._clock,
            namespace=LEASE_NAMESPACE,
            name=LEASE_NAME,
            identity=self._identity,
            lease_duration_s=self._lease_duration_s,
            on_change=self._on_leadership,
        )
        self.readiness.set_role(Role.STANDBY)
        self._notifier.ready(f"recovered ({in_flight} plans in flight); waiting for the lease")
        elector_task = asyncio.create_task(self._elector.run())
        try:
            await self._campaign(self._elector)
        finally:
            self.readiness.set_role(Role.STOPPING)
            await self._stop_runners()
            elector_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await elector_task
            await self._elector.release()
            await self._write_snapshot()
            await control.stop()
            await self._reporter.flush()
            reporter_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter_task
        return 0

    def _on_leadership(self, leading: bool) -> None:
        self.metrics.set_leader(leading)
        if not leading:
            for tracked in self._plans.values():
                if tracked.runner is not None:
                    tracked.runner.request_stop()
            self._wake.set()

    async def _campaign(self, elector: LeaderElector) -> None:
        while not self._stopping.is_set():
            self._notifier.status("waiting for the lease")
            await _first(elector.leading.wait(), self._stopping.wait())
            if self._stopping.is_set():
                return
            self.readiness.set_role(Role.LEADER)
            done = await self._lead(elector)
            if done:
                return
            if not self._stopping.is_set():
                self.readiness.set_role(Role.LOST)
                self._notifier.status("lost the lease; stopped acting, waiting to lead again")
                await self._stop_runners()
                self.readiness.set_role(Role.STANDBY)

    async def _lead(self, elector: LeaderElector) -> bool:
        """One term as leader. True when the daemon should exit (stop, or `once` done)."""
        assert self._store is not None
        recovered = await recover(self._store)  # another daemon may have acted meanwhile
        self._remember_groups(recovered)
        self._plans = {}
        for plan_id in sorted(recovered.in_flight):
            tracked = Tracked(journal=await self._journal(plan_id))
            self._plans[plan_id] = tracked
            await self._continue(tracked)
        self.readiness.mark_recovered()
        self._set_status()
        if self._once:
            await self._until_idle(elector)
            if self._acting(elector):
                for policy in self.config.node_groups:
                    if not self._acting(elector):
                        break
                    await self._analyse(policy)
                await self._until_idle(elector)
            return self._acting(elector) or self._stopping.is_set()
        next_snapshot = self._clock.monotonic() + SNAPSHOT_EVERY_S
        while self._acting(elector):
            now = self._clock.monotonic()
            for policy in self.config.node_groups:
                view = self._groups.setdefault(policy.name, GroupView())
                if now >= view.next_analysis_mono:
                    view.next_analysis_mono = now + self.config.analysis_interval_s
                    await self._analyse(policy)
                    if not self._acting(elector):
                        break
            if now >= next_snapshot:
                next_snapshot = now + SNAPSHOT_EVERY_S
                await self._write_snapshot()
            self._set_status()
            due = min(
                (v.next_analysis_mono for v in self._groups.values()),
                default=now + self.config.analysis_interval_s,
            )
            self._wake.clear()
            await _first(
                self._clock.sleep(max(0.0, min(due, next_snapshot) - self._clock.monotonic())),
                self._wake.wait(),
                elector.lost.wait(),
            )
        return self._stopping.is_set()

    def _acting(self, elector: LeaderElector) -> bool:
        return not self._stopping.is_set() and not elector.lost.is_set()

    async def _until_idle(self, elector: LeaderElector) -> None:
        """Wait until no runner is running (each plan done, paused or waiting for a person)."""
        while self._acting(elector):
            running = [t.task for t in self._plans.values() if t.task is not None]
            if not running:
                return
            self._wake.clear()
            await _first(
                asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED),
                self._wake.wait(),
                elector.lost.wait(),
            )

    async def _write_snapshot(self) -> None:
        if self._store is None:
            return
        try:
            recovered = await recover(self._store)
            await write_snapshot(self._store, recovered.state)
        except (EventStoreError, RecoveryError) as exc:
            log.warning("could not write a recovery snapshot: %s", exc)

    def _reload(self) -> None:
        if self._config_path is None:
            return
        self._notifier.reloading()
        try:
            new = load_config(self._config_path)
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the old one: %s", exc)
        else:
            if (new.database, new.cluster) != (self.config.database, self.config.cluster):
                log.warning("database and cluster changes take effect at the next restart")
                new = dataclasses.replace(
                    new, database=self.config.database, cluster=self.config.cluster
                )
            self.config = new
            for view in self._groups.values():
                view.next_analysis_mono = 0.0
                view.fingerprint = ()
            log.info("configuration reloaded from %s", self._config_path)
        self._notifier.ready("configuration reloaded")

    def report(self) -> dict[str, Any]:
        """Every plan this process touched, as it holds them (`run --once` prints this)."""
        plans = {pid: t.journal.state for pid, t in self._plans.items()}
        plans.update(self._finished)
        return {"plans": {pid: plan_summary(s) for pid, s in sorted(plans.items())}}


async def _first(*aws: Awaitable[object]) -> None:
    """Wait until the first of `aws` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
