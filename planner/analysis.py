"""From a snapshot to a decision: candidates, the cheapest fleet, the checks, the plan.

`analyze` does the thinking and `make_plan` writes it down as a `PlanSpec`; `validate_plan`
re-checks a plan's invariants independently of how it was made. All three are pure: the same
snapshot, policy and instant give a byte-identical plan, whatever order the snapshot lists
things in (everything is sorted by a stable key before use; money stays `Decimal`).

Cost model: a node costs its VPSie size's monthly `price`. For each allowed size S (cheapest
first) the group's movable pods (those on candidate nodes) are packed by first-fit decreasing
onto fresh nodes of size S, each offering `usable(capacity - reserve) - DaemonSet load`; the
fewest nodes k (at least minNodes minus the nodes that stay, at most the candidates: the group
never grows) gives a cost of k * price(S). The cheapest feasible fleet wins (ties: fewer pods
moved, then lower size id). Its saving (old candidates' cost minus the new fleet's) must reach
`min_saving_monthly` and `min_saving_percent` of the whole group's monthly cost.

Candidates already of size S are kept (most loaded first), the least utilised of the others
are removed without replacement when k is smaller, the rest get a node of size S.
Priority (execution order): replacements that add a node before pure removals (capacity is
built before it is taken away), then larger saving, lower utilisation, fewer pods, name.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from planner import checks
from planner.inventory import (
    ALREADY_TARGET_SIZE,
    WorkerMatch,
    budgets_of_pods,
    counts_as_load,
    exclusion_for,
    group_nodes,
    is_movable,
    map_workers,
    may_block_node,
    two_budgets,
)
from planner.policy import NodeGroupPolicy
from planner.scheduling import (
    Bin,
    Packer,
    Shape,
    ShapeBook,
    effective_allocatable,
    node_capacity,
    offer_capacity,
    usable,
)
from planner.strategies import estimate_duration, make_batches, rollback_steps
from planner.windows import parse_instant, rfc3339
from statemachine.plan import (
    Action,
    CheckResult,
    CheckStatus,
    Exclusion,
    Opportunity,
    PlanSpec,
    ReplacementSpec,
    Scalar,
    Strategy,
)
from statemachine.world import (
    HOSTNAME_LABEL,
    NODEGROUP_LABEL,
    VPSIE_NODE_LABEL,
    ClusterSnapshot,
    NodeInfo,
    PodInfo,
    Resources,
    SizeOffer,
    Taint,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A node the planner may replace."""

    node: str
    worker: str
    size_id: int
    size_name: str
    monthly_price: Decimal
    pods: int
    utilisation_per_mille: int  # max of CPU and memory requests over effective allocatable


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeOption:
    """One size considered for the group's fleet, and what came of it."""

    size_id: int
    size_name: str
    monthly_price: Decimal
    nodes: int | None  # None: infeasible
    monthly_cost: Decimal | None
    note: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    group: str
    cluster: str
    now: str
    strategy: Strategy
    group_nodes: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    exclusions: tuple[Exclusion, ...]
    options: tuple[SizeOption, ...]
    target: SizeOffer | None
    target_nodes: int
    opportunity: Opportunity | None
    # Without replacement ids (make_plan assigns them); `batch` is set.
    replacements: tuple[ReplacementSpec, ...]
    batches: tuple[tuple[str, ...], ...]  # old node names
    monthly_saving: Decimal
    checks: tuple[CheckResult, ...]
    action: Action
    action_reasons: tuple[str, ...]
    min_nodes: int
    max_nodes: int | None
    estimated_duration_s: float
    snapshot_summary: dict[str, Scalar] = field(default_factory=dict)
    prices_seen: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _NodeLoad:
    node: NodeInfo
    allocatable: Resources  # effective: capacity - reserve, capped by reported
    usable: Resources  # allocatable less headroom
    used: Resources  # every pod that is not finished
    daemonset: Resources
    movable: list[PodInfo]
    suspects: list[PodInfo]  # the movable pods for which `may_block_node` holds
    load_shapes: list[tuple[Shape, int, bool]]  # shape, count, movable


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _cmax(a: Resources, b: Resources) -> Resources:
    return Resources(
        cpu_millis=max(a.cpu_millis, b.cpu_millis),
        memory_bytes=max(a.memory_bytes, b.memory_bytes),
        pods=max(a.pods, b.pods),
    )


