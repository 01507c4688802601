"""Cordon, drain and uncordon an old node, and wait for its pods to be served elsewhere.

Ownership of a cordon is decided by our mark: our cordon carries `CORDONED_BY_ANNOTATION` (the
plan id), written in the same patch as `spec.unschedulable` and conditioned on the
resourceVersion just read (compare-and-set), so the mark is on the node exactly when our
cordon is. A rollback or a reconcile uncordons exactly the nodes that carry this plan's mark,
with the same precondition, and never one that does not: a cordon whose answer was lost is
found by its mark; an operator's cordon made in between is never taken for ours.
`CordonRequested` records whether the node was already unschedulable (someone else's cordon).

Drain goes through the Eviction API only: a PodDisruptionBudget's refusal (HTTP 429) is
recorded as `EvictionBlocked` and retried with exponential backoff (`eviction_backoff_s`;
back to its first value after a round in which an eviction went through) until the plan's
`drain_timeout_s`, after which `DrainTimedOut` ends the step and the plan rolls back.
Pods are never deleted directly, never force-deleted. DaemonSet pods, mirror pods and pods
that have finished are left alone. Evictions of one replacement are one at a time:
each is an intent with an outcome.

After the node is empty, the drain waits until every controller that had pods to evict on it
has as many Running and Ready pods elsewhere as it had in the cluster before the drain, and
none Pending or not Ready (`ReschedulingConfirmed`); only then may the old worker be deleted.
Those counts (the baseline) are recorded in `DrainStarted`, so a restart, a pause or a new
leader confirms against the same numbers. Finished pods (Succeeded, Failed, evicted) count
neither way, and controllers that had no pod on the node are not looked at.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from adapters.errors import Conflict, EvictionBlocked, NotFound, PermanentError, TemporaryError
from daemon.executor.execution import Runtime, Skipped, StepFailed
from daemon.executor.provisioning import match_node
from planner.inventory import protection_of
from statemachine import events as ev
from statemachine.machines import ReplacementStatus
from statemachine.world import CORDONED_BY_ANNOTATION, NodeInfo, PodInfo

_RS = ReplacementStatus

Owner = tuple[str, str, str]  # namespace, kind, name


_FINISHED = ("Succeeded", "Failed")  # an evicted pod is Failed (reason Evicted)


def evictable(pod: PodInfo) -> bool:
    """Whether a drain evicts this pod (the same rules as `kubectl drain`)."""
    return not (pod.is_daemonset or pod.is_mirror or pod.phase in _FINISHED)


def _ref(pod: PodInfo) -> str:
    return f"{pod.namespace}/{pod.name}"


def _owner(pod: PodInfo) -> Owner | None:
    return (pod.namespace, pod.owner_kind, pod.owner_name) if pod.owner_kind else None


def ours(node: NodeInfo, plan_id: str) -> bool:
    """Whether the node is cordoned by this plan."""
    return node.unschedulable and node.annotations.get(CORDONED_BY_ANNOTATION) == plan_id


async def cordon(rt: Runtime, rid: str) -> None:
    """READY (or PLANNED for a removal) -> CORDONED."""
    spec = rt.spec_of(rid)
    name = spec.old_node
    while True:
        r = rt.replacement(rid)
        if r.status in (_RS.READY, _RS.PLANNED):
            if r.status is _RS.PLANNED and spec.new_size_id is not None:
                raise StepFailed(f"replacement {rid}: the new node is not ready; not cordoning")
            rt.check()
            deadline = rt.monotonic() + rt.ctx.call_retry_s
            node = await rt.call(
                f"read node {name}", lambda: rt.ctx.cluster.get_node(name), deadline=deadline
            )
            if node is None:
                raise StepFailed(f"the node to replace, {name}, is gone from Kubernetes")
            await skip_if_protected(rt, rid, node, deadline)
            prior = node.unschedulable and not ours(node, rt.plan_id)
            await rt.record(
                ev.CordonRequested(
                    plan_id=rt.plan_id,
                    at=rt.at(),
                    replacement_id=rid,
                    node=name,
                    prior_unschedulable=prior,
                )
            )
            if not prior:
                # A failure to read the node leaves the intent open (StepFailed): whether our
                # patch landed is then settled by `reconcile`, from our mark, before rollback.
                problem = await cordon_ours(rt, name, node, deadline)
                if problem is not None:
                    await rt.record(
                        ev.CordonFailed(
                            plan_id=rt.plan_id,
                            at=rt.at(),
                            replacement_id=rid,
                            node=name,
                            reason=problem,
                        )
                    )
                    raise StepFailed(problem)
            await rt.record(
                ev.NodeCordoned(plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, node=name)
            )
        elif r.status is _RS.CORDONING:
            raise StepFailed(f"replacement {rid}: cordoning with an unsettled intent")
        else:
            return


async def skip_if_protected(
    rt: Runtime, rid: str, node: NodeInfo | None = None, deadline: float | None = None
) -> None:
    """Skipped when the old node is protected now, by the planner's rules applied to a fresh
    read of the node, its pods and the budgets (someone else's cordon, protection annotations
    and labels, pods that must not or cannot be evicted, such as one two budgets select): what
    arrived after the plan was made counts."""
    name = rt.spec_of(rid).old_node
    if deadline is None:
        deadline = rt.monotonic() + rt.ctx.call_retry_s
    if node is None:
        node = await rt.call(
            f"read node {name}", lambda: rt.ctx.cluster.get_node(name), deadline=deadline
        )
        if node is None:
            return  # gone: the step that needs it says so
    pods = await _pods_on(rt, name, deadline)
    pdbs = await rt.call("list the PodDisruptionBudgets", rt.ctx.cluster.list_pdbs,
                         deadline=deadline)
    found = protection_of(
        node, pods, skip_local_storage=rt.ctx.skip_local_storage, own_mark=rt.plan_id, pdbs=pdbs
    )
    if found is not None:
        raise Skipped(f"node {name} is protected now ({found.reason}): {found.message}")


async def read_node(rt: Runtime, name: str, deadline: float) -> NodeInfo | None:
    return await rt.call(
        f"read node {name}",
        lambda: rt.ctx.cluster.get_node(name),
        deadline=deadline,
        interruptible=False,
    )


async def _backoff(rt: Runtime, what: str, exc: TemporaryError, delay: float, deadline: float
                   ) -> float:
    """Wait before the next try of a compare-and-set; StepFailed past the deadline."""
    left = deadline - rt.monotonic()
    if left <= 0:
        raise StepFailed(f"{what}: still failing: {exc}", permanent=False)
    await rt.ctx.clock.sleep(min(exc.retry_after or delay, left))
    return min(delay * 2, rt.ctx.retry_backoff_s[1])


async def cordon_ours(rt: Runtime, name: str, node: NodeInfo | None, deadline: float
                      ) -> str | None:
    """Cordon `node` with this plan's mark, compare-and-set on the resourceVersion read.

    None once the node carries our cordon; otherwise why it does not (someone else cordoned it,
    it is gone), with nothing of ours written. Every decision is made on a fresh read: a patch
    whose answer was lost shows as our mark on the next read, and one refused because the node
    changed (409) is decided again. StepFailed when the node cannot be read before `deadline`.
    """
    delay = rt.ctx.retry_backoff_s[0]
    while True:
        if node is None:
            return f"node {name} is gone from Kubernetes"
        if ours(node, rt.plan_id):
            return None
        if node.unschedulable:
            return (
                f"node {name} was cordoned by someone else while this plan cordoned it; "
                "leaving their cordon and the node alone"
            )
        try:
            await rt.ctx.cluster.set_cordon(
                name,
                True,
                annotations={CORDONED_BY_ANNOTATION: rt.plan_id},
                resource_version=node.resource_version,
            )
            return None
        except Conflict:
            pass  # the node changed since our read: read again, decide again
        except NotFound:
            return f"node {name} is gone from Kubernetes"
        except PermanentError as exc:
            raise StepFailed(f"cordon node {name}: {exc}") from None
        except TemporaryError as exc:  # it may have been applied: the next read tells
            delay = await _backoff(rt, f"cordon node {name}", exc, delay, deadline)
        node = await read_node(rt, name, deadline)


async def uncordon_ours(rt: Runtime, name: str, deadline: float) -> bool:
    """Take this plan's cordon and mark off `name`, only while the node carries our mark:
    compare-and-set on the resourceVersion read, read again after a conflict or an error
    (a lost answer shows as the mark gone). A node without our mark (never ours, or someone
    took it over) is left alone. Returns whether our mark was found."""
    delay = rt.ctx.retry_backoff_s[0]
    found = False
    while True:
        node = await read_node(rt, name, deadline)
        if node is None or node.annotations.get(CORDONED_BY_ANNOTATION) != rt.plan_id:
            return found
        found = True
        try:
            await rt.ctx.cluster.set_cordon(
                name,
                False,
                annotations={CORDONED_BY_ANNOTATION: None},
                resource_version=node.resource_version,
            )
            return True
        except Conflict:
            pass
        except NotFound:
            return True
        except PermanentError as exc:
            raise StepFailed(f"uncordon node {name}: {exc}") from None
        except TemporaryError as exc:
            delay = await _backoff(rt, f"uncordon node {name}", exc, delay, deadline)


async def uncordon(rt: Runtime, rid: str) -> None:
    """Undo this plan's cordon: only when the node carries our mark (whatever the log says
    about the cordon's answer, which may have been lost)."""
    spec = rt.spec_of(rid)
    name = spec.old_node
    deadline = rt.monotonic() + rt.ctx.rollback_timeout_s
    node = await read_node(rt, name, deadline)
    if node is None or node.annotations.get(CORDONED_BY_ANNOTATION) != rt.plan_id:
        return  # gone, never ours, or someone else owns its cordon now
    await rt.record(
        ev.UncordonRequested(plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, node=name)
    )
    await uncordon_ours(rt, name, deadline)
    await rt.record(
        ev.NodeUncordoned(plan_id=rt.plan_id, at=rt.at(), replacement_id=rid, node=name)
    )


