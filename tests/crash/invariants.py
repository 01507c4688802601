"""The invariants of ARCHITECTURE.md, checked after a rehearsal from three independent sources.

- the event log (read and folded here, and verified: hash chain);
- the world as seen from outside: the VPSie account and the Kubernetes API before and after,
  the `Sampler`'s observations during the run, and the `KubeProxy`'s record of evictions;
- what the daemon itself reported (the JSON report of its last `run --once`).

`check()` returns a `Verdict`: for each invariant, the list of violations (empty is good),
each a sentence naming the plan, node or worker concerned. bench/crash.py prints the counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventstore import EventStore
from statemachine import events as ev
from statemachine.fold import FoldState, apply
from statemachine.machines import PlanStatus, ReplacementStatus
from statemachine.plan import Opportunity
from statemachine.world import CORDONED_BY_ANNOTATION
from tests.crash.rehearsal import Picture, Rehearsal

INVARIANTS = (
    "1 terminal plans",
    "2 no orphan workers",
    "2b no Node object without a worker",
    "2c no lost node replaced twice",
    "3 nothing left cordoned",
    "4a evictions allowed by PDBs",
    "4b no drain before replacement Ready",
    "5 minNodes and minHealthyPercent",
    "6 savings equal the price difference",
    "7 log verifies and folds to the reported state",
)


@dataclass(slots=True)
class Verdict:
    violations: dict[str, list[str]] = field(default_factory=lambda: {i: [] for i in INVARIANTS})
    plans: dict[str, str] = field(default_factory=dict)  # plan id -> final status
    replaced: int = 0
    saving: Decimal = Decimal(0)
    events: int = 0

    def add(self, invariant: str, problem: str) -> None:
        self.violations[invariant].append(problem)

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def counts(self) -> dict[str, int]:
        return {name: len(found) for name, found in self.violations.items()}

    def explain(self) -> str:
        lines = [f"{name}: {p}" for name, found in self.violations.items() for p in found]
        return "\n".join(lines) or "all invariants hold"


@dataclass(frozen=True, slots=True)
class LogView:
    state: FoldState
    order: list[tuple[int, ev.Event]]  # (seq, event), in log order
    verified: bool
    problem: str


async def read_log(path: str | Path) -> LogView:
    store = await EventStore.open(path)
    try:
        report = await store.verify()
        state = FoldState(keep_finished=True)
        order: list[tuple[int, ev.Event]] = []
        async for recorded in store.read_all():
            apply(state, recorded)
            if ev.plan_id_of_stream(recorded.stream) is not None:
                order.append(
                    (recorded.seq, ev.decode(recorded.type, recorded.schema_version, recorded.data))
                )
    finally:
        await store.close()
    return LogView(state=state, order=order, verified=report.ok, problem=report.problem)


def _min_nodes(log: LogView) -> tuple[int, int]:
    specs = [p.spec for p in log.state.plans.values()]
    if not specs:
        return 0, 0
    return max(s.min_nodes for s in specs), max(s.min_healthy_percent for s in specs)


def _repair_pod_deletes(log: LogView) -> set[str]:
    """API paths of the pods repairs asked to delete after their node's worker was gone."""
    gone: set[tuple[str, str]] = set()
    paths: set[str] = set()
    for _, event in log.order:
        plan = log.state.plans.get(event.plan_id)
        if plan is None or plan.spec.opportunity is not Opportunity.REPAIR:
            continue
        if isinstance(event, ev.WorkerLossConfirmed | ev.WorkerDeleted):
            spec = plan.spec_of(event.replacement_id)
            if isinstance(event, ev.WorkerLossConfirmed) or (
                event.worker_identifier == spec.old_worker
            ):
                gone.add((event.plan_id, event.replacement_id))
        if isinstance(event, ev.PodDeleteRequested) and (
            (event.plan_id, event.replacement_id) in gone
        ):
            paths.add(f"/api/v1/namespaces/{event.namespace}/pods/{event.pod}")
    return paths


