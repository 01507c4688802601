"""Analysis and decisions: what the service does on each node group's interval.

Per node group: take a snapshot, analyse, plan, append `PlanProposed` (with its checks and
reasons), and decide: `proceed` is approved (by "policy") and executed, or waits in
awaiting_approval for a person when `requireApproval` is set; `needs_review` waits for a person
too; `postpone` and `reject` are closed at once with `PlanRejected(by="planner")` and their
reasons. A decision identical to the previous round's (same action, reasons and replacements) is
not recorded again. A plan still proposed after a restart is not decided from its old
recommendation: it is cancelled ("superseded by a fresh analysis") and the group analysed again.

It is given the shared `ServiceContext` and the `Runners` that start an approved plan.
"""

from __future__ import annotations

import logging

from daemon.clock import rfc3339
from daemon.service.recovery import Recovered
from daemon.service.runners import Runners
from daemon.service.snapshot import SnapshotError, gather_snapshot
from daemon.service.state import ServiceContext, Tracked
from planner import NodeGroupPolicy, analyze, make_plan
from statemachine import events as ev
from statemachine.machines import PlanStatus
from statemachine.plan import Action

log = logging.getLogger(__name__)


class Decisions:
    """The analysis round and what a proposed (or recovered) plan becomes."""

    def __init__(self, ctx: ServiceContext, runners: Runners) -> None:
        self._ctx = ctx
        self._runners = runners

    def remember_groups(self, recovered: Recovered) -> None:
        for policy in self._ctx.config.node_groups:
            last = recovered.last_finished(policy.name)
            if last:
                self._ctx.last_finished[policy.name] = last

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
                    "plan %s is %s; it waits for a person",
                    state.plan_id,
                    state.status.value,
                    extra={"plan_id": state.plan_id},
                )
            case _:
                self._runners.start(tracked)

    async def analyse(self, policy: NodeGroupPolicy) -> None:
        """One analysis round for one node group; records the decision with its reasons."""
        cloud, cluster = self._ctx.ports()
        view = self._ctx.group(policy.name)
        busy = [
            t for t in self._ctx.plans.values() if t.journal.state.spec.node_group == policy.name
        ]
        if busy:
            state = busy[0].journal.state
            view.last_decision = f"plan {state.plan_id} is {state.status.value}"
            return
        now = self._ctx.clock.now()
        view.last_analysis_at = rfc3339(now)
        try:
            gathered = await gather_snapshot(
                cloud,
                cluster,
                cluster_identifier=self._ctx.config.cluster,
                now=now,
                datacenter=self._ctx.datacenter,
            )
        except SnapshotError as exc:
            view.last_decision = f"no analysis: {exc}"
            log.warning("node group %s: %s", policy.name, exc, extra={"node_group": policy.name})
            return
        for problem in gathered.problems:
            log.warning(
                "node group %s: %s", policy.name, problem, extra={"node_group": policy.name}
            )
        if self._ctx.reporter is not None and gathered.snapshot.node_groups:
            self._ctx.reporter.set_node_groups(gathered.snapshot.node_groups)
        analysis = analyze(
            gathered.snapshot,
            policy,
            now=rfc3339(now),
            last_plan_finished_at=self._ctx.last_finished.get(policy.name),
        )
        spec = make_plan(analysis, policy, now=rfc3339(now))
        reasons = "; ".join(analysis.action_reasons) or "no reason given"
        if spec is None:
            fingerprint: tuple[object, ...] = ("none", analysis.action_reasons)
            view.last_decision = f"nothing to do: {reasons}"
            if fingerprint != view.fingerprint:
                view.fingerprint = fingerprint
                log.info(
                    "node group %s: nothing to replace: %s",
                    policy.name,
                    reasons,
                    extra={"node_group": policy.name},
                )
                if self._ctx.reporter is not None:
                    self._ctx.reporter.note_idle(policy.name, reasons)
            return
        fingerprint = (
            spec.recommended_action,
            spec.action_reasons,
            tuple((r.old_node, r.new_size_id) for r in spec.replacements),
        )
        if spec.recommended_action is not Action.PROCEED and fingerprint == view.fingerprint:
            view.last_decision = f"{spec.recommended_action.value} (unchanged): {reasons}"
            return
        view.fingerprint = fingerprint
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
