"""VPSie workers: the node group of the target size, adding a worker, its Node made ready.

VPSie's "add worker" is asynchronous and mostly answers no id, and its node listing names no
group. So the new worker is, in order: the one whose `identifier` the add answer named; else
the one worker that appeared in the cluster's listing after the intent (`WorkerAddRequested`
records every worker identifier before the call, `known_workers`), of the target size (its
listed cpu/ram against the target group's), with an identifier, and claimed by no replacement
of a registered plan. Two or more such workers (another actor, such as the VPSie autoscaler,
added to the same group meanwhile): none is taken for ours; the plan pauses for a person and
says which workers it saw (during a rollback the add is recorded as failed instead), and nothing
is ever deleted on an inferred identity. Choosing and recording `WorkerAdded` happen under
`WorkerClaims.claim_lock()`. An add is never repeated for one intent: a call that failed in a
way that may have reached VPSie (a temporary error) is settled by looking, and only a settled
"not made" lets a new intent try again.

The new worker's Node is matched by hostname, compared lower-cased (VPSie lists another case),
then by IP, and must turn Ready within the plan's `provision_timeout_s`. Before it takes our
pods it is made the old node's equal under `NodePrepareRequested`: the group's labels, our size
and VPSie group labels (how a restart knows its size), and the old node's own taints.

Taking a worker and its Node away is removal.py.
"""

from __future__ import annotations

import contextlib
import functools
import logging

from adapters.errors import Conflict, NotFound, PermanentError, TemporaryError
from daemon.executor.adding import model_node
from daemon.executor.execution import Interrupted, Runtime, StepFailed
from daemon.ports import Cluster
from planner.scheduling import tolerates
from statemachine import events as ev
from statemachine.machines import PlanStatus, ReplacementStatus
from statemachine.world import (
    DATACENTER_LABEL,
    HOSTNAME_LABEL,
    MANAGED_LABEL,
    NODEGROUP_LABEL,
    SIZE_LABEL,
    VPSIE_GROUP_LABEL,
    VPSIE_NODE_LABEL,
    NodeInfo,
    PodInfo,
    Taint,
    VpsieWorker,
)

_RS = ReplacementStatus
log = logging.getLogger(__name__)

# Label prefixes the kubelet and the cloud own; everything else on the old node is carried over.
_SYSTEM_LABEL_DOMAINS = ("kubernetes.io/", "k8s.io/")
# Taints Kubernetes itself sets (not-ready, unschedulable, pressure...): never copied.
_SYSTEM_TAINT_PREFIXES = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")


