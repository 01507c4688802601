"""Node repair in the running service: look at node health, repair what the provider lost.

Every `[repair] check_interval` (30 s by default, apart from the analysis interval: a lost
node should not wait five minutes to be noticed), the leader reads the Nodes and VPSie's
workers and groups (no pods; a full snapshot only before a repair), asks
`planner.health.assess` which nodes of each group show a signal and whether the blast-radius
limits allow repairing them, and then, per group:

- nodes with a signal: a `NodeUnhealthy` Event once per node and signal, the
  `unhealthy_nodes` gauge, a line in `status` (since when, the signal, what will happen when);
- blocked (too many unhealthy in the group or the cluster, Kubernetes unreadable): a
  `NodeRepairBlocked` Event and `repairs_blocked_total`, once per distinct block, nothing
  done;
- a due node that a rebalance in flight is replacing (its old node) or has added (its new
  node): that plan is cancelled and rolls back what it did (a lost new node fails its
  replacement; a lost old node is repaired once the rollback has finished, by the next
  round);
- due nodes no plan handles: one repair plan (`make_repair_plan`) recorded with its reasons,
  approved by "repair" and run like any plan; in dry-run, reported only.

A group with an unhealthy node or a repair in flight starts no new rebalancing plan
(decisions.py asks `blocks_rebalancing`). VPSie unreadable: no snapshot, nothing repaired.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.clock import rfc3339
from daemon.service.runners import Runners
from daemon.service.snapshot import SnapshotError, gather_snapshot
from daemon.service.state import ServiceContext, Tracked
from planner.health import (
    ClusterHealth,
    GroupHealth,
    Unhealthy,
    assess,
    make_repair_plan,
    outlook,
)
from statemachine import events as ev
from statemachine.machines import REPLACEMENT_TERMINAL, PlanStatus, ReplacementStatus
from statemachine.plan import Opportunity
from statemachine.world import ClusterSnapshot

log = logging.getLogger(__name__)

APPROVER = "repair"
# A repair that rolled back (its new worker never turned Ready, say) is tried again for that
# node only after this long, so a broken size or quota does not add and delete workers in a
# loop. A repair that failed (needs a person) is not tried again by this process.
RETRY_AFTER_S = 900.0


@dataclass(slots=True)
class RepairView:
    """What the last health round found (for status), and what was already reported."""

    checked_at: str = ""
    problem: str = ""  # why the last round could not look ("" when it could)
    health: ClusterHealth | None = None
    reported: set[tuple[str, str, str]] = field(default_factory=set)  # (group, node, signal)
    blocks: set[tuple[str, str]] = field(default_factory=set)  # (group, reason)
    cancelled: set[str] = field(default_factory=set)  # rebalance plans this cancelled
    held: dict[str, str] = field(default_factory=dict)  # node -> why it is not repaired again


def _handled(ctx: ServiceContext) -> dict[str, Tracked]:
    """Node -> the plan in flight that deals with it (as an old node or a node it added)."""
    found: dict[str, Tracked] = {}
    for tracked in ctx.plans.values():
        state = tracked.journal.state
        for spec in state.spec.replacements:
            r = state.replacements[spec.replacement_id]
            if r.status in REPLACEMENT_TERMINAL:
                continue
            if spec.old_node:  # an add-only replacement has none
                found.setdefault(spec.old_node, tracked)
            if r.new_node:
                found.setdefault(r.new_node, tracked)
            if r.new_hostname:
                found.setdefault(r.new_hostname.lower(), tracked)
    return found


def _expected(ctx: ServiceContext) -> frozenset[str]:
    """Nodes a rebalance (in flight or finished in this process) took down on purpose: its old
    nodes once their worker's delete was asked for, its own new nodes while it removes them."""
    found: set[str] = set()
    states = [t.journal.state for t in ctx.plans.values()] + list(ctx.finished.values())
    for state in states:
        if state.spec.opportunity is Opportunity.REPAIR:
            continue
        for spec in state.spec.replacements:
            r = state.replacements[spec.replacement_id]
            if r.old_deleted or r.status in (ReplacementStatus.TERMINATING,
                                             ReplacementStatus.TERMINATED):
                found.add(spec.old_node)
            if r.new_deleted or (r.status is ReplacementStatus.ROLLING_BACK and r.new_worker):
                found.update(n for n in (r.new_node, r.new_hostname.lower()) if n)
    return frozenset(found)


