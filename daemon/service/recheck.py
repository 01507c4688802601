"""What happens between two batches: the safety checks again, before each batch starts.

The executor calls `ExecutionContext.recheck` before each batch that has not started and when
it resumes work in flight after a restart; the service answers with `recheck_live`: a fresh
snapshot of the world, and `recheck_plan` applied to what is left of the plan (cluster health,
the group's node count through the remaining batches, the next batch's disruption budgets, the
maintenance window for the remaining estimate). A failed check makes the executor roll back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from daemon.clock import rfc3339
from daemon.ports import Clock, Cloud, Cluster
from daemon.service.snapshot import SnapshotError, gather_snapshot
from planner import NodeGroupPolicy, map_workers
from planner.checks import (
    check_cluster_health,
    check_node_group_health,
    check_timing,
    disruption_needs,
    node_count_path,
)
from planner.inventory import group_nodes, is_movable
from planner.windows import parse_instant
from statemachine.fold import PlanState
from statemachine.machines import REPLACEMENT_TERMINAL, ReplacementStatus
from statemachine.plan import CheckResult, CheckStatus, ReplacementSpec
from statemachine.world import ClusterSnapshot, PdbInfo, PodInfo

log = logging.getLogger(__name__)


async def recheck_live(
    state: PlanState,
    cloud: Cloud,
    cluster: Cluster,
    policy: NodeGroupPolicy,
    *,
    cluster_identifier: str,
    clock: Clock,
    datacenter: str,
) -> Sequence[CheckResult]:
    """The safety checks again, for what is left of this plan, on a fresh snapshot.

    The executor asks before each batch that has not started and when it resumes work in
    flight after a restart. Checked: cluster health; the group's node count now and through
    the remaining batches (no cooldown: this plan is the one running); the disruption
    budgets of the next batch's nodes, by the planner's rule; the maintenance window for
    the remaining estimate. Capacity was simulated when the plan was made; at run time the
    drain's wait for the evicted pods to run elsewhere guards it.

    A Kubernetes API that cannot be read raises (SnapshotError) instead of failing the
    cluster-health check: the executor retries the checks, and rolls back only when they
    still cannot run after `call_retry_s`, not on one unanswered read.
    """
    now = clock.now()
    gathered = await gather_snapshot(
        cloud,
        cluster,
        cluster_identifier=cluster_identifier,
        now=now,
        datacenter=datacenter,
    )
    if gathered.problems:
        raise SnapshotError("; ".join(gathered.problems))
    return recheck_plan(state, gathered.snapshot, policy, now=rfc3339(now))


def recheck_plan(
    state: PlanState, snapshot: ClusterSnapshot, policy: NodeGroupPolicy, *, now: str
) -> list[CheckResult]:
    """Four of the planner's checks applied to the part of `state`'s plan not yet done."""
    spec = state.spec
    instant = parse_instant(now)
    nodes = group_nodes(snapshot, spec.node_group, map_workers(snapshot))
    present = {n.name for n in snapshot.nodes}
    # This plan's new nodes belong to the group from the moment they joined, labelled or not.
    members = {n.name for n in nodes} | {
        r.new_node for r in state.replacements.values() if r.new_node and r.new_node in present
    }
    by_id = {r.replacement_id: r for r in spec.replacements}
    open_batches: list[list[ReplacementSpec]] = []
    for batch in spec.batches:
        left = [
            by_id[rid]
            for rid in batch
            if state.replacements[rid].status not in REPLACEMENT_TERMINAL
        ]
        if left:
            open_batches.append(left)
    # Per open batch: nodes still to add, old nodes still to remove (what the world shows).
    shape = [
        (
            sum(
                1
                for r in batch
                if r.new_size_id is not None
                and state.replacements[r.replacement_id].new_node not in present
            ),
            # A member, not merely present: the Node of a worker already deleted stays
            # (NotReady) until we delete it, and no longer counts for the group.
            sum(1 for r in batch if r.old_node in members),
        )
        for batch in open_batches
    ]
    results = [check_cluster_health(snapshot, nodes, spec.min_healthy_percent)]
    path = node_count_path(len(members), spec.strategy, shape)
    results.append(
        check_node_group_health(
            path,
            min_nodes=spec.min_nodes,
            max_nodes=policy.max_nodes,
            now=instant,
            last_plan_finished_at=None,
            cooldown_s=0,
        )
    )
    next_batch = [
        r.old_node
        for r in (open_batches[0] if open_batches else [])
        if not r.adds_only and state.replacements[r.replacement_id].status in _NOT_DRAINED
    ]
    pods_by_node: dict[str, list[PodInfo]] = {}
    for pod in snapshot.pods:
        if pod.node_name in next_batch and is_movable(pod):
            pods_by_node.setdefault(pod.node_name, []).append(pod)
    results.append(_budgets_now(next_batch, pods_by_node, snapshot.pdbs, policy.respect_pdbs))
    remaining = sum(len(b) for b in open_batches)
    remaining_s = spec.estimated_duration_s * remaining / max(1, len(spec.replacements))
    results.append(check_timing(policy.maintenance_windows, instant, remaining_s))
    return results


def _budgets_now(
    batch: list[str],
    pods_by_node: dict[str, list[PodInfo]],
    pdbs: Sequence[PdbInfo],
    respect_pdbs: bool,
) -> CheckResult:
    """The disruption-budget check at run time, for the next batch.

    The planner's rule (every matching pod of one node counted as one simultaneous disruption)
    decides whether a plan is made. Once it runs, the Eviction API is the authority: the drain
    evicts one pod at a time and waits on every 429, so a node holding more pods of a budget
    than it allows at this instant is slower, not unsafe (a warning). What fails the check is a
    budget the application already breaks (fewer healthy pods than it needs): draining more of
    it now would only deepen an outage someone else caused.
    """
    needs = disruption_needs([batch], pods_by_node, pdbs)
    touched = {n.pdb for n in needs}
    details: dict[str, str | int | float | bool | None] = {
        "pdbs": len(pdbs),
        "pdbs_touched": len(touched),
    }
    broken = [
        p
        for p in pdbs
        if f"{p.namespace}/{p.name}" in touched and p.current_healthy < p.desired_healthy
    ]
    if broken and respect_pdbs:
        first = broken[0]
        message = (
            f"PDB {first.namespace}/{first.name} has {first.current_healthy} healthy pods and "
            f"needs {first.desired_healthy}: the application is already disrupted"
        )
        return CheckResult(
            name="disruption_budgets", status=CheckStatus.FAILED, message=message, details=details
        )
    over = [n for n in needs if n.need > n.allowed]
    if over or not respect_pdbs:
        message = (
            "respectPDBs is off: budgets were not checked"
            if not respect_pdbs
            else f"node {over[0].node} holds {over[0].need} pods of PDB {over[0].pdb}, which "
            f"allows {over[0].allowed} now; evictions go one at a time and wait for the budget"
        )
        return CheckResult(
            name="disruption_budgets", status=CheckStatus.WARNING, message=message, details=details
        )
    return CheckResult(
        name="disruption_budgets",
        status=CheckStatus.PASSED,
        message=f"the next batch stays within its budgets ({len(touched)} PDBs touched)",
        details=details,
    )


_NOT_JOINED = frozenset(
    {
        ReplacementStatus.PLANNED,
        ReplacementStatus.CREATING_GROUP,
        ReplacementStatus.PROVISIONING,
        ReplacementStatus.JOINING,
    }
)
_NOT_DRAINED = frozenset(
    {
        *_NOT_JOINED,
        ReplacementStatus.READY,
        ReplacementStatus.CORDONING,
        ReplacementStatus.CORDONED,
        ReplacementStatus.DRAINING,
    }
)
