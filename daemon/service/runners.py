"""Runners: each plan in flight has a journal and, while it runs, a `PlanRunner` task.

A journal gets the same subscribers whoever opened it: the observers the service was given
(console progress, the crash suite's injector), the reporter (metrics and Kubernetes Events),
and the service's wake-up. A runner that ends hands its plan over to `finished`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from daemon.executor.journal import PlanJournal
from daemon.executor.runner import ExecutionContext, PlanRunner
from daemon.service.recheck import recheck_live
from daemon.service.state import GroupView, ServiceState, Tracked
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.plan import CheckResult

log = logging.getLogger(__name__)


class Runners(ServiceState):
    """Journals and the runner tasks of the plans in flight."""

    async def _journal(self, plan_id: str) -> PlanJournal:
        assert self._store is not None
        journal = await PlanJournal.load(self._store, plan_id)
        self._subscribe(journal)
        return journal

    def _subscribe(self, journal: PlanJournal) -> None:
        for observer in self._observers:
            journal.subscribe(observer)
        if self._reporter is not None:
            journal.subscribe(self._reporter.on_event)
        journal.subscribe(self._on_recorded)

    def _on_recorded(self, state: PlanState, event: ev.Event) -> None:
        self._wake.set()

    def _start(self, tracked: Tracked) -> None:
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

    async def _recheck(self, state: PlanState) -> Sequence[CheckResult]:
        """The executor's question before each batch; answered in recheck.py."""
        assert self._cloud is not None and self._cluster is not None
        return await recheck_live(
            state,
            self._cloud,
            self._cluster,
            self._policy(state.spec.node_group),
            cluster_identifier=self.config.cluster,
            clock=self._clock,
            datacenter=self._datacenter,
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
            self._plans.pop(state.plan_id, None)
            tracked.runner = None
            self._finished[state.plan_id] = state
            if state.started_at:
                self._last_finished[state.spec.node_group] = state.finished_at
            self._groups.setdefault(
                state.spec.node_group, GroupView()
            ).last_decision = f"plan {state.plan_id} {state.status.value}"
        self._wake.set()

    async def _stop_runners(self) -> None:
        tasks = []
        for tracked in self._plans.values():
            if tracked.runner is not None and tracked.task is not None:
                tracked.runner.request_stop()
                tasks.append(tracked.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