def _held(ctx: ServiceContext, now: float) -> dict[str, str]:
    """Nodes whose last repair by this process failed or rolled back too recently: why."""
    held: dict[str, str] = {}
    for state in ctx.finished.values():
        if state.spec.opportunity is not Opportunity.REPAIR:
            # A rebalance deleted this node's worker on purpose; a Node left behind (its delete
            # failed) is a leftover to delete, not a lost node to replace.
            for spec in state.spec.replacements:
                r = state.replacements[spec.replacement_id]
                if r.old_deleted and not r.old_node_deleted:
                    held[spec.old_node] = (
                        f"its worker was deleted by plan {state.plan_id}; the Node object is a "
                        "leftover the rebalancer deletes once it is NotReady, not a lost node"
                    )
            continue
        for spec in state.spec.replacements:
            r = state.replacements[spec.replacement_id]
            if r.status is ReplacementStatus.FAILED:
                held[spec.old_node] = (
                    f"its repair {state.plan_id} failed ({r.failure_reason}); a person must "
                    "look (restart the daemon to let it try again)"
                )
            elif r.status is ReplacementStatus.ROLLED_BACK and r.finished_at:
                again = _seconds(r.finished_at) + RETRY_AFTER_S
                if again > now:
                    held[spec.old_node] = (
                        f"its repair {state.plan_id} rolled back ({r.rollback_reason}); tried "
                        f"again at {rfc3339(again)}"
                    )
    return held


