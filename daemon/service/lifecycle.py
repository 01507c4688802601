"""The daemon service: what `vpsie-rebalancer run` is, from start to SIGTERM.

Start: JSON logs, open the event log, `recover()` (the log is the only memory), connect to
VPSie and Kubernetes, start the control API, tell systemd READY=1 (recovery has finished; a
standby daemon is ready too: it waits for the Lease), take the Lease, then for every plan the
log shows in flight load its journal and run it on (`PlanRunner` reconciles pending intents with
the live world first, then resumes or rolls back).

Then, per node group, on the configured interval: take a snapshot, analyse, plan, append
`PlanProposed` (with its checks and reasons), and decide: `proceed` is approved (by "policy")
and executed, or waits in awaiting_approval for a person when `requireApproval` is set;
`needs_review` waits for a person too; `postpone` and `reject` are closed at once with
`PlanRejected(by="planner")` and their reasons. So "why does nothing happen?" is answered by
the log, by `audit`, and by Kubernetes Events on the node group. A decision identical to the
previous round's (same action, reasons and replacements) is not recorded again.

Every journal gets the same subscribers: metrics, Kubernetes Events (queued, sent by a task so
a slow API never holds up a step), console progress (the demo) and the crash injector.

Signals: SIGTERM/SIGINT ask every runner to finish its current step (recorded), then STOPPING=1
and exit 0. SIGHUP reloads the configuration (RELOADING=1 ... READY=1); an invalid file is
logged and the old configuration kept. Losing the Lease stops every runner the same way,
within the lease duration, and the daemon goes back to waiting for it.

Crash injection (a testing aid, docs/running.md): `VPSIE_REBALANCER_CRASH_AT=N` makes the
process SIGKILL itself right after the Nth event it appended is durable (before acting on it);
`N:after-call` waits for the next side-effect call to the world (add/delete worker, create
group, cordon, uncordon, label, evict) to return, then dies before its outcome is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from adapters.errors import AdapterError
from adapters.kubernetes import KubeClient
from adapters.metrics import Metrics
from adapters.systemd_notify import Notifier
from adapters.vpsie import VpsieClient
from cli.progress import ProgressPrinter
from daemon.clock import SystemClock, rfc3339
from daemon.config import Config, ConfigError, load_config
from daemon.control import ControlError, ControlServer, Readiness, Role
from daemon.executor.journal import PlanJournal
from daemon.executor.runner import ExecutionContext, InvalidRequest, PlanRunner
from daemon.ports import Clock, Cloud, Cluster
from daemon.service.leadership import LeaderElector
from daemon.service.recovery import Recovered, RecoveryError, recover, write_snapshot
from daemon.service.snapshot import SnapshotError, gather_snapshot
from eventstore import EventStore, EventStoreError
from planner import NodeGroupPolicy, analyze, make_plan, map_workers
from planner.checks import (
    check_cluster_health,
    check_node_group_health,
    check_timing,
    disruption_needs,
    node_count_path,
)
from planner.inventory import group_nodes, is_movable
from planner.windows import parse_instant
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import PlanStatus, ReplacementStatus
from statemachine.plan import Action, CheckResult, CheckStatus, ReplacementSpec
from statemachine.world import (
    ClusterSnapshot,
    Datacenter,
    LeaseInfo,
    NodeGroupSpec,
    NodeInfo,
    PdbInfo,
    PodInfo,
    SizeOffer,
    VpsieCluster,
    VpsieNodeGroup,
    VpsieWorker,
)

log = logging.getLogger(__name__)

CRASH_ENV = "VPSIE_REBALANCER_CRASH_AT"
T = TypeVar("T")


# --- crash injection ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrashPoint:
    """Die after the `event`-th event this process appends (or after the call that follows)."""

    event: int
    after_call: bool = False


def parse_crash_at(text: str) -> CrashPoint:
    """`N` or `N:after-call`; ValueError naming the variable and the text."""
    raw = text.strip()
    number, sep, mode = raw.partition(":")
    if (sep and mode != "after-call") or not number.isdigit() or int(number) < 1:
        raise ValueError(
            f"{CRASH_ENV}={text!r}: expected N or N:after-call with N a whole number >= 1"
        )
    return CrashPoint(int(number), after_call=mode == "after-call")


def crash_point_from_env(environ: Mapping[str, str]) -> CrashPoint | None:
    raw = environ.get(CRASH_ENV, "")
    return parse_crash_at(raw) if raw else None


class CrashInjector:
    """Counts the events this process appended; SIGKILLs it at the chosen point."""

    def __init__(self, point: CrashPoint | None, kill: Callable[[], None] | None = None) -> None:
        self.point = point
        self.seen = 0
        self._armed = False
        self._kill = kill if kill is not None else _sigkill_self

    def on_event(self, state: object, event: ev.Event) -> None:
        self.seen += 1
        if self.point is None or self.seen != self.point.event:
            return
        if self.point.after_call:
            self._armed = True
        else:
            log.warning(
                "crash injection: killing myself after event %d (%s)", self.seen, event.type_name()
            )
            self._kill()

    def after_call(self, what: str) -> None:
        if self._armed:
            log.warning("crash injection: killing myself after %s (event %d)", what, self.seen)
            self._kill()


def _sigkill_self() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _Watched:
    """Tells the crash injector when a side-effect call returned. The ports' methods are
    delegated one by one, on purpose: a method added to a port fails mypy here until someone
    decides whether it is a side effect."""

    def __init__(self, injector: CrashInjector) -> None:
        self._injector = injector

    async def _effect(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        finally:
            self._injector.after_call(what)


class WatchedCloud(_Watched):
    """The Cloud port, watched."""

    def __init__(self, inner: Cloud, injector: CrashInjector) -> None:
        super().__init__(injector)
        self._inner = inner

    async def list_datacenters(self) -> list[Datacenter]:
        return await self._inner.list_datacenters()

    async def list_offers(self, dc_identifier: str) -> list[SizeOffer]:
        return await self._inner.list_offers(dc_identifier)

    async def list_clusters(self) -> list[VpsieCluster]:
        return await self._inner.list_clusters()

    async def list_workers(self, cluster_identifier: str) -> list[VpsieWorker]:
        return await self._inner.list_workers(cluster_identifier)

    async def list_node_groups(self, cluster_identifier: str) -> list[VpsieNodeGroup]:
        return await self._inner.list_node_groups(cluster_identifier)

    async def create_node_group(
        self, cluster_identifier: str, group_name: str, size_id: int
    ) -> None:
        await self._effect(
            "create_node_group",
            self._inner.create_node_group(cluster_identifier, group_name, size_id),
        )

    async def add_worker(self, cluster_identifier: str, group_id: int) -> None:
        await self._effect("add_worker", self._inner.add_worker(cluster_identifier, group_id))

    async def delete_worker(self, cluster_identifier: str, worker_identifier: str) -> bool:
        return await self._effect(
            "delete_worker", self._inner.delete_worker(cluster_identifier, worker_identifier)
        )


class WatchedCluster(_Watched):
    """The Cluster port, watched."""

    def __init__(self, inner: Cluster, injector: CrashInjector) -> None:
        super().__init__(injector)
        self._inner = inner

    async def list_nodes(self) -> list[NodeInfo]:
        return await self._inner.list_nodes()

    async def get_node(self, name: str) -> NodeInfo | None:
        return await self._inner.get_node(name)

    async def list_pods(self, node_name: str | None = None) -> list[PodInfo]:
        return await self._inner.list_pods(node_name)

    async def list_pdbs(self) -> list[PdbInfo]:
        return await self._inner.list_pdbs()

    async def list_node_group_specs(self) -> list[NodeGroupSpec] | None:
        return await self._inner.list_node_group_specs()

    async def cordon(self, name: str, annotations: Mapping[str, str | None] | None = None) -> bool:
        return await self._effect("cordon", self._inner.cordon(name, annotations))

    async def uncordon(
        self, name: str, annotations: Mapping[str, str | None] | None = None
    ) -> None:
        await self._effect("uncordon", self._inner.uncordon(name, annotations))

    async def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        await self._effect("label_node", self._inner.label_node(name, labels))

    async def evict(self, namespace: str, name: str) -> None:
        await self._effect("evict", self._inner.evict(namespace, name))

    async def emit_event(
        self,
        *,
        regarding_kind: str,
        regarding_name: str,
        regarding_namespace: str,
        reason: str,
        note: str,
        type_: str = "Normal",
        action: str = "Rebalance",
    ) -> None:
        await self._inner.emit_event(
            regarding_kind=regarding_kind,
            regarding_name=regarding_name,
            regarding_namespace=regarding_namespace,
            reason=reason,
            note=note,
            type_=type_,
            action=action,
        )

    def watch_nodes(self, *, timeout_s: float = 60.0) -> AsyncIterator[tuple[str, NodeInfo]]:
        return self._inner.watch_nodes(timeout_s=timeout_s)

    def watch_pods(
        self, *, node_name: str | None = None, timeout_s: float = 60.0
    ) -> AsyncIterator[tuple[str, PodInfo]]:
        return self._inner.watch_pods(node_name=node_name, timeout_s=timeout_s)

    async def get_lease(self, namespace: str, name: str) -> LeaseInfo | None:
        return await self._inner.get_lease(namespace, name)

    async def create_lease(self, lease: LeaseInfo) -> LeaseInfo:
        return await self._inner.create_lease(lease)

    async def update_lease(self, lease: LeaseInfo) -> LeaseInfo:
        return await self._inner.update_lease(lease)


# --- metrics and Kubernetes Events from the journals -------------------------------------------


@dataclass(frozen=True, slots=True)
class Regarding:
    """The object a Kubernetes Event is about."""

    kind: str
    name: str
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class _KubeEvent:
    regarding: Regarding
    reason: str
    note: str
    type_: str = "Normal"


def _seconds_between(start: str, end: str) -> float | None:
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


def _money(amount: Decimal) -> str:
    return f"${amount:,.2f}/month"


class Reporter:
    """Journal subscriber: Prometheus metrics and Kubernetes Events (the seed's reasons).

    Events are queued here and sent by `run()`, so a slow or failing Kubernetes API never holds
    up a step; a full queue drops the oldest-to-be-sent Event with a log line, never blocks.
    Plan-level Events go on the node group's NodeGroup resource when the cluster has one, else
    on the daemon's Lease; node-level Events go on the Node.
    """

    QUEUE = 1000

    def __init__(self, cluster: Cluster, metrics: Metrics, fallback: Regarding) -> None:
        self._cluster = cluster
        self._metrics = metrics
        self._fallback = fallback
        self._group_objects: dict[str, Regarding] = {}
        self._queue: asyncio.Queue[_KubeEvent] = asyncio.Queue(self.QUEUE)
        self._plan_status: dict[str, PlanStatus] = {}
        self._batches_started: dict[str, set[int]] = {}
        self._batches_finished: dict[str, set[int]] = {}
        self._batch_started_at: dict[tuple[str, int], str] = {}
        self._marks: dict[tuple[str, str, str], str] = {}
        # Savings realised per node group since this daemon started (the metric's value).
        self._saved: dict[str, Decimal] = {}
        self.sent = 0
        self.dropped = 0

    def note_idle(self, node_group: str, reasons: str) -> None:
        """An analysis found nothing to replace: say why, once per change."""
        self._emit(self._group(node_group), "RebalanceNotNeeded", reasons)

    def set_node_groups(self, specs: Sequence[NodeGroupSpec]) -> None:
        self._group_objects = {
            s.name: Regarding("NodeGroup", s.name, s.namespace or "default") for s in specs
        }

    def _group(self, name: str) -> Regarding:
        return self._group_objects.get(name, self._fallback)

    def _emit(self, regarding: Regarding, reason: str, note: str, type_: str = "Normal") -> None:
        try:
            self._queue.put_nowait(_KubeEvent(regarding, reason, note[:1000], type_))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("Kubernetes Event dropped (queue full): %s %s", reason, regarding.name)

    async def run(self) -> None:
        """Send queued Events until cancelled; failures are logged and skipped."""
        while True:
            item = await self._queue.get()
            try:
                await self._cluster.emit_event(
                    regarding_kind=item.regarding.kind,
                    regarding_name=item.regarding.name,
                    regarding_namespace=item.regarding.namespace,
                    reason=item.reason,
                    note=item.note,
                    type_=item.type_,
                )
                self.sent += 1
            except AdapterError as exc:
                log.warning("cannot post Kubernetes Event %s: %s", item.reason, exc)
            finally:
                self._queue.task_done()

    async def flush(self, timeout_s: float = 2.0) -> None:
        """Give queued Events a moment to go out (at shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)

    # -- the subscriber --

    def on_event(self, state: PlanState, event: ev.Event) -> None:
        try:
            self._on_event(state, event)
        except Exception:  # reporting must never break a step
            log.exception("reporting %s failed", event.type_name())

    def _on_event(self, state: PlanState, event: ev.Event) -> None:
        spec = state.spec
        group = spec.node_group
        strategy = spec.strategy.value
        where = self._group(group)
        before = self._plan_status.get(state.plan_id)
        self._plan_status[state.plan_id] = state.status
        if state.plan_id not in self._batches_started:
            self._seed_batches(state)
        match event:
            case ev.PlanProposed():
                self._metrics.plan_created(group, strategy)
                self._checks(where, spec.checks)
                self._emit(
                    where,
                    "PlanCreated",
                    f"Plan {spec.plan_id}: {strategy}, {len(spec.replacements)} nodes, "
                    f"saves {_money(spec.monthly_saving)}; recommended "
                    f"{spec.recommended_action.value}: {'; '.join(spec.action_reasons)}",
                )
            case ev.SafetyChecksRun(checks=checks):
                self._checks(where, checks)
            case ev.PlanApprovalRequested(reason=reason):
                self._emit(where, "PlanAwaitingApproval", f"Plan {spec.plan_id}: {reason}")
            case ev.PlanRejected(by=by, reason=reason):
                self._emit(where, "PlanRejected", f"Plan {spec.plan_id} by {by}: {reason}")
            case ev.PlanExecutionStarted():
                self._emit(
                    where,
                    "PlanStarted",
                    f"Started executing plan {spec.plan_id} with {len(spec.batches)} batches "
                    f"(estimated duration: {spec.estimated_duration_s:.0f}s)",
                )
            case ev.PlanPaused(by=by, reason=reason):
                self._emit(where, "PlanPaused", f"Plan {spec.plan_id} paused by {by}: {reason}")
            case ev.PlanResumed(by=by):
                self._emit(where, "PlanResumed", f"Plan {spec.plan_id} resumed by {by}")
            case ev.PlanCancelled(by=by, reason=reason):
                self._emit(where, "PlanCancelled", f"Plan {spec.plan_id} by {by}: {reason}")
            case ev.PlanRollbackStarted(reason=reason):
                self._metrics.rollback_started(group, strategy)
                self._emit(where, "RollbackStarted", f"Plan {spec.plan_id}: {reason}", "Warning")
            case ev.PlanRolledBack():
                self._metrics.plan_failed(group, strategy, self._plan_duration(state))
                self._emit(where, "RollbackCompleted", f"Plan {spec.plan_id} rolled back")
            case ev.PlanCompleted(realised_monthly_saving=saving):
                self._metrics.plan_executed(group, strategy, self._plan_duration(state) or 0.0)
                self._emit(
                    where,
                    "PlanCompleted",
                    f"Rebalancing plan {spec.plan_id} completed. Savings: {_money(saving)}",
                )
                self._emit(where, "SavingsRealized", f"Plan {spec.plan_id}: {_money(saving)}")
            case ev.PlanFailed(reason=reason):
                self._metrics.plan_failed(group, strategy, self._plan_duration(state))
                if before is PlanStatus.ROLLING_BACK:
                    self._emit(where, "RollbackFailed", f"Plan {spec.plan_id}: {reason}", "Warning")
                self._emit(where, "PlanFailed", f"Plan {spec.plan_id}: {reason}", "Warning")
            case ev.ReplacementEvent():
                self._replacement(state, event, where)
            case _:
                pass
        self._progress(state)

    def _checks(self, where: Regarding, checks: Sequence[CheckResult]) -> None:
        for check in checks:
            passed = check.status is not CheckStatus.FAILED
            self._metrics.safety_check(check.name, passed=passed)
            if passed:
                self._emit(where, "SafetyCheckPassed", f"{check.name}: {check.message}")
            else:
                self._emit(where, "SafetyCheckFailed", f"{check.name}: {check.message}", "Warning")

    def _plan_duration(self, state: PlanState) -> float | None:
        if not state.started_at or not state.finished_at:
            return None
        return _seconds_between(state.started_at, state.finished_at)

    def _replacement(self, state: PlanState, event: ev.ReplacementEvent, where: Regarding) -> None:
        group = state.spec.node_group
        rid = event.replacement_id
        spec = next(r for r in state.spec.replacements if r.replacement_id == rid)
        r = state.replacements[rid]
        old = Regarding("Node", spec.old_node)
        key = (state.plan_id, rid)
        match event:
            case ev.WorkerAddRequested(group_id=group_id):
                self._marks[(*key, "provision")] = event.at
                self._emit(
                    where,
                    "NodeProvisioning",
                    f"Provisioning a {spec.new_size_name or spec.new_size_id} worker in VPSie "
                    f"group {group_id} to replace {spec.old_node}",
                )
            case ev.NodeJoined(node_name=node):
                start = self._marks.pop((*key, "provision"), r.started_at)
                self._metrics.node_provisioned(group, _seconds_between(start, event.at) or 0.0)
                self._emit(
                    Regarding("Node", node),
                    "NodeProvisioned",
                    f"Node {node} provisioned (replaces {spec.old_node})",
                )
            case ev.DrainStarted(pods=pods):
                self._marks[(*key, "drain")] = event.at
                self._emit(old, "NodeDraining", f"Draining node {spec.old_node} ({len(pods)} pods)")
            case ev.NodeDrained():
                start = self._marks.pop((*key, "drain"), r.started_at)
                self._metrics.node_drained(group, _seconds_between(start, event.at) or 0.0)
                self._emit(old, "NodeDrained", f"Node {spec.old_node} drained successfully")
            case ev.WorkerDeleteRequested(role="old"):
                self._marks[(*key, "terminate")] = event.at
                self._emit(old, "NodeTerminating", f"Deleting worker {spec.old_worker}")
            case ev.WorkerDeleted(worker_identifier=worker) if worker == spec.old_worker:
                start = self._marks.pop((*key, "terminate"), event.at)
                self._metrics.node_terminated(group, _seconds_between(start, event.at) or 0.0)
                self._emit(old, "NodeTerminated", f"Node {spec.old_node} terminated successfully")
            case ev.NodeJoinTimedOut(waited_s=waited):
                self._emit(
                    where,
                    "NodeFailed",
                    f"The replacement of {spec.old_node} was not Ready after {waited:.0f}s",
                    "Warning",
                )
            case ev.ReplacementRollbackStarted(reason=reason):
                self._emit(old, "NodeFailed", f"Rolling back {spec.old_node}: {reason}", "Warning")
            case ev.ReplacementRolledBack():
                self._metrics.node_failed(group)
            case ev.ReplacementCompleted(monthly_saving=saving):
                total = self._saved.get(group, Decimal(0)) + saving
                self._saved[group] = total
                self._metrics.set_savings_realized(group, float(total))
            case ev.ReplacementFailed(reason=reason):
                self._metrics.node_failed(group)
                self._emit(old, "NodeFailed", f"{spec.old_node}: {reason}", "Warning")
            case _:
                pass
        self._batch(state, spec.batch, where, event.at)

    def _seed_batches(self, state: PlanState) -> None:
        started: set[int] = set()
        finished: set[int] = set()
        for index, ids in enumerate(state.spec.batches):
            statuses = [state.replacements[i].status for i in ids if i in state.replacements]
            if any(s is not ReplacementStatus.PLANNED for s in statuses):
                started.add(index)
            if statuses and all(s in _REPLACEMENT_ENDS for s in statuses):
                finished.add(index)
        self._batches_started[state.plan_id] = started
        self._batches_finished[state.plan_id] = finished

    def _batch(self, state: PlanState, index: int, where: Regarding, at: str) -> None:
        if index >= len(state.spec.batches):
            return
        ids = state.spec.batches[index]
        started = self._batches_started[state.plan_id]
        finished = self._batches_finished[state.plan_id]
        statuses = [state.replacements[i].status for i in ids if i in state.replacements]
        if index not in started:
            started.add(index)
            self._batch_started_at[(state.plan_id, index)] = at
            self._emit(where, "BatchStarted", f"Started batch {index} with {len(ids)} nodes")
        if index not in finished and statuses and all(s in _REPLACEMENT_ENDS for s in statuses):
            finished.add(index)
            start = self._batch_started_at.pop((state.plan_id, index), at)
            self._metrics.batch_finished(state.spec.node_group, _seconds_between(start, at) or 0.0)
            done = sum(1 for s in statuses if s is ReplacementStatus.DONE)
            if done == len(statuses):
                self._emit(
                    where, "BatchCompleted", f"Batch {index} completed ({done} nodes rebalanced)"
                )
            else:
                self._emit(
                    where,
                    "BatchFailed",
                    f"Batch {index}: {done} of {len(statuses)} nodes rebalanced",
                    "Warning",
                )

    def _progress(self, state: PlanState) -> None:
        total = len(state.replacements)
        if state.terminal or total == 0 or state.status is PlanStatus.PROPOSED:
            return
        ended = sum(1 for r in state.replacements.values() if r.status in _REPLACEMENT_ENDS)
        batch = next(
            (
                i
                for i, ids in enumerate(state.spec.batches)
                if any(state.replacements[r].status not in _REPLACEMENT_ENDS for r in ids)
            ),
            len(state.spec.batches),
        )
        fraction = ended / total
        self._metrics.progress(
            state.spec.node_group,
            percent=100.0 * fraction,
            batch=batch,
            remaining_s=state.spec.estimated_duration_s * (1 - fraction),
        )


_REPLACEMENT_ENDS = frozenset(
    {ReplacementStatus.DONE, ReplacementStatus.ROLLED_BACK, ReplacementStatus.FAILED}
)


# --- the service ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tracked:
    """A plan this daemon knows is not finished: its journal, and its runner when running."""

    journal: PlanJournal
    runner: PlanRunner | None = None
    task: asyncio.Task[PlanState] | None = None


@dataclass(slots=True)
class _GroupView:
    """What the service last concluded for one node group (for `status` and STATUS=)."""

    last_analysis_at: str = ""
    last_decision: str = ""
    next_analysis_mono: float = 0.0
    fingerprint: tuple[object, ...] = ()


class Service:
    """`vpsie-rebalancer run`; also the control API's `ControlTarget`."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        once: bool = False,
        crash: CrashPoint | None = None,
        progress: ProgressPrinter | None = None,
        notifier: Notifier | None = None,
        identity: str | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        lease_duration_s: int = 15,
        poll_interval_s: float = 5.0,
        datacenter: str = "",
    ) -> None:
        self.config = config
        self._config_path = config_path
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._once = once
        self._crash = CrashInjector(crash)
        self._progress = progress
        self._notifier = notifier if notifier is not None else Notifier({})
        self._identity = identity
        self.metrics = metrics if metrics is not None else Metrics()
        self._rng = rng if rng is not None else random.Random()
        self.readiness = Readiness()
        self._lease_duration_s = lease_duration_s
        self._poll_interval_s = poll_interval_s
        self._datacenter = datacenter
        self._plans: dict[str, _Tracked] = {}
        self._finished: dict[str, PlanState] = {}  # plans this process saw end
        self._groups: dict[str, _GroupView] = {}
        self._last_finished: dict[str, str] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._store: EventStore | None = None
        self._cloud: Cloud | None = None
        self._cluster: Cluster | None = None
        self._reporter: Reporter | None = None
        self._elector: LeaderElector | None = None
        self._last_status = ""

    # -- lifecycle --

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
            self._cloud = WatchedCloud(vpsie, self._crash)
            self._cluster = WatchedCluster(kube, self._crash)
            return await self._connected(self._cluster, len(recovered.in_flight))

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

    # -- leading --

    async def _lead(self, elector: LeaderElector) -> bool:
        """One term as leader. True when the daemon should exit (stop, or `once` done)."""
        assert self._store is not None
        recovered = await recover(self._store)  # another daemon may have acted meanwhile
        self._remember_groups(recovered)
        self._plans = {}
        for plan_id in sorted(recovered.in_flight):
            tracked = _Tracked(journal=await self._journal(plan_id))
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
                view = self._groups.setdefault(policy.name, _GroupView())
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

    async def _stop_runners(self) -> None:
        tasks = []
        for tracked in self._plans.values():
            if tracked.runner is not None and tracked.task is not None:
                tracked.runner.request_stop()
                tasks.append(tracked.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _journal(self, plan_id: str) -> PlanJournal:
        assert self._store is not None
        journal = await PlanJournal.load(self._store, plan_id)
        self._subscribe(journal)
        return journal

    def _subscribe(self, journal: PlanJournal) -> None:
        journal.subscribe(self._crash.on_event)
        if self._reporter is not None:
            journal.subscribe(self._reporter.on_event)
        if self._progress is not None:
            journal.subscribe(self._progress.on_event)
        journal.subscribe(self._on_recorded)

    def _on_recorded(self, state: PlanState, event: ev.Event) -> None:
        self._wake.set()

    async def _continue(self, tracked: _Tracked) -> None:
        """Pick a recovered plan up where the log left it."""
        state = tracked.journal.state
        match state.status:
            case PlanStatus.PROPOSED:
                await self._decide(tracked)
            case PlanStatus.AWAITING_APPROVAL | PlanStatus.PAUSED:
                log.info(
                    "plan %s is %s; it waits for a person",
                    state.plan_id,
                    state.status.value,
                    extra={"plan_id": state.plan_id},
                )
            case _:
                self._start(tracked)

    def _start(self, tracked: _Tracked) -> None:
        assert self._cloud is not None and self._cluster is not None
        if tracked.task is not None and not tracked.task.done():
            return
        if tracked.runner is None:
            tracked.runner = PlanRunner(tracked.journal, self._context())
        task = asyncio.create_task(tracked.runner.run())
        tracked.task = task
        task.add_done_callback(functools.partial(self._runner_done, tracked))

    def _context(self) -> ExecutionContext:
        assert self._cloud is not None and self._cluster is not None
        return ExecutionContext(
            cloud=self._cloud,
            cluster=self._cluster,
            clock=self._clock,
            poll_interval_s=self._poll_interval_s,
            # kubectl drain retries a refused eviction every 5 s; doubling from 1 s up to 5 s
            # keeps a budget-bound drain close to the pods' own start time.
            eviction_backoff_s=(1.0, 5.0),
            recheck=self._recheck,
        )

    def _runner_done(self, tracked: _Tracked, task: asyncio.Task[PlanState]) -> None:
        state = tracked.journal.state
        if task.cancelled():
            log.warning("runner of plan %s was cancelled", state.plan_id)
        elif (exc := task.exception()) is not None:
            log.error(
                "runner of plan %s stopped on an error: %s",
                state.plan_id,
                exc,
                exc_info=exc,
                extra={"plan_id": state.plan_id},
            )
        tracked.task = None
        if state.terminal:
            self._plans.pop(state.plan_id, None)
            tracked.runner = None
            self._finished[state.plan_id] = state
            if state.started_at:
                self._last_finished[state.spec.node_group] = state.finished_at
            self._groups.setdefault(
                state.spec.node_group, _GroupView()
            ).last_decision = f"plan {state.plan_id} {state.status.value}"
        self._wake.set()

    # -- deciding --

    def _remember_groups(self, recovered: Recovered) -> None:
        for policy in self.config.node_groups:
            last = recovered.last_finished(policy.name)
            if last:
                self._last_finished[policy.name] = last

    def _now(self) -> str:
        return rfc3339(self._clock.now())

    async def _analyse(self, policy: NodeGroupPolicy) -> None:
        """One analysis round for one node group; records the decision with its reasons."""
        assert self._cloud is not None and self._cluster is not None and self._store is not None
        view = self._groups.setdefault(policy.name, _GroupView())
        busy = [t for t in self._plans.values() if t.journal.state.spec.node_group == policy.name]
        if busy:
            state = busy[0].journal.state
            view.last_decision = f"plan {state.plan_id} is {state.status.value}"
            return
        now = self._clock.now()
        view.last_analysis_at = rfc3339(now)
        try:
            gathered = await gather_snapshot(
                self._cloud,
                self._cluster,
                cluster_identifier=self.config.cluster,
                now=now,
                datacenter=self._datacenter,
            )
        except SnapshotError as exc:
            view.last_decision = f"no analysis: {exc}"
            log.warning("node group %s: %s", policy.name, exc, extra={"node_group": policy.name})
            return
        for problem in gathered.problems:
            log.warning(
                "node group %s: %s", policy.name, problem, extra={"node_group": policy.name}
            )
        if self._reporter is not None and gathered.snapshot.node_groups:
            self._reporter.set_node_groups(gathered.snapshot.node_groups)
        analysis = analyze(
            gathered.snapshot,
            policy,
            now=rfc3339(now),
            last_plan_finished_at=self._last_finished.get(policy.name),
        )
        spec = make_plan(analysis, policy, now=rfc3339(now))
        reasons = "; ".join(analysis.action_reasons) or "no reason given"
        if spec is None:
            fingerprint: tuple[object, ...] = ("none", analysis.action_reasons)
            view.last_decision = f"nothing to do: {reasons}"
            if fingerprint != view.fingerprint:
                view.fingerprint = fingerprint
                log.info(
                    "node group %s: nothing to replace: %s",
                    policy.name,
                    reasons,
                    extra={"node_group": policy.name},
                )
                if self._reporter is not None:
                    self._reporter.note_idle(policy.name, reasons)
            return
        fingerprint = (
            spec.recommended_action,
            spec.action_reasons,
            tuple((r.old_node, r.new_size_id) for r in spec.replacements),
        )
        if spec.recommended_action is not Action.PROCEED and fingerprint == view.fingerprint:
            view.last_decision = f"{spec.recommended_action.value} (unchanged): {reasons}"
            return
        view.fingerprint = fingerprint
        journal = await PlanJournal.load(self._store, spec.plan_id)
        self._subscribe(journal)
        await journal.record(ev.PlanProposed(plan_id=spec.plan_id, at=self._now(), plan=spec))
        tracked = _Tracked(journal=journal)
        self._plans[spec.plan_id] = tracked
        await self._decide(tracked)
        view.last_decision = f"plan {spec.plan_id}: {tracked.journal.state.status.value}"

    async def _decide(self, tracked: _Tracked) -> None:
        """What a proposed plan becomes: approved and run, waiting for a person, or closed."""
        state = tracked.journal.state
        spec = state.spec
        reasons = "; ".join(spec.action_reasons) or "no reason given"
        at = self._now()
        action = spec.recommended_action
        if action is Action.PROCEED and spec.require_approval:
            await tracked.journal.record(
                ev.PlanApprovalRequested(
                    plan_id=spec.plan_id,
                    at=at,
                    reason="requireApproval is set: approve or reject it",
                )
            )
        elif action is Action.PROCEED:
            await tracked.journal.record(ev.PlanApproved(plan_id=spec.plan_id, at=at, by="policy"))
            self._start(tracked)
        elif action is Action.NEEDS_REVIEW:
            await tracked.journal.record(
                ev.PlanApprovalRequested(
                    plan_id=spec.plan_id, at=at, reason=f"needs review: {reasons}"
                )
            )
        else:
            await tracked.journal.record(
                ev.PlanRejected(
                    plan_id=spec.plan_id, at=at, by="planner", reason=f"{action.value}: {reasons}"
                )
            )
            self._plans.pop(spec.plan_id, None)
            self._finished[spec.plan_id] = tracked.journal.state
        self._set_status()

    async def _recheck(self, state: PlanState) -> Sequence[CheckResult]:
        """The safety checks again, for what is left of this plan, on a fresh snapshot.

        The executor asks before each batch that has not started and when it resumes work in
        flight after a restart. Checked: cluster health; the group's node count now and through
        the remaining batches (no cooldown: this plan is the one running); the disruption
        budgets of the next batch's nodes, by the planner's rule; the maintenance window for
        the remaining estimate. Capacity was simulated when the plan was made; at run time the
        drain's wait for the evicted pods to run elsewhere guards it.

        A Kubernetes API that cannot be read raises (SnapshotError) instead of failing the
        cluster-health check: the executor retries the checks, and rolls back only when they
        still cannot run after `call_retry_s`, not on one unanswered read.
        """
        assert self._cloud is not None and self._cluster is not None
        policy = self._policy(state.spec.node_group)
        now = self._clock.now()
        gathered = await gather_snapshot(
            self._cloud,
            self._cluster,
            cluster_identifier=self.config.cluster,
            now=now,
            datacenter=self._datacenter,
        )
        if gathered.problems:
            raise SnapshotError("; ".join(gathered.problems))
        return recheck_plan(state, gathered.snapshot, policy, now=rfc3339(now))

    def _policy(self, name: str) -> NodeGroupPolicy:
        for policy in self.config.node_groups:
            if policy.name == name:
                return policy
        return NodeGroupPolicy(name=name, cluster=self.config.cluster)

    # -- housekeeping --

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

    def _set_status(self) -> None:
        running = [t.journal.state for t in self._plans.values()]
        if not running:
            text = "idle: " + "; ".join(
                f"{name}: {view.last_decision or 'not analysed yet'}"
                for name, view in sorted(self._groups.items())
            )
        else:
            text = "; ".join(
                f"plan {s.plan_id} {s.status.value} "
                f"({sum(1 for r in s.replacements.values() if r.status is ReplacementStatus.DONE)}"
                f"/{len(s.replacements)} nodes)"
                for s in running
            )
        by_state: dict[str, int] = {}
        for s in running:
            by_state[s.status.value] = by_state.get(s.status.value, 0) + 1
        self.metrics.set_plans_in_flight(by_state)
        text = text[:400]
        if text != self._last_status:
            self._last_status = text
            self._notifier.status(text)

    def report(self) -> dict[str, Any]:
        """Every plan this process touched, as it holds them (`run --once` prints this)."""
        plans = {pid: t.journal.state for pid, t in self._plans.items()}
        plans.update(self._finished)
        return {"plans": {pid: _plan_summary(s) for pid, s in sorted(plans.items())}}

    # -- ControlTarget --

    def status(self) -> dict[str, Any]:
        plans = [
            _plan_summary(t.journal.state) | {"running": t.task is not None}
            for t in self._plans.values()
        ]
        return {
            "plans": sorted(plans, key=lambda p: str(p["plan_id"])),
            "node_groups": {
                name: {"last_analysis_at": v.last_analysis_at, "last_decision": v.last_decision}
                for name, v in sorted(self._groups.items())
            },
        }

    def _tracked(self, plan_id: str) -> _Tracked:
        tracked = self._plans.get(plan_id)
        if tracked is None:
            matches = [t for pid, t in self._plans.items() if pid.startswith(plan_id)]
            if len(matches) == 1:
                return matches[0]
            if plan_id in self._finished:
                state = self._finished[plan_id]
                raise ControlError(409, f"plan {plan_id} is {state.status.value}")
            raise ControlError(404, f"no plan {plan_id} in flight")
        return tracked

    def _require_leader(self) -> None:
        if self._elector is None or not self._elector.is_leader():
            raise ControlError(503, "this daemon does not hold the lease; ask the leader")

    async def approve(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        state = tracked.journal.state
        if state.status is not PlanStatus.AWAITING_APPROVAL:
            raise ControlError(
                409, f"plan {state.plan_id} is {state.status.value}, not awaiting approval"
            )
        await tracked.journal.record(ev.PlanApproved(plan_id=state.plan_id, at=self._now(), by=by))
        self._start(tracked)
        return _plan_summary(tracked.journal.state)

    async def reject(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        state = tracked.journal.state
        if state.status not in (PlanStatus.PROPOSED, PlanStatus.AWAITING_APPROVAL):
            raise ControlError(
                409,
                f"plan {state.plan_id} is {state.status.value}; only a plan awaiting "
                "approval can be rejected (cancel a running one)",
            )
        await tracked.journal.record(
            ev.PlanRejected(
                plan_id=state.plan_id, at=self._now(), by=by, reason=reason or "rejected"
            )
        )
        self._plans.pop(state.plan_id, None)
        self._finished[state.plan_id] = tracked.journal.state
        return _plan_summary(tracked.journal.state)

    async def pause(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        if tracked.runner is None or tracked.journal.state.status is not PlanStatus.EXECUTING:
            state = tracked.journal.state
            raise ControlError(409, f"plan {state.plan_id} is {state.status.value}, not executing")
        try:
            await tracked.runner.pause(by, reason)
        except InvalidRequest as exc:
            raise ControlError(409, str(exc)) from None
        return _plan_summary(tracked.journal.state)

    async def resume(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        state = tracked.journal.state
        if state.status is not PlanStatus.PAUSED:
            raise ControlError(409, f"plan {state.plan_id} is {state.status.value}, not paused")
        if tracked.runner is None:
            tracked.runner = PlanRunner(tracked.journal, self._context())
        try:
            await tracked.runner.resume(by)
        except InvalidRequest as exc:
            raise ControlError(409, str(exc)) from None
        self._start(tracked)
        return _plan_summary(tracked.journal.state)

    async def cancel(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        self._require_leader()
        tracked = self._tracked(plan_id)
        state = tracked.journal.state
        if state.status in (
            PlanStatus.PROPOSED,
            PlanStatus.AWAITING_APPROVAL,
            PlanStatus.APPROVED,
        ) and (tracked.task is None):
            await tracked.journal.record(
                ev.PlanCancelled(
                    plan_id=state.plan_id, at=self._now(), by=by, reason=reason or "cancelled"
                )
            )
            self._plans.pop(state.plan_id, None)
            self._finished[state.plan_id] = tracked.journal.state
            return _plan_summary(tracked.journal.state)
        if tracked.runner is None:
            tracked.runner = PlanRunner(tracked.journal, self._context())
        try:
            await tracked.runner.cancel(by, reason or "cancelled")
        except InvalidRequest as exc:
            raise ControlError(409, str(exc)) from None
        self._start(tracked)
        return _plan_summary(tracked.journal.state)


def recheck_plan(
    state: PlanState, snapshot: ClusterSnapshot, policy: NodeGroupPolicy, *, now: str
) -> list[CheckResult]:
    """Four of the planner's checks applied to the part of `state`'s plan not yet done."""
    spec = state.spec
    instant = parse_instant(now)
    nodes = group_nodes(snapshot, spec.node_group, map_workers(snapshot))
    present = {n.name for n in snapshot.nodes}
    # This plan's new nodes belong to the group from the moment they joined, labelled or not.
    members = {n.name for n in nodes} | {
        r.new_node for r in state.replacements.values() if r.new_node and r.new_node in present
    }
    by_id = {r.replacement_id: r for r in spec.replacements}
    open_batches: list[list[ReplacementSpec]] = []
    for batch in spec.batches:
        left = [
            by_id[rid] for rid in batch if state.replacements[rid].status not in _REPLACEMENT_ENDS
        ]
        if left:
            open_batches.append(left)
    # Per open batch: nodes still to add, old nodes still to remove (what the world shows).
    shape = [
        (
            sum(
                1
                for r in batch
                if r.new_size_id is not None
                and state.replacements[r.replacement_id].new_node not in present
            ),
            sum(1 for r in batch if r.old_node in present),
        )
        for batch in open_batches
    ]
    results = [check_cluster_health(snapshot, nodes, spec.min_healthy_percent)]
    path = node_count_path(len(members), spec.strategy, shape)
    results.append(
        check_node_group_health(
            path,
            min_nodes=spec.min_nodes,
            max_nodes=policy.max_nodes,
            now=instant,
            last_plan_finished_at=None,
            cooldown_s=0,
        )
    )
    next_batch = [
        r.old_node
        for r in (open_batches[0] if open_batches else [])
        if state.replacements[r.replacement_id].status in _NOT_DRAINED
    ]
    pods_by_node: dict[str, list[PodInfo]] = {}
    for pod in snapshot.pods:
        if pod.node_name in next_batch and is_movable(pod):
            pods_by_node.setdefault(pod.node_name, []).append(pod)
    results.append(_budgets_now(next_batch, pods_by_node, snapshot.pdbs, policy.respect_pdbs))
    remaining = sum(len(b) for b in open_batches)
    remaining_s = spec.estimated_duration_s * remaining / max(1, len(spec.replacements))
    results.append(check_timing(policy.maintenance_windows, instant, remaining_s))
    return results


_ENDED = frozenset(
    {ReplacementStatus.DONE, ReplacementStatus.ROLLED_BACK, ReplacementStatus.FAILED}
)


def _budgets_now(
    batch: list[str],
    pods_by_node: dict[str, list[PodInfo]],
    pdbs: Sequence[PdbInfo],
    respect_pdbs: bool,
) -> CheckResult:
    """The disruption-budget check at run time, for the next batch.

    The planner's rule (every matching pod of one node counted as one simultaneous disruption)
    decides whether a plan is made. Once it runs, the Eviction API is the authority: the drain
    evicts one pod at a time and waits on every 429, so a node holding more pods of a budget
    than it allows at this instant is slower, not unsafe (a warning). What fails the check is a
    budget the application already breaks (fewer healthy pods than it needs): draining more of
    it now would only deepen an outage someone else caused.
    """
    needs = disruption_needs([batch], pods_by_node, pdbs)
    touched = {n.pdb for n in needs}
    details: dict[str, str | int | float | bool | None] = {
        "pdbs": len(pdbs),
        "pdbs_touched": len(touched),
    }
    broken = [
        p
        for p in pdbs
        if f"{p.namespace}/{p.name}" in touched and p.current_healthy < p.desired_healthy
    ]
    if broken and respect_pdbs:
        first = broken[0]
        message = (
            f"PDB {first.namespace}/{first.name} has {first.current_healthy} healthy pods and "
            f"needs {first.desired_healthy}: the application is already disrupted"
        )
        return CheckResult(
            name="disruption_budgets", status=CheckStatus.FAILED, message=message, details=details
        )
    over = [n for n in needs if n.need > n.allowed]
    if over or not respect_pdbs:
        message = (
            "respectPDBs is off: budgets were not checked"
            if not respect_pdbs
            else f"node {over[0].node} holds {over[0].need} pods of PDB {over[0].pdb}, which "
            f"allows {over[0].allowed} now; evictions go one at a time and wait for the budget"
        )
        return CheckResult(
            name="disruption_budgets", status=CheckStatus.WARNING, message=message, details=details
        )
    return CheckResult(
        name="disruption_budgets",
        status=CheckStatus.PASSED,
        message=f"the next batch stays within its budgets ({len(touched)} PDBs touched)",
        details=details,
    )


_NOT_JOINED = frozenset(
    {
        ReplacementStatus.PLANNED,
        ReplacementStatus.CREATING_GROUP,
        ReplacementStatus.PROVISIONING,
        ReplacementStatus.JOINING,
    }
)
_NOT_DRAINED = frozenset(
    {
        *_NOT_JOINED,
        ReplacementStatus.READY,
        ReplacementStatus.CORDONING,
        ReplacementStatus.CORDONED,
        ReplacementStatus.DRAINING,
    }
)
SNAPSHOT_EVERY_S = 600.0
LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "vpsie-rebalancer"


def _plan_summary(state: PlanState) -> dict[str, Any]:
    spec = state.spec
    done = sum(1 for r in state.replacements.values() if r.status is ReplacementStatus.DONE)
    saving = state.realised_monthly_saving
    return {
        "plan_id": state.plan_id,
        "state": state.status.value,
        "node_group": spec.node_group,
        "strategy": spec.strategy.value,
        "replacements_done": done,
        "replacements_total": len(state.replacements),
        "recommended_action": spec.recommended_action.value,
        "monthly_saving_planned": str(spec.monthly_saving),
        "realised_monthly_saving": None if saving is None else str(saving),
        "replacements": {rid: r.status.value for rid, r in sorted(state.replacements.items())},
    }


async def _first(*aws: Awaitable[object]) -> None:
    """Wait until the first of `aws` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
