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
