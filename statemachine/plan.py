"""The plan as a fact: what the planner proposed, in the shape the event log keeps it.

The planner returns a `PlanSpec`; the daemon appends it as the payload of `PlanProposed`; the
executor and the audit read it back from the log. Everything needed to explain the plan later
("why was node X replaced, by what, and what did it save?") is in here: the checks with their
reasons, the prices seen, a summary of the snapshot, the nodes left out and why.

Money is `Decimal` US dollars per month; durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

# Values allowed in `details` and summaries: JSON scalars, so they survive the log unchanged.
Scalar = str | int | float | bool | None


class Strategy(StrEnum):
    ROLLING = "rolling"
    SURGE = "surge"
    BLUE_GREEN = "blue-green"


class CheckStatus(StrEnum):
    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"


class Action(StrEnum):
    PROCEED = "proceed"
    POSTPONE = "postpone"
    REJECT = "reject"
    NEEDS_REVIEW = "needs_review"


class Opportunity(StrEnum):
    DOWNSIZE = "downsize"  # same node count, a smaller size
    RIGHT_SIZE = "right-size"  # a size that fits the pods better (may be fewer, larger nodes)
    CONSOLIDATE = "consolidate"  # fewer nodes of the same size
    REPAIR = "repair"  # replace nodes the provider lost (planner/health.py, docs/repair.md)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One of the five safety checks."""

    name: str  # cluster_health | node_group_health | disruption_budgets | capacity | timing
    status: CheckStatus
    message: str
    details: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exclusion:
    """A node the planner left out, and why."""

    node: str
    reason: str  # a stable code, e.g. "local-storage", "protected", "not-ready"
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplacementSpec:
    """Replace (or, with `new_size_id` None, just remove) one node; or, with no old node
    (`adds_only`), add one node of `new_size_id` and remove none.

    `old_worker` is the VPSie worker identifier of the old node: the only worker this
    replacement may ever delete besides the one it adds itself. An add-only replacement has
    `old_node` and `old_worker` empty, `old_size_id` 0 and `old_monthly_price` 0: it never
    cordons, drains or deletes anything but the worker it added (when rolled back). Its
    `monthly_saving` is negative (the new node's price); the plan's saving is the sum.
    """

    replacement_id: str
    batch: int
    old_node: str
    old_worker: str
    old_size_id: int
    old_monthly_price: Decimal
    new_size_id: int | None
    new_size_name: str = ""
    new_monthly_price: Decimal = Decimal(0)
    reason: str = ""

    @property
    def monthly_saving(self) -> Decimal:
        return self.old_monthly_price - self.new_monthly_price

    @property
    def adds_only(self) -> bool:
        """A node added and none removed: the fleet grows by one (no old node)."""
        return not self.old_node

    def shape_problem(self) -> str | None:
        """What makes this spec nonsense as an add-only or as a replacement (None: fine)."""
        if self.adds_only:
            if self.old_worker:
                return f"add-only {self.replacement_id} names an old worker {self.old_worker}"
            if self.old_size_id or self.old_monthly_price:
                return f"add-only {self.replacement_id} has an old size or price"
            if self.new_size_id is None:
                return f"add-only {self.replacement_id} adds no node (no new size)"
            return None
        if not self.old_worker:
            return f"replacement {self.replacement_id} has no old worker"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSpec:
    plan_id: str
    cluster: str  # VPSie cluster identifier
    node_group: str  # the managed node group's name (config)
    strategy: Strategy
    created_at: str  # RFC 3339 UTC, the "now" the planner was given
    opportunity: Opportunity
    replacements: tuple[ReplacementSpec, ...]
    # Replacement ids, one tuple per batch, in execution order.
    batches: tuple[tuple[str, ...], ...]
    max_concurrent: int
    checks: tuple[CheckResult, ...]
    recommended_action: Action
    action_reasons: tuple[str, ...]
    exclusions: tuple[Exclusion, ...] = ()
    monthly_saving: Decimal = Decimal(0)
    estimated_duration_s: float = 0.0
    rollback_steps: tuple[str, ...] = ()
    require_approval: bool = False
    provision_timeout_s: float = 600.0
    drain_timeout_s: float = 300.0
    soak_s: float = 0.0  # blue-green: how long the new nodes serve before the old are drained
    min_nodes: int = 0
    min_healthy_percent: int = 75
    snapshot_summary: dict[str, Scalar] = field(default_factory=dict)
    # Monthly price seen per VPSie size id (as str), for the audit.
    prices_seen: dict[str, str] = field(default_factory=dict)
