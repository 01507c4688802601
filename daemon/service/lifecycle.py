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

Fencing (two daemons sharing one event log): on winning the Lease the daemon takes a new
leadership term in the event log (`acquire_term`) before it reads the log, and every append it
makes carries that term; the store refuses an append of an older term (`FencedError`), and
then this daemon steps down at once ("stopped acting: ..."), stops every runner and waits for
the Lease again. Before every side effect the runners' ports ask the elector whether the lease
is still fresh, with a safety margin under the renew deadline (fencing.py); when it is not, the
effect is not made and every retry loop ends. If the elector's task dies, the runners are
stopped and the daemon exits 1 (systemd restarts it): nothing acts without a live elector.

The event log failing (PostgreSQL unreachable, or the connection lost in the middle of an
append, whose outcome is then unknown) does not end the daemon and is never acted through:
the daemon parks (/readyz says "parked", every runner stops), waits 1 s doubling up to 30 s,
then takes a new leadership term and folds the log again, as at the start of any term, before
any runner acts; the store connects again by itself.

`Service` is built from parts that work together, each owning its concern (state.py): it makes
the shared `ServiceContext`, the `Runners`, the `Decisions` and the `PlanControl` (which it gives
the control API), and keeps for itself what the lifecycle needs: the lease, the stop request,
`once`, the ports' wrapper.

