"""The five safety checks, each a pure function returning a `CheckResult`.

1. cluster_health: the API answered, and Ready nodes are at least `min_healthy_percent` of the
   cluster and of the group.
2. node_group_health: the group has at least `min_nodes` now and never fewer during the plan
   (nodes are counted after each batch's deletions, the lowest point); the cooldown since the
   last plan finished has passed; a surge above `max_nodes` is a warning.
3. disruption_budgets: see `disruption_needs` for the exact rule.
4. capacity: each batch's pods fit on what remains, simulated (see `simulate_batches`).
5. timing: a maintenance window is open now (and the plan's estimate fits in it, else a
   warning); when closed, the next opening is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from planner.policy import MaintenanceWindow
from planner.scheduling import (
    Bin,
    Packer,
    SelectorIndex,
    Shape,
    selector_key,
)
from planner.windows import rfc3339, window_state
from statemachine.plan import CheckResult, CheckStatus, Strategy
from statemachine.world import ClusterSnapshot, NodeInfo, PdbInfo, PodInfo, Resources, Taint

# What Kubernetes adds to a cordoned node's taints (spec.unschedulable): a spread constraint
# with nodeTaintsPolicy Honor no longer counts the node as a domain.
CORDON_TAINT = Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule")

CLUSTER_HEALTH = "cluster_health"
NODE_GROUP_HEALTH = "node_group_health"
DISRUPTION_BUDGETS = "disruption_budgets"
CAPACITY = "capacity"
TIMING = "timing"

PASSED, WARNING, FAILED = CheckStatus.PASSED, CheckStatus.WARNING, CheckStatus.FAILED


def check_cluster_health(
    snapshot: ClusterSnapshot, group: Sequence[NodeInfo], min_healthy_percent: int
) -> CheckResult:
    total = len(snapshot.nodes)
    ready = sum(1 for n in snapshot.nodes if n.ready)
    g_total = len(group)
    g_ready = sum(1 for n in group if n.ready)
    details: dict[str, str | int | float | bool | None] = {
        "api_reachable": snapshot.api_reachable,
        "nodes_ready": ready,
        "nodes_total": total,
        "group_ready": g_ready,
        "group_total": g_total,
        "min_healthy_percent": min_healthy_percent,
        "vpsie_cluster_locked": snapshot.cluster_locked,
        "vpsie_upgrade_version": snapshot.cluster_upgrade_version or None,
    }
    if snapshot.cluster_locked or snapshot.cluster_upgrade_version:
        msg = (
            f"the VPSie cluster is being upgraded to {snapshot.cluster_upgrade_version}"
            if snapshot.cluster_upgrade_version
            else "the VPSie cluster is locked"
        )
        return CheckResult(name=CLUSTER_HEALTH, status=FAILED, message=msg, details=details)
    if not snapshot.api_reachable:
        return CheckResult(
            name=CLUSTER_HEALTH,
            status=FAILED,
            message="Kubernetes API not reachable",
            details=details,
        )
    if ready * 100 < min_healthy_percent * total:
        msg = f"only {ready} of {total} nodes Ready, below {min_healthy_percent}%"
        return CheckResult(name=CLUSTER_HEALTH, status=FAILED, message=msg, details=details)
    if g_ready * 100 < min_healthy_percent * g_total:
        msg = f"only {g_ready} of {g_total} group nodes Ready, below {min_healthy_percent}%"
        return CheckResult(name=CLUSTER_HEALTH, status=FAILED, message=msg, details=details)
    msg = f"{ready}/{total} nodes Ready (group {g_ready}/{g_total}), API reachable"
    return CheckResult(name=CLUSTER_HEALTH, status=PASSED, message=msg, details=details)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCountPath:
    """The group's node count through the plan: highest and lowest points."""

    current: int
    peak: int
    lowest: int


def node_count_path(
    current: int, strategy: Strategy, batches: Sequence[tuple[int, int]]
) -> NodeCountPath:
    """`batches` holds (new nodes, old nodes) per batch. Rolling adds a batch's new nodes before
    deleting its old ones; surge and blue-green add every new node first."""
    count = current
    peak = lowest = current
    if strategy is not Strategy.ROLLING:
        count += sum(n for n, _ in batches)
        peak = count
    for new, old in batches:
        if strategy is Strategy.ROLLING:
            count += new
            peak = max(peak, count)
        count -= old
        lowest = min(lowest, count)
    return NodeCountPath(current=current, peak=peak, lowest=lowest)