def check(
    reh: Rehearsal,
    log: LogView,
    after: Picture,
    *,
    report: dict[str, Any] | None,
    min_nodes: int | None = None,
    min_healthy_percent: int | None = None,
    foreign: Mapping[str, Decimal] | None = None,
) -> Verdict:
    """`foreign`: workers another actor added (the adversary's), with their monthly price: not
    ours to account for, except one a plan replaced (its removal is that plan's saving)."""
    foreign = foreign or {}
    v = Verdict(events=len(log.order))
    before = reh.before
    plans = log.state.plans
    v.plans = {pid: p.status.value for pid, p in plans.items()}

    # 1. every plan ends; a failure says why
    for pid, plan in plans.items():
        if not plan.terminal:
            v.add(INVARIANTS[0], f"plan {pid} ended the run {plan.status.value}")
        elif plan.status is PlanStatus.FAILED and not any(r[3] for r in plan.reasons):
            v.add(INVARIANTS[0], f"plan {pid} failed without a reason")

    # 2. no orphan: a worker a plan added is a Ready node or deleted; nothing unrecorded
    added: dict[str, str] = {}
    add_intents = 0
    for _, event in log.order:
        if isinstance(event, ev.WorkerAdded):
            added[event.worker_identifier] = event.plan_id
        if isinstance(event, ev.WorkerAddRequested):
            add_intents += 1
    for wid, worker in after.workers.items():
        if wid in before.workers or wid in foreign:
            continue
        if wid not in added:
            v.add(INVARIANTS[1], f"worker {worker.hostname} ({wid}) exists but no plan recorded it")
            continue
        node = after.nodes.get(worker.hostname)
        if node is None or not node.ready:
            v.add(
                INVARIANTS[1],
                f"worker {worker.hostname} added by {added[wid]} is not a Ready node",
            )
    created = {
        w
        for w in reh.sampler.workers_seen | set(after.workers)
        if w not in before.workers and w not in foreign
    }
    if len(created) > add_intents:
        v.add(
            INVARIANTS[1],
            f"{len(created)} workers were created for {add_intents} add intents",
        )

    # 2b. no Node object left behind: VPSie deletes none, so every deleted worker's Node is ours
    # to delete (hostnames compared lower-cased)
    hosts = {w.hostname.lower() for w in after.workers.values()}
    for name in sorted(after.nodes):
        if name.lower() not in hosts:
            v.add(INVARIANTS[2], f"node {name} has no VPSie worker")

    # 2c. a lost node gets one replacement worker, whatever the restarts
    by_node: dict[str, int] = {}
    for _, event in log.order:
        plan = plans.get(event.plan_id)
        if isinstance(event, ev.WorkerAdded) and plan is not None and (
            plan.spec.opportunity is Opportunity.REPAIR
        ):
            node = plan.spec_of(event.replacement_id).old_node
            by_node[node] = by_node.get(node, 0) + 1
    for node, count in sorted(by_node.items()):
        if count > 1:
            v.add(INVARIANTS[3], f"lost node {node} got {count} replacement workers")

    # 3. nothing left cordoned by the rebalancer
    for name, node in after.nodes.items():
        ours = node.annotations.get(CORDONED_BY_ANNOTATION)
        was = before.nodes.get(name)
        if node.unschedulable and (ours or was is None or not was.unschedulable):
            v.add(INVARIANTS[4], f"node {name} left cordoned (annotation {ours!r})")

    # 4a. every eviction the API accepted was allowed by its PDB; no pod deleted directly,
    # except by a repair, of a node whose worker its log had confirmed gone before
    for e in reh.proxy.witness.accepted_evictions():
        if not e.allowed:
            v.add(INVARIANTS[5], f"eviction of {e.namespace}/{e.pod} accepted but {e.why}")
    may_delete = _repair_pod_deletes(log)
    for path in reh.proxy.witness.pod_deletes:
        if path.split("?")[0] not in may_delete:
            v.add(INVARIANTS[5], f"a pod was deleted, not evicted: DELETE {path}")
    for lost in reh.sampler.lost_pods:
        pod = lost.split(" ", 1)[0]  # "namespace/name vanished with node ..."
        namespace, _, name = pod.partition("/")
        if f"/api/v1/namespaces/{namespace}/pods/{name}" not in may_delete:
            v.add(INVARIANTS[5], lost)

    # 4b. no replacement drained before its new node was Ready (from the log)
    joined: set[tuple[str, str]] = set()
    for seq, event in log.order:
        if isinstance(event, ev.NodeJoined):
            joined.add((event.plan_id, event.replacement_id))
        if isinstance(event, ev.DrainStarted | ev.PodEvictionRequested):
            plan = plans.get(event.plan_id)
            if plan is None:
                continue
            spec = next(
                r for r in plan.spec.replacements if r.replacement_id == event.replacement_id
            )
            if spec.new_size_id is not None and (event.plan_id, event.replacement_id) not in joined:
                v.add(
                    INVARIANTS[6],
                    f"{event.type_name()} for {spec.old_node} at seq {seq} before its "
                    "replacement node was Ready",
                )

    # 5. the group never dropped below minNodes / minHealthyPercent Ready
    floor, percent = _min_nodes(log)
    floor = min_nodes if min_nodes is not None else floor
    percent = min_healthy_percent if min_healthy_percent is not None else percent
    if reh.sampler.min_ready is not None and reh.sampler.min_ready < floor:
        v.add(
            INVARIANTS[7],
            f"only {reh.sampler.lowest_at} at one point; minNodes is {floor}",
        )
    if reh.sampler.min_ready_percent is not None and reh.sampler.min_ready_percent < percent:
        v.add(
            INVARIANTS[7],
            f"{reh.sampler.min_ready_percent:.0f}% Ready at one point; "
            f"minHealthyPercent is {percent}",
        )

    # 6. realised savings = price difference of what actually changed
    reported = Decimal(0)
    for pid, plan in plans.items():
        done = [r for r in plan.replacements.values() if r.status is ReplacementStatus.DONE]
        v.replaced += len(done)
        from_replacements = sum((r.monthly_saving or Decimal(0) for r in done), Decimal(0))
        reported += from_replacements
        if (
            plan.status is PlanStatus.COMPLETED
            and plan.realised_monthly_saving != from_replacements
        ):
            v.add(
                INVARIANTS[8],
                f"plan {pid} reports {plan.realised_monthly_saving}, its replacements "
                f"{from_replacements}",
            )
    theirs = sum((w.monthly for wid, w in after.workers.items() if wid in foreign), Decimal(0))
    replaced_theirs = sum(
        (
            foreign[r_spec.old_worker]
            for plan in plans.values()
            for r_spec in plan.spec.replacements
            if r_spec.old_worker in foreign
            and r_spec.old_worker not in after.workers
            and plan.replacements[r_spec.replacement_id].status is ReplacementStatus.DONE
        ),
        Decimal(0),
    )
    actual = before.monthly_cost() + replaced_theirs - (after.monthly_cost() - theirs)
    # A worker the provider took away before the first picture was never on our bill's
    # "before"; its repair still counts its old price against the new one.
    listed_before = {w.hostname.lower() for w in before.workers.values()}
    for _, event in log.order:
        if isinstance(event, ev.WorkerLossConfirmed) and event.plan_id in plans:
            spec = plans[event.plan_id].spec_of(event.replacement_id)
            done = plans[event.plan_id].replacements[event.replacement_id].status
            if done is ReplacementStatus.DONE and spec.old_node.lower() not in listed_before:
                actual += spec.old_monthly_price
    v.saving = actual
    if reported != actual:
        v.add(
            INVARIANTS[8],
            f"the log reports {reported}/month saved, the bill changed by {actual}",
        )

    # 7. the log verifies, and the daemon's own report equals the fold
    if not log.verified:
        v.add(INVARIANTS[9], f"verify: {log.problem}")
    if report is not None:
        for pid, seen in report.get("plans", {}).items():
            plan = plans.get(pid)
            if plan is None:
                v.add(INVARIANTS[9], f"the daemon reported plan {pid}, the log has none")
                continue
            folded = {rid: r.status.value for rid, r in plan.replacements.items()}
            saving = plan.realised_monthly_saving
            if (
                seen.get("state") != plan.status.value
                or seen.get("replacements") != folded
                or seen.get("realised_monthly_saving") != (None if saving is None else str(saving))
            ):
                v.add(
                    INVARIANTS[9],
                    f"plan {pid}: the daemon reported {seen}, the log folds to "
                    f"{plan.status.value} {folded} {saving}",
                )
    return v
