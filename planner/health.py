"""Which nodes the provider lost, and whether repairing them now is safe: pure, like the planner.

VPSie sells no interruptible capacity and sends no notices; what its users lose is a worker
that stops, is suspended or vanishes, or a kubelet that stops reporting. Nobody on VPSie's
side replaces such a node (its cloud-controller-manager has no node lifecycle), so the
rebalancer does: `assess` reads a snapshot and names, per node group, the nodes that show a
*signal* and since when, which of them are past their toleration (*due*), and whether the
blast-radius limits allow repairing them; `make_repair_plan` writes the due ones down as a
plan whose opportunity is `repair`, run by the same executor and machines as a rebalance.

Signals (each with its own toleration, `RepairPolicy`):

- ready-false: Ready=False;
- ready-unknown: Ready=Unknown (the kubelet stopped reporting);
- worker-gone: not Ready, and VPSie lists no worker of the node's hostname or addresses;
- worker-stopped: not Ready, and VPSie lists the worker with a stopped/suspended status;
  (these four count from Ready's lastTransitionTime)
- never-ready: never Ready since it registered (counted from the Node's creation);
- condition: a condition the user listed has the listed status (from its lastTransitionTime).

A node with several signals is reported with the one due soonest.

Blast radius: when too many nodes of a group show a signal at once (due or not), the cause is
more likely the network, the control plane or VPSie than the nodes, and replacing them would
make it worse: more than `max_unhealthy` of a group's nodes blocks that group's repairs; more
than the cluster-wide limit blocks all of them. Nothing is repaired when the Kubernetes API
could not be read (the snapshot says so); a snapshot without VPSie is never taken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from planner.inventory import WorkerMatch, group_nodes, map_workers, unlisted_node_size
from planner.policy import Limit, NodeGroupPolicy, RepairPolicy
from planner.windows import parse_instant, rfc3339
from statemachine.plan import (
    Action,
    CheckResult,
    CheckStatus,
    Opportunity,
    PlanSpec,
    ReplacementSpec,
    Strategy,
)
from statemachine.world import (
    CONTROL_PLANE_LABELS,
    NODEGROUP_LABEL,
    SIZE_LABEL,
    ClusterSnapshot,
    NodeInfo,
    VpsieWorker,
)

# The cluster-wide stop when none is configured: more than half of all managed nodes.
DEFAULT_CLUSTER_LIMIT = Limit(value=50, percent=True)


class Signal(StrEnum):
    READY_FALSE = "ready-false"
    READY_UNKNOWN = "ready-unknown"
    WORKER_GONE = "worker-gone"
    WORKER_STOPPED = "worker-stopped"
    NEVER_READY = "never-ready"
    CONDITION = "condition"


@dataclass(frozen=True, slots=True, kw_only=True)
class Unhealthy:
    """One node showing a signal. `due` once `due_at` (since + toleration) has passed."""

    node: str
    worker: str  # VPSie identifier; "" when VPSie lists none for the node
    signal: Signal
    detail: str
    since: str  # RFC 3339
    due_at: str
    due: bool
    size_id: int = 0  # the worker's size as far as it is known (0: unknown)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupHealth:
    group: str
    nodes: int  # the group's Nodes, healthy or not
    unhealthy: tuple[Unhealthy, ...] = ()
    allowed: int = 0  # how many may be unhealthy at once for repair to go on
    # Why nothing is repaired although something is due ("" when nothing stops it).
    blocked: str = ""
    # Due, not blocked, not already being handled: what a repair plan would take now.
    to_repair: tuple[Unhealthy, ...] = ()
    enabled: bool = True
    dry_run: bool = False

    @property
    def due(self) -> tuple[Unhealthy, ...]:
        return tuple(u for u in self.unhealthy if u.due)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterHealth:
    groups: tuple[GroupHealth, ...] = ()
    unhealthy: int = 0  # over every group
    managed_nodes: int = 0
    cluster_allowed: int = 0
    blocked: str = ""  # why the whole cluster's repairs stop ("" when they do not)
    readable: bool = True

    def group(self, name: str) -> GroupHealth | None:
        return next((g for g in self.groups if g.group == name), None)


def _instant(value: str) -> datetime | None:
    if not value:
        return None
    try:
        return parse_instant(value)
    except ValueError:
        return None


def _worker_index(workers: Iterable[VpsieWorker]) -> tuple[dict[str, VpsieWorker], set[str]]:
    by_host: dict[str, VpsieWorker] = {}
    ips: set[str] = set()
    for w in workers:
        if w.hostname:
            by_host.setdefault(w.hostname.lower(), w)
        ips.update(ip for ip in (w.ip, w.private_ip) if ip)
    return by_host, ips


def _listed(node: NodeInfo, by_host: Mapping[str, VpsieWorker], ips: set[str]) -> bool:
    """Whether VPSie lists a worker for this node (hostname, any case, then an address)."""
    if node.name.lower() in by_host:
        return True
    return any(a in ips for a in node.addresses)


def _signals(
    node: NodeInfo,
    match: WorkerMatch | None,
    worker: VpsieWorker | None,
    listed: bool,
    policy: RepairPolicy,
) -> list[tuple[Signal, str, str, float]]:
    """(signal, detail, since, toleration) for every signal the node shows."""
    found: list[tuple[Signal, str, str, float]] = []
    ready = node.condition("Ready")
    if not node.ready:
        since = ready.last_transition if ready is not None and ready.last_transition else ""
        since = since or node.created_at
        status = ready.status if ready is not None else "Unknown"
        reason = f" ({ready.reason})" if ready is not None and ready.reason else ""
        created = _instant(node.created_at)
        changed = _instant(ready.last_transition) if ready is not None else None
        # Never Ready: its Ready condition has not changed since the Node registered. Such a
        # node is judged by the startup timeout, not by the NotReady tolerations.
        never = created is not None and (
            changed is None or changed - created <= timedelta(seconds=5)
        )
        if never:
            found.append(
                (
                    Signal.NEVER_READY,
                    "never became Ready since it registered",
                    node.created_at,
                    policy.startup_s,
                )
            )
        elif status == "False":
            found.append((Signal.READY_FALSE, f"Ready=False{reason}", since, policy.ready_false_s))
        else:
            found.append(
                (Signal.READY_UNKNOWN, f"Ready={status}{reason}", since, policy.ready_unknown_s)
            )
        if not listed:
            found.append(
                (
                    Signal.WORKER_GONE,
                    "VPSie no longer lists a worker for this node",
                    since,
                    policy.worker_gone_s,
                )
            )
        elif worker is not None and worker.status.lower() in policy.stopped_statuses:
            found.append(
                (
                    Signal.WORKER_STOPPED,
                    f"VPSie lists worker {worker.identifier or worker.hostname} as "
                    f"{worker.status!r}",
                    since,
                    policy.worker_stopped_s,
                )
            )
    for rule in policy.conditions:
        c = node.condition(rule.type)
        if c is not None and c.status == rule.status:
            found.append(
                (
                    Signal.CONDITION,
                    f"{rule.type}={rule.status}" + (f" ({c.reason})" if c.reason else ""),
                    c.last_transition or node.created_at,
                    rule.after_s,
                )
            )
    return found


def _members(
    snapshot: ClusterSnapshot, group: str, matches: Mapping[str, WorkerMatch]
) -> list[NodeInfo]:
    """The group's nodes as the planner sees them, plus unlabelled nodes whose worker VPSie no
    longer lists but whose size belongs to the VPSie group of that name (a vanished worker
    takes with it the only link the planner has)."""
    found = {n.name: n for n in group_nodes(snapshot, group, dict(matches))}
    by_id = {g.id: g for g in snapshot.vpsie_groups}
    for node in snapshot.nodes:
        if node.name in found or node.name in matches or NODEGROUP_LABEL in node.labels:
            continue
        _, gid = unlisted_node_size(snapshot, node)
        if gid is not None and by_id[gid].name == group:
            found[node.name] = node
    return sorted(found.values(), key=lambda n: n.name)


def _size_of(snapshot: ClusterSnapshot, node: NodeInfo, match: WorkerMatch | None) -> int:
    if match is not None and match.size_id:
        return match.size_id
    try:
        return int(node.labels.get(SIZE_LABEL, "0")) or unlisted_node_size(snapshot, node)[0]
    except ValueError:
        return unlisted_node_size(snapshot, node)[0]


def assess_group(
    snapshot: ClusterSnapshot,
    policy: NodeGroupPolicy,
    *,
    now: datetime | str,
    handled: frozenset[str] = frozenset(),
    workers: Mapping[str, WorkerMatch] | None = None,
    expected: frozenset[str] = frozenset(),
) -> GroupHealth:
    """The group's unhealthy nodes and what may be done about them now. `handled`: nodes a
    plan in flight already takes care of (never repaired twice; still counted). `expected`:
    nodes whose worker one of our rebalances deleted on purpose (their NotReady is no loss:
    neither reported nor counted)."""
    instant = parse_instant(now)
    rp = policy.repair
    matches = dict(workers) if workers is not None else map_workers(snapshot)
    nodes = [
        n
        for n in _members(snapshot, policy.name, matches)
        if not any(label in n.labels for label in CONTROL_PLANE_LABELS)
    ]
    by_host, ips = _worker_index(snapshot.workers)
    by_id = {w.identifier: w for w in snapshot.workers if w.identifier}
    found: list[Unhealthy] = []
    for node in nodes:
        if node.name in expected:
            continue
        match = matches.get(node.name)
        worker = by_id.get(match.worker) if match is not None and match.worker else None
        if worker is None and match is not None:
            worker = by_host.get(node.name.lower())
        listed = _listed(node, by_host, ips)
        best: Unhealthy | None = None
        for signal, detail, since, toleration in _signals(node, match, worker, listed, rp):
            start = _instant(since) or instant
            due_at = start + timedelta(seconds=toleration)
            candidate = Unhealthy(
                node=node.name,
                worker=match.worker if match is not None and listed else "",
                signal=signal,
                detail=detail,
                since=rfc3339(start),
                due_at=rfc3339(due_at),
                due=due_at <= instant,
                size_id=_size_of(snapshot, node, match),
            )
            if best is None or candidate.due_at < best.due_at:
                best = candidate
        if best is not None:
            found.append(best)
    allowed = rp.max_unhealthy.of(len(nodes))
    blocked = ""
    due = [u for u in found if u.due]
    if not rp.enabled:
        blocked = "repair is switched off for this group"
    elif due and len(found) > allowed:
        blocked = (
            f"{len(found)} of {len(nodes)} nodes are unhealthy, more than maxUnhealthy "
            f"{rp.max_unhealthy} allows ({allowed}): the cause is likely the network, the "
            "control plane or VPSie, not the nodes"
        )
    elif due and not snapshot.api_reachable:
        blocked = "the Kubernetes API could not be read"
    to_repair = () if blocked else tuple(u for u in due if u.node not in handled)
    return GroupHealth(
        group=policy.name,
        nodes=len(nodes),
        unhealthy=tuple(found),
        allowed=allowed,
        blocked=blocked,
        to_repair=to_repair,
        enabled=rp.enabled,
        dry_run=rp.dry_run,
    )


def assess(
    snapshot: ClusterSnapshot,
    policies: Sequence[NodeGroupPolicy],
    *,
    now: datetime | str,
    cluster_limit: Limit = DEFAULT_CLUSTER_LIMIT,
    handled: frozenset[str] = frozenset(),
    expected: frozenset[str] = frozenset(),
) -> ClusterHealth:
    """Every group, then the cluster-wide stop over all of them."""
    if not snapshot.api_reachable:
        return ClusterHealth(
            groups=tuple(
                GroupHealth(
                    group=p.name,
                    nodes=0,
                    blocked="the Kubernetes API could not be read",
                    enabled=p.repair.enabled,
                    dry_run=p.repair.dry_run,
                )
                for p in policies
            ),
            blocked="the Kubernetes API could not be read",
            readable=False,
        )
    matches = map_workers(snapshot)
    groups = [
        assess_group(snapshot, p, now=now, handled=handled, workers=matches, expected=expected)
        for p in policies
    ]
    total = sum(g.nodes for g in groups)
    unhealthy = sum(len(g.unhealthy) for g in groups)
    allowed = cluster_limit.of(total)
    blocked = ""
    if any(g.due for g in groups) and unhealthy > allowed:
        blocked = (
            f"{unhealthy} of {total} managed nodes are unhealthy, more than the cluster-wide "
            f"limit {cluster_limit} allows ({allowed}): repair stops everywhere"
        )
        groups = [
            g if g.blocked or not g.due else replace(g, blocked=blocked, to_repair=())
            for g in groups
        ]
    return ClusterHealth(
        groups=tuple(groups),
        unhealthy=unhealthy,
        managed_nodes=total,
        cluster_allowed=allowed,
        blocked=blocked,
    )


def outlook(u: Unhealthy, group: GroupHealth) -> str:
    """What will happen to an unhealthy node, and when (for status and Events)."""
    if not group.enabled:
        return "nothing: repair is switched off for this group"
    if group.blocked:
        return f"nothing while blocked: {group.blocked}"
    when = "now" if u.due else f"at {u.due_at}"
    verb = "reported (dry run), not repaired" if group.dry_run else "repaired"
    return f"{verb} {when}"


def _target(u: Unhealthy, group_sizes: Sequence[int]) -> tuple[int | None, str]:
    """The size a lost node is replaced with: its own, else the size most nodes of the group
    run (the worker may be gone, and with it what VPSie said of its shape)."""
    if u.size_id:
        return u.size_id, ""
    if group_sizes:
        common = max(sorted(set(group_sizes)), key=group_sizes.count)
        return common, f"size of {u.node} unknown; the group's most common size {common}"
    return None, f"size of {u.node} unknown and no other node of the group tells one"


def make_repair_plan(
    snapshot: ClusterSnapshot,
    policy: NodeGroupPolicy,
    health: GroupHealth,
    *,
    now: datetime | str,
) -> PlanSpec | None:
    """A plan replacing every node of `health.to_repair` (None when there is none). Its
    opportunity is `repair`; its one check says what was seen and what the limits allow.

    plan_id is "repair-" + the first 20 hex digits of SHA-256 over its content; replacement ids
    are "<plan_id>/<node>"."""
    if not health.to_repair:
        return None
    created = rfc3339(parse_instant(now))
    offers = {o.id: o for o in snapshot.offers}
    matches = map_workers(snapshot)
    lost = {u.node for u in health.unhealthy}
    members = {n.name for n in _members(snapshot, policy.name, matches)}
    group_sizes = [
        m.size_id
        for name, m in sorted(matches.items())
        if m.size_id and name not in lost and name in members
    ]
    reps: list[ReplacementSpec] = []
    notes: list[str] = []
    for u in health.to_repair:
        size, note = _target(u, group_sizes)
        if note:
            notes.append(note)
        offer = offers.get(size) if size is not None else None
        old_price = offers[u.size_id].monthly_price if u.size_id in offers else Decimal(0)
        new_size = size if policy.repair.add_first and size is not None else None
        reps.append(
            ReplacementSpec(
                replacement_id=u.node,
                batch=1,
                old_node=u.node,
                old_worker=u.worker,
                old_size_id=u.size_id,
                old_monthly_price=old_price,
                new_size_id=new_size,
                new_size_name=offer.name if offer is not None and new_size is not None else "",
                new_monthly_price=(
                    offer.monthly_price if offer is not None and new_size is not None
                    else Decimal(0)
                ),
                reason=f"repair ({u.signal.value}): {u.detail} since {u.since}",
            )
        )
    check = CheckResult(
        name="node_health",
        status=CheckStatus.PASSED,
        message=(
            f"{len(health.unhealthy)} of {health.nodes} nodes unhealthy, "
            f"{len(health.to_repair)} due; maxUnhealthy {policy.repair.max_unhealthy} "
            f"allows {health.allowed}"
        ),
        details={
            "unhealthy": len(health.unhealthy),
            "nodes": health.nodes,
            "allowed": health.allowed,
        },
    )
    body = PlanSpec(
        plan_id="",
        cluster=policy.cluster,
        node_group=policy.name,
        strategy=Strategy.ROLLING,
        created_at=created,
        opportunity=Opportunity.REPAIR,
        replacements=tuple(reps),
        batches=(),
        max_concurrent=len(reps),
        checks=(check,),
        recommended_action=Action.PROCEED,
        action_reasons=tuple(r.reason for r in reps) + tuple(notes),
        provision_timeout_s=policy.provision_timeout_s,
        drain_timeout_s=policy.drain_timeout_s,
        min_nodes=0,
        min_healthy_percent=0,
        snapshot_summary={"taken_at": snapshot.taken_at, "nodes": health.nodes},
        prices_seen={str(k): str(o.monthly_price) for k, o in sorted(offers.items())},
    )
    plan_id = "repair-" + hashlib.sha256(repr(body).encode()).hexdigest()[:20]
    ids = tuple(replace(r, replacement_id=f"{plan_id}/{r.old_node}") for r in reps)
    return replace(
        body, plan_id=plan_id, replacements=ids, batches=(tuple(r.replacement_id for r in ids),)
    )