def check_node_group_health(
    path: NodeCountPath,
    *,
    min_nodes: int,
    max_nodes: int | None,
    now: datetime,
    last_plan_finished_at: datetime | None,
    cooldown_s: float,
) -> CheckResult:
    details: dict[str, str | int | float | bool | None] = {
        "nodes": path.current,
        "min_nodes": min_nodes,
        "max_nodes": max_nodes,
        "lowest_during_plan": path.lowest,
        "peak_during_plan": path.peak,
        "cooldown_s": cooldown_s,
    }
    if path.current < min_nodes:
        msg = f"group has {path.current} nodes, below minNodes {min_nodes}"
        return CheckResult(name=NODE_GROUP_HEALTH, status=FAILED, message=msg, details=details)
    if path.lowest < min_nodes:
        msg = f"plan would take the group to {path.lowest} nodes, below minNodes {min_nodes}"
        return CheckResult(name=NODE_GROUP_HEALTH, status=FAILED, message=msg, details=details)
    if last_plan_finished_at is not None:
        ready_at = last_plan_finished_at + timedelta(seconds=cooldown_s)
        details["last_plan_finished_at"] = rfc3339(last_plan_finished_at)
        if now < ready_at:
            details["next_allowed_at"] = rfc3339(ready_at)
            msg = f"cooling down after the last plan until {rfc3339(ready_at)}"
            return CheckResult(name=NODE_GROUP_HEALTH, status=FAILED, message=msg, details=details)
    if max_nodes is not None and path.peak > max_nodes:
        msg = f"the plan briefly runs {path.peak} nodes, above maxNodes {max_nodes}"
        return CheckResult(name=NODE_GROUP_HEALTH, status=WARNING, message=msg, details=details)
    cooldown = "no cooldown applies" if last_plan_finished_at is None else "cooldown over"
    msg = f"{path.current} nodes, never below {path.lowest} (minNodes {min_nodes}); {cooldown}"
    return CheckResult(name=NODE_GROUP_HEALTH, status=PASSED, message=msg, details=details)


@dataclass(frozen=True, slots=True, kw_only=True)
class DisruptionNeed:
    batch: int
    pdb: str  # namespace/name
    node: str  # the node that needs the most
    need: int
    allowed: int


@dataclass(frozen=True, slots=True)
class BudgetPods:
    """How many pods of each PDB ("namespace/name") every node holds."""

    by_node: Mapping[str, Mapping[str, int]]
    pdbs: Mapping[str, PdbInfo]


def _pdb_index(pdbs: Sequence[PdbInfo]) -> SelectorIndex[PdbInfo]:
    index: SelectorIndex[PdbInfo] = SelectorIndex()
    for pdb in sorted(pdbs, key=lambda p: (p.namespace, p.name)):
        index.add(pdb.namespace, selector_key(pdb.selector), pdb)
    return index


def _count(
    index: SelectorIndex[PdbInfo], pod: PodInfo, counts: dict[str, int], found: dict[str, PdbInfo]
) -> None:
    for pdb in index.matching(pod.namespace, pod.labels):
        ref = f"{pdb.namespace}/{pdb.name}"
        counts[ref] = counts.get(ref, 0) + 1
        found[ref] = pdb


def budget_pods(pods: Iterable[PodInfo], pdbs: Sequence[PdbInfo]) -> BudgetPods:
    """Count `pods` per node (`node_name`) and matching PDB. One pass in the order given: in
    snapshot order it reads the pods in the order they sit in memory, which matters at
    100,000s of pods. An empty selector matches every pod of its namespace (policy/v1)."""
    index = _pdb_index(pdbs)
    by_node: dict[str, dict[str, int]] = {}
    found: dict[str, PdbInfo] = {}
    for pod in pods:
        if index.matching(pod.namespace, pod.labels):  # most pods have no PDB: touch no node
            _count(index, pod, by_node.setdefault(pod.node_name, {}), found)
    return BudgetPods(by_node=by_node, pdbs=found)


def disruption_needs(
    batches: Sequence[Sequence[str]],
    pods_by_node: Mapping[str, Sequence[PodInfo]],
    pdbs: Sequence[PdbInfo],
) -> list[DisruptionNeed]:
    """For each batch and PDB: the most of its pods on any one of the batch's nodes.

    The rule: all matching pods on one node are evicted together, so a batch is allowed iff,
    for every PDB, no node of it holds more of its pods than `disruptions_allowed`. Nodes
    drained at once (up to maxConcurrent) are not added up: the Eviction API refuses what a
    budget does not allow and the drain waits and retries, which is slower, not unsafe.
    """
    index = _pdb_index(pdbs)
    by_node: dict[str, dict[str, int]] = {}
    found: dict[str, PdbInfo] = {}
    for node in dict.fromkeys(n for batch in batches for n in batch):
        counts = by_node[node] = {}
        for pod in pods_by_node.get(node, ()):
            _count(index, pod, counts, found)
    return budget_needs(batches, BudgetPods(by_node=by_node, pdbs=found))