Hooks given from outside (rehearsals): `observers` are subscribed to every journal (console
progress for `--progress` and the demo), `wrap_world` wraps the Cloud and Cluster ports (the
crash suite's injector, tests/crash/injection.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from adapters.errors import AdapterError
from adapters.kubernetes import KubeClient
from adapters.metrics import Metrics
from adapters.systemd_notify import Notifier
from adapters.vpsie import VpsieClient
from daemon.clock import SystemClock
from daemon.config import Config, ConfigError, load_config
from daemon.control import ControlServer, Readiness, Role
from daemon.control_protocol import Address
from daemon.eventlog import open_configured_log
from daemon.executor.journal import Subscriber
from daemon.page import LogPages
from daemon.ports import Clock, Cloud, Cluster
from daemon.service.control_target import PlanControl, plan_summary
from daemon.service.decisions import Decisions
from daemon.service.fencing import FencedCluster
from daemon.service.leadership import LeaderElector, NotLeading
from daemon.service.leftovers import Leftovers
from daemon.service.recovery import (
    Quarantines,
    RecoveryError,
    record_quarantines,
    recover,
    write_snapshot,
)
from daemon.service.repairs import Repairs
from daemon.service.reporter import Regarding, Reporter
from daemon.service.runners import Runners
from daemon.service.state import ServiceContext, Tracked, WorldWrapper
from daemon.service.unaccounted import LOOK_EVERY_S, Unaccounted
from eventstore import EventStore, EventStoreError, FencedError

log = logging.getLogger(__name__)


STORE_RETRY_S = (1.0, 30.0)  # parked on a failed event log: first and longest wait
LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "vpsie-rebalancer"


class Service:
    """`vpsie-rebalancer run`: start, the lease, the loop, signals, stop."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        once: bool = False,
        wrap_world: WorldWrapper | None = None,
        observers: Sequence[Subscriber] = (),
        notifier: Notifier | None = None,
        identity: str | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        lease_duration_s: int = 15,
        poll_interval_s: float = 5.0,
        datacenter: str = "",
        on_listening: Callable[[Address], None] | None = None,
    ) -> None:
        """`on_listening` is told where the control API (and the status page) listens."""
        self._on_listening = on_listening
        self.control_address: Address | None = None
        self._ctx = ServiceContext(
            config,
            config_path=config_path,
            clock=clock if clock is not None else SystemClock(),
            metrics=metrics if metrics is not None else Metrics(),
            notifier=notifier if notifier is not None else Notifier({}),
            poll_interval_s=poll_interval_s,
            datacenter=datacenter,
        )
        self._runners = Runners(
            self._ctx, observers, on_fenced=self._fenced, on_store_failed=self._store_failed
        )
        self._repairs = Repairs(self._ctx, self._runners)
        self._decisions = Decisions(
            self._ctx, self._runners, rebalancing_blocked=self._repairs.blocks_rebalancing
        )
        self.control = PlanControl(
            self._ctx, self._runners, is_leader=self._is_leader, repairs=self._repairs
        )
        self.readiness = Readiness()
        self._once = once
        # With `once`: the node groups this process has analysed. One round per group per
        # process, even when the Lease lapses and this daemon takes the lead again.
        self._analysed: set[str] = set()
        self._wrap_world = wrap_world
        self._identity = identity
        self._rng = rng if rng is not None else random.Random()
        self._lease_duration_s = lease_duration_s
        self._stopping = asyncio.Event()
        self._elector: LeaderElector | None = None
        self._control_server: ControlServer | None = None
        self._exit_code = 0
        self._fenced_term: int | None = None
        # The event log failed while leading: parked until it answers (see _park).
        self._store_problem: EventStoreError | None = None
        self._store_retries = 0

    @property
    def config(self) -> Config:
        return self._ctx.config

    @property
    def metrics(self) -> Metrics:
        return self._ctx.metrics

    def _is_leader(self) -> bool:
        return self._elector is not None and self._elector.is_leader()

    def request_stop(self) -> None:
        """SIGTERM: finish the current steps, record them, exit."""
        if not self._stopping.is_set():
            log.info("stopping: finishing the current steps")
            self._ctx.notifier.stopping()
            self._stopping.set()
            self._runners.request_stop()
            self._ctx.wake.set()

    def request_reload(self) -> None:
        """SIGHUP: read the configuration and the control token again now (leader or
        standby). A token file that became unusable keeps the old token (logged)."""
        self._reload()
        if self._control_server is not None:
            try:
                self._control_server.reload_token()
            except (OSError, ValueError) as exc:
                log.error("control token not reloaded, keeping the old one: %s", exc)
            else:
                log.info("control token reloaded")
        self._ctx.wake.set()

    async def run(self) -> int:
        """Run until stopped (or, with `once`, until one round per group is done)."""
        loop = asyncio.get_running_loop()
        installed: dict[signal.Signals, Any] = {}  # the handlers they replace
        for signum, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.request_reload),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                previous = signal.getsignal(signum)
                loop.add_signal_handler(signum, handler)
                installed[signum] = previous
        watchdog = asyncio.create_task(self._ctx.notifier.watchdog_loop(SystemClock()))
        try:
            self._ctx.notifier.status("opening the event log")
            store = self._ctx.store = await open_configured_log(self.config)
            store.on_commit = self.metrics.eventlog_committed
            try:
                return await self._with_store(store)
            finally:
                await store.close()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            _restore_signals(loop, installed)

    async def _with_store(self, store: EventStore) -> int:
        self._ctx.notifier.status("recovering: folding the event log")
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
        self._decisions.remember_groups(recovered)
        log.info(
            "recovered: %d plans in flight, %d events folded after the snapshot",
            len(recovered.in_flight),
            recovered.events_folded,
        )
        async with (
            VpsieClient.from_file(
                self.config.vpsie_credentials,
                clock=self._ctx.clock,
                rng=self._rng,
                observer=self.metrics.api_request,
            ) as vpsie,
            KubeClient.from_kubeconfig(
                str(self.config.kubeconfig),
                now=self._ctx.clock.now,
                observer=self.metrics.api_request,
            ) as kube,
        ):
            # Every attempt of a VPSie effect, the client's own retries included, asks first.
            vpsie.guard_effects(self._may_act)
            cloud: Cloud = vpsie
            cluster: Cluster = kube
            if self._wrap_world is not None:
                cloud, cluster = self._wrap_world(cloud, cluster)
            self._ctx.connect(cloud, cluster)
            return await self._connected(cluster, len(recovered.in_flight))

    async def _connected(self, cluster: Cluster, in_flight: int) -> int:
        reporter = self._ctx.reporter = Reporter(
            cluster, self.metrics, Regarding("Lease", LEASE_NAME, LEASE_NAMESPACE)
        )
        control = ControlServer(
            self.control,
            listen=str(self.config.listen),
            readiness=self.readiness,
            metrics=self.metrics,
            token_file=self.config.token_file,
            pages=LogPages(self._ctx.event_store()),
        )
        self.control_address = await control.start()
        self._control_server = control
        if self._on_listening is not None:
            self._on_listening(self.control_address)
        reporter_task = asyncio.create_task(reporter.run())
        elector = self._elector = LeaderElector(
            cluster,
            self._ctx.clock,
            namespace=LEASE_NAMESPACE,
            name=LEASE_NAME,
            identity=self._identity,
            lease_duration_s=self._lease_duration_s,
            on_change=self._on_leadership,
        )
        self._ctx.guard = elector.ensure_may_act
        self.readiness.set_role(Role.STANDBY)
        self._ctx.notifier.ready(f"recovered ({in_flight} plans in flight); waiting for the lease")
        elector_task = asyncio.create_task(elector.run())
        elector_task.add_done_callback(self._elector_ended)
        try:
            await self._campaign(elector)
        finally:
            self.readiness.set_role(Role.STOPPING)
            await self._runners.stop()
            elector_task.remove_done_callback(self._elector_ended)
            elector_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await elector_task
            await elector.release()
            await self._write_snapshot()
            await control.stop()
            await reporter.flush()
            reporter_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter_task
        return self._exit_code

    def _on_leadership(self, leading: bool) -> None:
        self.metrics.set_leader(leading)
        if not leading:
            self.metrics.set_plans_without_runner(0)
            self._runners.request_stop()
            self._ctx.wake.set()

    async def _may_act(self) -> None:
        if self._elector is None:
            raise NotLeading("this daemon has not taken the lease")
        await self._elector.ensure_may_act()

    def _elector_ended(self, task: asyncio.Task[None]) -> None:
        """The elector never ends on its own: if it does, nothing may act any more."""
        why = "cancelled" if task.cancelled() else repr(task.exception())
        log.error("the leader elector stopped (%s); stopping every runner and exiting", why)
        if self._elector is not None:
            self._elector.step_down(f"the leader elector stopped: {why}")
        self._exit_code = 1
        self.request_stop()

    def _fenced(self, exc: FencedError) -> None:
        """The event log refused an append of our term: another daemon leads. Stop acting."""
        if self._fenced_term == exc.term:
            return  # said once per term; every runner of the term hits the same wall
        self._fenced_term = exc.term
        log.error(
            "stopped acting: the event log refused an append to %s of leadership term %d, "
            "another daemon took term %d; waiting for the lease again",
            exc.stream,
            exc.term,
            exc.current,
        )
        if self._elector is not None:
            self._elector.step_down(f"the event log has a newer leadership term ({exc.current})")

    def _store_failed(self, exc: EventStoreError) -> None:
        """The event log could not be read or written (the database is unreachable or dropped
        the connection). What this daemon folded may be behind the log now: stop acting."""
        if self._store_problem is None:
            log.error(
                "the event log failed: %s; parked: every runner stops, and once the log answers "
                "again this daemon folds it anew before acting",
                exc,
            )
        self._store_problem = exc
        self._runners.request_stop()
        self._ctx.wake.set()

    async def _park(self) -> None:
        """Wait before trying the event log again: 1 s doubling up to 30 s (injected clock)."""
        problem = self._store_problem
        self.readiness.set_role(Role.PARKED)
        self._ctx.notifier.status(f"parked: the event log failed ({problem})")
        await self._runners.stop()
        delay = min(STORE_RETRY_S[0] * 2**self._store_retries, STORE_RETRY_S[1])
        self._store_retries += 1
        log.warning("trying the event log again in %g s", delay)
        await _first(self._ctx.clock.sleep(delay), self._stopping.wait())
        self._store_problem = None

    async def _campaign(self, elector: LeaderElector) -> None:
        while not self._stopping.is_set():
            if self._store_problem is not None:
                await self._park()
                continue
            self._ctx.notifier.status("waiting for the lease")
            await _first(elector.leading.wait(), self._stopping.wait())
            if self._stopping.is_set():
                return
            self.readiness.set_role(Role.LEADER)
            done = await self._lead(elector)
            if done:
                return
            if self._store_problem is not None:
                continue
            if not self._stopping.is_set():
                self.readiness.set_role(Role.LOST)
                self._ctx.notifier.status("lost the lease; stopped acting, waiting to lead again")
                await self._runners.stop()
                self.readiness.set_role(Role.STANDBY)

    async def _lead(self, elector: LeaderElector) -> bool:
        """One term as leader. True when the daemon should exit (stop, or `once` done)."""
        ctx = self._ctx
        # The term first: from now on an append of any earlier leader is refused, so the log
        # read below is the last word of every earlier leader.
        try:
            ctx.term = await ctx.event_store().acquire_term(elector.identity)
            log.info("leading with term %d", ctx.term)
            ctx.unaccounted = Unaccounted(ctx.event_store(), ctx.term)
            ctx.leftovers = Leftovers(ctx.event_store(), ctx.term)
            return await self._lead_term(elector)
        except FencedError as exc:
            self._fenced(exc)
            return self._stopping.is_set()
        except NotLeading:
            return self._stopping.is_set()
        except EventStoreError as exc:  # unreachable, or a connection lost mid-operation
            self._store_failed(exc)
            return self._stopping.is_set()

    async def _lead_term(self, elector: LeaderElector) -> bool:
        ctx = self._ctx
        recovered = await recover(ctx.event_store())  # another daemon may have acted meanwhile
        if self._store_retries:
            log.info("the event log answers again; folded anew to seq %d", recovered.head_seq)
            self._store_retries = 0
        self._decisions.remember_groups(recovered)
        await self._decisions.remember_decisions(recovered)
        await record_quarantines(ctx.event_store(), recovered.unrecorded, term=ctx.term)
        ctx.quarantines = await Quarantines.read(ctx.event_store())
        ctx.plans = {}
        for plan_id in sorted(recovered.in_flight):
            tracked = Tracked(journal=await self._runners.journal(plan_id))
            ctx.plans[plan_id] = tracked
            await self._decisions.pick_up(tracked)
        self.readiness.mark_recovered()
        ctx.set_status()
        if self._once:
            await self._until_idle(elector)
            if self._acting(elector):
                await self._repairs.check()
                for policy in self.config.node_groups:
                    if not self._acting(elector):
                        break
                    if policy.name in self._analysed:
                        continue
                    await self._decisions.analyse(policy)
                    self._analysed.add(policy.name)
                await self._until_idle(elector)
            if self._acting(elector):
                await self._look_for_unaccounted()
            if self._acting(elector):
                await self._clean_leftovers()
            return self._acting(elector) or self._stopping.is_set()
        next_snapshot = ctx.clock.monotonic() + self.config.snapshot_interval_s
        next_look = 0.0
        next_health = ctx.clock.monotonic()
        while self._acting(elector):
            now = ctx.clock.monotonic()
            if now >= next_look:
                next_look = now + LOOK_EVERY_S
                await self._look_for_unaccounted()
                if not self._acting(elector):
                    break
                await self._clean_leftovers()
            if now >= next_health:
                next_health = now + self.config.repair_check_interval_s
                await self._repairs.check()
                if not self._acting(elector):
                    break
            for policy in self.config.node_groups:
                view = ctx.group(policy.name)
                if now >= view.next_analysis_mono:
                    view.next_analysis_mono = now + self.config.analysis_interval_s
                    await self._decisions.analyse(policy)
                    if not self._acting(elector):
                        break
            if now >= next_snapshot:
                next_snapshot = now + self.config.snapshot_interval_s
                await self._write_snapshot()
            restart = self._runners.revive()
            reopen = await self._runners.reopen_windows()
            ctx.set_status()
            self.metrics.set_plans_without_runner(len(self._runners.without_runner()))
            due = min(
                (v.next_analysis_mono for v in ctx.groups.values()),
                default=now + self.config.analysis_interval_s,
            )
            for at in (restart, reopen, next_look, next_health):
                if at is not None:
                    due = min(due, at)
            ctx.wake.clear()
            await _first(
                ctx.clock.sleep(max(0.0, min(due, next_snapshot) - ctx.clock.monotonic())),
                ctx.wake.wait(),
                elector.lost.wait(),
            )
        return self._stopping.is_set()

    async def _look_for_unaccounted(self) -> None:
        """Look for the workers of adds no plan accounts for (unaccounted.py); an API that
        does not answer is tried again at the next round."""
        ctx = self._ctx
        if ctx.unaccounted is None:
            return
        cloud, _ = ctx.ports()
        try:
            await ctx.unaccounted.look(cloud, ctx.logged_sizes(), ctx.now())
        except (AdapterError, OSError) as exc:
            log.warning("could not look for unaccounted workers now: %s", exc)

    async def _clean_leftovers(self) -> None:
        """Delete the Node objects our plans left behind, once the world agrees
        (leftovers.py); an API that does not answer is tried again at the next round."""
        ctx = self._ctx
        if ctx.leftovers is None or ctx.guard is None:
            return
        cloud, cluster = ctx.ports()
        try:
            deleted = await ctx.leftovers.clean(
                cloud, FencedCluster(cluster, ctx.guard), self.config.cluster, ctx.now()
            )
        except (AdapterError, OSError) as exc:
            log.warning("could not look at the leftover Node objects now: %s", exc)
            return
        if ctx.reporter is not None:
            for name in deleted:
                ctx.reporter.leftover_deleted(name)

    def _acting(self, elector: LeaderElector) -> bool:
        return (
            not self._stopping.is_set()
            and not elector.lost.is_set()
            and self._store_problem is None
        )

    async def _until_idle(self, elector: LeaderElector) -> None:
        """Wait until no runner is running (each plan done, paused or waiting for a person)."""
        while self._acting(elector):
            restart = self._runners.revive()
            running = [t.task for t in self._ctx.plans.values() if t.task is not None]
            # `once` does not wait out an outage: a parked plan stays as it is, for next time.
            due = [t for t in self._ctx.plans.values() if t.restart_at is not None and not t.parked]
            if not running and not due:
                return
            self._ctx.wake.clear()
            waits: list[Awaitable[object]] = [self._ctx.wake.wait(), elector.lost.wait()]
            if running:
                waits.append(asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED))
            if restart is not None:
                waits.append(self._ctx.clock.sleep(max(0.0, restart - self._ctx.clock.monotonic())))
            await _first(*waits)

    async def _write_snapshot(self) -> None:
        store = self._ctx.store
        if store is None:
            return
        try:
            recovered = await recover(store)
            await write_snapshot(store, recovered.state)
        except (EventStoreError, RecoveryError) as exc:
            log.warning("could not write a recovery snapshot: %s", exc)

    def _reload(self) -> None:
        path = self._ctx.config_path
        if path is None:
            return
        self._ctx.notifier.reloading()
        try:
            new = load_config(path)
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the old one: %s", exc)
        else:
            if (new.database, new.cluster) != (self.config.database, self.config.cluster):
                log.warning("database and cluster changes take effect at the next restart")
                new = dataclasses.replace(
                    new,
                    database=self.config.database,
                    database_password_file=self.config.database_password_file,
                    cluster=self.config.cluster,
                )
            self._ctx.config = new
            for view in self._ctx.groups.values():
                view.next_analysis_mono = 0.0
                view.fingerprint = ()
            log.info("configuration reloaded from %s", path)
        self._ctx.notifier.ready("configuration reloaded")

    def report(self) -> dict[str, Any]:
        """Every plan this process touched, as it holds them (`run --once` prints this)."""
        plans = {pid: t.journal.state for pid, t in self._ctx.plans.items()}
        plans.update(self._ctx.finished)
        return {"plans": {pid: plan_summary(s) for pid, s in sorted(plans.items())}}


def _restore_signals(loop: asyncio.AbstractEventLoop, installed: dict[signal.Signals, Any]) -> None:
    """Give the signals back to the handlers they had (the `run` command's keeps SIGTERM a
    clean stop while the report is written); blocked meanwhile, so none lands on the
    default action that `remove_signal_handler` sets for an instant."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, installed.keys())
    try:
        for signum, previous in installed.items():
            loop.remove_signal_handler(signum)
            if previous is not None:
                signal.signal(signum, previous)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


async def _first(*aws: Awaitable[object]) -> None:
    """Wait until the first of `aws` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