class AmbiguousWorker(Exception):
    """More than one worker could be the one an add made; none is taken for ours."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def group_name(node_group: str, size_id: int) -> str:
    """The VPSie group created for a size: one group per size per cluster."""
    return f"{node_group}-{size_id}"


async def ensure_group(rt: Runtime, rid: str) -> int:
    """The numeric id of the VPSie group of the target size; created (bracketed) if missing."""
    spec = rt.spec_of(rid)
    assert spec.new_size_id is not None
    size_id = spec.new_size_id
    cluster = rt.spec.cluster
    deadline = rt.monotonic() + rt.ctx.call_retry_s
    name = group_name(rt.spec.node_group, size_id)
    first, most = rt.ctx.retry_backoff_s
    delay = first
    async with rt.ctx.claims.group_lock(size_id):
        while True:
            groups = await rt.call(
                "list the VPSie node groups",
                lambda: rt.ctx.cloud.list_node_groups(cluster),
                deadline=deadline,
            )
            found = next((g for g in groups if g.size_id == size_id), None)
            if found is not None:
                return found.id
            await rt.record(
                ev.NodeGroupCreateRequested(
                    plan_id=rt.plan_id,
                    at=rt.at(),
                    replacement_id=rid,
                    cluster=cluster,
                    group_name=name,
                    size_id=size_id,
                )
            )
            problem = ""
            temporary = False
            try:
                await rt.ctx.cloud.create_node_group(cluster, name, size_id)
            except Conflict:
                pass  # someone created the group of this size meanwhile: re-listing finds it
            except TemporaryError as exc:
                problem, temporary = str(exc), True
            except PermanentError as exc:
                problem = str(exc)
            group_id = await settle_group(rt, size_id)
            if group_id is not None:
                await rt.record(
                    ev.NodeGroupCreated(
                        plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, group_id=group_id
                    )
                )
                return group_id
            reason = (
                f"could not create the VPSie node group {name!r} of size {size_id}: "
                f"{problem or 'VPSie accepted it but does not list it'}"
            )
            await rt.record(
                ev.NodeGroupCreateFailed(
                    plan_id=rt.plan_id,
                    at=rt.at(),
                    replacement_id=rid,
                    reason=reason,
                    permanent=not temporary,
                )
            )
            if not temporary or rt.monotonic() >= deadline:
                raise StepFailed(reason)
            await rt.sleep(min(delay, max(0.0, deadline - rt.monotonic())))
            delay = min(delay * 2, most)


async def settle_group(rt: Runtime, size_id: int) -> int | None:
    """Re-list the groups to learn the id of the one of `size_id` (None: there is none)."""
    groups = await rt.call(
        "list the VPSie node groups",
        lambda: rt.ctx.cloud.list_node_groups(rt.spec.cluster),
        deadline=rt.monotonic() + rt.ctx.call_retry_s,
        interruptible=False,
    )
    found = next((g for g in groups if g.size_id == size_id), None)
    return found.id if found is not None else None


def _candidates(
    rt: Runtime,
    rid: str,
    intent: ev.WorkerAddRequested,
    workers: list[VpsieWorker],
    shape: tuple[int, int],
) -> list[VpsieWorker]:
    """Workers that may be the one `intent` added: new since the intent, deletable, of the
    target size (when both the listing and the group give cpu/ram), claimed by nobody."""
    known = set(intent.known_workers)
    claimed = rt.ctx.claims.claimed(rt.plan_id, rid)
    for r in rt.state.replacements.values():
        if r.replacement_id != rid and r.new_worker:
            claimed.add(r.new_worker)
    olds = {s.old_worker for s in rt.spec.replacements}
    cpu, ram = shape
    found = [
        w
        for w in workers
        if w.deletable
        and w.identifier not in known
        and w.identifier not in claimed
        and w.identifier not in olds
        and not (cpu and ram and w.cpu and w.ram_mb and (w.cpu, w.ram_mb) != (cpu, ram))
    ]
    return sorted(found, key=lambda w: w.identifier)


async def _target_shape(rt: Runtime, group_id: int) -> tuple[int, int]:
    """(cpu, ram MB) of the VPSie group `group_id`, (0, 0) when it gives none."""
    groups = await rt.call(
        "list the VPSie node groups",
        lambda: rt.ctx.cloud.list_node_groups(rt.spec.cluster),
        deadline=rt.monotonic() + rt.ctx.call_retry_s,
        interruptible=False,
    )
    group = next((g for g in groups if g.id == group_id), None)
    return (group.cpu, group.ram_mb) if group is not None else (0, 0)


async def settle_add(
    rt: Runtime, rid: str, intent: ev.WorkerAddRequested, named: str | None = None
) -> bool:
    """Look for the worker `intent` added, for up to `worker_visible_s`; record WorkerAdded
    and return True when found, return False (nothing recorded) when it never appeared.
    `named`: the identifier the add answer gave. AmbiguousWorker when several could be ours."""
    deadline = rt.monotonic() + rt.ctx.worker_visible_s
    shape = (0, 0) if named else await _target_shape(rt, intent.group_id)
    while True:
        async with rt.ctx.claims.claim_lock():
            workers = await rt.call(
                "list the VPSie workers",
                lambda: rt.ctx.cloud.list_workers(intent.cluster),
                deadline=rt.monotonic() + rt.ctx.call_retry_s,
                interruptible=False,
            )
            if named:
                found = [w for w in workers if w.identifier == named]
            else:
                found = _candidates(rt, rid, intent, workers, shape)
            if len(found) > 1:
                listed = ", ".join(f"{w.identifier} ({w.hostname})" for w in found)
                raise AmbiguousWorker(
                    f"{len(found)} new workers of the target size appeared in group "
                    f"{intent.group_id} after the add ({listed}); the add answered no "
                    "identifier, so none is taken for ours and nothing is deleted: a person "
                    "must delete the worker that is not wanted (or cancel the plan), then resume"
                )
            if found:
                worker = found[0]
                await rt.record(
                    ev.WorkerAdded(
                        plan_id=rt.plan_id,
                        at=rt.at(),
                        replacement_id=rid,
                        worker_identifier=worker.identifier,
                        hostname=worker.hostname,
                        ip=worker.ip or worker.private_ip,
                        identified_by="answer" if named else "listing",
                    )
                )
                return True
        if rt.monotonic() >= deadline:
            return False
        await rt.ctx.clock.sleep(min(rt.ctx.poll_interval_s, rt.ctx.worker_visible_s))


async def park(rt: Runtime, rid: str, reason: str) -> None:
    """An add whose worker cannot be told from another actor's: pause the plan for a person
    (while executing; the pending intent is settled again on resume), or, in a rollback,
    record the add as failed, so that the rollback deletes nothing it cannot account for."""
    if rt.state.status is PlanStatus.EXECUTING:
        await rt.record(
            ev.PlanPaused(plan_id=rt.plan_id, at=rt.at(), by="rebalancer", reason=reason)
        )
        raise Interrupted(reason)
    await _add_failed(rt, rid, reason, permanent=True)


async def add_worker(rt: Runtime, rid: str, group_id: int, deadline: float) -> None:
    """PLANNED -> JOINING: one bracketed add, retried (with a fresh intent) only when the
    previous one is settled as not made."""
    first, most = rt.ctx.retry_backoff_s
    delay = first
    while True:
        rt.check()
        async with rt.ctx.claims.add_lock(group_id):
            temporary = await _add_once(rt, rid, group_id, deadline)
        if temporary is None:
            return
        if rt.monotonic() >= deadline:
            raise StepFailed(f"could not add a worker to group {group_id}: {temporary}")
        await rt.sleep(min(delay, max(0.0, deadline - rt.monotonic())))
        delay = min(delay * 2, most)


async def _add_once(rt: Runtime, rid: str, group_id: int, deadline: float) -> TemporaryError | None:
    """One bracketed add. None: the worker was found; the error when the call failed in a way
    that may be retried (with a fresh intent). StepFailed when it cannot be."""
    spec = rt.spec_of(rid)
    assert spec.new_size_id is not None
    cluster = rt.spec.cluster
    workers = await rt.call(
        "list the VPSie workers", lambda: rt.ctx.cloud.list_workers(cluster), deadline=deadline
    )
    intent = ev.WorkerAddRequested(
        plan_id=rt.plan_id,
        at=rt.at(),
        replacement_id=rid,
        idempotency_key=f"{rid}/add/{rt.journal.version + 1}",
        cluster=cluster,
        group_id=group_id,
        size_id=spec.new_size_id,
        known_workers=tuple(sorted(w.identifier for w in workers)),
    )
    await rt.record(intent)
    temporary: TemporaryError | None = None
    named: str | None = None
    try:
        named = await rt.ctx.cloud.add_worker(cluster, group_id)
    except TemporaryError as exc:
        temporary = exc  # it may have reached VPSie: look before trying again
    except PermanentError as exc:
        reason = f"VPSie refused to add a worker to group {group_id}: {exc}"
        await _add_failed(rt, rid, reason, permanent=True)
        raise StepFailed(reason) from None
    try:
        if await settle_add(rt, rid, intent, named):
            return None
    except AmbiguousWorker as exc:
        await park(rt, rid, exc.reason)
        raise StepFailed(exc.reason) from None
    if temporary is None:
        reason = (
            f"VPSie accepted a worker for group {group_id} but none appeared within "
            f"{rt.ctx.worker_visible_s:g} s"
        )
        await unaccounted(rt, intent, reason)
        await _add_failed(rt, rid, reason, permanent=True)
        raise StepFailed(reason)
    await unaccounted(rt, intent, f"add_worker: {temporary} (it may have reached VPSie)")
    await _add_failed(rt, rid, f"add_worker: {temporary}", permanent=False)
    return temporary


async def unaccounted(rt: Runtime, intent: ev.WorkerAddRequested, reason: str) -> None:
    """An add whose worker the listing did not show: tell the service (which looks for it
    at every later round), before the add is recorded as failed."""
    if rt.ctx.on_unaccounted is None:
        return
    shape = await _target_shape(rt, intent.group_id)
    await rt.ctx.on_unaccounted(intent, shape, reason)


async def _add_failed(rt: Runtime, rid: str, reason: str, *, permanent: bool) -> None:
    await rt.record(
        ev.WorkerAddFailed(
            plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, reason=reason, permanent=permanent
        )
    )


def match_node(nodes: list[NodeInfo], hostname: str, ips: tuple[str, ...]) -> NodeInfo | None:
    """The Node of a worker: by hostname first, then by an InternalIP/ExternalIP."""
    if hostname:
        wanted_host = hostname.lower()
        for node in nodes:
            if wanted_host in (node.name.lower(), node.labels.get(HOSTNAME_LABEL, "").lower()):
                return node
    wanted = {ip for ip in ips if ip}
    for node in nodes:
        if wanted.intersection(node.addresses):
            return node
    return None


async def wait_joined(rt: Runtime, rid: str) -> None:
    """JOINING -> READY: the new worker's Node Ready within provision_timeout_s.

    The timeout counts from `WorkerAdded` in the log, so restarts do not extend it; time no
    daemon was acting (down, or waiting for the Lease) is not counted."""
    r = rt.replacement(rid)
    timeout = rt.spec.provision_timeout_s
    waited_before = rt.acting_since(rid, ev.WorkerAdded)
    started = rt.monotonic() - waited_before
    deadline = started + timeout
    while True:
        nodes: list[NodeInfo] | None
        try:
            nodes = await rt.ctx.cluster.list_nodes()
        except TemporaryError:
            nodes = None
        except PermanentError as exc:
            raise StepFailed(f"cannot list the Kubernetes nodes: {exc}") from None
        node = match_node(nodes, r.new_hostname, (r.new_ip,)) if nodes is not None else None
        if node is not None and node.ready:
            await rt.record(
                ev.NodeJoined(
                    plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, node_name=node.name
                )
            )
            return
        waited = rt.monotonic() - started
        if rt.monotonic() >= deadline:
            await rt.record(
                ev.NodeJoinTimedOut(
                    plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, waited_s=round(waited, 3)
                )
            )
            seen = f"its Node {node.name} is not Ready" if node else "no Node has registered"
            raise StepFailed(
                f"worker {r.new_worker} ({r.new_hostname or r.new_ip}) did not become a Ready "
                f"node within {timeout:g} s: {seen}"
            )
        await rt.sleep(min(rt.ctx.poll_interval_s, max(0.0, deadline - rt.monotonic())))


def _labels_for(rt: Runtime, rid: str, old: NodeInfo | None) -> dict[str, str]:
    r = rt.replacement(rid)
    labels: dict[str, str] = {}
    if old is not None:
        for key, value in old.labels.items():
            domain = key.partition("/")[0] + "/" if "/" in key else ""
            if any(domain.endswith(d) for d in _SYSTEM_LABEL_DOMAINS):
                continue
            if key in (VPSIE_NODE_LABEL, HOSTNAME_LABEL):
                continue
            labels[key] = value
        if DATACENTER_LABEL in old.labels:
            labels[DATACENTER_LABEL] = old.labels[DATACENTER_LABEL]
    labels[NODEGROUP_LABEL] = rt.spec.node_group
    labels[MANAGED_LABEL] = "true"
    if r.new_hostname:
        labels[VPSIE_NODE_LABEL] = r.new_hostname
    return labels


def _taints_for(old: NodeInfo | None) -> tuple[Taint, ...]:
    if old is None:
        return ()
    return tuple(
        t for t in old.taints if not any(t.key.startswith(p) for p in _SYSTEM_TAINT_PREFIXES)
    )


def _taint_text(t: Taint) -> str:
    return f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}"


async def _apply(rt: Runtime, node: str, labels: dict[str, str], taints: tuple[Taint, ...]) -> None:
    deadline = rt.monotonic() + rt.ctx.call_retry_s
    cluster = rt.ctx.cluster
    await rt.call(
        f"label node {node}",
        lambda: cluster.label_node(node, dict(labels)),
        deadline=deadline,
        interruptible=False,
    )
    for taint in taints:
        await rt.call(
            f"taint node {node} with {_taint_text(taint)}",
            functools.partial(cluster.set_taint, node, taint.key, taint.value, taint.effect),
            deadline=deadline,
            interruptible=False,
        )


async def prepare_node(rt: Runtime, rid: str) -> None:
    """Make the new node the old node's equal before it takes our pods: the group's labels,
    our size and VPSie group labels, the old node's own taints. Bracketed."""
    r = rt.replacement(rid)
    if r.prepared:
        return
    spec = rt.spec_of(rid)
    deadline = rt.monotonic() + rt.ctx.call_retry_s
    cluster = rt.ctx.cluster
    node = await rt.call(
        f"read node {r.new_node}", lambda: cluster.get_node(r.new_node), deadline=deadline
    )
    if node is None:
        raise StepFailed(f"the new node {r.new_node} disappeared after joining")
    if spec.adds_only:  # no old node: the plan's old nodes' shared labels and taints
        old = await model_node(rt, deadline)
    else:
        old = await rt.call(
            f"read node {spec.old_node}", lambda: cluster.get_node(spec.old_node),
            deadline=deadline,
        )
    labels = _labels_for(rt, rid, old)
    labels[SIZE_LABEL] = str(spec.new_size_id)
    if r.group_id is not None:
        labels[VPSIE_GROUP_LABEL] = str(r.group_id)
    taints = _taints_for(old)
    await rt.record(
        ev.NodePrepareRequested(
            plan_id=rt.plan_id,
            at=rt.at(),
            replacement_id=rid,
            node=r.new_node,
            labels=labels,
            taints=tuple(_taint_text(t) for t in taints),
        )
    )
    await _apply(rt, r.new_node, labels, taints)
    await rt.record(
        ev.NodePrepared(plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, node=r.new_node)
    )