def _limits(snapshot: ClusterSnapshot, policy: NodeGroupPolicy) -> tuple[int, int | None]:
    lo, hi = policy.min_nodes, policy.max_nodes
    for spec in sorted(snapshot.node_groups, key=lambda s: (s.namespace, s.name)):
        if spec.name == policy.name:
            if spec.min_nodes is not None:
                lo = spec.min_nodes
            if spec.max_nodes is not None:
                hi = spec.max_nodes
            break
    return lo, hi


def _allowed_offers(snapshot: ClusterSnapshot, policy: NodeGroupPolicy) -> list[SizeOffer]:
    allowed = set(policy.allowed_sizes)
    offers = [
        o
        for o in snapshot.offers
        if o.cpu > 0 and o.ram_mb > 0 and (not allowed or str(o.id) in allowed or o.name in allowed)
    ]
    return sorted(offers, key=lambda o: (o.monthly_price, o.id))


def _template(nodes: Sequence[NodeInfo]) -> tuple[dict[str, str], tuple[Taint, ...]]:
    """Labels and taints every node of the group shares: what a new node will carry."""
    if not nodes:
        return {}, ()
    labels = dict(nodes[0].labels)
    taints = set(nodes[0].taints)
    for n in nodes[1:]:
        labels = {k: v for k, v in labels.items() if n.labels.get(k) == v}
        taints &= set(n.taints)
    for k in (HOSTNAME_LABEL, VPSIE_NODE_LABEL):
        labels.pop(k, None)
    return dict(sorted(labels.items())), tuple(sorted(taints, key=repr))


def _utilisation(used: Resources, alloc: Resources) -> int:
    cpu = used.cpu_millis * 1000 // alloc.cpu_millis if alloc.cpu_millis else 1000
    mem = used.memory_bytes * 1000 // alloc.memory_bytes if alloc.memory_bytes else 1000
    return max(cpu, mem)


class _Tally:
    """One node's load while the group's pods are summed up."""

    __slots__ = (
        "count",
        "cpu",
        "ds_count",
        "ds_cpu",
        "ds_mem",
        "mem",
        "movable",
        "shapes",
        "suspects",
    )

    def __init__(self) -> None:
        self.cpu = self.mem = self.count = self.ds_cpu = self.ds_mem = self.ds_count = 0
        self.movable: list[PodInfo] = []
        self.suspects: list[PodInfo] = []
        self.shapes: list[tuple[Shape, bool]] = []  # one per pod, counted per node after


