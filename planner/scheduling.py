"""A scheduling simulation: would these pods fit on those nodes, the way kube-scheduler decides?

The cost model (how few / how small nodes can carry a group's pods) and the capacity check
(does each batch's pods fit on what remains) both ask this question, so it is answered once,
here. It honours requests (CPU, memory, pod count), taints and tolerations, `nodeSelector`,
required node affinity and required pod anti-affinity on `kubernetes.io/hostname`.

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

from statemachine.world import (
    HOSTNAME_LABEL,
    LabelRequirement,
    LabelSelector,
    NodeInfo,
    PodInfo,
    Resources,
    SizeOffer,
    Taint,
    Toleration,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
DEFAULT_MAX_PODS = 110
EVICTION_THRESHOLD_BYTES = 100 * MIB

# (key, operator, values) of one requirement; a selector as hashable tuples.
SelectorKey = tuple[tuple[tuple[str, str], ...], tuple[LabelRequirement, ...]]


def system_reserve(capacity: Resources) -> Resources:
    """CPU and memory kept for the OS and kubelet, the tiers common managed services use.

    CPU: 6% of the first core, 1% of the second, 0.5% of cores 3-4, 0.25% above 4.
    Memory: 255 MiB below 1 GiB; else 25% of the first 4 GiB, 20% of the next 4, 10% of the
    next 8, 6% of the next 112, 2% above 128 GiB; plus a 100 MiB eviction threshold.
    """
    cpu = capacity.cpu_millis
    reserved_cpu = 0
    lower = 0
    for upto, per_10k in ((1000, 600), (2000, 100), (4000, 50), (None, 25)):
        top = cpu if upto is None else min(cpu, upto)
        if top > lower:
            reserved_cpu += (top - lower) * per_10k // 10000
        if upto is None or cpu <= upto:
            break
        lower = upto
    mem = capacity.memory_bytes
    if mem < GIB:
        reserved_mem = 255 * MIB
    else:
        reserved_mem = 0
        tiers = ((4 * GIB, 25), (8 * GIB, 20), (16 * GIB, 10), (128 * GIB, 6), (None, 2))
        lower = 0
        for upto, pct in tiers:
            top = mem if upto is None else min(mem, upto)
            if top > lower:
                reserved_mem += (top - lower) * pct // 100
            if upto is None or mem <= upto:
                break
            lower = upto
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


@dataclass(frozen=True, slots=True)
class Shape:
    """Pods the scheduler cannot tell apart; `labels` only when an anti-affinity can see them."""

    namespace: str
    cpu: int
    memory: int
    tolerations: tuple[Toleration, ...]
    node_selector: tuple[tuple[str, str], ...]
    node_affinity: tuple[tuple[LabelRequirement, ...], ...]
    anti_affinity: tuple[SelectorKey, ...]
    labels: tuple[tuple[str, str], ...]
    sort_key: tuple[object, ...] = field(compare=False, hash=False, default=())

    def mentions_hostname(self) -> bool:
        return any(k == HOSTNAME_LABEL for k, _ in self.node_selector) or any(
            r.key == HOSTNAME_LABEL for term in self.node_affinity for r in term
        )

    def self_exclusive(self) -> bool:
        labels = dict(self.labels)
        return any(selector_matches(sel, labels) for sel in self.anti_affinity)


class ShapeBook:
    """Turns pods into shapes, knowing which labels some anti-affinity selector looks at."""

    def __init__(self, pods: Iterable[PodInfo]) -> None:
        by_ns: dict[str, set[SelectorKey]] = {}
        for pod in pods:
            for sel in pod.anti_affinity_hostname:
                by_ns.setdefault(pod.namespace, set()).add(selector_key(sel))
        self._selectors = {ns: sorted(sels, key=repr) for ns, sels in by_ns.items()}
        self._cache: dict[Shape, Shape] = {}

    def shape(self, pod: PodInfo) -> Shape:
        sels = self._selectors.get(pod.namespace, ())
        seen = any(selector_matches(s, pod.labels) for s in sels)
        labels = tuple(sorted(pod.labels.items())) if seen else ()
        anti = tuple(sorted({selector_key(s) for s in pod.anti_affinity_hostname}, key=repr))
        probe = Shape(
            namespace=pod.namespace,
            cpu=pod.requests.cpu_millis,
            memory=pod.requests.memory_bytes,
            tolerations=tuple(sorted(set(pod.tolerations), key=repr)),
            node_selector=tuple(sorted(pod.node_selector.items())),
            node_affinity=pod.required_node_affinity,
            anti_affinity=anti,
            labels=labels,
        )
        found = self._cache.get(probe)
        if found is None:
            found = Shape(
                namespace=probe.namespace,
                cpu=probe.cpu,
                memory=probe.memory,
                tolerations=probe.tolerations,
                node_selector=probe.node_selector,
                node_affinity=probe.node_affinity,
                anti_affinity=probe.anti_affinity,
                labels=probe.labels,
                sort_key=(-probe.cpu, -probe.memory, probe.namespace, repr(probe)),
            )
            self._cache[probe] = found
        return found


class Bin:
    """A node in the simulation: free resources, and what was placed on it."""

    __slots__ = (
        "anti",
        "class_key",
        "content",
        "cpu",
        "labels",
        "mem",
        "name",
        "pods",
        "taints",
        "targeted",
    )

    def __init__(
        self, name: str, labels: Mapping[str, str], taints: tuple[Taint, ...], free: Resources
    ) -> None:
        self.name = name
        self.labels = dict(labels)
        self.taints = taints
        self.cpu = free.cpu_millis
        self.mem = free.memory_bytes
        self.pods = free.pods
        self.class_key: tuple[object, ...] = (
            tuple(sorted((k, v) for k, v in labels.items() if k != HOSTNAME_LABEL)),
            taints,
        )
        self.content: dict[Shape, int] = {}
        # Anti-affinity selectors of placed pods, and labels of placed pods selectors can see.
        self.anti: list[tuple[str, SelectorKey]] = []
        self.targeted: list[tuple[str, dict[str, str]]] = []

    def add(self, shape: Shape, count: int, *, movable: bool = True) -> None:
        self.cpu -= shape.cpu * count
        self.mem -= shape.memory * count
        self.pods -= count
        if movable:
            self.content[shape] = self.content.get(shape, 0) + count
        if shape.anti_affinity:
            self.anti.extend((shape.namespace, s) for s in shape.anti_affinity)
        if shape.labels:
            labels = dict(shape.labels)
            self.targeted.extend((shape.namespace, labels) for _ in range(count))


def eligible(shape: Shape, node: Bin) -> bool:
    """Taints, nodeSelector and required node affinity (not resources, not anti-affinity)."""
    for taint in node.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not tolerates(shape.tolerations, taint):
            return False
    labels = node.labels
    if any(labels.get(k) != v for k, v in shape.node_selector):
        return False
    return not shape.node_affinity or any(
        all(requirement_matches(r, labels) for r in term) for term in shape.node_affinity
    )


def room_for(shape: Shape, node: Bin, exclusive: bool) -> int:
    """How many pods of `shape` fit on `node` now, resources and anti-affinity."""
    n = node.pods
    if shape.cpu > 0:
        n = min(n, node.cpu // shape.cpu)
    elif node.cpu < 0:
        return 0
    if shape.memory > 0:
        n = min(n, node.mem // shape.memory)
    elif node.mem < 0:
        return 0
    if n <= 0:
        return 0
    if shape.anti_affinity and node.targeted:
        for ns, labels in node.targeted:
            if ns == shape.namespace and any(
                selector_matches(s, labels) for s in shape.anti_affinity
            ):
                return 0
    if shape.labels and node.anti:
        labels = dict(shape.labels)
        for ns, sel in node.anti:
            if ns == shape.namespace and selector_matches(sel, labels):
                return 0
    return min(n, 1) if exclusive else n


@dataclass(slots=True)
class Packer:
    """First-fit decreasing over a list of bins, opening new bins from `factory` on demand."""

    bins: list[Bin]
    factory: Callable[[int], Bin] | None = None
    max_new: int = 0
    opened: int = 0
    min_cpu: int = 0
    min_mem: int = 0
    _start: int = 0
    _eligible: dict[tuple[Shape, tuple[object, ...]], bool] = field(default_factory=dict)

    def _full(self, node: Bin) -> bool:
        return node.pods <= 0 or node.cpu < self.min_cpu or node.mem < self.min_mem

    def _ok(self, shape: Shape, node: Bin) -> bool:
        if shape.mentions_hostname():
            return eligible(shape, node)
        key = (shape, node.class_key)
        hit = self._eligible.get(key)
        if hit is None:
            hit = self._eligible[key] = eligible(shape, node)
        return hit

    def place(self, shape: Shape, count: int) -> int:
        """Place up to `count` pods; returns how many could not be placed."""
        exclusive = shape.self_exclusive() if shape.anti_affinity else False
        bins = self.bins
        while self._start < len(bins) and self._full(bins[self._start]):
            self._start += 1
        i = self._start
        while count > 0 and i < len(bins):
            node = bins[i]
            i += 1
            if not self._ok(shape, node):
                continue
            n = min(count, room_for(shape, node, exclusive))
            if n > 0:
                node.add(shape, n)
                count -= n
        while count > 0 and self.factory is not None and self.opened < self.max_new:
            node = self.factory(self.opened)
            if not self._ok(shape, node):
                return count
            n = min(count, room_for(shape, node, exclusive))
            if n <= 0:
                return count
            self.opened += 1
            bins.append(node)
            node.add(shape, n)
            count -= n
        return count

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


def bucketize(shapes: Iterable[Shape]) -> list[tuple[Shape, int]]:
    counts: dict[Shape, int] = {}
    for s in shapes:
        counts[s] = counts.get(s, 0) + 1
    return sorted(counts.items(), key=lambda b: b[0].sort_key)
