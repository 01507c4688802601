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
    CORDONED_BY_ANNOTATION,
    HOSTNAME_LABEL,
    KARPENTER_DO_NOT_DISRUPT,
    NODEGROUP_LABEL,
    PROTECTED_ANNOTATION,
    SAFE_TO_EVICT_ANNOTATION,
    SCALE_DOWN_DISABLED_LABEL,
    ClusterSnapshot,
    NodeInfo,
    PdbInfo,
    PodInfo,
    SizeOffer,
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
UNMAPPED = "unmapped"
LOCAL_STORAGE = "local-storage"
POD_DO_NOT_DISRUPT = "pod-do-not-disrupt"
POD_NOT_SAFE_TO_EVICT = "pod-not-safe-to-evict"
POD_WITHOUT_CONTROLLER = "pod-without-controller"
POD_PINNED = "pod-pinned-to-node"
POD_TWO_BUDGETS = "pod-under-two-budgets"
ALREADY_TARGET_SIZE = "already-target-size"
EXCLUSION_CODES = (
    NOT_READY,
    CORDONED,
    PROTECTED,
    SCALE_DOWN_DISABLED,
    DO_NOT_DISRUPT,
    UNMAPPED,
    LOCAL_STORAGE,
    POD_DO_NOT_DISRUPT,
    POD_NOT_SAFE_TO_EVICT,
    POD_WITHOUT_CONTROLLER,
    POD_PINNED,
    POD_TWO_BUDGETS,
    ALREADY_TARGET_SIZE,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerMatch:
    """The VPSie worker behind a node, and the size it runs (0 when unknown)."""

    worker: str
    matched_by: str  # hostname | ip
    size_id: int = 0
    size_name: str = ""
    monthly_price: Decimal | None = None


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def counts_as_load(pod: PodInfo) -> bool:
    """Pods whose requests occupy their node (everything not finished)."""
    return pod.phase not in FINISHED_PHASES


def is_movable(pod: PodInfo) -> bool:
    """Pods a drain evicts and the scheduler must place elsewhere."""
    return not (pod.is_daemonset or pod.is_mirror or pod.deleting or pod.phase in FINISHED_PHASES)


def map_workers(snapshot: ClusterSnapshot) -> dict[str, WorkerMatch]:
    """Node name -> its VPSie worker, by hostname first, then by any of the node's addresses."""
    workers = sorted(snapshot.workers, key=lambda w: w.identifier)
    by_host: dict[str, VpsieWorker] = {}
    by_ip: dict[str, VpsieWorker] = {}
    for w in workers:
        if w.hostname:
            by_host.setdefault(w.hostname, w)
        for ip in (w.ip, w.private_ip):
            if ip:
                by_ip.setdefault(ip, w)
    groups = {g.id: g for g in snapshot.vpsie_groups}
    groups_by_name: dict[str, VpsieNodeGroup] = {}
    for g in sorted(snapshot.vpsie_groups, key=lambda g: g.id):
        groups_by_name.setdefault(g.name, g)
    offers = {o.id: o for o in snapshot.offers}
    found: dict[str, WorkerMatch] = {}
    for node in sorted(snapshot.nodes, key=lambda n: n.name):
        worker = by_host.get(node.name) or by_host.get(node.labels.get(HOSTNAME_LABEL, ""))
        how = "hostname"
        if worker is None:
            how = "ip"
            worker = next((by_ip[a] for a in node.addresses if a in by_ip), None)
        if worker is None:
            continue
        group = groups.get(worker.group_id) if worker.group_id is not None else None
        if group is None:
            group = groups_by_name.get(node.labels.get(NODEGROUP_LABEL, ""))
        offer: SizeOffer | None = offers.get(group.size_id) if group is not None else None
        found[node.name] = WorkerMatch(
            worker=worker.identifier,
            matched_by=how,
            size_id=group.size_id if group is not None else 0,
            size_name=offer.name if offer is not None else "",
            monthly_price=offer.monthly_price if offer is not None else None,
        )
    return found


def group_nodes(
    snapshot: ClusterSnapshot, group: str, workers: dict[str, WorkerMatch]
) -> list[NodeInfo]:
    """Nodes labelled with the group, or unlabelled nodes whose worker is in a VPSie group of
    that name; sorted by name."""
    vpsie_by_id = {g.id: g for g in snapshot.vpsie_groups}
    worker_group = {w.identifier: w.group_id for w in snapshot.workers}
    chosen = []
    for node in snapshot.nodes:
        label = node.labels.get(NODEGROUP_LABEL)
        if label is not None:
            if label == group:
                chosen.append(node)
            continue
        match = workers.get(node.name)
        gid = worker_group.get(match.worker) if match is not None else None
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
        if skip_local and pod.uses_local_storage:
            tests[0][2].append(ref)
        if _true(pod.annotations.get(KARPENTER_DO_NOT_DISRUPT)):
            tests[1][2].append(ref)
        if pod.annotations.get(SAFE_TO_EVICT_ANNOTATION, "").strip().lower() == "false":
            tests[2][2].append(ref)
        if not pod.owner_kind:
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
    if match.size_id == 0 or match.monthly_price is None:
        return out(UNMAPPED, f"the size of VPSie worker {match.worker} is unknown or not offered")
    found = _pod_reason(movable_pods, skip_local_storage)
    if found is not None:
        return out(*found)
    return None