def budget_needs(batches: Sequence[Sequence[str]], held: BudgetPods) -> list[DisruptionNeed]:
    """`disruption_needs` from pods already counted with `budget_pods`."""
    out: list[DisruptionNeed] = []
    for b, batch in enumerate(batches):
        worst: dict[str, DisruptionNeed] = {}
        for node in batch:
            counts = held.by_node.get(node, {})
            for ref in sorted(counts):
                have = worst.get(ref)
                if have is None or counts[ref] > have.need:
                    worst[ref] = DisruptionNeed(
                        batch=b,
                        pdb=ref,
                        node=node,
                        need=counts[ref],
                        allowed=held.pdbs[ref].disruptions_allowed,
                    )
        out.extend(worst[ref] for ref in sorted(worst))
    return out


def check_disruption_budgets(
    needs: Sequence[DisruptionNeed], *, respect_pdbs: bool, pdb_count: int
) -> CheckResult:
    over = [n for n in needs if n.need > n.allowed]
    details: dict[str, str | int | float | bool | None] = {
        "pdbs": pdb_count,
        "pdbs_touched": len({n.pdb for n in needs}),
        "violations": len(over),
    }
    if not respect_pdbs:
        msg = "respectPDBs is off: budgets were not checked"
        if over:
            msg += f" ({len(over)} batch/PDB pairs would exceed their budget)"
        return CheckResult(name=DISRUPTION_BUDGETS, status=WARNING, message=msg, details=details)
    if over:
        first = over[0]
        details.update(
            batch=first.batch,
            pdb=first.pdb,
            node=first.node,
            need=first.need,
            disruptions_allowed=first.allowed,
        )
        msg = (
            f"batch {first.batch}: node {first.node} holds {first.need} pods of PDB "
            f"{first.pdb}, which allows {first.allowed} disruptions now"
        )
        return CheckResult(name=DISRUPTION_BUDGETS, status=FAILED, message=msg, details=details)
    msg = f"every batch stays within its budgets ({details['pdbs_touched']} PDBs touched)"
    return CheckResult(name=DISRUPTION_BUDGETS, status=PASSED, message=msg, details=details)


def _cordoned(taints: tuple[Taint, ...]) -> tuple[Taint, ...]:
    return taints if CORDON_TAINT in taints else (*taints, CORDON_TAINT)


def _cordoned_view(node: Bin) -> Bin:
    """The node as topology spread sees it once cordoned: its pods, and the cordon's taint."""
    if CORDON_TAINT in node.taints:
        return node
    view = Bin(node.name, node.labels, _cordoned(node.taints), Resources(), node.cid)
    view.targeted = node.targeted
    return view


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityOutcome:
    failed_batch: int | None
    unplaced_pods: int
    example: str = ""  # namespace and requests of one pod that did not fit


