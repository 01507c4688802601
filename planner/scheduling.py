"""A scheduling simulation: would these pods fit on those nodes, the way kube-scheduler decides?

The cost model (how few / how small nodes can carry a group's pods) and the capacity check
(does each batch's pods fit on what remains) both ask this question, so it is answered once,
here. It honours requests (CPU, memory, pod count), taints and tolerations, `nodeSelector`,
required node affinity, required pod anti-affinity on `kubernetes.io/hostname`, and
topologySpreadConstraints with whenUnsatisfiable DoNotSchedule on any topology key (with
minDomains, matchLabelKeys, nodeAffinityPolicy and nodeTaintsPolicy).

Speed: pods that are interchangeable for the scheduler (same namespace, requests and
constraints; labels only when some anti-affinity selector can see them) form one `Shape`, and
a bucket of N identical pods is placed with one division per node, first-fit decreasing. A
cursor skips nodes too full for the smallest pod. 150,000 pods become a few hundred buckets.

Allocatable: a node never offers more than `capacity - system_reserve(capacity)` (see
`system_reserve`), nor more than the allocatable it reports; headroom is then kept free on CPU
and memory (`usable`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from statemachine.world import (
    HOSTNAME_LABEL,
    LabelRequirement,
    LabelSelector,
    NodeInfo,
    PodInfo,
    Resources,
    SizeOffer,
    SpreadConstraint,
    Taint,
    Toleration,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
DEFAULT_MAX_PODS = 110
EVICTION_THRESHOLD_BYTES = 100 * MIB

# (key, operator, values) of one requirement; a selector as hashable tuples.
SelectorKey = tuple[tuple[tuple[str, str], ...], tuple[LabelRequirement, ...]]
# Of one spread constraint, beside (maxSkew, key, selector): (minDomains, domains only among
# nodes passing the pod's node selection (nodeAffinityPolicy Honor), only among nodes whose
# taints it tolerates (nodeTaintsPolicy Honor)).
SpreadOptions = tuple[int, bool, bool]
DEFAULT_SPREAD_OPTIONS: SpreadOptions = (1, True, False)
P = TypeVar("P")


def _tiered(value: int, tiers: Sequence[tuple[int | None, int]], per: int) -> int:
    """Sum over (upper bound, rate) tiers of the part of `value` in each tier times rate/per."""
    total = lower = 0
    for upto, rate in tiers:
        top = value if upto is None else min(value, upto)
        if top > lower:
            total += (top - lower) * rate // per
        if upto is None or value <= upto:
            break
        lower = upto
    return total


def system_reserve(capacity: Resources) -> Resources:
    """CPU and memory kept for the OS and kubelet, the tiers common managed services use.

    CPU: 6% of the first core, 1% of the second, 0.5% of cores 3-4, 0.25% above 4.
    Memory: 255 MiB below 1 GiB; else 25% of the first 4 GiB, 20% of the next 4, 10% of the
    next 8, 6% of the next 112, 2% above 128 GiB; plus a 100 MiB eviction threshold.
    """
    cpu_tiers = ((1000, 600), (2000, 100), (4000, 50), (None, 25))
    reserved_cpu = _tiered(capacity.cpu_millis, cpu_tiers, 10000)
    mem = capacity.memory_bytes
    if mem < GIB:
        reserved_mem = 255 * MIB
    else:
        mem_tiers = ((4 * GIB, 25), (8 * GIB, 20), (16 * GIB, 10), (128 * GIB, 6), (None, 2))
        reserved_mem = _tiered(mem, mem_tiers, 100)
    reserved_mem += EVICTION_THRESHOLD_BYTES
    return Resources(cpu_millis=reserved_cpu, memory_bytes=min(reserved_mem, mem), pods=0)


def effective_allocatable(capacity: Resources, reported: Resources | None = None) -> Resources:
    """Capacity minus the system reserve, and never more than the node reports (when it does)."""
    reserve = system_reserve(capacity)
    cpu = max(capacity.cpu_millis - reserve.cpu_millis, 0)
    mem = max(capacity.memory_bytes - reserve.memory_bytes, 0)
    pods = capacity.pods or DEFAULT_MAX_PODS
    if reported is not None:
        if reported.cpu_millis:
            cpu = min(cpu, reported.cpu_millis)
        if reported.memory_bytes:
            mem = min(mem, reported.memory_bytes)
        if reported.pods:
            pods = min(pods, reported.pods)
    return Resources(cpu_millis=cpu, memory_bytes=mem, pods=pods)


def usable(allocatable: Resources, headroom_percent: int) -> Resources:
    """What the simulation may fill: allocatable less `headroom_percent` of CPU and memory."""
    keep = 100 - headroom_percent
    return Resources(
        cpu_millis=allocatable.cpu_millis * keep // 100,
        memory_bytes=allocatable.memory_bytes * keep // 100,
        pods=allocatable.pods,
    )


def offer_capacity(offer: SizeOffer) -> Resources:
    return Resources(
        cpu_millis=offer.cpu * 1000, memory_bytes=offer.ram_mb * MIB, pods=DEFAULT_MAX_PODS
    )


def node_capacity(node: NodeInfo) -> Resources:
    cap = node.capacity
    if not (cap.cpu_millis or cap.memory_bytes):
        cap = node.allocatable
    return Resources(
        cpu_millis=cap.cpu_millis,
        memory_bytes=cap.memory_bytes,
        pods=cap.pods or node.allocatable.pods or DEFAULT_MAX_PODS,
    )


def selector_key(selector: LabelSelector) -> SelectorKey:
    return (tuple(sorted(selector.match_labels.items())), selector.match_expressions)


def spread_selector(pod: PodInfo, constraint: SpreadConstraint) -> SelectorKey:
    """The constraint's selector with the pod's own values of its `matchLabelKeys` ANDed in
    (`key In (value)`; a key the pod does not carry is ignored), as kube-scheduler counts."""
    match_labels, expressions = selector_key(constraint.selector)
    extra = tuple(
        LabelRequirement(key=k, operator="In", values=(pod.labels[k],))
        for k in constraint.match_label_keys
        if k in pod.labels
    )
    return (match_labels, expressions + extra) if extra else (match_labels, expressions)


def requirement_matches(req: LabelRequirement, labels: Mapping[str, str]) -> bool:
    present = req.key in labels
    op = req.operator
    if op == "In":
        return present and labels[req.key] in req.values
    if op == "NotIn":
        return not present or labels[req.key] not in req.values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and req.values:
        try:
            have, want = int(labels[req.key]), int(req.values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def selector_matches(key: SelectorKey, labels: Mapping[str, str]) -> bool:
    match_labels, expressions = key
    return all(labels.get(k) == v for k, v in match_labels) and all(
        requirement_matches(r, labels) for r in expressions
    )


def tolerates(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    for tol in tolerations:
        if tol.effect and tol.effect != taint.effect:
            continue
        if tol.operator == "Exists":
            if not tol.key or tol.key == taint.key:
                return True
        elif tol.key == taint.key and tol.value == taint.value:
            return True
    return False


class SelectorIndex(Generic[P]):
    """Label selectors by namespace, found by the labels they could match.

    A selector with `matchLabels` is filed under its first (sorted) pair, so a lookup only
    tests the selectors filed under one of the object's own pairs; the rest are always tested.
    """

    def __init__(self) -> None:
        self._by_pair: dict[str, dict[tuple[str, str], list[tuple[SelectorKey, P]]]] = {}
        self._always: dict[str, list[tuple[SelectorKey, P]]] = {}

    def add(self, namespace: str, key: SelectorKey, payload: P) -> None:
        if key[0]:
            bucket = self._by_pair.setdefault(namespace, {}).setdefault(key[0][0], [])
        else:
            bucket = self._always.setdefault(namespace, [])
        bucket.append((key, payload))

    def matching(self, namespace: str, labels: Mapping[str, str]) -> list[P]:
        always = self._always.get(namespace)
        found = [p for k, p in always if selector_matches(k, labels)] if always else []
        pairs = self._by_pair.get(namespace)
        if pairs:
            for pair in labels.items():
                hits = pairs.get(pair)
                if hits:
                    found.extend(p for k, p in hits if selector_matches(k, labels))
        return found


class Shape:
    """Pods the scheduler cannot tell apart. Interned by a `ShapeBook`: compare by identity.

    `namespace` and `labels` are kept only when anti-affinity makes them matter.
    """

    __slots__ = (
        "anti_affinity",
        "cpu",
        "eid",
        "exclusive",
        "hostname_bound",
        "labels",
        "memory",
        "namespace",
        "node_affinity",
        "node_selector",
        "sort_key",
        "spread",
        "spread_options",
        "tolerations",
        "workload",
    )

    def __init__(
        self,
        key: tuple[object, ...],
        *,
        namespace: str,
        cpu: int,
        memory: int,
        tolerations: tuple[Toleration, ...],
        node_selector: tuple[tuple[str, str], ...],
        node_affinity: tuple[tuple[LabelRequirement, ...], ...],
        anti_affinity: tuple[SelectorKey, ...],
        labels: dict[str, str],
        eid: int,
        spread: tuple[tuple[int, str, SelectorKey], ...] = (),
        workload: str = "",
        spread_options: tuple[SpreadOptions, ...] = (),
    ) -> None:
        self.namespace = namespace
        self.cpu = cpu
        self.memory = memory
        self.tolerations = tolerations
        self.node_selector = node_selector
        self.node_affinity = node_affinity
        self.anti_affinity = anti_affinity
        self.labels = labels
        self.eid = eid  # equal for shapes with equal tolerations, nodeSelector, node affinity
        self.hostname_bound = any(k == HOSTNAME_LABEL for k, _ in node_selector) or any(
            r.key == HOSTNAME_LABEL for term in node_affinity for r in term
        )
        self.exclusive = any(selector_matches(sel, labels) for sel in anti_affinity)
        # Hard topologySpreadConstraints: (maxSkew, topology key, selector with the pod's
        # matchLabelKeys values), and their `SpreadOptions` in the same order.
        self.spread = spread
        self.spread_options = spread_options or tuple(DEFAULT_SPREAD_OPTIONS for _ in spread)
        # "ReplicaSet shop/web": kept when the pod has spread or anti-affinity rules, to name
        # the workload whose rule a plan would break.
        self.workload = workload
        self.sort_key: tuple[object, ...] = (-cpu, -memory, namespace, repr(key))

    @property
    def spread_per_node(self) -> int:
        """At most this many per node when a hostname spread applies (its smallest maxSkew,
        exact while some node of the fleet has none of them); 0: no such limit."""
        skews = [k for k, key, _ in self.spread if key == HOSTNAME_LABEL]
        return min(skews) if skews else 0

    def describe(self) -> str:
        if self.workload:
            rules = []
            if self.spread:
                rules.append("topology spread")
            if self.anti_affinity:
                rules.append("anti-affinity")
            return (
                f"pod of {self.workload} ({' and '.join(rules)} rules) requesting "
                f"{self.cpu}m CPU and {self.memory} bytes of memory"
            )
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"pod{where} requesting {self.cpu}m CPU and {self.memory} bytes of memory"


class Bin:
    """A node in the simulation: free resources, and what was placed on it."""

    __slots__ = (
        "anti",
        "cid",
        "content",
        "cpu",
        "labels",
        "mem",
        "name",
        "plan",
        "pods",
        "taints",
        "targeted",
    )

    def __init__(
        self,
        name: str,
        labels: Mapping[str, str],
        taints: tuple[Taint, ...],
        free: Resources,
        cid: int,
    ) -> None:
        self.name = name
        self.labels = labels  # shared, read-only
        self.taints = taints
        self.cpu = free.cpu_millis
        self.mem = free.memory_bytes
        self.pods = free.pods
        self.cid = cid  # equal for nodes with equal labels (but hostname) and taints
        self.content: dict[Shape, int] = {}
        # Placed pods' anti-affinity selectors, and the labels of placed pods that some selector
        # can see; both filed by (namespace, one label pair) like `SelectorIndex`.
        self.anti: SelectorIndex[bool] | None = None
        self.targeted: dict[tuple[str, tuple[str, str]], list[dict[str, str]]] | None = None
        # A new node's planned content (pods per (CPU, memory) request) from the fleet's
        # packing: a planning packer fills it only with what was planned for it.
        self.plan: dict[tuple[int, int], int] | None = None

    def add(self, shape: Shape, count: int, *, movable: bool = True) -> None:
        if self.plan is not None and movable:
            key = (shape.cpu, shape.memory)
            left = self.plan.get(key, 0)
            if left:
                self.plan[key] = max(left - count, 0)
        self.cpu -= shape.cpu * count
        self.mem -= shape.memory * count
        self.pods -= count
        if movable:
            self.content[shape] = self.content.get(shape, 0) + count
        if shape.anti_affinity:
            if self.anti is None:
                self.anti = SelectorIndex()
            for sel in shape.anti_affinity:
                self.anti.add(shape.namespace, sel, True)
        if shape.labels:
            if self.targeted is None:
                self.targeted = {}
            for pair in shape.labels.items():
                self.targeted.setdefault((shape.namespace, pair), []).extend(
                    shape.labels for _ in range(count)
                )


class ShapeBook:
    """Interns shapes and node classes for one analysis.

    It knows every anti-affinity selector of the pods it was given, so it keeps a pod's labels
    (and namespace) in its shape only when some selector can see them.
    """

    def __init__(self, pods: Iterable[PodInfo]) -> None:
        self._anti: SelectorIndex[bool] = SelectorIndex()
        seen: set[tuple[str, SelectorKey]] = set()
        for pod in pods:
            keys = [selector_key(s) for s in pod.anti_affinity_hostname]
            keys.extend(spread_selector(pod, c) for c in pod.topology_spread)
            for key in keys:
                if (pod.namespace, key) not in seen:
                    seen.add((pod.namespace, key))
                    self._anti.add(pod.namespace, key, True)
        self._shapes: dict[tuple[object, ...], Shape] = {}
        self._eids: dict[tuple[object, ...], int] = {}
        self._cids: dict[tuple[object, ...], int] = {}

    def shape(self, pod: PodInfo) -> Shape:
        anti: tuple[SelectorKey, ...] = ()
        if pod.anti_affinity_hostname:
            anti = tuple(sorted({selector_key(s) for s in pod.anti_affinity_hostname}, key=repr))
        seen = bool(self._anti.matching(pod.namespace, pod.labels))
        labels = tuple(sorted(pod.labels.items())) if seen else ()
        ns = pod.namespace if (anti or seen) else ""
        selector = tuple(sorted(pod.node_selector.items())) if pod.node_selector else ()
        spread: tuple[tuple[int, str, SelectorKey], ...] = ()
        options: tuple[SpreadOptions, ...] = ()
        rules: tuple[tuple[int, str, SelectorKey, int, bool, bool], ...] = ()
        if pod.topology_spread:
            found_spread = {
                (
                    c.max_skew,
                    c.topology_key,
                    spread_selector(pod, c),
                    c.min_domains,
                    c.node_affinity_policy != "Ignore",
                    c.node_taints_policy == "Honor",
                )
                for c in pod.topology_spread
            }
            rules = tuple(sorted(found_spread, key=repr))
            spread = tuple((r[0], r[1], r[2]) for r in rules)
            options = tuple((r[3], r[4], r[5]) for r in rules)
            ns = pod.namespace
        # The topology keys a node must carry (DoNotSchedule: a node without one is out).
        keys = tuple(sorted({k for _, k, _ in spread if k != HOSTNAME_LABEL}))
        constraints = (pod.tolerations, selector, pod.required_node_affinity, keys)
        workload = ""
        if anti or spread:
            owner = f"{pod.owner_kind} " if pod.owner_kind else "pod "
            workload = f"{owner}{pod.namespace}/{pod.owner_name or pod.name}"
        key = (
            ns,
            pod.requests.cpu_millis,
            pod.requests.memory_bytes,
            constraints,
            anti,
            labels,
            rules,
            workload,
        )
        found = self._shapes.get(key)
        if found is None:
            eid = self._eids.setdefault(constraints, len(self._eids))
            found = Shape(
                key,
                namespace=ns,
                cpu=pod.requests.cpu_millis,
                memory=pod.requests.memory_bytes,
                tolerations=pod.tolerations,
                node_selector=selector,
                node_affinity=pod.required_node_affinity,
                anti_affinity=anti,
                labels=dict(labels),
                eid=eid,
                spread=spread,
                workload=workload,
                spread_options=options,
            )
            self._shapes[key] = found
        return found

    def spread_keys(self) -> list[str]:
        """The topology keys of every spread constraint the shapes met so far carry, sorted."""
        return sorted({k for shape in self._shapes.values() for _, k, _ in shape.spread})

    def node_class(self, labels: Mapping[str, str], taints: tuple[Taint, ...]) -> int:
        cls = (tuple(sorted((k, v) for k, v in labels.items() if k != HOSTNAME_LABEL)), taints)
        return self._cids.setdefault(cls, len(self._cids))

    def bin(
        self, name: str, labels: Mapping[str, str], taints: tuple[Taint, ...], free: Resources
    ) -> Bin:
        return Bin(name, labels, taints, free, self.node_class(labels, taints))


def eligible(shape: Shape, node: Bin) -> bool:
    """Taints, nodeSelector and required node affinity (not resources, not anti-affinity)."""
    for taint in node.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not tolerates(shape.tolerations, taint):
            return False
    if not affinity_allows(shape, node):
        return False
    return all(k == HOSTNAME_LABEL or k in node.labels for _, k, _ in shape.spread)


def taints_allow(shape: Shape, node: Bin) -> bool:
    """The shape tolerates every NoSchedule and NoExecute taint of the node."""
    return all(
        taint.effect not in ("NoSchedule", "NoExecute") or tolerates(shape.tolerations, taint)
        for taint in node.taints
    )


def counts_as_domain(shape: Shape, c: int, node: Bin) -> bool:
    """Whether the node's domain counts for the shape's spread constraint `c`, by the node
    inclusion policies: nodeAffinityPolicy Honor (the default) counts only nodes passing the
    pod's nodeSelector and required node affinity; nodeTaintsPolicy Honor only nodes whose
    taints the pod tolerates (the default, Ignore, counts tainted nodes too)."""
    _, honor_affinity, honor_taints = shape.spread_options[c]
    if honor_affinity and not affinity_allows(shape, node):
        return False
    return not honor_taints or taints_allow(shape, node)


def affinity_allows(shape: Shape, node: Bin) -> bool:
    """nodeSelector and required node affinity only."""
    labels = node.labels
    if any(labels.get(k) != v for k, v in shape.node_selector):
        return False
    return not shape.node_affinity or any(
        all(requirement_matches(r, labels) for r in term) for term in shape.node_affinity
    )


def domain_of(node: Bin, key: str) -> str | None:
    """The node's value of a topology key (its name for the hostname: every node is its own
    domain, new ones too), or None when it does not carry the key."""
    return node.name if key == HOSTNAME_LABEL else node.labels.get(key)


def count_matching(node: Bin, namespace: str, sel: SelectorKey) -> int:
    """Pods on the node, of `namespace`, that the selector matches (labels some selector can
    see are filed in `Bin.targeted`)."""
    if not node.targeted:
        return 0
    if sel[0]:
        group = node.targeted.get((namespace, sel[0][0]), ())
        return sum(1 for labels in group if selector_matches(sel, labels))
    # A pod is filed once per label pair: count it under its first pair only.
    return sum(
        1
        for (ns, pair), group in node.targeted.items()
        if ns == namespace
        for labels in group
        if next(iter(labels.items())) == pair and selector_matches(sel, labels)
    )


def resource_room(shape: Shape, node: Bin, plans: bool = False) -> int:
    """How many pods of `shape` the node's free CPU, memory and pod slots take (with `plans`,
    and the node has a plan: no more than planned for it)."""
    n = node.pods
    if plans and node.plan is not None:
        n = min(n, node.plan.get((shape.cpu, shape.memory), 0))
    if shape.cpu > 0:
        n = min(n, node.cpu // shape.cpu)
    elif node.cpu < 0:
        return 0
    if shape.memory > 0:
        n = min(n, node.mem // shape.memory)
    elif node.mem < 0:
        return 0
    return n


def anti_affinity_allows(shape: Shape, node: Bin) -> bool:
    """Required anti-affinity on hostname, both ways: the shape's selectors against pods on the
    node, and selectors of pods on the node against the shape's labels."""
    if shape.anti_affinity and node.targeted:
        for sel in shape.anti_affinity:
            if sel[0]:
                seen = node.targeted.get((shape.namespace, sel[0][0]), ())
            else:
                seen = [
                    labels
                    for (ns, _), group in node.targeted.items()
                    if ns == shape.namespace
                    for labels in group
                ]
            if any(selector_matches(sel, labels) for labels in seen):
                return False
    return not (shape.labels and node.anti and node.anti.matching(shape.namespace, shape.labels))


