"""What the parts of the running service share: `ServiceContext`.

The service is a few objects that work together, each owning one concern:

- `ServiceContext` (here): the configuration, the clock, the metrics and systemd notifier, the
  ports once connected (event log, Cloud, Cluster, reporter), the plans tracked (in flight and
  finished), each node group's view, and the status line. It is passed to every other part.
- `Runners` (runners.py): a plan's journal and the task running it.
- `Decisions` (decisions.py): the analysis round and what a proposed plan becomes.
- `PlanControl` (control_target.py): the control API's callbacks.
- `Service` (lifecycle.py): start, the lease, the loop, signals, stop; it builds the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.metrics import Metrics
from adapters.systemd_notify import Notifier
from daemon.clock import rfc3339
from daemon.config import Config
from daemon.executor.journal import PlanJournal
from daemon.executor.runner import PlanRunner
from daemon.ports import Clock, Cloud, Cluster
from daemon.service.fencing import Guard
from daemon.service.leftovers import Leftovers
from daemon.service.recovery import Quarantines
from daemon.service.reporter import Reporter
from daemon.service.unaccounted import Unaccounted
from eventstore import EventStore
from planner import NodeGroupPolicy
from statemachine.fold import PlanState
from statemachine.machines import ReplacementStatus

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Tracked:
    """A plan this daemon knows is not finished: its journal, and its runner when running."""

    journal: PlanJournal
    runner: PlanRunner | None = None
    task: asyncio.Task[PlanState] | None = None
    # A runner that ended with the plan still executing or rolling back is started again
    # (runners.py): when, how many times in a row without progress, and what stopped it.
    restart_at: float | None = None
    restarts: int = 0
    version_at_start: int = 0
    last_error: str = ""
    parked: bool = False  # waiting for VPSie or Kubernetes to answer again (an outage)


@dataclass(slots=True)
class GroupView:
    """What the service last concluded for one node group (for `status` and STATUS=)."""

    last_analysis_at: str = ""
    last_decision: str = ""
    next_analysis_mono: float = 0.0
    fingerprint: tuple[object, ...] = ()
    # What the group waits for after its last analysis (waiting.py), when no plan is in flight.
    waiting: dict[str, Any] | None = None


WorldWrapper = Callable[[Cloud, Cluster], tuple[Cloud, Cluster]]
"""A hook given from outside: wraps the ports the service acts through (the crash suite's)."""


class ServiceContext:
    """What the parts of a running service share; each part is given this one object."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None,
        clock: Clock,
        metrics: Metrics,
        notifier: Notifier,
        poll_interval_s: float,
        datacenter: str,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.clock = clock
        self.metrics = metrics
        self.notifier = notifier
        self.poll_interval_s = poll_interval_s
        self.datacenter = datacenter
        self.plans: dict[str, Tracked] = {}  # in flight
        self.finished: dict[str, PlanState] = {}  # plans this process saw end
        self.groups: dict[str, GroupView] = {}
        self.last_finished: dict[str, str] = {}  # node group -> when its last run plan ended
        self.wake = asyncio.Event()  # set when something happened the main loop should see
        self.store: EventStore | None = None
        # While leading: the leadership term every append carries, and the check awaited
        # before every side effect (fencing.py). None while not leading.
        self.term: int | None = None
        self.guard: Guard | None = None
        self.quarantines = Quarantines()  # as last read from the log (blocks node groups)
        self.reporter: Reporter | None = None
        # Adds whose worker no plan accounts for (unaccounted.py); made when leading.
        self.unaccounted: Unaccounted | None = None
        # Node objects our plans left behind (leftovers.py); made when leading.
        self.leftovers: Leftovers | None = None
        # Workers our plans added, by the log at recovery: identifier -> size id.
        self.recovered_sizes: dict[str, int] = {}
        # What the last analysis found that does not add up (daemon/service/accounting.py).
        self.world_notes: list[str] = []
        self.reported_orphans: set[str] = set()
        self._cloud: Cloud | None = None
        self._cluster: Cluster | None = None
        self._last_status = ""

    def logged_sizes(self) -> dict[str, int]:
        """What the log says of the workers our plans added and did not delete: the recovered
        index, brought up to date with the plans this process ran."""
        found = dict(self.recovered_sizes)
        for state in [*(t.journal.state for t in self.plans.values()), *self.finished.values()]:
            for r_spec in state.spec.replacements:
                r = state.replacements[r_spec.replacement_id]
                if r.old_deleted:
                    found.pop(r_spec.old_worker, None)
                if r.new_worker and r.new_deleted:
                    found.pop(r.new_worker, None)
                elif r.new_worker and r_spec.new_size_id is not None:
                    found[r.new_worker] = r_spec.new_size_id
        return found

    def now(self) -> str:
        return rfc3339(self.clock.now())

    def policy(self, name: str) -> NodeGroupPolicy:
        for policy in self.config.node_groups:
            if policy.name == name:
                return policy
        return NodeGroupPolicy(name=name, cluster=self.config.cluster)

    def group(self, name: str) -> GroupView:
        return self.groups.setdefault(name, GroupView())

    def connect(self, cloud: Cloud, cluster: Cluster) -> None:
        self._cloud, self._cluster = cloud, cluster

    def ports(self) -> tuple[Cloud, Cluster]:
        """The Cloud and Cluster the service acts through; only once connected."""
        assert self._cloud is not None and self._cluster is not None
        return self._cloud, self._cluster

    def event_store(self) -> EventStore:
        assert self.store is not None
        return self.store

    def retire(self, state: PlanState) -> None:
        """A plan has ended: no longer in flight, remembered as finished."""
        self.plans.pop(state.plan_id, None)
        self.finished[state.plan_id] = state

    def set_status(self) -> None:
        running = [t.journal.state for t in self.plans.values()]
        if not running:
            text = "idle: " + "; ".join(
                f"{name}: {view.last_decision or 'not analysed yet'}"
                for name, view in sorted(self.groups.items())
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
            self.notifier.status(text)
