"""The rebalancing policy of one node group: what the planner is allowed to do.

Defined here, not in the daemon's configuration module, because the planner consumes it and may
import nothing but `statemachine`; `daemon.config` reads the TOML file and builds these. Every
field has the seed design's default, so a test or a tool can build a policy in one line.
Durations are seconds, money is `Decimal` US dollars per month, percentages are integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from decimal import Decimal

from statemachine.plan import Strategy

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintenanceWindow:
    """A weekly window in a time zone; `end <= start` means it ends on the next day.

    `days` name the day the window *starts* on (empty: every day); `start == end` is a whole day.
    """

    start: time
    end: time
    days: tuple[str, ...] = ()
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """A blast-radius limit: a count of nodes, or a percentage of a total.

    A percentage is rounded down (40% of 6 nodes is 2), as Cluster API's MachineHealthCheck
    does, but never below one node, so that a lone lost node of a small group is still
    repaired; `Limit(0)` (a count of zero) switches repair off."""

    value: int
    percent: bool = False

    def of(self, total: int) -> int:
        if not self.percent:
            return self.value
        return max(1, total * self.value // 100) if self.value > 0 else 0

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConditionRule:
    """A node condition a user lists as a reason to repair (e.g. node-problem-detector's
    `KernelDeadlock=True`), after it has held for `after_s` seconds."""

    type: str
    status: str = "True"
    after_s: float = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairPolicy:
    """When a node of the group counts as lost, and how many may be repaired at once.

    Tolerations count from the Ready condition's lastTransitionTime (a user condition: its
    own); the startup timeout from the Node's creation. Defaults, and why: docs/repair.md."""

    enabled: bool = True
    dry_run: bool = False  # report what would be repaired; never act
    # Add the replacement worker before the lost one is removed (off: remove only; the group
    # then shrinks until someone adds a worker).
    add_first: bool = True
    ready_false_s: float = 600.0  # Ready=False (the kubelet reports it is not ready)
    ready_unknown_s: float = 600.0  # Ready=Unknown (the kubelet stopped reporting)
    worker_gone_s: float = 60.0  # NotReady, and VPSie no longer lists the worker
    worker_stopped_s: float = 60.0  # NotReady, and VPSie lists the worker stopped/suspended
    startup_s: float = 900.0  # a Node that never became Ready since it registered
    conditions: tuple[ConditionRule, ...] = ()
    # VPSie worker `status` values (compared lower-cased) that mean stopped or suspended.
    stopped_statuses: tuple[str, ...] = ("stopped", "suspended", "off", "shutdown", "locked")
    max_unhealthy: Limit = Limit(value=40, percent=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeGroupPolicy:
    # The node group's name: the value of the `autoscaler.vpsie.com/nodegroup` label on its
    # nodes, or (for nodes without the label) the name of the VPSie node group of their worker.
    name: str
    cluster: str = ""  # VPSie cluster identifier, copied into every plan
    strategy: Strategy = Strategy.ROLLING
    max_concurrent: int = 1
    batch_size: int = 1
    drain_timeout_s: float = 300.0
    provision_timeout_s: float = 600.0
    cooldown_s: float = 3600.0
    require_approval: bool = False
    min_healthy_percent: int = 75
    skip_nodes_with_local_storage: bool = True
    respect_pdbs: bool = True
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()
    min_nodes: int = 1
    max_nodes: int | None = None
    # VPSie size ids (as str) or names the group may move to; empty: any offered size.
    allowed_sizes: tuple[str, ...] = ()
    min_saving_monthly: Decimal = Decimal(0)
    min_saving_percent: Decimal = Decimal(0)
    soak_s: float = 0.0  # blue-green only
    headroom_percent: int = 10
    # Size the fleet with the mixed-integer solver (off: the fast heuristic bound only).
    fleet_solver: bool = True
    # The solver's wall-clock budget per program; a safety stop only (the work it does is
    # counted, so the same input gives the same fleet within it).
    fleet_solver_budget_s: float = 0.5
    # Typical durations used only for the plan's time estimate, never as timeouts.
    provision_estimate_s: float = 180.0
    drain_estimate_s: float = 60.0
    repair: RepairPolicy = RepairPolicy()
