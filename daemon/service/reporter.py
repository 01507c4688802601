"""What the journals tell the outside world: Prometheus metrics and Kubernetes Events.

Every plan's journal has the `Reporter` as a subscriber. Events are queued and sent by a task
(`Reporter.run`), so a slow Kubernetes API never holds up a step; progress gauges and the
per-batch and per-plan durations are set as the events arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from adapters.errors import AdapterError
from adapters.metrics import Metrics
from daemon.ports import Cluster
from planner.health import Unhealthy
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import REPLACEMENT_TERMINAL, PlanStatus, ReplacementStatus
from statemachine.plan import CheckResult, CheckStatus, Exclusion, Opportunity
from statemachine.world import NodeGroupSpec

log = logging.getLogger(__name__)


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


def repair_signal(reason: str) -> str:
    """The signal of a repair's reason, "repair (<signal>): ..." (see planner/health.py)."""
    head, sep, _ = reason.partition("):")
    return head.removeprefix("repair (") if sep and head.startswith("repair (") else "unknown"


class Reporter:
    """Journal subscriber: Prometheus metrics and Kubernetes Events (the seed's reasons).

    Events are queued here and sent by `run()`, so a slow or failing Kubernetes API never holds
    up a step; a full queue drops the oldest-to-be-sent Event with a log line, never blocks.
    Plan-level Events go on the node group's NodeGroup resource when the cluster has one, else
    on the daemon's Lease; node-level Events go on the Node.
    """

    QUEUE = 1000
    # A node left out is named in an Event when first seen with a reason, then again only
    # after this long if still left out for that reason: not every analysis interval.
    LEFT_OUT_EVERY_S = 6 * 3600.0

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
        # (node group, node, reason) -> when (monotonic seconds) its Event was last queued.
        self._left_out: dict[tuple[str, str, str], float] = {}
        self.sent = 0
        self.dropped = 0

    def note_idle(self, node_group: str, reasons: str) -> None:
        """An analysis found nothing to replace: say why, once per change."""
        self._emit(self._group(node_group), "RebalanceNotNeeded", reasons)

    def note_left_out(
        self, node_group: str, exclusions: Sequence[Exclusion], now_mono: float
    ) -> None:
        """Nodes an analysis left out: a `NodeLeftOut` Event on each Node, with its reason.

        Rate limited per node and reason (`LEFT_OUT_EVERY_S`); a node no longer left out is
        forgotten, so it is named again at once if it is left out later.
        """
        current = {(node_group, x.node, x.reason): x for x in exclusions}
        for key in [k for k in self._left_out if k[0] == node_group and k not in current]:
            del self._left_out[key]
        for key, x in current.items():
            last = self._left_out.get(key)
            if last is not None and now_mono - last < self.LEFT_OUT_EVERY_S:
                continue
            self._left_out[key] = now_mono
            self._emit(
                Regarding("Node", x.node),
                "NodeLeftOut",
                f"Not replaced by the rebalancer ({x.reason}): {x.message}",
            )

    def set_node_groups(self, specs: Sequence[NodeGroupSpec]) -> None:
        self._group_objects = {
            s.name: Regarding("NodeGroup", s.name, s.namespace or "default") for s in specs
        }

    def node_without_worker(self, name: str) -> None:
        """A Node object whose VPSie worker no longer exists (NotReady, left behind)."""
        self._emit(
            Regarding(kind="Node", name=name),
            "NodeWithoutWorker",
            f"node {name} is NotReady and VPSie lists no worker for it; nothing on VPSie's "
            "side deletes Node objects",
            "Warning",
        )

    def leftover_deleted(self, name: str) -> None:
        """A Node object a plan of ours left behind, deleted (leftovers.py)."""
        self._emit(
            Regarding(kind="Node", name=name),
            "LeftoverNodeDeleted",
            f"deleted node {name}: its VPSie worker was deleted by a plan of the rebalancer, "
            "and it stayed behind NotReady",
        )

    def node_unhealthy(self, u: Unhealthy, outlook: str) -> None:
        """A node shows a repair signal (once per node and signal)."""
        self._emit(
            Regarding("Node", u.node),
            "NodeUnhealthy",
            f"node {u.node} is unhealthy ({u.signal.value}: {u.detail}) since {u.since}; "
            f"{outlook}",
            "Warning",
        )

    def repair_blocked(self, node_group: str, reason: str) -> None:
        """Repair of a group stops (once per distinct reason)."""
        self._emit(self._group(node_group), "NodeRepairBlocked", reason, "Warning")

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
            case ev.PlanProposed() if spec.opportunity is Opportunity.REPAIR:
                for r in spec.replacements:
                    self._emit(
                        Regarding("Node", r.old_node),
                        "NodeRepairStarted",
                        f"Repairing node {r.old_node} (plan {spec.plan_id}): {r.reason}; "
                        + (f"a {r.new_size_name or r.new_size_id} worker replaces it"
                           if r.new_size_id is not None else "it is removed, not replaced"),
                        "Warning",
                    )
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
        # An add-only replacement has no old node: its events regard the node it added (once
        # joined), else the group.
        added = spec.adds_only
        old = (
            Regarding("Node", spec.old_node) if not added
            else Regarding("Node", r.new_node) if r.new_node else where
        )
        subject = f"node {r.new_node or 'added'}" if added else spec.old_node
        purpose = "to grow the group" if added else f"to replace {spec.old_node}"
        key = (state.plan_id, rid)
        match event:
            case ev.WorkerAddRequested(group_id=group_id):
                self._marks[(*key, "provision")] = event.at
                self._emit(
                    where,
                    "NodeProvisioning",
                    f"Provisioning a {spec.new_size_name or spec.new_size_id} worker in VPSie "
                    f"group {group_id} {purpose}",
                )
            case ev.NodeJoined(node_name=node):
                start = self._marks.pop((*key, "provision"), r.started_at)
                self._metrics.node_provisioned(group, _seconds_between(start, event.at) or 0.0)
                self._emit(
                    Regarding("Node", node),
                    "NodeProvisioned",
                    f"Node {node} provisioned "
                    + ("(added to the group)" if added else f"(replaces {spec.old_node})"),
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
                    (f"The node added to group {group}" if added
                     else f"The replacement of {spec.old_node}")
                    + f" was not Ready after {waited:.0f}s",
                    "Warning",
                )
            case ev.ReplacementRollbackStarted(reason=reason):
                self._emit(old, "NodeFailed", f"Rolling back {subject}: {reason}", "Warning")
            case ev.ReplacementRolledBack():
                self._metrics.node_failed(group)
            case ev.ReplacementCompleted() if state.spec.opportunity is Opportunity.REPAIR:
                self._metrics.node_repaired(group, repair_signal(spec.reason))
                self._emit(old, "NodeRepaired", f"Node {spec.old_node} repaired: {spec.reason}"
                           + (f"; replaced by {r.new_node}" if r.new_node else ""))
            case ev.ReplacementCompleted(monthly_saving=saving):
                total = self._saved.get(group, Decimal(0)) + saving
                self._saved[group] = total
                self._metrics.set_savings_realized(group, float(total))
            case ev.ReplacementFailed(reason=reason):
                self._metrics.node_failed(group)
                self._emit(old, "NodeFailed", f"{subject}: {reason}", "Warning")
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
            if statuses and all(s in REPLACEMENT_TERMINAL for s in statuses):
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
        if index not in finished and statuses and all(s in REPLACEMENT_TERMINAL for s in statuses):
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
        ended = sum(1 for r in state.replacements.values() if r.status in REPLACEMENT_TERMINAL)
        batch = next(
            (
                i
                for i, ids in enumerate(state.spec.batches)
                if any(state.replacements[r].status not in REPLACEMENT_TERMINAL for r in ids)
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
