"""What should happen: from a cluster snapshot and a policy to a plan, with no I/O.

Public API (see docs/planner.md):
    analyze(snapshot, policy, *, now, last_plan_finished_at=None) -> Analysis
    make_plan(analysis, policy, *, now=None) -> PlanSpec | None
    plan(snapshot, policy, *, now, last_plan_finished_at=None) -> (Analysis, PlanSpec | None)
    validate_plan(plan, policy=None) -> list[str]
    map_workers(snapshot) -> dict[node name, WorkerMatch]
"""

from planner.analysis import (
    Analysis,
    Candidate,
    SizeOption,
    analyze,
    make_plan,
    plan,
    validate_plan,
)
from planner.inventory import EXCLUSION_CODES, WorkerMatch, map_workers
from planner.policy import MaintenanceWindow, NodeGroupPolicy

__all__ = [
    "EXCLUSION_CODES",
    "Analysis",
    "Candidate",
    "MaintenanceWindow",
    "NodeGroupPolicy",
    "SizeOption",
    "WorkerMatch",
    "analyze",
    "make_plan",
    "map_workers",
    "plan",
    "validate_plan",
]
