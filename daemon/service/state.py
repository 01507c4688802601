"""What the running service holds, shared by its parts.

`Service` (lifecycle.py) is built in layers, each in its own module and each one concern:
`ServiceState` (here: the configuration, the plans tracked, the ports, the status line),
`Runners` (runners.py: a plan's journal and the task running it), `Decisions` (decisions.py: the
analysis round and what a proposed plan becomes), `PlanControl` (control_target.py: the control
API's callbacks), and `Service` (lifecycle.py: start, the lease, the loop, stop).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.metrics import Metrics
from adapters.systemd_notify import Notifier
from daemon.clock import SystemClock, rfc3339
from daemon.config import Config
from daemon.control import Readiness
from daemon.executor.journal import PlanJournal, Subscriber
from daemon.executor.runner import PlanRunner
from daemon.ports import Clock, Cloud, Cluster
from daemon.service.leadership import LeaderElector
from daemon.service.reporter import Reporter
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


@dataclass(slots=True)
class GroupView:
    """What the service last concluded for one node group (for `status` and STATUS=)."""

    last_analysis_at: str = ""
    last_decision: str = ""
    next_analysis_mono: float = 0.0
    fingerprint: tuple[object, ...] = ()


WorldWrapper = Callable[[Cloud, Cluster], tuple[Cloud, Cluster]]
"""A hook given from outside: wraps the ports the service acts through (the crash suite's)."""


class ServiceState:
    """What a running service holds: its configuration, the plans it tracks, its ports."""

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
    ) -> None:
        self.config = config
        self._config_path = config_path
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._once = once
        self._wrap_world = wrap_world
        self._observers = tuple(observers)
        self._notifier = notifier if notifier is not None else Notifier({})
        self._identity = identity
        self.metrics = metrics if metrics is not None else Metrics()
        self._rng = rng if rng is not None else random.Random()
        self.readiness = Readiness()
        self._lease_duration_s = lease_duration_s
        self._poll_interval_s = poll_interval_s
        self._datacenter = datacenter
        self._plans: dict[str, Tracked] = {}
        self._finished: dict[str, PlanState] = {}  # plans this process saw end
        self._groups: dict[str, GroupView] = {}
        self._last_finished: dict[str, str] = {}
        # Workers our plans added, by the log at recovery: identifier -> size id.
        self._logged_sizes: dict[str, int] = {}
        # What the last analysis found that does not add up (daemon/service/accounting.py).
        self._world_notes: list[str] = []
        self._reported_orphans: set[str] = set()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._store: EventStore | None = None
        self._cloud: Cloud | None = None
        self._cluster: Cluster | None = None
        self._reporter: Reporter | None = None
        self._elector: LeaderElector | None = None
        self._last_status = ""

    def logged_sizes(self) -> dict[str, int]:
        """What the log says of the workers our plans added and did not delete: the recovered
        index, brought up to date with the plans this process ran."""
        found = dict(self._logged_sizes)
        for state in [*(t.journal.state for t in self._plans.values()), *self._finished.values()]:
            for r_spec in state.spec.replacements:
                r = state.replacements[r_spec.replacement_id]
                if r.old_deleted:
                    found.pop(r_spec.old_worker, None)
                if r.new_worker and r.new_deleted:
                    found.pop(r.new_worker, None)
                elif r.new_worker and r_spec.new_size_id is not None:
                    found[r.new_worker] = r_spec.new_size_id
        return found

    def _now(self) -> str:
        return rfc3339(self._clock.now())

    def _policy(self, name: str) -> NodeGroupPolicy:
        for policy in self.config.node_groups:
            if policy.name == name:
                return policy
        return NodeGroupPolicy(name=name, cluster=self.config.cluster)

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
