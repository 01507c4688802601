"""What a node group is made of: its nodes, their VPSie workers and sizes, their pods.

The snapshot lists Kubernetes nodes and VPSie workers separately; the only link VPSie offers is
the hostname (then the IP). This module makes that link once, purely, so the plan can name the
worker each replacement may delete (`old_worker`) and the size and price it leaves
(`old_size_id`). It also decides which pods count: pods a drain would move (not DaemonSet, not
mirror, not finished, not already being deleted), and why a node must be left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from planner.scheduling import SelectorIndex, selector_key
from statemachine.plan import Exclusion
from statemachine.world import (
    CONTROL_PLANE_LABELS,
    CORDONED_BY_ANNOTATION,
    HOSTNAME_LABEL,
    KARPENTER_DO_NOT_DISRUPT,
    NODEGROUP_LABEL,
    PROTECTED_ANNOTATION,
    SAFE_TO_EVICT_ANNOTATION,
    SCALE_DOWN_DISABLED_LABEL,
    SIZE_LABEL,
    ClusterSnapshot,
    NodeInfo,
    PdbInfo,
    PodInfo,
    VpsieNodeGroup,
    VpsieWorker,
)

FINISHED_PHASES = frozenset({"Succeeded", "Failed"})

# Stable exclusion codes, in the order they are tested; a node gets the first that applies.
NOT_READY = "not-ready"
CORDONED = "cordoned"
PROTECTED = "protected"
SCALE_DOWN_DISABLED = "scale-down-disabled"
DO_NOT_DISRUPT = "do-not-disrupt"
CONTROL_PLANE = "control-plane"
UNMAPPED = "unmapped"
WORKER_READ_ONLY = "worker-read-only"
LOCAL_STORAGE = "local-storage"
POD_DO_NOT_DISRUPT = "pod-do-not-disrupt"
POD_NOT_SAFE_TO_EVICT = "pod-not-safe-to-evict"
POD_WITHOUT_CONTROLLER = "pod-without-controller"
POD_PINNED = "pod-pinned-to-node"
POD_DISRUPTION_BUDGET = "pod-disruption-budget"
POD_TWO_BUDGETS = "pod-under-two-budgets"
ALREADY_TARGET_SIZE = "already-target-size"
RECENTLY_ADDED = "recently-added"
EXCLUSION_CODES = (
    NOT_READY,
    CORDONED,
    PROTECTED,
    SCALE_DOWN_DISABLED,
    DO_NOT_DISRUPT,
    CONTROL_PLANE,
    UNMAPPED,
    WORKER_READ_ONLY,
    LOCAL_STORAGE,
    POD_DO_NOT_DISRUPT,
    POD_NOT_SAFE_TO_EVICT,
    POD_WITHOUT_CONTROLLER,
    POD_PINNED,
    POD_DISRUPTION_BUDGET,
    POD_TWO_BUDGETS,
    RECENTLY_ADDED,
    ALREADY_TARGET_SIZE,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerMatch:
    """The VPSie worker behind a node, and the size it runs (0 when unknown).

    `worker` is the worker's identifier ("" when the API lists none: then `read_only`).
    `size_from` says how the size was learnt: "log" (our own log recorded adding it), "label"
    (the size label we write on Nodes we create) or "shape" (the only size of the cluster's
    groups with the worker's cpu/ram/disk); `note` says why it is unknown when it is."""

    worker: str
    matched_by: str  # hostname | ip
    size_id: int = 0
    size_name: str = ""
    monthly_price: Decimal | None = None
    group_id: int | None = None
    size_from: str = ""
    read_only: bool = False
    note: str = ""


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def counts_as_load(pod: PodInfo) -> bool:
    """Pods whose requests occupy their node (everything not finished)."""
    return pod.phase not in FINISHED_PHASES


def is_movable(pod: PodInfo) -> bool:
    """Pods a drain evicts and the scheduler must place elsewhere."""
    return not (pod.is_daemonset or pod.is_mirror or pod.deleting or pod.phase in FINISHED_PHASES)


def map_workers(snapshot: ClusterSnapshot) -> dict[str, WorkerMatch]:
    """Node name -> its VPSie worker, by hostname first (VPSie's case may differ from the
    Node's, so compared lower-cased), then by any of the node's addresses; with the worker's
    size and group from, in order, our log, our size label on the Node, a unique shape match."""
    workers = sorted(snapshot.workers, key=lambda w: w.key)
    by_host: dict[str, VpsieWorker] = {}
    by_ip: dict[str, VpsieWorker] = {}
    for w in workers:
        if w.hostname:
            by_host.setdefault(w.hostname.lower(), w)
        for ip in (w.ip, w.private_ip):
            if ip:
                by_ip.setdefault(ip, w)
    sizes = _Sizes(snapshot)
    found: dict[str, WorkerMatch] = {}
    for node in sorted(snapshot.nodes, key=lambda n: n.name):
        worker = by_host.get(node.name.lower()) or by_host.get(
            node.labels.get(HOSTNAME_LABEL, "").lower()
        )
        how = "hostname"
        if worker is None:
            how = "ip"
            worker = next((by_ip[a] for a in node.addresses if a in by_ip), None)
        if worker is None:
            continue
        size_id, size_from, note = sizes.of(node, worker)
        offer = sizes.offers.get(size_id)
        group = sizes.groups_by_size.get(size_id)
        found[node.name] = WorkerMatch(
            worker=worker.identifier,
            matched_by=how,
            size_id=size_id,
            size_name=offer.name if offer is not None else "",
            monthly_price=offer.monthly_price if offer is not None else None,
            group_id=group.id if group is not None else None,
            size_from=size_from,
            read_only=not worker.deletable,
            note=note,
        )
    return found


# A Node may report less memory than its size advertises (the kernel's share; shared-CPU plans
# are reported to balloon memory): a Node's capacity matches a size when its memory is within
# this fraction below the size's RAM.
MEMORY_SLACK = 0.15


class _Sizes:
    """The sizes of the cluster's VPSie groups (one group per size), and how to tell a
    worker's."""

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.logged = snapshot.logged_sizes
        self.offers = {o.id: o for o in snapshot.offers}
        self.groups_by_size: dict[int, VpsieNodeGroup] = {}
        for g in sorted(snapshot.vpsie_groups, key=lambda g: g.id):
            self.groups_by_size.setdefault(g.size_id, g)
        # (size id, cpu, ram MB, disk GB) of every group's size; the group's own figures
        # first, the offer's where the group gives none.
        self.shapes: list[tuple[int, int, int, int]] = []
        for size_id, g in sorted(self.groups_by_size.items()):
            offer = self.offers.get(size_id)
            cpu = g.cpu or (offer.cpu if offer is not None else 0)
            ram = g.ram_mb or (offer.ram_mb if offer is not None else 0)
            disk = g.disk_gb or (offer.disk_gb if offer is not None else 0)
            self.shapes.append((size_id, cpu, ram, disk))

    def of(self, node: NodeInfo, worker: VpsieWorker) -> tuple[int, str, str]:
        """(size id or 0, where it came from, why unknown)."""
        if worker.identifier and worker.identifier in self.logged:
            return self.logged[worker.identifier], "log", ""
        label = node.labels.get(SIZE_LABEL, "")
        if label:
            try:
                return int(label), "label", ""
            except ValueError:
                return 0, "", f"label {SIZE_LABEL}={label!r} is not a size id"
        if worker.cpu and worker.ram_mb:
            matches = [
                sid
                for sid, cpu, ram, disk in self.shapes
                if cpu == worker.cpu
                and ram == worker.ram_mb
                and (not worker.disk_gb or not disk or disk == worker.disk_gb)
            ]
            shape = f"{worker.cpu} vCPU / {worker.ram_mb} MB"
        else:
            cpu = node.capacity.cpu_millis // 1000
            mem_mb = node.capacity.memory_bytes // (1024 * 1024)
            matches = [
                sid
                for sid, scpu, ram, _ in self.shapes
                if scpu == cpu and ram * (1 - MEMORY_SLACK) <= mem_mb <= ram
            ]
            shape = f"{cpu} vCPU / {mem_mb} MB (the Node's capacity)"
        if len(matches) == 1:
            return matches[0], "shape", ""
        if not matches:
            return 0, "", f"no node group of the cluster has a size of {shape}"
        listed = ", ".join(str(m) for m in matches)
        return 0, "", f"sizes {listed} all have {shape}: the worker's size is ambiguous"


def unlisted_node_size(snapshot: ClusterSnapshot, node: NodeInfo) -> tuple[int, int | None]:
    """(size id, VPSie group id) of a node VPSie lists no worker for (its worker vanished):
    our size label, else the one size of the cluster's groups its capacity matches; (0, None)
    when neither tells."""
    sizes = _Sizes(snapshot)
    size_id, _, _ = sizes.of(node, VpsieWorker(identifier=""))
    group = sizes.groups_by_size.get(size_id)
    return size_id, group.id if group is not None else None


def group_nodes(
    snapshot: ClusterSnapshot, group: str, workers: dict[str, WorkerMatch]
) -> list[NodeInfo]:
    """Nodes labelled with the group, or unlabelled nodes whose worker runs in a VPSie group of
    that name (as far as its size tells); sorted by name."""
    vpsie_by_id = {g.id: g for g in snapshot.vpsie_groups}
    chosen = []
    for node in snapshot.nodes:
        label = node.labels.get(NODEGROUP_LABEL)
        if label is not None:
            if label == group:
                chosen.append(node)
            continue
        match = workers.get(node.name)
        gid = match.group_id if match is not None else None
        vg = vpsie_by_id.get(gid) if gid is not None else None
        if vg is not None and vg.name == group:
            chosen.append(node)
    return sorted(chosen, key=lambda n: n.name)


def pinned_to_host(pod: PodInfo) -> bool:
    """A nodeSelector on the hostname, or required affinity whose every term names hosts with
    `In`: the pod cannot run on a node that does not exist yet."""
    if HOSTNAME_LABEL in pod.node_selector:
        return True
    terms = pod.required_node_affinity
    return bool(terms) and all(
        any(r.key == HOSTNAME_LABEL and r.operator == "In" for r in term) for term in terms
    )


def may_block_node(pod: PodInfo, skip_local: bool) -> bool:
    """Whether `pod` might keep its node from being replaced; `exclusion_for` only looks at
    the pods for which this holds, so a caller may hand it just those."""
    return bool(
        (skip_local and pod.uses_local_storage)
        or not pod.owner_kind
        or pod.annotations.get(KARPENTER_DO_NOT_DISRUPT)
        or pod.annotations.get(SAFE_TO_EVICT_ANNOTATION)
        or pinned_to_host(pod)
    )


def _pod_reason(pods: Iterable[PodInfo], skip_local: bool) -> tuple[str, str] | None:
    tests: list[tuple[str, str, list[str]]] = [
        (LOCAL_STORAGE, "pod {} uses local storage", []),
        (POD_DO_NOT_DISRUPT, f"pod {{}} has annotation {KARPENTER_DO_NOT_DISRUPT}=true", []),
        (POD_NOT_SAFE_TO_EVICT, f"pod {{}} has annotation {SAFE_TO_EVICT_ANNOTATION}=false", []),
        (POD_WITHOUT_CONTROLLER, "pod {} has no controller and would not come back", []),
        (POD_PINNED, "pod {} may only run on this node (hostname selector or affinity)", []),
    ]
    suspects = [p for p in pods if may_block_node(p, skip_local)]
    for pod in sorted(suspects, key=lambda p: (p.namespace, p.name)):
        ref = f"{pod.namespace}/{pod.name}"
        # safe-to-evict "true" (as Cluster Autoscaler reads it): local storage and a missing
        # controller do not hold the node.
        evictable = _true(pod.annotations.get(SAFE_TO_EVICT_ANNOTATION))
        if skip_local and pod.uses_local_storage and not evictable:
            tests[0][2].append(ref)
        if _true(pod.annotations.get(KARPENTER_DO_NOT_DISRUPT)):
            tests[1][2].append(ref)
        if pod.annotations.get(SAFE_TO_EVICT_ANNOTATION, "").strip().lower() == "false":
            tests[2][2].append(ref)
        if not pod.owner_kind and not evictable:
            tests[3][2].append(ref)
        if pinned_to_host(pod):
            tests[4][2].append(ref)
    for code, text, refs in tests:
        if refs:
            more = f" (and {len(refs) - 1} more)" if len(refs) > 1 else ""
            return code, text.format(refs[0]) + more
    return None


def _node_reason(node: NodeInfo, own_mark: str | None) -> tuple[str, str] | None:
    """The node's own protections. A cordon is someone else's unless it carries a plan's mark
    (with `own_mark`: unless it carries exactly that plan's mark)."""
    mark = node.annotations.get(CORDONED_BY_ANNOTATION)
    if node.unschedulable and (mark is None or (own_mark is not None and mark != own_mark)):
        return CORDONED, "node was cordoned by someone else; leaving it to them"
    if _true(node.annotations.get(PROTECTED_ANNOTATION)):
        return PROTECTED, f"node has annotation {PROTECTED_ANNOTATION}=true"
    if _true(node.labels.get(SCALE_DOWN_DISABLED_LABEL)):
        return SCALE_DOWN_DISABLED, f"node has label {SCALE_DOWN_DISABLED_LABEL}=true"
    if _true(node.annotations.get(KARPENTER_DO_NOT_DISRUPT)):
        return DO_NOT_DISRUPT, f"node has annotation {KARPENTER_DO_NOT_DISRUPT}=true"
    if any(key in node.labels for key in CONTROL_PLANE_LABELS):
        return CONTROL_PLANE, "node is a control-plane node, never a worker to replace"
    return None


def budgets_of_pods(pods: Iterable[PodInfo], pdbs: Iterable[PdbInfo]) -> dict[str, list[str]]:
    """The pods ("namespace/name") that more than one PodDisruptionBudget selects, with those
    budgets: the Eviction API refuses to evict them (HTTP 500), so their node is left out."""
    index: SelectorIndex[PdbInfo] = SelectorIndex()
    for pdb in sorted(pdbs, key=lambda p: (p.namespace, p.name)):
        index.add(pdb.namespace, selector_key(pdb.selector), pdb)
    found: dict[str, list[str]] = {}
    for pod in pods:
        hits = index.matching(pod.namespace, pod.labels)
        if len(hits) > 1:
            found[f"{pod.namespace}/{pod.name}"] = sorted(f"{p.namespace}/{p.name}" for p in hits)
    return found


def two_budgets(node: NodeInfo, doubly: dict[str, list[str]]) -> Exclusion | None:
    """The exclusion of a node holding a pod that two budgets select (`budgets_of_pods`)."""
    if not doubly:
        return None
    ref = sorted(doubly)[0]
    more = f" (and {len(doubly) - 1} more)" if len(doubly) > 1 else ""
    return Exclusion(
        node=node.name,
        reason=POD_TWO_BUDGETS,
        message=f"pod {ref} is selected by {len(doubly[ref])} PodDisruptionBudgets "
        f"({', '.join(doubly[ref])}); the Eviction API cannot evict it{more}",
    )


def protection_of(
    node: NodeInfo,
    pods: Iterable[PodInfo],
    *,
    skip_local_storage: bool,
    own_mark: str,
    pdbs: Iterable[PdbInfo] = (),
) -> Exclusion | None:
    """What protects `node` from being drained now, by the planner's rules (its readiness and
    its VPSie worker aside): the executor asks this of a fresh read before each batch and right
    before it cordons. `pods` are the node's pods; a cordon carrying `own_mark` is ours."""
    movable = [p for p in pods if is_movable(p)]
    found = _node_reason(node, own_mark) or _pod_reason(movable, skip_local_storage)
    if found:
        return Exclusion(node=node.name, reason=found[0], message=found[1])
    return two_budgets(node, budgets_of_pods(movable, pdbs))


def exclusion_for(
    node: NodeInfo,
    movable_pods: Iterable[PodInfo],
    match: WorkerMatch | None,
    *,
    skip_local_storage: bool,
) -> Exclusion | None:
    """Why `node` must not be replaced, or None. Codes are EXCLUSION_CODES, first match wins."""

    def out(code: str, message: str) -> Exclusion:
        return Exclusion(node=node.name, reason=code, message=message)

    if not node.ready:
        return out(NOT_READY, "node is not Ready")
    found = _node_reason(node, None)
    if found is not None:
        return out(*found)
    if match is None:
        return out(UNMAPPED, "no VPSie worker matches the node's hostname or addresses")
    if match.read_only:
        return out(
            WORKER_READ_ONLY,
            "VPSie lists this node's worker without an identifier (or without a worker role): "
            "it cannot be deleted safely, so it is not replaced",
        )
    if match.size_id == 0:
        return out(UNMAPPED, f"the size of VPSie worker {match.worker} is unknown: {match.note}")
    if match.monthly_price is None:
        return out(UNMAPPED, f"size {match.size_id} of VPSie worker {match.worker} is not offered")
    found = _pod_reason(movable_pods, skip_local_storage)
    if found is not None:
        return out(*found)
    return None
