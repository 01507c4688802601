"""From a snapshot to a decision: candidates, the cheapest fleet, the checks, the plan.

`analyze` does the thinking and `make_plan` writes it down as a `PlanSpec`; `validate_plan`
re-checks a plan's invariants independently of how it was made. All three are pure: the same
snapshot, policy and instant give a byte-identical plan, whatever order the snapshot lists
things in (everything is sorted by a stable key before use; money stays `Decimal`).

Cost model: a node costs its VPSie size's monthly `price`. The fleet search (`planner.fleet`)
finds the cheapest mix of allowed sizes carrying the candidates' movable pods on nodes of room
`usable(capacity - reserve) - DaemonSet load`, at least minNodes minus the nodes that stay.
The fleet may have more nodes than the candidates when more, smaller nodes cost less (each
new node pays the group's DaemonSet load and the reserve, which the search weighs): at most as
many as cost less than the candidates at the cheapest allowed size, and within maxNodes minus
the nodes that stay (`_ceiling`). The nodes beyond one per replaced candidate are add-only
replacements (`ReplacementSpec.adds_only`: a node added, none removed; ids "+1", "+2", ...).
Every single size packed by first-fit decreasing stays a fallback. Fleets are tried cheapest
first against the batch-by-batch capacity check. The saving (old candidates' cost minus the
new fleet's) must reach `min_saving_monthly` and `min_saving_percent` of the whole group's
monthly cost.

Candidates already of a size the fleet has are kept (with the column program, the ones it
chose), the least utilised of the others are removed without replacement when the fleet is
smaller (from the most populated topology domain first), the rest get a node of the fleet.
Priority (execution order): add-only replacements first, then replacements that add a node
before pure removals (capacity is built before it is taken away), then larger saving, lower
utilisation, fewer pods, name.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from planner import checks
from planner.fleet import COLUMN_MAX_NODES, Fleet, FleetSearch, SizeRoom, describe
from planner.inventory import (
    ALREADY_TARGET_SIZE,
    POD_DISRUPTION_BUDGET,
    RECENTLY_ADDED,
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
    eligible,
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
    SIZE_LABEL,
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
    # The group's nodes per size before and after the plan ("3 x k8s-8c-16g + 1 x k8s-4c-8g"),
    # and the cheaper fleets the batch-by-batch capacity check ruled out, with why.
    fleet_before: str = ""
    fleet_after: str = ""
    rejected_fleets: tuple[str, ...] = ()


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
        self,
        snapshot: ClusterSnapshot,
        policy: NodeGroupPolicy,
        nodes: list[NodeInfo],
        observed: dict[int, Resources] | None = None,
    ) -> None:
        self.policy = policy
        self.nodes = nodes
        # Per size id, the capacity existing Nodes of that size report when it is below the
        # offer's (memory ballooning on shared-CPU plans): new nodes are counted with it.
        self.observed = observed or {}
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
        self.offers = {o.id: o for o in snapshot.offers}
        # The cluster's other nodes, for topology spread only (they take no pod in the
        # simulation): needed only when some pod of the group spreads.
        self.observers: list[Bin] = []
        self.domains: dict[str, str] | None = None  # see `_domains`
        self.spread_keys = self.book.spread_keys()  # of the group's own pods
        if self.spread_keys:
            others = [n for n in snapshot.nodes if n.name not in names]
            bins = {n.name: self.book.bin(n.name, n.labels, n.taints, Resources()) for n in others}
            for pod in snapshot.pods:
                b = bins.get(pod.node_name)
                if b is not None and pod.labels and counts_as_load(pod):
                    b.add(self.book.shape(pod), 1, movable=False)
            self.observers = [bins[n.name] for n in others]

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

    def new_free(self, offer: SizeOffer) -> Resources:
        """A fresh node's room: usable allocatable of `offer` less the group's DaemonSet load."""
        free = self._new_free.get(offer.id)
        if free is None:
            alloc = effective_allocatable(capacity_of(offer, self.observed.get(offer.id)))
            free = self._new_free[offer.id] = (
                usable(alloc, self.policy.headroom_percent) - self.ds_overhead
            )
        return free

    def new_free_of(self, size_id: int | None) -> Resources:
        offer = self.offers.get(size_id) if size_id is not None else None
        return self.new_free(offer) if offer is not None else Resources()

    def make_new_bin(self, offer: SizeOffer, index: int) -> Bin:
        """A fresh node of `offer`."""
        name = f"new-{offer.id}-{index}"
        return Bin(name, self.labels, self.taints, self.new_free(offer), self.template_class)

    def make_new_bin_of(self, size_id: int, index: int) -> Bin:
        return self.make_new_bin(self.offers[size_id], index)

    def movable_buckets(self, names: Sequence[str]) -> list[tuple[Shape, int]]:
        counts: dict[Shape, int] = {}
        for n in names:
            for shape, count, movable in self.loads[n].load_shapes:
                if movable:
                    counts[shape] = counts.get(shape, 0) + count
        return sorted(counts.items(), key=lambda kv: kv[0].sort_key)


def observed_capacity(
    snapshot: ClusterSnapshot, workers: dict[str, WorkerMatch]
) -> dict[int, Resources]:
    """Per size id, the smallest capacity its existing Nodes report (all the cluster's)."""
    found: dict[int, Resources] = {}
    for node in snapshot.nodes:
        match = workers.get(node.name)
        if match is None or not match.size_id:
            continue
        cap = node_capacity(node)
        seen = found.get(match.size_id)
        found[match.size_id] = cap if seen is None else Resources(
            cpu_millis=min(seen.cpu_millis, cap.cpu_millis),
            memory_bytes=min(seen.memory_bytes, cap.memory_bytes),
            pods=min(seen.pods, cap.pods),
        )
    return found


def capacity_of(offer: SizeOffer, observed: Resources | None) -> Resources:
    """The offer's figures, or what its Nodes report where that is less."""
    advertised = offer_capacity(offer)
    if observed is None:
        return advertised
    return Resources(
        cpu_millis=min(advertised.cpu_millis, observed.cpu_millis or advertised.cpu_millis),
        memory_bytes=min(
            advertised.memory_bytes, observed.memory_bytes or advertised.memory_bytes
        ),
        pods=min(advertised.pods, observed.pods or advertised.pods),
    )


def _size_options(
    group: _Group,
    offers: Sequence[SizeOffer],
    candidates: Sequence[Candidate],
    staying: int,
    min_nodes: int,
    bound: Decimal | None,
    ceiling: int,
) -> list[SizeOption]:
    """Each allowed size alone, packed by first-fit decreasing on at most `ceiling` nodes; a
    size whose summed-requests lower bound already costs more than `bound` (the fleet
    search's best) is not packed."""
    buckets = group.movable_buckets([c.node for c in candidates])
    min_cpu = min((s.cpu for s, _ in buckets), default=0)
    min_mem = min((s.memory for s, _ in buckets), default=0)
    floor = max(min_nodes - staying, 0)
    need_cpu = sum(s.cpu * n for s, n in buckets)
    need_mem = sum(s.memory * n for s, n in buckets)
    need_pods = sum(n for _, n in buckets)
    out: list[SizeOption] = []
    for offer in offers:
        free = group.new_free(offer)
        least = max(
            floor,
            *(
                -(-need // room) if room > 0 else ceiling + 1
                for need, room in (
                    (need_cpu, free.cpu_millis),
                    (need_mem, free.memory_bytes),
                    (need_pods, free.pods),
                )
            ),
        )
        if bound is not None and offer.monthly_price * least > bound:
            out.append(
                SizeOption(
                    size_id=offer.id,
                    size_name=offer.name,
                    monthly_price=offer.monthly_price,
                    nodes=None,
                    monthly_cost=None,
                    note=(
                        f"not packed: the pods' summed requests need at least {least} nodes "
                        f"(${_money(offer.monthly_price * least)}/month), more than the "
                        f"fleet found (${_money(bound)}/month)"
                    ),
                )
            )
            continue

        def factory(i: int, offer: SizeOffer = offer) -> Bin:
            return group.make_new_bin(offer, i)

        packer = Packer(
            bins=[], factory=factory, max_new=ceiling, min_cpu=min_cpu, min_mem=min_mem
        )
        left = packer.place_all(buckets)
        k = max(packer.opened, floor)
        nodes: int | None = None
        if left:
            shape = left[0][0]
            note = (
                f"{sum(c for _, c in left)} pods do not fit on {ceiling} nodes of this "
                f"size (e.g. a {shape.describe()})"
            )
        elif k > ceiling:
            note = f"minNodes needs {k} nodes, more than the {ceiling} the group may have"
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


@dataclass(frozen=True, slots=True)
class _FleetOption:
    """A whole new fleet for the candidates: nodes per size (sizes with none left out)."""

    members: tuple[tuple[SizeOffer, int], ...]  # by price, then id
    cost: Decimal
    # The fleet search's packing, per size id: each node's planned pods per (CPU, memory)
    # request; empty for a single-size fleet sized by first-fit decreasing.
    layout: dict[int, list[dict[tuple[int, int], int]]] = field(default_factory=dict)
    # Set when the fleet was sized around candidates that stay as they are: those nodes, and
    # what the packing adds to each of them.
    keep: tuple[str, ...] | None = None
    keep_plans: dict[str, dict[tuple[int, int], int]] = field(default_factory=dict)

    @property
    def nodes(self) -> int:
        return sum(n for _, n in self.members)

    @property
    def label(self) -> str:
        return describe([(o.name, n) for o, n in self.members])

    def sort_key(self) -> tuple[Decimal, int, tuple[tuple[int, int], ...]]:
        return (self.cost, self.nodes, tuple((o.id, n) for o, n in self.members))


@dataclass(slots=True)
class _Choice:
    fleet: _FleetOption
    kept: list[Candidate]
    replacements: list[ReplacementSpec]  # in execution order, batch not yet set
    outcome: checks.CapacityOutcome


# Fleets tried against the batch-by-batch capacity check before the cheapest is kept anyway
# (and rejected by that check).
MAX_FLEETS_TRIED = 6
# Groups of up to this many candidates let the column program choose which nodes stay.
MAX_KEEPABLE = 100


def _budget_exclusion(node: str, held: checks.BudgetPods) -> Exclusion | None:
    """A node holding more pods of one PDB than it allows to be disrupted now: its drain
    could never finish, so it is left out (the rest of the group is still planned)."""
    counts = held.by_node.get(node, {})
    for ref in sorted(counts):
        allowed = held.pdbs[ref].disruptions_allowed
        if counts[ref] > allowed:
            return Exclusion(
                node=node,
                reason=POD_DISRUPTION_BUDGET,
                message=(
                    f"holds {counts[ref]} pods of PodDisruptionBudget {ref}, which allows "
                    f"{allowed} disruptions now"
                ),
            )
    return None


def _why_no_new_node(
    group: _Group, offers: Sequence[SizeOffer], candidates: Sequence[Candidate]
) -> str:
    """Names the first kind of pod that may not run on a new node at all (its labels and
    taints are the group's template), with the rule that keeps it off."""
    if not offers:
        return ""
    template = group.make_new_bin(offers[0], 0)
    for shape, _ in group.movable_buckets([c.node for c in candidates]):
        if eligible(shape, template):
            continue
        keys = [k for _, k, _ in shape.spread]
        missing = [k for k in keys if k != HOSTNAME_LABEL and k not in template.labels]
        if missing:
            return (
                f": a {shape.describe()} spreads over {missing[0]} (DoNotSchedule), a label "
                f"new nodes would not carry (the group's nodes do not share one value of it)"
            )
        return f": a {shape.describe()} may not run on a new node (its selectors or tolerations)"
    return ""


def _cooldown_exclusion(node: NodeInfo, now: datetime, cooldown_s: float) -> Exclusion | None:
    """A node one of our plans added (it carries our size label) less than the cooldown ago
    is not replaced again yet: no churn on a node a plan just chose. Its age is the Node's
    creation time as the API gave it; a node whose creation time cannot be read is treated
    as just added (we never act on what we could not read)."""
    if SIZE_LABEL not in node.labels or cooldown_s <= 0:
        return None
    try:
        created = parse_instant(node.created_at)
    except ValueError:
        return Exclusion(
            node=node.name,
            reason=RECENTLY_ADDED,
            message=(
                f"added by a plan (label {SIZE_LABEL}) at an unreadable time "
                f"({node.created_at!r}): not replaced until that can be read"
            ),
        )
    until = created + timedelta(seconds=cooldown_s)
    if now >= until:
        return None
    return Exclusion(
        node=node.name,
        reason=RECENTLY_ADDED,
        message=(
            f"added by a plan at {rfc3339(created)}: not a candidate again before "
            f"{rfc3339(until)} (cooldownPeriod)"
        ),
    )


def _fleet_option(
    members: Sequence[tuple[SizeOffer, int]],
    layout: dict[int, list[dict[tuple[int, int], int]]] | None = None,
) -> _FleetOption:
    kept = tuple(
        sorted(((o, n) for o, n in members if n > 0), key=lambda m: (m[0].monthly_price, m[0].id))
    )
    cost = sum((o.monthly_price * n for o, n in kept), Decimal(0))
    return _FleetOption(members=kept, cost=cost, layout=layout or {})


def _ceiling(
    candidates: Sequence[Candidate],
    staying: int,
    max_nodes: int | None,
    offers: Sequence[SizeOffer],
) -> int:
    """The most nodes the new fleet may have. One per candidate, or more when more, smaller
    nodes can cost less: as many nodes of the cheapest allowed size as cost less than the
    candidates do (any fleet with more nodes costs more than today, whatever its sizes), but
    no more than the column program reaches (COLUMN_MAX_NODES) for groups it sizes. Always
    within maxNodes minus the nodes that stay."""
    n = len(candidates)
    cheapest = min((o.monthly_price for o in offers if o.monthly_price > 0), default=None)
    most = n
    if cheapest is not None:
        old_cost = sum((c.monthly_price for c in candidates), Decimal(0))
        affordable = int((old_cost - Decimal("0.005")) // cheapest)  # strictly cheaper
        most = max(n, affordable if n > COLUMN_MAX_NODES else min(affordable, COLUMN_MAX_NODES))
    if max_nodes is None:
        return most
    return min(most, max(max_nodes - staying, 0))


def _searched_fleets(
    group: _Group,
    offers: Sequence[SizeOffer],
    candidates: Sequence[Candidate],
    staying: int,
    min_nodes: int,
    max_nodes: int | None,
    policy: NodeGroupPolicy,
) -> tuple[list[_FleetOption], Iterator[_FleetOption]]:
    """The fleet search's fleets (of any mix of sizes): those found at once, and the rest,
    found only when asked for. A column fleet within 1% of its bound comes alone (the further
    ones are alternatives for when it fails the capacity check)."""
    buckets = group.movable_buckets([c.node for c in candidates])
    if not offers:
        return [], iter(())
    template = group.make_new_bin(offers[0], 0)
    if not all(eligible(s, template) for s, _ in buckets):
        return [], iter(())  # some pod may not run on a new node at all (labels, taints)
    sizes = [SizeRoom(offer=o, free=group.new_free(o)) for o in offers]
    # Candidates of an allowed size may stay as they are, with what they hold: the column
    # program weighs keeping each against replacing it (small groups; larger ones are sized
    # as if every candidate were empty, then refitted around the nodes kept).
    size_index = {o.id: i for i, o in enumerate(offers)}
    keepable: list[tuple[int, Resources, list[tuple[Shape, int]]]] = []
    keep_names: list[str] = []
    if policy.fleet_solver and len(candidates) <= MAX_KEEPABLE:
        for c in sorted(candidates, key=lambda c: c.node):  # whatever order the snapshot has
            if c.size_id in size_index:
                b = group.bin_for(c.node)
                room = Resources(cpu_millis=b.cpu, memory_bytes=b.mem, pods=b.pods)
                held = [(s, n) for s, n, m in group.loads[c.node].load_shapes if m]
                keepable.append((size_index[c.size_id], room, held))
                keep_names.append(c.node)
    search = FleetSearch(
        buckets,
        sizes,
        floor=max(min_nodes - staying, 0),
        ceiling=_ceiling(candidates, staying, max_nodes, offers),
        solver=policy.fleet_solver,
        time_budget_s=policy.fleet_solver_budget_s,
        keepable=keepable,
    )
    def option_of(fleet: Fleet) -> _FleetOption:
        layout: dict[int, list[dict[tuple[int, int], int]]] = {}
        for i, slots in fleet.layout:
            layout.setdefault(sizes[i].offer.id, []).append(dict(slots))
        option = _fleet_option([(sizes[i].offer, n) for i, n in enumerate(fleet.counts)], layout)
        if fleet.keeps_chosen:
            option = replace(
                option,
                keep=tuple(keep_names[i] for i, _ in fleet.kept),
                keep_plans={keep_names[i]: dict(slots) for i, slots in fleet.kept},
            )
        return option

    found = search.fleets()
    out = [option_of(f) for f in itertools.islice(found, 1 if search.uses_columns else 0)]
    if not search.column_tight:
        # No column fleet, or one its bound leaves room below: the search may do better.
        out.extend(option_of(f) for f in itertools.islice(found, MAX_FLEETS_TRIED - len(out)))
    rest = (option_of(f) for f in itertools.islice(found, MAX_FLEETS_TRIED - len(out)))
    return out, rest


def _fleet_choices(
    searched: Sequence[_FleetOption],
    offers: Sequence[SizeOffer],
    options: Sequence[SizeOption],
    ceiling: int,
) -> list[_FleetOption]:
    """Fleets for the candidates' pods, cheapest first: the fleet search's (mixed) fleets and
    every feasible single size (a fallback the search cannot do worse than)."""
    found: dict[tuple[tuple[int, int], ...], _FleetOption] = {}
    for f in searched:
        found.setdefault(tuple((o.id, n) for o, n in f.members), f)
    by_id = {o.id: o for o in offers}
    for opt in options:
        if opt.nodes is not None and opt.nodes <= ceiling:
            f = _fleet_option([(by_id[opt.size_id], opt.nodes)])
            found.setdefault(tuple((o.id, n) for o, n in f.members), f)
    # The searched fleets first (cheapest first), then the single sizes (cheapest first): a
    # saving found by first-fit decreasing today is never lost to a tighter fleet failing.
    ordered = sorted(found.values(), key=lambda f: f.sort_key())
    singles = [f for f in ordered if len(f.members) == 1 and not f.layout]
    mixed = [f for f in ordered if f not in singles][: MAX_FLEETS_TRIED - 2]
    return sorted([*mixed, *singles[:2]], key=lambda f: f.sort_key())


def _refit_around_kept(
    kept: Sequence[Candidate],
    offers: Sequence[SizeOffer],
    candidates: Sequence[Candidate],
    group: _Group,
    staying: int,
    min_nodes: int,
    max_nodes: int | None,
    policy: NodeGroupPolicy,
) -> _FleetOption | None:
    """The cheapest fleet for the pods of the candidates that are not kept, the kept nodes'
    free room (usable less what they hold) counting as nodes that are there anyway."""
    kept_names = [c.node for c in kept]
    rest = [c for c in candidates if c.node not in set(kept_names)]
    buckets = group.movable_buckets([c.node for c in rest])
    if not offers or not rest:
        return None
    bins = [group.bin_for(n) for n in kept_names]
    rooms = [Resources(cpu_millis=b.cpu, memory_bytes=b.mem, pods=b.pods) for b in bins]
    sizes = [SizeRoom(offer=o, free=group.new_free(o)) for o in offers]
    search = FleetSearch(
        buckets,
        sizes,
        floor=max(min_nodes - staying - len(kept), 0),
        ceiling=_ceiling(rest, staying + len(kept), max_nodes, offers),
        solver=policy.fleet_solver,
        existing=rooms,
    )
    fleet = next(search.fleets(), None)
    if fleet is None:
        return None
    by_id = {o.id: o for o in offers}
    counts: dict[int, int] = {}
    for c in kept:
        counts[c.size_id] = counts.get(c.size_id, 0) + 1
    layout: dict[int, list[dict[tuple[int, int], int]]] = {}
    keep_plans: dict[str, dict[tuple[int, int], int]] = {}
    for i, slots in fleet.layout:
        if i >= len(sizes):
            keep_plans[kept_names[i - len(sizes)]] = dict(slots)
        else:
            layout.setdefault(sizes[i].offer.id, []).append(dict(slots))
    for i, n in enumerate(fleet.counts):
        counts[sizes[i].offer.id] = counts.get(sizes[i].offer.id, 0) + n
    option = _fleet_option([(by_id[sid], n) for sid, n in counts.items() if sid in by_id], layout)
    return replace(option, keep=tuple(kept_names), keep_plans=keep_plans)


def _below_threshold(
    fleet: _FleetOption, old_cost: Decimal, group_cost: Decimal, policy: NodeGroupPolicy
) -> str | None:
    saving = old_cost - fleet.cost
    percent = saving * 100 / group_cost if group_cost else Decimal(0)
    if saving <= 0:
        return f"the cheapest fleet ({fleet.label}) saves nothing"
    if saving < policy.min_saving_monthly:
        return (
            f"saving ${_money(saving)}/month is below minimum "
            f"${_money(policy.min_saving_monthly)} (cheapest fleet: {fleet.label})"
        )
    if percent < policy.min_saving_percent:
        return (
            f"saving {percent:.1f}% of the group's cost is below minimum "
            f"{policy.min_saving_percent}% (cheapest fleet: {fleet.label})"
        )
    return None


ZONE_LABEL = "topology.kubernetes.io/zone"


def _domains(group: _Group) -> dict[str, str]:
    """Each group node's topology domain for removals: the value of the first (sorted)
    non-hostname topology key the group's pods spread over, else of the zone label; nodes
    without it are in no domain."""
    if group.domains is None:
        keys = [k for k in group.spread_keys if k != HOSTNAME_LABEL]
        key = keys[0] if keys else ZONE_LABEL
        group.domains = {n.name: v for n in group.nodes if (v := n.labels.get(key)) is not None}
    return group.domains


def _removals(rest: Sequence[Candidate], n_remove: int, domains: dict[str, str]) -> list[str]:
    """Which candidates to remove outright: one at a time from the topology domain that has
    the most nodes left (ties: its name), the least utilised node of it first; candidates in
    no domain, and any domain-less group, the least utilised first."""
    emptiest = sorted(rest, key=lambda c: (c.utilisation_per_mille, c.pods, c.node))
    if not any(c.node in domains for c in rest):
        return [c.node for c in emptiest[:n_remove]]
    left: dict[str, int] = {}
    for d in domains.values():
        left[d] = left.get(d, 0) + 1
    pool = list(emptiest)
    out: list[str] = []
    while len(out) < n_remove and pool:
        placed = [c for c in pool if c.node in domains]
        if not placed:
            out.extend(c.node for c in pool[: n_remove - len(out)])
            break
        top = max({domains[c.node] for c in placed}, key=lambda d: (left[d], d))
        pick = next(c for c in placed if domains[c.node] == top)
        out.append(pick.node)
        pool.remove(pick)
        left[top] -= 1
    return out


def _assign(
    fleet: _FleetOption,
    candidates: Sequence[Candidate],
    domains: dict[str, str] | None = None,
) -> tuple[list[Candidate], list[ReplacementSpec]]:
    """Which candidates stay (already of a size the fleet has, most loaded first), which are
    removed (the least utilised), and which size replaces each of the others (the largest new
    sizes replace the most loaded nodes). When the group's nodes are in topology domains
    (`_domains`), nodes leave from the most populated domain first: the same-size nodes not
    kept, and the ones removed outright."""
    kept: list[Candidate] = []
    slots: list[SizeOffer] = []
    for offer, n in fleet.members:
        same = sorted(
            (c for c in candidates if c.size_id == offer.id),
            key=lambda c: (-c.pods, -c.utilisation_per_mille, c.node),
        )
        if fleet.keep is not None:
            same = [c for c in same if c.node in fleet.keep]
        elif domains and len(same) > n and any(c.node in domains for c in same):
            # The ones not kept leave from the most populated topology domain first.
            leaving = set(_removals(same, len(same) - n, domains))
            same = [c for c in same if c.node not in leaving]
        kept.extend(same[:n])
        slots.extend([offer] * (n - min(n, len(same))))
    kept_names = {c.node for c in kept}
    rest = [c for c in candidates if c.node not in kept_names]
    n_remove = max(len(rest) - len(slots), 0)
    gone = set(_removals(rest, n_remove, domains or {}))
    by_emptiness = sorted(rest, key=lambda c: (c.utilisation_per_mille, c.pods, c.node))
    removed = [c for c in by_emptiness if c.node in gone]
    replaced = sorted(
        (c for c in rest if c.node not in gone),
        key=lambda c: (-c.utilisation_per_mille, -c.pods, c.node),
    )
    slots.sort(key=lambda o: (-o.cpu, -o.ram_mb, -o.monthly_price, o.id))
    # More new nodes than candidates left to replace: the smallest new nodes are added where
    # none is removed (the fleet grows).
    extra = slots[len(replaced):]
    slots = slots[: len(replaced)]
    out: list[ReplacementSpec] = []
    for i, offer in enumerate(extra, start=1):
        out.append(
            ReplacementSpec(
                replacement_id=f"+{i}",
                batch=0,
                old_node="",
                old_worker="",
                old_size_id=0,
                old_monthly_price=Decimal(0),
                new_size_id=offer.id,
                new_size_name=offer.name,
                new_monthly_price=offer.monthly_price,
                reason=(
                    f"add a {offer.name} (${_money(offer.monthly_price)}/month) where none is "
                    f"removed: the new fleet ({fleet.label}) has more, smaller nodes and costs "
                    "less"
                ),
            )
        )
    for c in removed:
        reason = (
            f"remove: its {c.pods} pods fit on the new fleet ({fleet.label}); "
            f"saves ${_money(c.monthly_price)}/month"
        )
        out.append(_spec(c, None, reason))
    for c, offer in zip(replaced, slots, strict=True):
        reason = (
            f"{c.size_name or c.size_id} (${_money(c.monthly_price)}/month) -> "
            f"{offer.name} (${_money(offer.monthly_price)}/month): saves "
            f"${_money(c.monthly_price - offer.monthly_price)}/month; {c.pods} pods move"
        )
        out.append(_spec(c, offer, reason))
    return kept, out


def _spec(c: Candidate, offer: SizeOffer | None, reason: str) -> ReplacementSpec:
    return ReplacementSpec(
        replacement_id="",
        batch=0,
        old_node=c.node,
        old_worker=c.worker,
        old_size_id=c.size_id,
        old_monthly_price=c.monthly_price,
        new_size_id=None if offer is None else offer.id,
        new_size_name="" if offer is None else offer.name,
        new_monthly_price=Decimal(0) if offer is None else offer.monthly_price,
        reason=reason,
    )


def _orders(
    reps: list[ReplacementSpec], candidates: Sequence[Candidate], group: _Group
) -> list[list[ReplacementSpec]]:
    """Execution orders to try, the usual priority first: replacements that add a node before
    pure removals, then larger saving, lower utilisation, fewer pods, name. Then: the largest
    new nodes first (capacity is built before it is needed), the fullest old nodes last."""
    by_node = {c.node: c for c in candidates}
    # Add-only replacements come first in every order: capacity only grows before any is
    # taken away (largest first, then their ids).
    room = {key_of(r): group.new_free_of(r.new_size_id) for r in reps}

    def size_key(r: ReplacementSpec) -> int:
        free = room[key_of(r)]
        return -free.cpu_millis - free.memory_bytes // (1 << 20)

    adds = sorted((r for r in reps if r.adds_only), key=lambda r: (size_key(r), r.replacement_id))
    others = [r for r in reps if not r.adds_only]
    usual = sorted(
        others,
        key=lambda r: (
            r.new_size_id is None,
            -r.monthly_saving,
            by_node[r.old_node].utilisation_per_mille,
            by_node[r.old_node].pods,
            r.old_node,
        ),
    )
    capacity_first = sorted(
        others,
        key=lambda r: (
            r.new_size_id is None,
            size_key(r),
            by_node[r.old_node].utilisation_per_mille,
            r.old_node,
        ),
    )
    emptiest_first = sorted(
        others,
        key=lambda r: (
            by_node[r.old_node].utilisation_per_mille,
            by_node[r.old_node].pods,
            r.old_node,
        ),
    )
    out: list[list[ReplacementSpec]] = []
    for order in (usual, capacity_first, emptiest_first):
        if [*adds, *order] not in out:
            out.append([*adds, *order])
    return out


def _batches(order: Sequence[ReplacementSpec], policy: NodeGroupPolicy) -> list[list[int]]:
    """Batches of `order` (add-only replacements first): the adds in batches of their own, so
    a rolling plan has every added node Ready before it drains any old node; blue-green keeps
    its one batch."""
    adds = sum(1 for r in order if r.adds_only)
    if policy.strategy is Strategy.BLUE_GREEN or not adds:
        return make_batches(len(order), policy.strategy, policy.batch_size)
    head = make_batches(adds, policy.strategy, policy.batch_size)
    rest = make_batches(len(order) - adds, policy.strategy, policy.batch_size)
    return [*head, *([i + adds for i in batch] for batch in rest)]


def key_of(r: ReplacementSpec) -> str:
    """How the analysis names a replacement (its batches list these): the old node, or for an
    add-only replacement its id ("+1", "+2", ...: never a node name, "+" is not allowed)."""
    return r.old_node or r.replacement_id


def _try_fleet(
    fleet: _FleetOption,
    candidates: Sequence[Candidate],
    group: _Group,
    nodes: Sequence[NodeInfo],
    policy: NodeGroupPolicy,
) -> _Choice:
    """The fleet as replacements, in the first order whose batches all pass the capacity
    simulation (else the usual order, with its failure)."""
    kept, reps = _assign(fleet, candidates, _domains(group))
    first: _Choice | None = None
    for order in _orders(reps, candidates, group):
        outcome = _simulate(order, group, nodes, policy, fleet, kept)
        choice = _Choice(fleet=fleet, kept=kept, replacements=order, outcome=outcome)
        if outcome.failed_batch is None:
            return choice
        first = first or choice
    assert first is not None
    return first


def _simulate(
    order: Sequence[ReplacementSpec],
    group: _Group,
    nodes: Sequence[NodeInfo],
    policy: NodeGroupPolicy,
    fleet: _FleetOption,
    kept: Sequence[Candidate],
) -> checks.CapacityOutcome:
    batch_idx = _batches(order, policy)
    in_plan = {r.old_node for r in order if not r.adds_only}
    survivors = [group.bin_for(n.name) for n in nodes if n.name not in in_plan]
    # Kept nodes take a planned content of their size first, less the pods they already
    # hold; new nodes of a size take the rest of that size's planned contents in turn.
    planned = {size: iter(nodes) for size, nodes in fleet.layout.items()}
    kept_size = {c.node: c.size_id for c in kept}
    for b in survivors:
        if b.name in fleet.keep_plans:
            b.plan = dict(fleet.keep_plans[b.name])
            continue
        size = kept_size.get(b.name)
        plan = next(planned[size], None) if size in planned else None
        if plan is not None:
            held: dict[tuple[int, int], int] = {}
            for shape, count in b.content.items():
                key = (shape.cpu, shape.memory)
                held[key] = held.get(key, 0) + count
            b.plan = {k: max(n - held.get(k, 0), 0) for k, n in plan.items()}
    old_bins = {r.old_node: group.bin_for(r.old_node) for r in order if not r.adds_only}
    new_offers = [
        r.new_size_id for idx in batch_idx for i in idx if (r := order[i]).new_size_id is not None
    ]
    shapes = [s for load in group.loads.values() for s, _, m in load.load_shapes if m]

    def new_bin(i: int) -> Bin:
        b = group.make_new_bin_of(new_offers[i], i)
        plan = next(planned[new_offers[i]], None) if new_offers[i] in planned else None
        if plan is not None:
            b.plan = dict(plan)
        return b

    return checks.simulate_batches(
        survivors,
        [[old_bins[order[i].old_node] for i in idx if not order[i].adds_only] for idx in batch_idx],
        [sum(1 for i in idx if order[i].new_size_id is not None) for idx in batch_idx],
        new_bin,
        policy.strategy,
        min_cpu=min((s.cpu for s in shapes), default=0),
        min_mem=min((s.memory for s in shapes), default=0),
        observers=group.observers,
    )


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
    group = _Group(snapshot, policy, nodes, observed_capacity(snapshot, workers))
    min_nodes, max_nodes = _limits(snapshot, policy)

    held = checks.budget_pods(group.movable_pods, snapshot.pdbs)
    exclusions: list[Exclusion] = []
    candidates: list[Candidate] = []
    doubly = budgets_of_pods(group.movable_pods, snapshot.pdbs) if snapshot.pdbs else {}
    for node in nodes:
        load = group.loads[node.name]
        match = workers.get(node.name)
        excl = exclusion_for(
            node, load.suspects, match, skip_local_storage=policy.skip_nodes_with_local_storage
        )
        if excl is None and policy.respect_pdbs:
            excl = _budget_exclusion(node.name, held)
        if excl is None and doubly:
            refs = (f"{p.namespace}/{p.name}" for p in load.movable)
            excl = two_budgets(node, {r: doubly[r] for r in refs if r in doubly})
        if excl is None:
            excl = _cooldown_exclusion(node, instant, policy.cooldown_s)
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
    searched, more_fleets = (
        _searched_fleets(group, offers, candidates, staying, min_nodes, max_nodes, policy)
        if candidates
        else ([], iter(()))
    )
    bound = min((f.cost for f in searched), default=None)
    ceiling = _ceiling(candidates, staying, max_nodes, offers)
    options = (
        _size_options(group, offers, candidates, staying, min_nodes, bound, ceiling)
        if candidates
        else []
    )
    old_cost = sum((c.monthly_price for c in candidates), Decimal(0))
    group_cost = sum(
        (m.monthly_price for n in nodes if (m := workers.get(n.name)) and m.monthly_price),
        Decimal(0),
    )
    sizes_before: dict[str, int] = {}
    for n in nodes:
        m = workers.get(n.name)
        label = (m.size_name or str(m.size_id)) if m is not None and m.size_id else "unknown"
        sizes_before[label] = sizes_before.get(label, 0) + 1
    fleet_before = describe(list(sizes_before.items()))

    choices = _fleet_choices(searched, offers, options, ceiling)
    no_plan_reasons: list[str] = []
    rejected: list[str] = []
    chosen: _Choice | None = None
    if not nodes:
        no_plan_reasons.append(
            f"no node belongs to the group: none is labelled {NODEGROUP_LABEL}={policy.name} "
            f"or runs in a VPSie node group of that name"
        )
    elif not candidates:
        no_plan_reasons.append("no node of the group can be replaced (see exclusions)")
    elif not choices:
        no_new = _why_no_new_node(group, offers, candidates)
        no_plan_reasons.append("no allowed size can carry the group's pods" + no_new)
    else:
        first_failure: _Choice | None = None

        def fleets_to_try() -> Iterator[_FleetOption]:
            """The choices, then (only when they all fail the capacity check) the fleet
            search's further fleets, cheapest first."""
            tried = set()
            for f in choices:
                tried.add(f.sort_key())
                yield f
            yield from sorted(
                (f for f in more_fleets if f.sort_key() not in tried), key=lambda f: f.sort_key()
            )

        for fleet in fleets_to_try():
            why = _below_threshold(fleet, old_cost, group_cost, policy)
            if why is not None:
                # Every later fleet costs at least as much: none can pass either.
                if chosen is None:
                    no_plan_reasons.append(why)
                break
            attempt = _try_fleet(fleet, candidates, group, nodes, policy)
            if attempt.outcome.failed_batch is not None and attempt.kept and fleet.keep is None:
                # Sized as if the kept nodes were empty; size again around what they hold.
                refined = _refit_around_kept(
                    attempt.kept, offers, candidates, group, staying, min_nodes, max_nodes, policy
                )
                if (
                    refined is not None
                    and _below_threshold(refined, old_cost, group_cost, policy) is None
                ):
                    second = _try_fleet(refined, candidates, group, nodes, policy)
                    if second.outcome.failed_batch is None:
                        attempt = second
            if attempt.outcome.failed_batch is None:
                chosen = attempt
                break
            first_failure = first_failure or attempt
            example = attempt.outcome.example
            rejected.append(
                f"{fleet.label} (${_money(fleet.cost)}/month): batch "
                f"{attempt.outcome.failed_batch} would leave {attempt.outcome.unplaced_pods} "
                f"pods unplaced in every batch order tried"
                + (f" (e.g. a {example})" if example else "")
            )
        if chosen is None and not no_plan_reasons and first_failure is not None:
            chosen = first_failure  # the capacity check below fails and rejects it
        elif chosen is None and rejected and no_plan_reasons:
            no_plan_reasons.append("cheaper fleets were rejected: " + "; ".join(rejected))

    target: SizeOffer | None = None
    replacements: list[ReplacementSpec] = []
    opportunity: Opportunity | None = None
    k = 0
    fleet_after = fleet_before
    if chosen is not None:
        k = chosen.fleet.nodes
        members = chosen.fleet.members
        target = max(members, key=lambda m: (m[1], -m[0].monthly_price))[0] if members else None
        for c in chosen.kept:
            exclusions.append(
                Exclusion(
                    node=c.node,
                    reason=ALREADY_TARGET_SIZE,
                    message=f"already of a size the new fleet keeps ({c.size_name or c.size_id})",
                )
            )
        replacements = list(chosen.replacements)
        label_of = {c.node: c.size_name or str(c.size_id) for c in candidates}
        after = dict(sizes_before)
        for r in replacements:
            if not r.adds_only:
                after[label_of[r.old_node]] -= 1
            if r.new_size_id is not None:
                after[r.new_size_name] = after.get(r.new_size_name, 0) + 1
        fleet_after = describe(list(after.items()))
        n_remove = sum(1 for r in replacements if r.new_size_id is None)
        added = len(replacements) - n_remove
        if any(r.adds_only for r in replacements):
            opportunity = Opportunity.RIGHT_SIZE  # more, smaller nodes
        elif n_remove == 0:
            opportunity = Opportunity.DOWNSIZE
        elif added == 0:
            opportunity = Opportunity.CONSOLIDATE
        else:
            opportunity = Opportunity.RIGHT_SIZE

    batch_idx = _batches(replacements, policy)
    for b, idx in enumerate(batch_idx):
        for i in idx:
            replacements[i] = replace(replacements[i], batch=b)
    batches = tuple(tuple(key_of(replacements[i]) for i in idx) for idx in batch_idx)
    adds = [[replacements[i].new_size_id is not None for i in idx] for idx in batch_idx]
    olds = [sum(1 for i in idx if not replacements[i].adds_only) for idx in batch_idx]
    duration = estimate_duration(
        adds,
        policy.strategy,
        max_concurrent=policy.max_concurrent,
        provision_s=policy.provision_estimate_s,
        drain_s=policy.drain_estimate_s,
        soak_s=policy.soak_s,
        olds=olds,
    )
    saving_total = sum((r.monthly_saving for r in replacements), Decimal(0))

    results: list[CheckResult] = [
        checks.check_cluster_health(snapshot, nodes, policy.min_healthy_percent)
    ]
    path = checks.node_count_path(
        len(nodes), policy.strategy, [(sum(a), m) for a, m in zip(adds, olds, strict=True)]
    )
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
    needs = checks.budget_needs(batches, held)
    results.append(
        checks.check_disruption_budgets(
            needs, respect_pdbs=policy.respect_pdbs, pdb_count=len(snapshot.pdbs)
        )
    )
    moved_pods = sum(
        len(group.loads[r.old_node].movable) for r in replacements if not r.adds_only
    )
    outcome = (
        chosen.outcome
        if chosen is not None
        else checks.CapacityOutcome(failed_batch=None, unplaced_pods=0)
    )
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
        "nodes_added": sum(1 for r in replacements if r.adds_only),
        "fleet_before": fleet_before,
        "fleet_after": fleet_after,
        "fleet_after_monthly_cost": _money(group_cost - saving_total),
        "rejected_fleets": "; ".join(rejected),
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
        fleet_before=fleet_before,
        fleet_after=fleet_after,
        rejected_fleets=tuple(rejected),
    )


def make_plan(
    analysis: Analysis, policy: NodeGroupPolicy, *, now: datetime | str | None = None
) -> PlanSpec | None:
    """The analysis written down as a `PlanSpec`, or None when there is nothing to replace
    (then `analysis.action_reasons` says why). `now` defaults to the analysis instant.

    plan_id is "plan-" + the first 20 hex digits of SHA-256 over the plan's content (which
    includes the instant and the snapshot time); replacement ids are "<plan_id>/<old node>",
    and "<plan_id>/+<n>" for the n-th node added where none is removed.
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
        replace(r, replacement_id=f"{plan_id}/{key_of(r)}") for r in analysis.replacements
    )
    by_node = {
        key_of(a): r.replacement_id for a, r in zip(analysis.replacements, reps, strict=True)
    }
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
    olds = [r.old_node for r in spec.replacements if not r.adds_only]
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
    first_removal: int | None = None
    for b, batch in enumerate(spec.batches):
        if any(rid in by_id and by_id[rid].new_size_id is None for rid in batch):
            first_removal = b
            break
    for r in spec.replacements:
        shape_problem = r.shape_problem()
        if shape_problem is not None:
            problems.append(shape_problem)
        if r.adds_only:
            if spec.opportunity is Opportunity.REPAIR:
                problems.append(f"repair {r.replacement_id} has no lost node")
            if first_removal is not None and r.batch > first_removal:
                problems.append(
                    f"add-only {r.replacement_id} comes after a removal (batch {first_removal}):"
                    " capacity must grow before any is taken away"
                )
            continue
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
                sum(1 for rid in batch if not (rid in by_id and by_id[rid].adds_only)),
            )
            for batch in spec.batches
        ]
        path = checks.node_count_path(current, spec.strategy, shape)
        # Below minNodes, and lower than the group is (one already below minNodes may grow).
        if path.lowest < min(spec.min_nodes, current):
            problems.append(f"node count drops to {path.lowest}, below minNodes {spec.min_nodes}")
    else:
        problems.append("snapshot_summary lacks group_nodes")
    failed = [c.name for c in spec.checks if c.status is CheckStatus.FAILED]
    if failed and spec.recommended_action in (Action.PROCEED, Action.NEEDS_REVIEW):
        problems.append(f"action {spec.recommended_action} despite failed checks: {failed}")
    if len(spec.checks) != 5:
        problems.append(f"plan carries {len(spec.checks)} checks, not 5")
    return problems