class _Group:
    """The group's nodes with their load, and how to build simulation bins from them."""

    def __init__(
        self, snapshot: ClusterSnapshot, policy: NodeGroupPolicy, nodes: list[NodeInfo]
    ) -> None:
        self.policy = policy
        self.nodes = nodes
        # Pods are visited in snapshot order, not node by node: with 100,000s of pods a walk in
        # another order than they were allocated in costs cache misses that grow with the size.
        names = {n.name for n in nodes}
        load_pods = [p for p in snapshot.pods if p.node_name in names and counts_as_load(p)]
        self.book = ShapeBook(load_pods)
        acc: dict[str, _Tally] = {n.name: _Tally() for n in nodes}
        shape_of = self.book.shape
        self.movable_pods: list[PodInfo] = []  # in snapshot order
        skip_local = policy.skip_nodes_with_local_storage
        for pod in load_pods:
            t = acc[pod.node_name]
            req = pod.requests
            t.cpu += req.cpu_millis
            t.mem += req.memory_bytes
            t.count += req.pods
            if pod.is_daemonset:
                t.ds_cpu += req.cpu_millis
                t.ds_mem += req.memory_bytes
                t.ds_count += req.pods
            mov = is_movable(pod)
            if mov:
                t.movable.append(pod)
                self.movable_pods.append(pod)
                if may_block_node(pod, skip_local):
                    t.suspects.append(pod)
            t.shapes.append((shape_of(pod), mov))
        self.loads: dict[str, _NodeLoad] = {}
        self.ds_overhead = Resources()
        for node in nodes:
            t = acc[node.name]
            shapes: dict[tuple[Shape, bool], int] = {}
            for key in t.shapes:
                shapes[key] = shapes.get(key, 0) + 1
            alloc = effective_allocatable(node_capacity(node), node.allocatable)
            ds = Resources(cpu_millis=t.ds_cpu, memory_bytes=t.ds_mem, pods=t.ds_count)
            self.loads[node.name] = _NodeLoad(
                node=node,
                allocatable=alloc,
                usable=usable(alloc, policy.headroom_percent),
                used=Resources(cpu_millis=t.cpu, memory_bytes=t.mem, pods=t.count),
                daemonset=ds,
                movable=t.movable,
                suspects=t.suspects,
                load_shapes=[(s, c, m) for (s, m), c in shapes.items()],
            )
            self.ds_overhead = _cmax(self.ds_overhead, ds)
        self.labels, self.taints = _template(nodes)
        self.template_class = self.book.node_class(self.labels, self.taints)
        self._new_free: dict[int, Resources] = {}

    def bin_for(self, name: str) -> Bin:
        """The node as it is; one that is not Ready or is cordoned takes no new pods."""
        load = self.loads[name]
        free = load.usable
        if not load.node.ready or load.node.unschedulable:
            free = Resources(cpu_millis=free.cpu_millis, memory_bytes=free.memory_bytes, pods=0)
        b = self.book.bin(name, load.node.labels, load.node.taints, free)
        for shape, count, movable in load.load_shapes:
            b.add(shape, count, movable=movable)
        return b

    def make_new_bin(self, offer: SizeOffer, index: int) -> Bin:
        """A fresh node of `offer`: usable allocatable less the group's DaemonSet load."""
        free = self._new_free.get(offer.id)
        if free is None:
            alloc = effective_allocatable(offer_capacity(offer))
            free = self._new_free[offer.id] = (
                usable(alloc, self.policy.headroom_percent) - self.ds_overhead
            )
        name = f"new-{offer.id}-{index}"
        return Bin(name, self.labels, self.taints, free, self.template_class)

    def movable_buckets(self, names: Sequence[str]) -> list[tuple[Shape, int]]:
        counts: dict[Shape, int] = {}
        for n in names:
            for shape, count, movable in self.loads[n].load_shapes:
                if movable:
                    counts[shape] = counts.get(shape, 0) + count
        return sorted(counts.items(), key=lambda kv: kv[0].sort_key)


def _size_options(
    group: _Group,
    offers: Sequence[SizeOffer],
    candidates: Sequence[Candidate],
    staying: int,
    min_nodes: int,
) -> list[SizeOption]:
    buckets = group.movable_buckets([c.node for c in candidates])
    min_cpu = min((s.cpu for s, _ in buckets), default=0)
    min_mem = min((s.memory for s, _ in buckets), default=0)
    floor = max(min_nodes - staying, 0)
    out: list[SizeOption] = []
    for offer in offers:

        def factory(i: int, offer: SizeOffer = offer) -> Bin:
            return group.make_new_bin(offer, i)

        packer = Packer(
            bins=[], factory=factory, max_new=len(candidates), min_cpu=min_cpu, min_mem=min_mem
        )
        left = packer.place_all(buckets)
        k = max(packer.opened, floor)
        nodes: int | None = None
        if left:
            shape = left[0][0]
            note = (
                f"{sum(c for _, c in left)} pods do not fit on {len(candidates)} nodes of this "
                f"size (e.g. a {shape.describe()})"
            )
        elif k > len(candidates):
            note = f"minNodes needs {k} nodes, more than the {len(candidates)} candidates"
        else:
            nodes, note = k, f"{k} nodes carry the candidates' pods"
        out.append(
            SizeOption(
                size_id=offer.id,
                size_name=offer.name,
                monthly_price=offer.monthly_price,
                nodes=nodes,
                monthly_cost=None if nodes is None else offer.monthly_price * nodes,
                note=note,
            )
        )
    return out