def _seconds(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def _block_code(text: str) -> str:
    if "Kubernetes API" in text:
        return "api-unreadable"
    if "cluster-wide" in text:
        return "cluster-limit"
    if "switched off" in text:
        return "disabled"
    return "group-limit"


class Repairs:
    """The health round; given the shared context and the runners that start a plan."""

    def __init__(self, ctx: ServiceContext, runners: Runners) -> None:
        self._ctx = ctx
        self._runners = runners
        self.view = RepairView()

    def blocks_rebalancing(self, group: str) -> str:
        """Why a new rebalancing plan must wait in `group` ("" when it need not)."""
        health = self.view.health
        found = health.group(group) if health is not None else None
        if found is not None and found.unhealthy:
            names = ", ".join(u.node for u in found.unhealthy)
            return f"{len(found.unhealthy)} unhealthy node(s) ({names}): repair comes first"
        return ""

    async def check(self) -> None:
        """One health round over every node group: a light read (Nodes, workers, groups);
        a full snapshot only when a repair is to be planned."""
        ctx = self._ctx
        cloud, cluster = ctx.ports()
        now = ctx.clock.now()
        async def read(*, nodes_only: bool) -> ClusterSnapshot:
            gathered = await gather_snapshot(
                cloud,
                cluster,
                cluster_identifier=ctx.config.cluster,
                now=now,
                datacenter=ctx.datacenter,
                logged_sizes=ctx.logged_sizes(),
                nodes_only=nodes_only,
            )
            return gathered.snapshot

        try:
            snapshot = await read(nodes_only=True)
            health = self._assess(snapshot, now)
            if any(g.to_repair and not g.dry_run for g in health.groups):
                snapshot = await read(nodes_only=False)
                health = self._assess(snapshot, now)
        except SnapshotError as exc:
            self.view.checked_at = rfc3339(now)
            self.view.problem = f"no repair: {exc}"
            self.view.health = None
            log.warning("node health: %s", self.view.problem)
            return
        self.view.problem = ""
        self.view.health = health
        self.view.checked_at = rfc3339(now)
        handled = _handled(ctx)
        for group in health.groups:
            await self._group(group, handled, snapshot)

    def _assess(self, snapshot: ClusterSnapshot, now: float) -> ClusterHealth:
        ctx = self._ctx
        self.view.held = _held(ctx, now)
        return assess(
            snapshot,
            ctx.config.node_groups,
            now=rfc3339(now),
            cluster_limit=ctx.config.repair_max_unhealthy,
            handled=frozenset(_handled(ctx)) | frozenset(self.view.held),
            expected=_expected(ctx),
        )

    async def _group(
        self, group: GroupHealth, handled: dict[str, Tracked], snapshot: ClusterSnapshot
    ) -> None:
        ctx = self._ctx
        ctx.metrics.set_unhealthy(group.group, len(group.unhealthy))
        reporter = ctx.reporter
        current = {(group.group, u.node, u.signal.value) for u in group.unhealthy}
        for u in group.unhealthy:
            if (group.group, u.node, u.signal.value) in self.view.reported:
                continue
            what = self.view.held.get(u.node) or outlook(u, group)
            log.warning(
                "node %s of group %s is unhealthy (%s: %s) since %s; %s",
                u.node, group.group, u.signal.value, u.detail, u.since, what,
                extra={"node_group": group.group},
            )
            if reporter is not None:
                reporter.node_unhealthy(u, what)
        # A node seen healthy again is forgotten: named again at once if it is lost later.
        self.view.reported = {k for k in self.view.reported if k[0] != group.group} | current
        if group.blocked and group.due:
            key = (group.group, group.blocked)
            if key not in self.view.blocks:
                self.view.blocks.add(key)
                ctx.metrics.repair_blocked(group.group, _block_code(group.blocked))
                log.warning("node group %s: repair blocked: %s", group.group, group.blocked,
                            extra={"node_group": group.group})
                if reporter is not None:
                    reporter.repair_blocked(group.group, group.blocked)
            return
        self.view.blocks = {b for b in self.view.blocks if b[0] != group.group}
        if group.dry_run:
            return
        quarantined = ctx.quarantines.blocks(group.group)
        if quarantined is not None and group.to_repair:
            key = (group.group, f"quarantined {quarantined.plan_id}")
            if key not in self.view.blocks:
                self.view.blocks.add(key)
                why = (f"plan {quarantined.plan_id} is quarantined ({quarantined.problem}); "
                       "no repair until a person clears it")
                ctx.metrics.repair_blocked(group.group, "quarantined")
                log.warning("node group %s: repair blocked: %s", group.group, why,
                            extra={"node_group": group.group})
                if ctx.reporter is not None:
                    ctx.reporter.repair_blocked(group.group, why)
            return
        for u in group.due:
            tracked = handled.get(u.node)
            if tracked is not None:
                await self._lost_under_plan(tracked, u)
        if not group.to_repair:
            return
        policy = ctx.policy(group.group)
        spec = make_repair_plan(snapshot, policy, group, now=ctx.now())
        if spec is None:
            return
        journal = await self._runners.journal(spec.plan_id)
        at = ctx.now()
        await journal.record(
            ev.PlanProposed(plan_id=spec.plan_id, at=at, plan=spec),
            ev.PlanApproved(
                plan_id=spec.plan_id, at=at, by=APPROVER,
                reason="; ".join(r.reason for r in spec.replacements),
            ),
        )
        tracked = Tracked(journal=journal)
        ctx.plans[spec.plan_id] = tracked
        log.warning(
            "node group %s: repairing %s (plan %s)", group.group,
            ", ".join(r.old_node for r in spec.replacements), spec.plan_id,
            extra={"node_group": group.group, "plan_id": spec.plan_id},
        )
        self._runners.start(tracked)
        ctx.group(group.group).last_decision = f"repair {spec.plan_id}: running"
        ctx.set_status()

    async def _lost_under_plan(self, tracked: Tracked, u: Unhealthy) -> None:
        """A rebalance in flight lost one of its nodes: roll it back (a repair in flight looks
        after its own nodes)."""
        state = tracked.journal.state
        if state.spec.opportunity is Opportunity.REPAIR or state.plan_id in self.view.cancelled:
            return
        if state.status not in (PlanStatus.EXECUTING, PlanStatus.PAUSED):
            return
        role = "old" if any(s.old_node == u.node for s in state.spec.replacements) else "new"
        reason = (
            f"its {role} node {u.node} is lost ({u.signal.value}: {u.detail}, since {u.since})"
            + ("; the node is repaired once this plan has rolled back" if role == "old" else "")
        )
        self.view.cancelled.add(state.plan_id)
        log.warning("plan %s: %s; rolling it back", state.plan_id, reason,
                    extra={"plan_id": state.plan_id})
        runner = self._runners.runner(tracked)
        await runner.cancel("rebalancer", reason)
        self._runners.start(tracked)

    def status(self) -> dict[str, Any]:
        """The `repair` part of `status`: unhealthy nodes and blocks, per group."""
        health = self.view.health
        groups: dict[str, Any] = {}
        if health is not None:
            for g in health.groups:
                groups[g.group] = {
                    "nodes": g.nodes,
                    "allowed_unhealthy": g.allowed,
                    "enabled": g.enabled,
                    "dry_run": g.dry_run,
                    "blocked": g.blocked,
                    "unhealthy": [
                        {
                            "node": u.node,
                            "signal": u.signal.value,
                            "detail": u.detail,
                            "since": u.since,
                            "due_at": u.due_at,
                            "due": u.due,
                            "outlook": self.view.held.get(u.node) or outlook(u, g),
                        }
                        for u in g.unhealthy
                    ],
                }
        return {
            "checked_at": self.view.checked_at,
            "problem": self.view.problem,
            "blocked": health.blocked if health is not None else "",
            "node_groups": groups,
        }