async def _pods_on(rt: Runtime, node: str, deadline: float) -> list[PodInfo]:
    return await rt.call(
        f"list the pods of node {node}",
        lambda: rt.ctx.cluster.list_pods(node),
        deadline=deadline,
    )


async def node_of_new_worker(rt: Runtime, rid: str, deadline: float) -> NodeInfo | None:
    """By name once it joined; else by the worker's hostname or IP: a node that turned Ready
    only after its join timed out may already run pods."""
    r = rt.replacement(rid)
    if r.new_node:
        name = r.new_node
        return await rt.call(
            f"read node {name}", lambda: rt.ctx.cluster.get_node(name), deadline=deadline
        )
    if not (r.new_hostname or r.new_ip):
        return None
    nodes = await rt.call("list the nodes", rt.ctx.cluster.list_nodes, deadline=deadline)
    return match_node(nodes, r.new_hostname, (r.new_ip,))


async def vacate_new_node(rt: Runtime, rid: str) -> None:
    """Before a rollback deletes the node this replacement added: cordon it and evict its pods
    (PodDisruptionBudgets honoured, with backoff), so nothing vanishes without an eviction.

    Not bracketed by events (the catalogue has none for the new node); every effect here is
    idempotent and a restarted rollback simply does it again.
    """
    timeout = rt.spec.drain_timeout_s
    deadline = rt.monotonic() + timeout
    node = await node_of_new_worker(rt, rid, deadline)
    if node is None:
        return
    name = node.name
    if not node.unschedulable:
        await rt.call(
            f"cordon node {name}",
            lambda: rt.ctx.cluster.cordon(name, annotations={CORDONED_BY_ANNOTATION: rt.plan_id}),
            deadline=deadline,
        )
    low, high = rt.ctx.eviction_backoff_s
    backoff = low
    while True:
        pods = [p for p in await _pods_on(rt, name, deadline) if evictable(p)]
        if not pods:
            return
        blocked = []
        waiting = [p for p in pods if not p.deleting]
        for pod in waiting:
            try:
                await rt.ctx.cluster.evict(pod.namespace, pod.name)
            except NotFound:
                pass
            except TemporaryError:
                blocked.append(_ref(pod))
            except PermanentError as exc:
                raise StepFailed(f"cannot evict {_ref(pod)} from {name}: {exc}") from None
        if rt.monotonic() >= deadline:
            raise StepFailed(
                f"the pods on {name}, the node this plan added, could not be evicted within "
                f"{timeout:g} s ({', '.join(_ref(p) for p in pods)}); drain it by hand"
            )
        if blocked:
            if len(blocked) < len(waiting):
                backoff = low
            await rt.sleep(min(backoff, max(0.0, deadline - rt.monotonic())))
            backoff = min(backoff * 2, high)
        else:
            await rt.sleep(min(rt.ctx.poll_interval_s, max(0.0, deadline - rt.monotonic())))