def _stray_taint(pod: PodInfo, taints: tuple[Taint, ...]) -> Taint | None:
    """The first of the node's own scheduling taints `pod` does not tolerate, if any (a pod
    that landed before the taint did). DaemonSet, mirror and terminating pods are never
    strays; neither is a pod without a controller, which nothing would make again: such a pod
    is only logged."""
    if pod.is_daemonset or pod.is_mirror or pod.deleting:
        return None
    return next((t for t in taints if not tolerates(pod.tolerations, t)), None)


async def _evict_if_there(cluster: Cluster, namespace: str, name: str) -> None:
    with contextlib.suppress(NotFound):  # gone already: as good as evicted
        await cluster.evict(namespace, name)


async def evict_strays(rt: Runtime, rid: str) -> None:
    """The scheduler may place a pending pod on the new node between its join and its
    preparation: VPSie registers workers without taints, and the old node's taints arrive only
    with `NodePrepareRequested`. Each pod there that does not tolerate one of them is evicted,
    bracketed (`StrayPodEvictionRequested` ... `StrayPodSettled`), through the Eviction API so
    budgets hold; its controller makes it again where it belongs. A pod a budget keeps for
    `call_retry_s` stays, said in the log; the replacement goes on (the pod runs)."""
    r = rt.replacement(rid)
    deadline = rt.monotonic() + rt.ctx.call_retry_s
    cluster = rt.ctx.cluster
    node = await rt.call(
        f"read node {r.new_node}", lambda: cluster.get_node(r.new_node), deadline=deadline
    )
    if node is None:
        raise StepFailed(f"the new node {r.new_node} disappeared after joining")
    taints = tuple(
        t for t in _taints_for(node) if t.effect in ("NoSchedule", "NoExecute")
    )
    if not taints:
        return
    pods = await rt.call(
        f"list the pods of node {r.new_node}",
        lambda: cluster.list_pods(r.new_node),
        deadline=deadline,
    )
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        taint = _stray_taint(pod, taints)
        if taint is None:
            continue
        if not pod.owner_kind:
            log.warning(
                "plan %s: pod %s/%s landed on the new node %s before its taint %s and has no "
                "controller to make it again elsewhere: left where it runs",
                rt.plan_id, pod.namespace, pod.name, r.new_node, _taint_text(taint),
                extra={"plan_id": rt.plan_id},
            )
            continue
        base = {"plan_id": rt.plan_id, "replacement_id": rid, "node": r.new_node,
                "namespace": pod.namespace, "pod": pod.name}
        await rt.record(
            ev.StrayPodEvictionRequested(**base, at=rt.at(), taint=_taint_text(taint))
        )
        ns, name = pod.namespace, pod.name
        try:
            await rt.call(
                f"evict pod {ns}/{name} from the new node",
                functools.partial(_evict_if_there, cluster, ns, name),
                deadline=deadline, interruptible=False,
            )
        except StepFailed as exc:
            await rt.record(
                ev.StrayPodSettled(**base, at=rt.at(), evicted=False, reason=exc.reason)
            )
            log.warning(
                "plan %s: pod %s/%s stays on the new node %s without tolerating %s: %s",
                rt.plan_id, ns, name, r.new_node, _taint_text(taint), exc.reason,
                extra={"plan_id": rt.plan_id},
            )
            continue
        await rt.record(ev.StrayPodSettled(**base, at=rt.at(), evicted=True))


