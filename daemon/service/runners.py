"""Runners: each plan in flight has a journal and, while it runs, a `PlanRunner` task.

A journal gets the same subscribers whoever opened it: the observers the service was given
(console progress, the crash suite's injector), the reporter (metrics and Kubernetes Events),
and the service's wake-up. A runner that ends hands its plan over to the context's `finished`.

While the daemon leads, journals carry its leadership term and runners act through fenced
ports (fencing.py). Nothing is left without a runner: a runner that ends while its plan is still
executing or rolling back, on an error or because a pause and a resume crossed, is started
again by `revive()` (called from the service's loop) after a backoff that doubles from 1 s to
60 s. A plan parked because VPSie or Kubernetes did not answer while its open intents were
settled (`WorldUnavailable`) is retried for as long as the outage lasts; after `MAX_RESTARTS`
restarts in a row that recorded nothing for any other reason, the plan is left for a
person and reported (`status` shows `runner: "stopped"` and the error; the
`plans_without_runner` metric counts it). A runner stopped because the daemon does not lead
any more is not restarted: the next leader runs the plan. Nor is one stopped because the event
log failed (the database dropped the connection: `on_store_failed`): its journal may be behind
the log, so the service parks, and every runner starts again from the log folded anew.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from daemon.executor.journal import PlanJournal, Subscriber
from daemon.executor.runner import (
    WINDOW_PAUSER,
    ExecutionContext,
    InvalidRequest,
    PlanRunner,
    WorldUnavailable,
)
from daemon.service.fencing import FencedCloud, FencedCluster
from daemon.service.leadership import NotLeading
from daemon.service.recheck import recheck_live
from daemon.service.state import ServiceContext, Tracked
from daemon.service.waiting import paused_for_window
from eventstore import ConcurrencyError, EventStoreError, FencedError
from planner.windows import window_state
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import PlanStatus
from statemachine.plan import CheckResult

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 60.0)
MAX_RESTARTS = 10
NEEDS_RUNNER = (PlanStatus.EXECUTING, PlanStatus.ROLLING_BACK)


class Runners:
    """Journals and the runner tasks of the plans in flight."""

    def __init__(
        self,
        ctx: ServiceContext,
        observers: Sequence[Subscriber] = (),
        *,
        on_fenced: Callable[[FencedError], None] | None = None,
        on_store_failed: Callable[[EventStoreError], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._observers = tuple(observers)
        self._on_fenced = on_fenced
        self._on_store_failed = on_store_failed

    async def journal(self, plan_id: str) -> PlanJournal:
        """The plan's journal, loaded from the event log, with every subscriber; its appends
        carry the leadership term."""
        journal = await PlanJournal.load(self._ctx.event_store(), plan_id, term=self._ctx.term)
        self._subscribe(journal)
        return journal

    def _subscribe(self, journal: PlanJournal) -> None:
        for observer in self._observers:
            journal.subscribe(observer)
        if self._ctx.reporter is not None:
            journal.subscribe(self._ctx.reporter.on_event)
        journal.subscribe(self._on_recorded)

    def _on_recorded(self, state: PlanState, event: ev.Event) -> None:
        self._ctx.wake.set()

    def runner(self, tracked: Tracked) -> PlanRunner:
        """The plan's runner, made when it has none yet."""
        if tracked.runner is None:
            group = tracked.journal.state.spec.node_group
            tracked.runner = PlanRunner(tracked.journal, self._context(group))
        return tracked.runner

    def start(self, tracked: Tracked) -> None:
        """Run the plan in its own task, unless it is running already."""
        self._ctx.ports()
        if tracked.task is not None and not tracked.task.done():
            return
        tracked.restart_at = None
        tracked.version_at_start = tracked.journal.version
        task = asyncio.create_task(self.runner(tracked).run())
        tracked.task = task
        task.add_done_callback(functools.partial(self._runner_done, tracked))

    def _context(self, node_group: str) -> ExecutionContext:
        cloud, cluster = self._ctx.ports()
        guard = self._ctx.guard
        if guard is not None:
            cloud, cluster = FencedCloud(cloud, guard), FencedCluster(cluster, guard)
        return ExecutionContext(
            cloud=cloud,
            cluster=cluster,
            fence=guard,
            clock=self._ctx.clock,
            poll_interval_s=self._ctx.poll_interval_s,
            # kubectl drain retries a refused eviction every 5 s; doubling from 1 s up to 5 s
            # keeps a budget-bound drain close to the pods' own start time.
            eviction_backoff_s=(1.0, 5.0),
            recheck=self._recheck,
            skip_local_storage=self._ctx.policy(node_group).skip_nodes_with_local_storage,
            on_unaccounted=self._ctx.unaccounted.note if self._ctx.unaccounted else None,
            on_leftover=self._ctx.leftovers.note if self._ctx.leftovers else None,
        )

    async def _recheck(self, state: PlanState) -> Sequence[CheckResult]:
        """The executor's question before each batch; answered in recheck.py."""
        cloud, cluster = self._ctx.ports()
        return await recheck_live(
            state,
            cloud,
            cluster,
            self._ctx.policy(state.spec.node_group),
            cluster_identifier=self._ctx.config.cluster,
            clock=self._ctx.clock,
            datacenter=self._ctx.datacenter,
        )

    def _runner_done(self, tracked: Tracked, task: asyncio.Task[PlanState]) -> None:
        state = tracked.journal.state
        error = ""
        if task.cancelled():
            log.warning("runner of plan %s was cancelled", state.plan_id)
        elif isinstance(exc := task.exception(), NotLeading):
            log.warning(
                "runner of plan %s stopped before acting: %s",
                state.plan_id,
                exc,
                extra={"plan_id": state.plan_id},
            )
        elif isinstance(exc, FencedError):
            if self._on_fenced is not None:
                self._on_fenced(exc)
        elif isinstance(exc, EventStoreError) and not isinstance(exc, ConcurrencyError):
            # The log could not be written or read (the database dropped the connection): what
            # the journal holds may be behind the log. Not restarted here: the service parks,
            # and folds the log again before any runner acts.
            error = str(exc)
            log.warning(
                "plan %s parked: the event log failed: %s",
                state.plan_id,
                exc,
                extra={"plan_id": state.plan_id},
            )
            if self._on_store_failed is not None:
                self._on_store_failed(exc)
        elif isinstance(exc, WorldUnavailable):
            error = str(exc)
            log.warning(
                "plan %s parked: %s; trying again later",
                state.plan_id,
                exc,
                extra={"plan_id": state.plan_id},
            )
        elif exc is not None:
            error = str(exc) or type(exc).__name__
            log.error(
                "runner of plan %s stopped on an error: %s",
                state.plan_id,
                exc,
                exc_info=exc,
                extra={"plan_id": state.plan_id},
            )
        tracked.task = None
        runner = tracked.runner
        if (
            not state.terminal
            and state.status in NEEDS_RUNNER
            and not task.cancelled()
            and not isinstance(task.exception(), (NotLeading, FencedError))
            and not _store_failure(task.exception())
            and runner is not None
            and not runner.stop_requested
        ):
            self._schedule_restart(
                tracked, error, parked=isinstance(task.exception(), WorldUnavailable)
            )
        if state.terminal:
            tracked.runner = None
            self._ctx.retire(state)
            if state.started_at:
                self._ctx.last_finished[state.spec.node_group] = state.finished_at
            self._ctx.group(
                state.spec.node_group
            ).last_decision = f"plan {state.plan_id} {state.status.value}"
        self._ctx.wake.set()

    def _schedule_restart(self, tracked: Tracked, error: str, *, parked: bool = False) -> None:
        plan_id = tracked.journal.plan_id
        if tracked.journal.version != tracked.version_at_start:
            tracked.restarts = 0  # it made progress: the next failure starts the backoff over
        tracked.last_error = error or tracked.last_error
        tracked.parked = parked
        if tracked.restarts >= MAX_RESTARTS:
            tracked.restart_at = None
            log.error(
                "plan %s is %s with no runner after %d restarts that recorded nothing; it needs "
                "a person (last error: %s)",
                plan_id,
                tracked.journal.state.status.value,
                tracked.restarts,
                tracked.last_error or "none",
                extra={"plan_id": plan_id},
            )
            return
        first, most = RESTART_BACKOFF_S
        delay = min(first * 2**tracked.restarts, most)
        # A plan parked by an outage is retried for as long as the outage lasts.
        tracked.restarts = min(tracked.restarts + 1, MAX_RESTARTS - 1 if parked else MAX_RESTARTS)
        tracked.restart_at = self._ctx.clock.monotonic() + delay
        log.warning(
            "plan %s is %s and its runner ended; starting it again in %g s",
            plan_id,
            tracked.journal.state.status.value,
            delay,
            extra={"plan_id": plan_id},
        )

    def revive(self) -> float | None:
        """Start the runners whose restart is due; when the next one is (monotonic), or None."""
        now = self._ctx.clock.monotonic()
        upcoming: list[float] = []
        for tracked in list(self._ctx.plans.values()):
            at = tracked.restart_at
            if at is None or tracked.task is not None:
                continue
            if tracked.journal.state.status not in NEEDS_RUNNER:
                tracked.restart_at = None
                continue
            if at <= now:
                self.start(tracked)
            else:
                upcoming.append(at)
        return min(upcoming, default=None)

    async def reopen_windows(self) -> float | None:
        """Resume the plans the executor paused for a closed maintenance window whose next
        window is open now; returns when (monotonic) the next of the others opens, or None.
        A plan a person paused is left to a person."""
        now = self._ctx.clock.now()
        instant = datetime.fromtimestamp(now, tz=UTC)
        upcoming: list[float] = []
        for tracked in list(self._ctx.plans.values()):
            state = tracked.journal.state
            if not paused_for_window(state):
                continue
            windows = self._ctx.policy(state.spec.node_group).maintenance_windows
            found = window_state(windows, instant)
            if not found.open_now:
                if found.next_start is not None:
                    wait = max(0.0, found.next_start.timestamp() - now)
                    upcoming.append(self._ctx.clock.monotonic() + wait)
                continue
            log.info(
                "plan %s: a maintenance window is open; resuming it",
                state.plan_id,
                extra={"plan_id": state.plan_id},
            )
            try:
                await self.runner(tracked).resume(WINDOW_PAUSER)
            except InvalidRequest:  # resumed or cancelled meanwhile
                continue
            self.start(tracked)
        return min(upcoming, default=None)

    def without_runner(self) -> list[Tracked]:
        """Plans executing or rolling back that no runner drives now."""
        return [
            t
            for t in self._ctx.plans.values()
            if t.task is None and t.journal.state.status in NEEDS_RUNNER
        ]

    def request_stop(self) -> None:
        """Ask every running plan to finish its current step (recorded) and stop."""
        for tracked in self._ctx.plans.values():
            if tracked.runner is not None:
                tracked.runner.request_stop()

    async def stop(self) -> None:
        """Ask every running plan to stop, and wait until each has."""
        tasks = []
        for tracked in self._ctx.plans.values():
            if tracked.runner is not None and tracked.task is not None:
                tracked.runner.request_stop()
                tasks.append(tracked.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _store_failure(exc: BaseException | None) -> bool:
    return isinstance(exc, EventStoreError) and not isinstance(exc, ConcurrencyError)