class Drainer:
    """Drains one replacement's old node, then confirms its pods are served elsewhere against
    the baseline recorded in `DrainStarted` (the same numbers after any restart)."""

    def __init__(self, rt: Runtime, rid: str) -> None:
        self.rt = rt
        self.rid = rid
        self.node = rt.spec_of(rid).old_node

    async def run(self) -> None:
        """CORDONED -> DRAINED, with the evicted pods confirmed Ready elsewhere."""
        rt = self.rt
        while True:
            r = rt.replacement(self.rid)
            match r.status:
                case _RS.CORDONED:
                    rt.check()
                    await self._start()
                case _RS.DRAINING:
                    await self._evict_all()
                case _RS.DRAINED:
                    await self._confirm_rescheduled()
                    return
                case _:
                    return

    async def _start(self) -> None:
        rt = self.rt
        deadline = rt.monotonic() + rt.ctx.call_retry_s
        everything = await rt.call(
            "list the pods", lambda: rt.ctx.cluster.list_pods(), deadline=deadline
        )
        on_node = [p for p in everything if p.node_name == self.node and evictable(p)]
        owners = {o for p in on_node if (o := _owner(p)) is not None}
        ready = Counter(
            o
            for p in everything
            if (o := _owner(p)) in owners and p.phase == "Running" and p.ready
        )
        await rt.record(
            ev.DrainStarted(
                plan_id=rt.plan_id,
                at=rt.at(),
                replacement_id=self.rid,
                node=self.node,
                pods=tuple(sorted(_ref(p) for p in on_node)),
                baseline=tuple(
                    ev.OwnerReady(namespace=o[0], kind=o[1], name=o[2], ready=ready[o])
                    for o in sorted(owners)
                ),
            )
        )

    async def _evict_all(self) -> None:
        rt = self.rt
        timeout = rt.spec.drain_timeout_s
        deadline = rt.monotonic() + timeout - rt.acting_since(self.rid, ev.DrainStarted)
        low, high = rt.ctx.eviction_backoff_s
        backoff = low
        attempts: Counter[str] = Counter()
        while True:
            pods = [p for p in await _pods_on(rt, self.node, deadline) if evictable(p)]
            waiting = [p for p in pods if not p.deleting]
            if not pods:
                await rt.record(
                    ev.NodeDrained(
                        plan_id=rt.plan_id, at=rt.at(), replacement_id=self.rid, node=self.node
                    )
                )
                return
            blocked: list[str] = []
            for pod in waiting:
                rt.check()
                attempts[_ref(pod)] += 1
                if not await self._evict(pod, attempts[_ref(pod)]):
                    blocked.append(_ref(pod))
            if rt.monotonic() >= deadline:
                remaining = tuple(sorted(_ref(p) for p in pods))
                await rt.record(
                    ev.DrainTimedOut(
                        plan_id=rt.plan_id,
                        at=rt.at(),
                        replacement_id=self.rid,
                        node=self.node,
                        remaining=remaining,
                    )
                )
                why = (
                    f"evictions of {', '.join(blocked)} kept being refused (PodDisruptionBudget)"
                    if blocked
                    else f"{', '.join(remaining)} did not terminate"
                )
                raise StepFailed(f"drain of {self.node} timed out after {timeout:g} s: {why}")
            left = max(0.0, deadline - rt.monotonic())
            if blocked:
                if len(blocked) < len(waiting):
                    backoff = low  # an eviction went through: the budget is moving again
                await rt.sleep(min(backoff, left))
                backoff = min(backoff * 2, high)
            else:
                await rt.sleep(min(rt.ctx.poll_interval_s, left))

    async def _evict(self, pod: PodInfo, attempt: int) -> bool:
        """One bracketed eviction; False when it was refused (retry later)."""
        rt = self.rt
        base: dict[str, Any] = {"plan_id": rt.plan_id, "replacement_id": self.rid}
        await rt.record(
            ev.PodEvictionRequested(**base, at=rt.at(), namespace=pod.namespace, pod=pod.name)
        )
        try:
            await rt.ctx.cluster.evict(pod.namespace, pod.name)
        except NotFound:
            pass  # already gone: evicted as far as we are concerned
        except (TemporaryError, PermanentError) as exc:
            if isinstance(exc, EvictionBlocked):
                reason = exc.message
            elif isinstance(exc, TemporaryError):
                reason = f"temporary error: {exc}"
            else:
                reason = f"refused: {exc}"
            await rt.record(
                ev.EvictionBlocked(
                    **base,
                    at=rt.at(),
                    namespace=pod.namespace,
                    pod=pod.name,
                    attempt=attempt,
                    reason=reason,
                )
            )
            if isinstance(exc, PermanentError):
                raise StepFailed(f"cannot evict {_ref(pod)}: {exc}") from None
            return False
        await rt.record(ev.PodEvicted(**base, at=rt.at(), namespace=pod.namespace, pod=pod.name))
        return True

    async def _confirm_rescheduled(self) -> None:
        """Wait until the drained controllers' pods are Running and Ready elsewhere."""
        rt = self.rt
        r = rt.replacement(self.rid)
        timeout = rt.spec.drain_timeout_s
        deadline = rt.monotonic() + timeout - rt.acting_since(self.rid, ev.NodeDrained)
        namespaces = {ref.partition("/")[0] for ref in r.drain_pods}
        while True:
            everything = await rt.call(
                "list the pods", lambda: rt.ctx.cluster.list_pods(), deadline=deadline
            )
            short = self._short(everything, namespaces)
            if not short:
                await rt.record(
                    ev.ReschedulingConfirmed(
                        plan_id=rt.plan_id,
                        at=rt.at(),
                        replacement_id=self.rid,
                        pods=r.drain_pods,
                    )
                )
                return
            if rt.monotonic() >= deadline:
                raise StepFailed(
                    f"the pods drained from {self.node} are not Running and Ready elsewhere "
                    f"after {timeout:g} s: {'; '.join(short)}"
                )
            await rt.sleep(min(rt.ctx.poll_interval_s, max(0.0, deadline - rt.monotonic())))

    def _short(self, pods: list[PodInfo], namespaces: set[str]) -> list[str]:
        """What is still missing, as text (empty: everything is back). Finished pods are not
        counted either way; controllers that had no pod on the node are not looked at."""
        started = self.rt.journal.last(self.rid, ev.DrainStarted)
        baseline: dict[Owner, int]
        if started is not None and started.baseline is not None:
            baseline = {(o.namespace, o.kind, o.name): o.ready for o in started.baseline}
        else:  # a log from before the baseline was recorded: the drained namespaces, none short
            baseline = {
                o: 0 for p in pods if p.namespace in namespaces and (o := _owner(p)) is not None
            }
        live: dict[Owner, list[PodInfo]] = {o: [] for o in baseline}
        for p in pods:
            o = _owner(p)
            if o in live and not p.deleting and p.phase not in _FINISHED:
                live[o].append(p)
        problems = []
        for owner, want in sorted(baseline.items()):
            mine = live[owner]
            serving = [
                p for p in mine if p.node_name != self.node and p.phase == "Running" and p.ready
            ]
            waiting = [p for p in mine if p.phase == "Pending" or not p.ready]
            if len(serving) < want or waiting:
                problems.append(
                    f"{owner[1]} {owner[0]}/{owner[2]}: {len(serving)} ready of {want}, "
                    f"{len(waiting)} not ready"
                )
        return problems
