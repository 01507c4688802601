"""Analysis and decisions: what the service does on each node group's interval.

Per node group: take a snapshot, analyse, plan, append `PlanProposed` (with its checks and
reasons), and decide: `proceed` is approved (by "policy") and executed, or waits in
awaiting_approval for a person when `requireApproval` is set; `needs_review` waits for a person
too; `postpone` and `reject` are closed at once with `PlanRejected(by="planner")` and their
reasons. A decision identical to the previous round's (same action, reasons and replacements) is
not recorded again, across restarts too: on taking the lead the service reads the decision of
each group's last finished plan back from the log (`remember_decisions`); a plan still
proposed after a restart is not decided from its old recommendation: it is cancelled
("superseded by a fresh analysis") and the group analysed again.

It is given the shared `ServiceContext` and the `Runners` that start an approved plan.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from daemon.clock import rfc3339
from daemon.executor.journal import PlanJournal
from daemon.service.accounting import account
from daemon.service.recovery import Quarantines, Recovered
from daemon.service.runners import Runners
from daemon.service.snapshot import SnapshotError, gather_snapshot
from daemon.service.state import ServiceContext, Tracked
from daemon.service.waiting import analysis_waiting, paused_for_window, world_waiting
from planner import NodeGroupPolicy, analyze, make_plan
from statemachine import events as ev
from statemachine.machines import PlanStatus
from statemachine.plan import Action, PlanSpec
from statemachine.world import ClusterSnapshot

log = logging.getLogger(__name__)


class Decisions:
    """The analysis round and what a proposed (or recovered) plan becomes."""

    def __init__(
        self,
        ctx: ServiceContext,
        runners: Runners,
        *,
        rebalancing_blocked: Callable[[str], str] | None = None,
    ) -> None:
        self._ctx = ctx
        self._runners = runners
        # Why node repair holds new plans back in a group ("" when it does not): repairs.py.
        self._rebalancing_blocked = rebalancing_blocked

    def remember_groups(self, recovered: Recovered) -> None:
        self._ctx.recovered_sizes = dict(recovered.state.workers)
        for policy in self._ctx.config.node_groups:
            last = recovered.last_finished(policy.name)
            if last:
                self._ctx.last_finished[policy.name] = last

    def _account(self, snapshot: ClusterSnapshot) -> None:
        """Report, once per finding, where the listing, the Nodes and our log disagree."""
        ctx = self._ctx
        found = account(snapshot)
        lines = found.lines()
        for line in lines:
            if line not in ctx.world_notes:
                log.warning("%s", line)
        if ctx.reporter is not None:
            for name in found.nodes_without_worker:
                if name not in ctx.reported_orphans:
                    ctx.reporter.node_without_worker(name)
        ctx.reported_orphans = set(found.nodes_without_worker)
        ctx.world_notes = lines

    async def remember_decisions(self, recovered: Recovered) -> None:
        """Each group's last decision, from its last finished plan in the log, unless this
        process has seen a newer one: a restarted daemon does not record the same proposal
        again."""
        for policy in self._ctx.config.node_groups:
            view = self._ctx.group(policy.name)
            summary = recovered.groups.get(policy.name)
            if view.fingerprint or summary is None or not summary.last_plan_id:
                continue
            journal = await PlanJournal.load(self._ctx.event_store(), summary.last_plan_id)
            if journal.exists:
                view.fingerprint = fingerprint(journal.state.spec)

    async def pick_up(self, tracked: Tracked) -> None:
        """Pick a recovered plan up where the log left it."""
        state = tracked.journal.state
        match state.status:
            case PlanStatus.PROPOSED:
                # Its recommendation is from an analysis made before the restart (maybe long
                # before): the world is analysed again instead of acting on it.
                await tracked.journal.record(
                    ev.PlanCancelled(
                        plan_id=state.plan_id,
                        at=self._ctx.now(),
                        by="rebalancer",
                        reason="proposed before a restart; superseded by a fresh analysis",
                    )
                )
                log.info(
                    "plan %s was proposed before the restart; the node group is analysed again",
                    state.plan_id,
                    extra={"plan_id": state.plan_id},
                )
                self._ctx.retire(tracked.journal.state)
                self._ctx.set_status()
            case PlanStatus.AWAITING_APPROVAL | PlanStatus.PAUSED:
                log.info(
                    "plan %s is %s; it waits for %s",
                    state.plan_id,
                    state.status.value,
                    "the next maintenance window" if paused_for_window(state) else "a person",
                    extra={"plan_id": state.plan_id},
                )
            case _:
                self._runners.start(tracked)

    async def analyse(self, policy: NodeGroupPolicy) -> None:
        """One analysis round for one node group; records the decision with its reasons."""
        cloud, cluster = self._ctx.ports()
        view = self._ctx.group(policy.name)
        self._ctx.quarantines = await Quarantines.read(self._ctx.event_store())
        blocked = self._ctx.quarantines.blocks(policy.name)
        if blocked is not None:
            view.last_decision = (
                f"no new plan: plan {blocked.plan_id} is quarantined ({blocked.problem}); "
                f"look at it, then run: vpsie-rebalancer clear-quarantine {blocked.plan_id}"
            )
            if view.fingerprint != ("quarantined", blocked.plan_id):
                view.fingerprint = ("quarantined", blocked.plan_id)
                log.warning(
                    "node group %s: %s",
                    policy.name,
                    view.last_decision,
                    extra={"node_group": policy.name},
                )
            return
        busy = [
            t for t in self._ctx.plans.values() if t.journal.state.spec.node_group == policy.name
        ]
        if busy:
            state = busy[0].journal.state
            view.last_decision = f"plan {state.plan_id} is {state.status.value}"
            return
        held = self._rebalancing_blocked(policy.name) if self._rebalancing_blocked else ""
        if held:
            view.last_decision = f"no new plan: {held}"
            return
        now = self._ctx.clock.now()
        view.last_analysis_at = rfc3339(now)
        next_analysis_at = rfc3339(now + self._ctx.config.analysis_interval_s)
        try:
            gathered = await gather_snapshot(
                cloud,
                cluster,
                cluster_identifier=self._ctx.config.cluster,
                now=now,
                datacenter=self._ctx.datacenter,
                logged_sizes=self._ctx.logged_sizes(),
            )
        except SnapshotError as exc:
            view.last_decision = f"no analysis: {exc}"
            view.waiting = world_waiting(str(exc), next_analysis_at)
            log.warning("node group %s: %s", policy.name, exc, extra={"node_group": policy.name})
            return
        for problem in gathered.problems:
            log.warning(
                "node group %s: %s", policy.name, problem, extra={"node_group": policy.name}
            )
        if self._ctx.reporter is not None and gathered.snapshot.node_groups:
            self._ctx.reporter.set_node_groups(gathered.snapshot.node_groups)
        self._account(gathered.snapshot)
        # The planner is pure and may take a second or more on a large group (the fleet
        # program): in a worker thread, so that the event loop keeps renewing the Lease and
        # answering the control API meanwhile.
        analysis = await asyncio.to_thread(
            analyze,
            gathered.snapshot,
            policy,
            now=rfc3339(now),
            last_plan_finished_at=self._ctx.last_finished.get(policy.name),
        )
        self._ctx.metrics.analysed(
            policy.name, now, Counter(x.reason for x in analysis.exclusions)
        )
        if self._ctx.reporter is not None:
            self._ctx.reporter.note_left_out(
                policy.name, analysis.exclusions, self._ctx.clock.monotonic()
            )
        spec = await asyncio.to_thread(make_plan, analysis, policy, now=rfc3339(now))
        reasons = "; ".join(analysis.action_reasons) or "no reason given"
        closed_at_once = spec is None or spec.recommended_action in (Action.POSTPONE, Action.REJECT)
        view.waiting = analysis_waiting(
            analysis.checks, reasons if closed_at_once else None, next_analysis_at
        )
        if spec is None:
            nothing: tuple[object, ...] = ("none", analysis.action_reasons)
            view.last_decision = f"nothing to do: {reasons}"
            if nothing != view.fingerprint:
                view.fingerprint = nothing
                log.info(
                    "node group %s: nothing to replace: %s",
                    policy.name,
                    reasons,
                    extra={"node_group": policy.name},
                )
                if self._ctx.reporter is not None:
                    self._ctx.reporter.note_idle(policy.name, reasons)
            return
        decided = fingerprint(spec)
        if spec.recommended_action is not Action.PROCEED and decided == view.fingerprint:
            view.last_decision = f"{spec.recommended_action.value} (unchanged): {reasons}"
            return
        view.fingerprint = decided
        journal = await self._runners.journal(spec.plan_id)
        await journal.record(ev.PlanProposed(plan_id=spec.plan_id, at=self._ctx.now(), plan=spec))
        tracked = Tracked(journal=journal)
        self._ctx.plans[spec.plan_id] = tracked
        await self._decide(tracked)
        view.last_decision = f"plan {spec.plan_id}: {tracked.journal.state.status.value}"

    async def _decide(self, tracked: Tracked) -> None:
        """What a proposed plan becomes: approved and run, waiting for a person, or closed."""
        state = tracked.journal.state
        spec = state.spec
        reasons = "; ".join(spec.action_reasons) or "no reason given"
        at = self._ctx.now()
        action = spec.recommended_action
        if action is Action.PROCEED and spec.require_approval:
            await tracked.journal.record(
                ev.PlanApprovalRequested(
                    plan_id=spec.plan_id,
                    at=at,
                    reason="requireApproval is set: approve or reject it",
                )
            )
        elif action is Action.PROCEED:
            await tracked.journal.record(ev.PlanApproved(plan_id=spec.plan_id, at=at, by="policy"))
            self._runners.start(tracked)
        elif action is Action.NEEDS_REVIEW:
            await tracked.journal.record(
                ev.PlanApprovalRequested(
                    plan_id=spec.plan_id, at=at, reason=f"needs review: {reasons}"
                )
            )
        else:
            await tracked.journal.record(
                ev.PlanRejected(
                    plan_id=spec.plan_id, at=at, by="planner", reason=f"{action.value}: {reasons}"
                )
            )
            self._ctx.retire(tracked.journal.state)
        self._ctx.set_status()


def fingerprint(spec: PlanSpec) -> tuple[object, ...]:
    """What makes two decisions the same: action, reasons, and which node becomes what."""
    return (
        spec.recommended_action,
        spec.action_reasons,
        tuple((r.old_node, r.new_size_id) for r in spec.replacements),
    )
