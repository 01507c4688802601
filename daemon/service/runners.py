"""Runners: each plan in flight has a journal and, while it runs, a `PlanRunner` task.

A journal gets the same subscribers whoever opened it: the observers the service was given
(console progress, the crash suite's injector), the reporter (metrics and Kubernetes Events),
and the service's wake-up. A runner that ends hands its plan over to the context's `finished`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from daemon.executor.journal import PlanJournal, Subscriber
from daemon.executor.runner import ExecutionContext, PlanRunner
from daemon.service.recheck import recheck_live
from daemon.service.state import ServiceContext, Tracked
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.plan import CheckResult

log = logging.getLogger(__name__)


class Runners:
    """Journals and the runner tasks of the plans in flight."""

    def __init__(self, ctx: ServiceContext, observers: Sequence[Subscriber] = ()) -> None:
        self._ctx = ctx
        self._observers = tuple(observers)

    async def journal(self, plan_id: str) -> PlanJournal:
        """The plan's journal, loaded from the event log, with every subscriber."""
        journal = await PlanJournal.load(self._ctx.event_store(), plan_id)
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
        task = asyncio.create_task(self.runner(tracked).run())
        tracked.task = task
        task.add_done_callback(functools.partial(self._runner_done, tracked))

    def _context(self, node_group: str) -> ExecutionContext:
        cloud, cluster = self._ctx.ports()
        return ExecutionContext(
            cloud=cloud,
            cluster=cluster,
            clock=self._ctx.clock,
            poll_interval_s=self._ctx.poll_interval_s,
            # kubectl drain retries a refused eviction every 5 s; doubling from 1 s up to 5 s
            # keeps a budget-bound drain close to the pods' own start time.
            eviction_backoff_s=(1.0, 5.0),
            recheck=self._recheck,
            skip_local_storage=self._ctx.policy(node_group).skip_nodes_with_local_storage,
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
            tracked.runner = None
            self._ctx.retire(state)
            if state.started_at:
                self._ctx.last_finished[state.spec.node_group] = state.finished_at
            self._ctx.group(
                state.spec.node_group
            ).last_decision = f"plan {state.plan_id} {state.status.value}"
        self._ctx.wake.set()

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