def _moves(option: SizeOption, candidates: Sequence[Candidate]) -> int:
    same = sum(1 for c in candidates if c.size_id == option.size_id)
    return len(candidates) - min(same, option.nodes or 0)


def _severity(action: Action) -> int:
    return {Action.PROCEED: 0, Action.NEEDS_REVIEW: 1, Action.POSTPONE: 2, Action.REJECT: 3}[action]


def _recommend(
    results: Sequence[CheckResult], policy: NodeGroupPolicy
) -> tuple[Action, tuple[str, ...]]:
    """Failed checks decide: a check that time can fix postpones, one it cannot rejects.
    Warnings and `require_approval` ask for a person."""
    action = Action.PROCEED
    reasons: list[str] = []

    def raise_to(a: Action, reason: str) -> None:
        nonlocal action
        reasons.append(reason)
        if _severity(a) > _severity(action):
            action = a

    for r in results:
        if r.status is CheckStatus.FAILED:
            fixed_by_time = r.name in (
                checks.CLUSTER_HEALTH,
                checks.DISRUPTION_BUDGETS,
                checks.TIMING,
            ) or (r.name == checks.NODE_GROUP_HEALTH and "next_allowed_at" in r.details)
            verb = Action.POSTPONE if fixed_by_time else Action.REJECT
            raise_to(verb, f"{r.name} failed: {r.message}")
        elif r.status is CheckStatus.WARNING:
            raise_to(Action.NEEDS_REVIEW, f"{r.name} warning: {r.message}")
    if policy.require_approval:
        raise_to(Action.NEEDS_REVIEW, "requireApproval is set: a person must approve")
    if not reasons:
        reasons.append("all five safety checks passed")
    return action, tuple(reasons)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """An analysis allocates many small containers that all live until it returns and form no
    cycles; with a large snapshot alive, the cyclic collector's passes over it would make the
    run superlinear. Reference counting still frees everything; the collector resumes after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def analyze(
    snapshot: ClusterSnapshot,
    policy: NodeGroupPolicy,
    *,
    now: datetime | str,
    last_plan_finished_at: datetime | str | None = None,
) -> Analysis:
    """Everything the planner concludes about one node group, at instant `now`.

    `last_plan_finished_at` is when the group's last plan ended (from the event log), for the
    cooldown. Raises ValueError for a naive or unparsable instant.
    """
    with _cyclic_gc_paused():
        return _analyze(snapshot, policy, now=now, last_plan_finished_at=last_plan_finished_at)


def _analyze(
    snapshot: ClusterSnapshot,
    policy: NodeGroupPolicy,
    *,
    now: datetime | str,
    last_plan_finished_at: datetime | str | None,
) -> Analysis:
    instant = parse_instant(now)
    last = parse_instant(last_plan_finished_at) if last_plan_finished_at is not None else None
    workers: dict[str, WorkerMatch] = map_workers(snapshot)
    nodes = group_nodes(snapshot, policy.name, workers)
    group = _Group(snapshot, policy, nodes)
    min_nodes, max_nodes = _limits(snapshot, policy)

    exclusions: list[Exclusion] = []
    candidates: list[Candidate] = []
    doubly = budgets_of_pods(group.movable_pods, snapshot.pdbs) if snapshot.pdbs else {}
    for node in nodes:
        load = group.loads[node.name]
        match = workers.get(node.name)
        excl = exclusion_for(
            node, load.suspects, match, skip_local_storage=policy.skip_nodes_with_local_storage
        )
        if excl is None and doubly:
            refs = (f"{p.namespace}/{p.name}" for p in load.movable)
            excl = two_budgets(node, {r: doubly[r] for r in refs if r in doubly})
        if excl is not None:
            exclusions.append(excl)
            continue
        assert match is not None and match.monthly_price is not None
        candidates.append(
            Candidate(
                node=node.name,
                worker=match.worker,
                size_id=match.size_id,
                size_name=match.size_name,
                monthly_price=match.monthly_price,
                pods=len(load.movable),
                utilisation_per_mille=_utilisation(load.used, load.allocatable),
            )
        )

    offers = _allowed_offers(snapshot, policy)
    staying = len(nodes) - len(candidates)
    options = _size_options(group, offers, candidates, staying, min_nodes) if candidates else []
    old_cost = sum((c.monthly_price for c in candidates), Decimal(0))
    group_cost = sum(
        (m.monthly_price for n in nodes if (m := workers.get(n.name)) and m.monthly_price),
        Decimal(0),
    )
    feasible = [o for o in options if o.nodes is not None and o.monthly_cost is not None]
    feasible.sort(key=lambda o: (o.monthly_cost, _moves(o, candidates), o.size_id))
    chosen = feasible[0] if feasible else None
    no_plan_reasons: list[str] = []
    if not nodes:
        no_plan_reasons.append(
            f"no node belongs to the group: none is labelled {NODEGROUP_LABEL}={policy.name} "
            f"or runs in a VPSie node group of that name"
        )
    elif not candidates:
        no_plan_reasons.append("no node of the group can be replaced (see exclusions)")
    elif chosen is None:
        no_plan_reasons.append("no allowed size can carry the group's pods")
    else:
        assert chosen.monthly_cost is not None
        saving = old_cost - chosen.monthly_cost
        percent = saving * 100 / group_cost if group_cost else Decimal(0)
        if saving <= 0:
            no_plan_reasons.append(
                f"the cheapest fleet ({chosen.nodes} x {chosen.size_name}) saves nothing"
            )
        elif saving < policy.min_saving_monthly:
            no_plan_reasons.append(
                f"saving ${_money(saving)}/month is below minimum "
                f"${_money(policy.min_saving_monthly)}"
            )
        elif percent < policy.min_saving_percent:
            no_plan_reasons.append(
                f"saving {percent:.1f}% of the group's cost is below minimum "
                f"{policy.min_saving_percent}%"
            )

    target: SizeOffer | None = None
    replacements: list[ReplacementSpec] = []
    opportunity: Opportunity | None = None
    k = 0
    if chosen is not None and not no_plan_reasons:
        target = next(o for o in offers if o.id == chosen.size_id)
        k = chosen.nodes or 0
        same = sorted(
            (c for c in candidates if c.size_id == target.id),
            key=lambda c: (-c.pods, -c.utilisation_per_mille, c.node),
        )
        kept = same[: min(k, len(same))]
        kept_names = {c.node for c in kept}
        for c in kept:
            exclusions.append(
                Exclusion(
                    node=c.node,
                    reason=ALREADY_TARGET_SIZE,
                    message=f"already of the target size {target.name} (id {target.id})",
                )
            )
        rest = [c for c in candidates if c.node not in kept_names]
        n_remove = len(candidates) - k
        by_emptiness = sorted(rest, key=lambda c: (c.utilisation_per_mille, c.pods, c.node))
        removed = {c.node for c in by_emptiness[:n_remove]}
        for c in rest:
            removal = c.node in removed
            if removal:
                reason = (
                    f"remove: its {c.pods} pods fit on the group's {k} {target.name} nodes; "
                    f"saves ${_money(c.monthly_price)}/month"
                )
            else:
                reason = (
                    f"{c.size_name or c.size_id} (${_money(c.monthly_price)}/month) -> "
                    f"{target.name} (${_money(target.monthly_price)}/month): saves "
                    f"${_money(c.monthly_price - target.monthly_price)}/month; "
                    f"{c.pods} pods move"
                )
            replacements.append(
                ReplacementSpec(
                    replacement_id="",
                    batch=0,
                    old_node=c.node,
                    old_worker=c.worker,
                    old_size_id=c.size_id,
                    old_monthly_price=c.monthly_price,
                    new_size_id=None if removal else target.id,
                    new_size_name="" if removal else target.name,
                    new_monthly_price=Decimal(0) if removal else target.monthly_price,
                    reason=reason,
                )
            )
        by_node = {c.node: c for c in candidates}
        replacements.sort(
            key=lambda r: (
                r.new_size_id is None,
                -r.monthly_saving,
                by_node[r.old_node].utilisation_per_mille,
                by_node[r.old_node].pods,
                r.old_node,
            )
        )
        added = sum(1 for r in replacements if r.new_size_id is not None)
        if n_remove == 0:
            opportunity = Opportunity.DOWNSIZE
        elif added == 0:
            opportunity = Opportunity.CONSOLIDATE
        else:
            opportunity = Opportunity.RIGHT_SIZE

    batch_idx = make_batches(len(replacements), policy.strategy, policy.batch_size)
    for b, idx in enumerate(batch_idx):
        for i in idx:
            replacements[i] = replace(replacements[i], batch=b)
    batches = tuple(tuple(replacements[i].old_node for i in idx) for idx in batch_idx)
    adds = [[replacements[i].new_size_id is not None for i in idx] for idx in batch_idx]
    duration = estimate_duration(
        adds,
        policy.strategy,
        max_concurrent=policy.max_concurrent,
        provision_s=policy.provision_estimate_s,
        drain_s=policy.drain_estimate_s,
        soak_s=policy.soak_s,
    )
    saving_total = sum((r.monthly_saving for r in replacements), Decimal(0))

    results: list[CheckResult] = [
        checks.check_cluster_health(snapshot, nodes, policy.min_healthy_percent)
    ]
    path = checks.node_count_path(len(nodes), policy.strategy, [(sum(a), len(a)) for a in adds])
    results.append(
        checks.check_node_group_health(
            path,
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            now=instant,
            last_plan_finished_at=last,
            cooldown_s=policy.cooldown_s,
        )
    )
    held = checks.budget_pods(group.movable_pods, snapshot.pdbs)
    needs = checks.budget_needs(batches, held)
    results.append(
        checks.check_disruption_budgets(
            needs, respect_pdbs=policy.respect_pdbs, pdb_count=len(snapshot.pdbs)
        )
    )
    moved_pods = sum(len(group.loads[r.old_node].movable) for r in replacements)
    if target is not None:
        tgt = target
        in_plan = {r.old_node for r in replacements}
        survivors = [group.bin_for(n.name) for n in nodes if n.name not in in_plan]
        old_bins = {r.old_node: group.bin_for(r.old_node) for r in replacements}
        shapes = [s for load in group.loads.values() for s, _, m in load.load_shapes if m]
        outcome = checks.simulate_batches(
            survivors,
            [[old_bins[n] for n in batch] for batch in batches],
            [sum(a) for a in adds],
            lambda i: group.make_new_bin(tgt, i),
            policy.strategy,
            min_cpu=min((s.cpu for s in shapes), default=0),
            min_mem=min((s.memory for s in shapes), default=0),
        )
    else:
        outcome = checks.CapacityOutcome(failed_batch=None, unplaced_pods=0)
    results.append(checks.check_capacity(outcome, batches=len(batches), pods_moved=moved_pods))
    results.append(checks.check_timing(policy.maintenance_windows, instant, duration))

    if no_plan_reasons:
        action, reasons = Action.REJECT, tuple(no_plan_reasons)
    else:
        action, reasons = _recommend(results, policy)

    summary: dict[str, Scalar] = {
        "taken_at": snapshot.taken_at,
        "api_reachable": snapshot.api_reachable,
        "nodes": len(snapshot.nodes),
        "nodes_ready": sum(1 for n in snapshot.nodes if n.ready),
        "pods": len(snapshot.pods),
        "pdbs": len(snapshot.pdbs),
        "group_nodes": len(nodes),
        "group_pods": sum(len(load.movable) for load in group.loads.values()),
        "candidates": len(candidates),
        "excluded": len(exclusions),
        "group_monthly_cost": _money(group_cost),
        "candidates_monthly_cost": _money(old_cost),
        "target_size_id": target.id if target is not None else None,
        "target_size_name": target.name if target is not None else None,
        "target_nodes": k if target is not None else None,
        "daemonset_cpu_millis": group.ds_overhead.cpu_millis,
        "daemonset_memory_bytes": group.ds_overhead.memory_bytes,
        "headroom_percent": policy.headroom_percent,
    }
    prices = {str(o.id): str(o.monthly_price) for o in sorted(snapshot.offers, key=lambda o: o.id)}
    return Analysis(
        group=policy.name,
        cluster=policy.cluster,
        now=rfc3339(instant),
        strategy=policy.strategy,
        group_nodes=tuple(n.name for n in nodes),
        candidates=tuple(candidates),
        exclusions=tuple(sorted(exclusions, key=lambda e: (e.node, e.reason))),
        options=tuple(options),
        target=target,
        target_nodes=k,
        opportunity=opportunity,
        replacements=tuple(replacements),
        batches=batches,
        monthly_saving=saving_total,
        checks=tuple(results),
        action=action,
        action_reasons=reasons,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        estimated_duration_s=duration,
        snapshot_summary=summary,
        prices_seen=prices,
    )


def make_plan(
    analysis: Analysis, policy: NodeGroupPolicy, *, now: datetime | str | None = None
) -> PlanSpec | None:
    """The analysis written down as a `PlanSpec`, or None when there is nothing to replace
    (then `analysis.action_reasons` says why). `now` defaults to the analysis instant.

    plan_id is "plan-" + the first 20 hex digits of SHA-256 over the plan's content (which
    includes the instant and the snapshot time); replacement ids are "<plan_id>/<old node>".
    """
    if analysis.opportunity is None or not analysis.replacements:
        return None
    created = rfc3339(parse_instant(now)) if now is not None else analysis.now
    body = PlanSpec(
        plan_id="",
        cluster=analysis.cluster,
        node_group=analysis.group,
        strategy=analysis.strategy,
        created_at=created,
        opportunity=analysis.opportunity,
        replacements=analysis.replacements,
        batches=(),
        max_concurrent=max(policy.max_concurrent, 1),
        checks=analysis.checks,
        recommended_action=analysis.action,
        action_reasons=analysis.action_reasons,
        exclusions=analysis.exclusions,
        monthly_saving=analysis.monthly_saving,
        estimated_duration_s=analysis.estimated_duration_s,
        rollback_steps=rollback_steps(analysis.strategy),
        require_approval=policy.require_approval,
        provision_timeout_s=policy.provision_timeout_s,
        drain_timeout_s=policy.drain_timeout_s,
        soak_s=policy.soak_s if analysis.strategy is Strategy.BLUE_GREEN else 0.0,
        min_nodes=analysis.min_nodes,
        min_healthy_percent=policy.min_healthy_percent,
        snapshot_summary=analysis.snapshot_summary,
        prices_seen=analysis.prices_seen,
    )
    plan_id = "plan-" + hashlib.sha256(repr(body).encode()).hexdigest()[:20]
    reps = tuple(
        replace(r, replacement_id=f"{plan_id}/{r.old_node}") for r in analysis.replacements
    )
    by_node = {r.old_node: r.replacement_id for r in reps}
    batches = tuple(tuple(by_node[n] for n in batch) for batch in analysis.batches)
    return replace(body, plan_id=plan_id, replacements=reps, batches=batches)


def plan(
    snapshot: ClusterSnapshot,
    policy: NodeGroupPolicy,
    *,
    now: datetime | str,
    last_plan_finished_at: datetime | str | None = None,
) -> tuple[Analysis, PlanSpec | None]:
    """`analyze` then `make_plan`, for callers that want both."""
    result = analyze(snapshot, policy, now=now, last_plan_finished_at=last_plan_finished_at)
    return result, make_plan(result, policy)


def validate_plan(spec: PlanSpec, policy: NodeGroupPolicy | None = None) -> list[str]:
    """Invariants every plan must hold; an empty list means valid.

    With `policy`, batch sizes are checked against it too. The group's node count before the
    plan is read from `snapshot_summary["group_nodes"]`.
    """
    problems: list[str] = []
    ids = [r.replacement_id for r in spec.replacements]
    if not spec.replacements:
        problems.append("plan has no replacements")
    if len(set(ids)) != len(ids):
        problems.append("replacement ids are not unique")
    olds = [r.old_node for r in spec.replacements]
    if len(set(olds)) != len(olds):
        dup = sorted({n for n in olds if olds.count(n) > 1})
        problems.append(f"node(s) replaced twice: {', '.join(dup)}")
    seen: dict[str, int] = {}
    for b, batch in enumerate(spec.batches):
        if not batch:
            problems.append(f"batch {b} is empty")
        for rid in batch:
            if rid in seen:
                problems.append(f"replacement {rid} is in batches {seen[rid]} and {b}")
            seen[rid] = b
    by_id = {r.replacement_id: r for r in spec.replacements}
    for rid in ids:
        if rid not in seen:
            problems.append(f"replacement {rid} is in no batch")
    for rid, b in sorted(seen.items()):
        r = by_id.get(rid)
        if r is None:
            problems.append(f"batch {b} names unknown replacement {rid}")
        elif r.batch != b:
            problems.append(f"replacement {rid} says batch {r.batch} but is listed in {b}")
    for r in spec.replacements:
        if not r.old_worker:
            problems.append(f"replacement {r.replacement_id} has no old worker")
        if r.old_size_id <= 0:
            problems.append(f"replacement {r.replacement_id} has no old size")
        if r.new_size_id is None and r.new_monthly_price != 0:
            problems.append(f"removal {r.replacement_id} has a new price")
    if spec.max_concurrent < 1:
        problems.append("max_concurrent must be at least 1")
    if policy is not None and spec.strategy is not Strategy.BLUE_GREEN:
        for b, batch in enumerate(spec.batches):
            if len(batch) > max(policy.batch_size, 1):
                problems.append(f"batch {b} has {len(batch)} nodes, above batchSize")
    if spec.strategy is Strategy.BLUE_GREEN and len(spec.batches) > 1:
        problems.append("blue-green plans have exactly one batch")
    total = sum((r.monthly_saving for r in spec.replacements), Decimal(0))
    if total != spec.monthly_saving:
        problems.append(f"savings do not add up: {total} != {spec.monthly_saving}")
    if spec.monthly_saving <= 0:
        problems.append("plan saves nothing")
    current = spec.snapshot_summary.get("group_nodes")
    if isinstance(current, int) and not isinstance(current, bool):
        shape = [
            (
                sum(1 for rid in batch if rid in by_id and by_id[rid].new_size_id is not None),
                len(batch),
            )
            for batch in spec.batches
        ]
        path = checks.node_count_path(current, spec.strategy, shape)
        if path.lowest < spec.min_nodes:
            problems.append(f"node count drops to {path.lowest}, below minNodes {spec.min_nodes}")
    else:
        problems.append("snapshot_summary lacks group_nodes")
    failed = [c.name for c in spec.checks if c.status is CheckStatus.FAILED]
    if failed and spec.recommended_action in (Action.PROCEED, Action.NEEDS_REVIEW):
        problems.append(f"action {spec.recommended_action} despite failed checks: {failed}")
    if len(spec.checks) != 5:
        problems.append(f"plan carries {len(spec.checks)} checks, not 5")
    return problems