async def finish_prepare(rt: Runtime, rid: str, intent: ev.NodePrepareRequested) -> None:
    """After a restart: apply the intent's labels and taints again (idempotent), record it."""
    taints = tuple(_parse_taint(text) for text in intent.taints)
    await _apply(rt, intent.node, dict(intent.labels), taints)
    await rt.record(
        ev.NodePrepared(plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, node=intent.node)
    )


def _parse_taint(text: str) -> Taint:
    body, _, effect = text.rpartition(":")
    key, _, value = body.partition("=")
    return Taint(key=key, value=value, effect=effect)


async def provision(rt: Runtime, rid: str) -> None:
    """Drive a replacement to READY (its new node Ready and labelled)."""
    spec = rt.spec_of(rid)
    if spec.new_size_id is None:
        return
    deadline = rt.monotonic() + rt.spec.provision_timeout_s
    while True:
        r = rt.replacement(rid)
        match r.status:
            case _RS.PLANNED:
                rt.check()
                group_id = await ensure_group(rt, rid)
                await add_worker(rt, rid, group_id, deadline)
            case _RS.JOINING:
                await wait_joined(rt, rid)
            case _RS.READY:
                await prepare_node(rt, rid)
                await evict_strays(rt, rid)
                return
            case _RS.CREATING_GROUP | _RS.PROVISIONING:
                raise StepFailed(f"replacement {rid}: {r.status} with an unsettled intent")
            case _:
                return  # past provisioning