def simulate_batches(
    survivors: list[Bin],
    old_by_batch: Sequence[Sequence[Bin]],
    new_by_batch: Sequence[int],
    new_bin: Callable[[int], Bin],
    strategy: Strategy,
    *,
    min_cpu: int,
    min_mem: int,
    observers: Sequence[Bin] = (),
) -> CapacityOutcome:
    """Drain the batches in order and place each drained node's pods by first-fit decreasing.

    `observers` are the cluster's other nodes: they take no pod here, but topology spread
    counts their pods (a domain with none of a workload's pods limits every other).

    Receivers are, first, the nodes that stay (excluded and kept nodes) plus the new nodes that
    exist by then (rolling: those of this batch and earlier; surge and blue-green: all); then,
    except in blue-green where every old node is cordoned, old nodes drained in later batches
    (whose pods, received ones included, move again when their turn comes).
    """
    later: list[Bin] = []
    if strategy is not Strategy.BLUE_GREEN:
        for batch in reversed(old_by_batch):
            later.extend(reversed(batch))

    current = 0  # the batch being drained

    def world() -> list[Bin]:
        """The nodes topology spread counts (built only when a pod spreads): those that
        stay, the new ones, the old ones not drained yet (in blue-green too, where they take
        no pod but still hold theirs), the cluster's others, and the batch's nodes being
        drained: cordoned and emptied, they are still domains (with none of the pods) until
        deleted, as kube-scheduler counts them (unless a constraint's nodeTaintsPolicy is
        Honor: they carry the cordon's taint, as the undrained old nodes do in blue-green)."""
        undrained = [node for batch in old_by_batch[current + 1 :] for node in batch]
        if strategy is Strategy.BLUE_GREEN:
            undrained = [_cordoned_view(node) for node in undrained]
        draining = [
            Bin(node.name, node.labels, _cordoned(node.taints), Resources(), node.cid)
            for node in old_by_batch[current]
        ]
        return [*survivors, *undrained, *observers, *draining]

    primary = Packer(bins=survivors, min_cpu=min_cpu, min_mem=min_mem, plans=True, world=world)
    # New nodes may carry the fleet's planned content: pods go there first as planned, and
    # only when neither that nor a later old node takes them, wherever they fit.
    anywhere = Packer(bins=primary.bins, min_cpu=min_cpu, min_mem=min_mem, world=world)
    secondary = Packer(bins=later, min_cpu=min_cpu, min_mem=min_mem, world=world)
    opened = 0

    def add_new(n: int) -> None:
        nonlocal opened
        for _ in range(n):
            primary.bins.append(new_bin(opened))
            opened += 1

    if strategy is not Strategy.ROLLING:
        add_new(sum(new_by_batch))
    for b, batch in enumerate(old_by_batch):
        if strategy is Strategy.ROLLING:
            add_new(new_by_batch[b])
        moved: dict[Shape, int] = {}
        current = b
        for node in batch:
            if later and later[-1] is node:
                later.pop()
            for shape, count in node.content.items():
                moved[shape] = moved.get(shape, 0) + count
        unplaced = 0
        example = ""
        for shape, count in sorted(moved.items(), key=lambda kv: kv[0].sort_key):
            rest = primary.place(shape, count)
            if rest:
                rest = secondary.place(shape, rest)
            if rest:
                rest = anywhere.place(shape, rest)
            if rest:
                unplaced += rest
                example = example or shape.describe()
        if unplaced:
            return CapacityOutcome(failed_batch=b, unplaced_pods=unplaced, example=example)
    return CapacityOutcome(failed_batch=None, unplaced_pods=0)


def check_capacity(outcome: CapacityOutcome, *, batches: int, pods_moved: int) -> CheckResult:
    details: dict[str, str | int | float | bool | None] = {
        "batches": batches,
        "pods_moved": pods_moved,
    }
    if outcome.failed_batch is not None:
        details.update(failed_batch=outcome.failed_batch, unplaced_pods=outcome.unplaced_pods)
        msg = (
            f"batch {outcome.failed_batch}: {outcome.unplaced_pods} pods would not fit on the "
            f"remaining and new nodes (e.g. a {outcome.example})"
        )
        return CheckResult(name=CAPACITY, status=FAILED, message=msg, details=details)
    msg = f"every batch's pods fit on the remaining and new nodes ({pods_moved} pods move)"
    return CheckResult(name=CAPACITY, status=PASSED, message=msg, details=details)


def check_timing(
    windows: tuple[MaintenanceWindow, ...], now: datetime, estimated_duration_s: float
) -> CheckResult:
    state = window_state(windows, now)
    details: dict[str, str | int | float | bool | None] = {
        "windows": len(windows),
        "estimated_duration_s": estimated_duration_s,
    }
    if not windows:
        msg = "no maintenance windows configured: any time is allowed"
        return CheckResult(name=TIMING, status=PASSED, message=msg, details=details)
    if state.open_now and state.current_end is not None:
        details["window_ends_at"] = rfc3339(state.current_end)
        if now + timedelta(seconds=estimated_duration_s) > state.current_end:
            msg = (
                f"window open until {rfc3339(state.current_end)}, but the plan's estimate "
                f"({estimated_duration_s:.0f}s) runs past it"
            )
            return CheckResult(name=TIMING, status=WARNING, message=msg, details=details)
        msg = f"inside a maintenance window until {rfc3339(state.current_end)}"
        return CheckResult(name=TIMING, status=PASSED, message=msg, details=details)
    if state.next_start is None:
        msg = "outside every maintenance window, and none opens in the next week"
        return CheckResult(name=TIMING, status=FAILED, message=msg, details=details)
    details["next_window_at"] = rfc3339(state.next_start)
    msg = f"outside maintenance windows; next opens at {rfc3339(state.next_start)}"
    return CheckResult(name=TIMING, status=FAILED, message=msg, details=details)