def room_for(shape: Shape, node: Bin, plans: bool = False) -> int:
    """How many pods of `shape` fit on `node` now: resources and anti-affinity."""
    n = resource_room(shape, node, plans)
    if n <= 0 or not anti_affinity_allows(shape, node):
        return 0
    return min(n, 1) if shape.exclusive else n


@dataclass(slots=True)
class Packer:
    """First-fit decreasing over a list of bins, opening new bins from `factory` on demand.

    Bins only ever fill up, so for each (requests, constraints) the index of the first bin that
    might still take one such pod only moves forward: `place` resumes from there.
    """

    bins: list[Bin]
    factory: Callable[[int], Bin] | None = None
    max_new: int = 0
    opened: int = 0
    min_cpu: int = 0
    min_mem: int = 0
    plans: bool = False  # honour the bins' planned content (see `Bin.plan`)
    # Every node the scheduler would count for topology spread (default: `bins`).
    world: Callable[[], Sequence[Bin]] | None = None
    _start: int = 0
    _cursor: dict[tuple[int, int, int], int] = field(default_factory=dict)
    _eligible: dict[tuple[int, int], bool] = field(default_factory=dict)

    def _ok(self, shape: Shape, node: Bin) -> bool:
        if shape.hostname_bound:
            return eligible(shape, node)
        key = (shape.eid, node.cid)
        hit = self._eligible.get(key)
        if hit is None:
            hit = self._eligible[key] = eligible(shape, node)
        return hit

    def place(self, shape: Shape, count: int) -> int:
        """Place up to `count` pods; returns how many could not be placed."""
        if shape.spread:
            return self._place_spread(shape, count)
        bins = self.bins
        start = self._start
        while start < len(bins) and (
            bins[start].pods <= 0
            or bins[start].cpu < self.min_cpu
            or bins[start].mem < self.min_mem
        ):
            start += 1
        self._start = start
        ckey = (shape.cpu, shape.memory, shape.eid)
        i = max(self._cursor.get(ckey, 0), start)
        cursor = i
        advancing = True
        while count > 0 and i < len(bins):
            node = bins[i]
            i += 1
            if not self._ok(shape, node) or resource_room(shape, node, self.plans) <= 0:
                if advancing:
                    cursor = i
                continue
            advancing = False
            n = min(count, room_for(shape, node, self.plans))
            if n > 0:
                node.add(shape, n)
                count -= n
        self._cursor[ckey] = cursor
        while count > 0 and self.factory is not None and self.opened < self.max_new:
            node = self.factory(self.opened)
            if not self._ok(shape, node):
                return count
            n = min(count, room_for(shape, node))
            if n <= 0:
                return count
            self.opened += 1
            bins.append(node)
            node.add(shape, n)
            count -= n
        return count

    def _place_spread(self, shape: Shape, count: int) -> int:
        """Pods under hard topology spread, one at a time, as kube-scheduler would: a node is
        a candidate when it carries every topology key, passes the pod's node selection and
        has room, and placing one more there keeps each constraint's skew (its domain's
        matching pods less the emptiest domain's) within maxSkew. Domains are counted over
        every node of `world` that carries the key and passes the constraint's node
        inclusion policies (`counts_as_domain`); with fewer domains than its minDomains the
        emptiest counts as 0. Among the candidates the one whose domains hold fewest
        matching pods wins (ties: list order)."""
        world = list(self.world()) if self.world is not None else self.bins
        ns = shape.namespace
        counts: list[dict[str, int]] = []
        selfish: list[bool] = []
        for c, (_, key, sel) in enumerate(shape.spread):
            per: dict[str, int] = {}
            for node in world:
                d = domain_of(node, key)
                if d is None or not counts_as_domain(shape, c, node):
                    continue
                per[d] = per.get(d, 0) + count_matching(node, ns, sel)
            counts.append(per)
            selfish.append(bool(shape.labels) and selector_matches(sel, shape.labels))
        while count > 0:
            best: tuple[int, int] | None = None
            for i, node in enumerate(self.bins):
                if not self._ok(shape, node) or room_for(shape, node, self.plans) <= 0:
                    continue
                load = 0
                ok = True
                for c, (skew, key, _) in enumerate(shape.spread):
                    per = counts[c]
                    d = domain_of(node, key)
                    if d is None:
                        ok = False
                        break
                    here = per.get(d, 0)
                    few = len(per) < shape.spread_options[c][0]
                    low = min(per.values(), default=0) if d in per and not few else 0
                    if here + (1 if selfish[c] else 0) - min(low, here) > skew:
                        ok = False
                        break
                    load += here
                if ok and (best is None or load < best[0]):
                    best = (load, i)
            if best is None:
                if self.factory is None or self.opened >= self.max_new:
                    return count
                node = self.factory(self.opened)
                if not self._ok(shape, node) or room_for(shape, node) <= 0:
                    return count
                self.opened += 1
                self.bins.append(node)
                if self.world is not None:
                    world.append(node)
                for c, (_, key, _) in enumerate(shape.spread):
                    d = domain_of(node, key)
                    if d is not None and counts_as_domain(shape, c, node):
                        counts[c].setdefault(d, 0)
                continue
            node = self.bins[best[1]]
            node.add(shape, 1)
            count -= 1
            for c, (_, key, _) in enumerate(shape.spread):
                d = domain_of(node, key)
                if d is not None and selfish[c]:
                    counts[c][d] = counts[c].get(d, 0) + 1
        return 0

    def place_all(self, buckets: Sequence[tuple[Shape, int]]) -> list[tuple[Shape, int]]:
        """Place buckets largest first; returns what did not fit, in the same order."""
        ordered = sorted(buckets, key=lambda b: b[0].sort_key)
        if ordered:
            self.min_cpu = min(s.cpu for s, _ in ordered)
            self.min_mem = min(s.memory for s, _ in ordered)
        left: list[tuple[Shape, int]] = []
        for shape, count in ordered:
            rest = self.place(shape, count)
            if rest:
                left.append((shape, rest))
        return left
