"""The executor: drives one plan's replacements through their state machines to an end.

`PlanRunner(journal, ctx).run()` starts from whatever the log says. It first settles every
intent the log left open (`daemon.executor.reconcile`), re-runs the safety checks if work was in
flight (`ctx.recheck`), then executes forward or rolls back (`daemon.executor.rollback`) until
the plan is completed, rolled back or failed. It returns early, with everything recorded,
when the plan is paused, when a stop is requested (SIGTERM: the current step finishes first),
or when the lease is lost; calling `run()` again (in this process or the next) carries on.
When VPSie or Kubernetes does not answer while the intents left open are settled, `run()`
raises `WorldUnavailable` with nothing recorded: the plan is parked, not failed, and the
service runs it again later.

Every change goes through the journal: an intent is committed before each call to the world
and an outcome after it, so a crash at any instant leaves a log that `reconcile` can settle.

Strategies, as planned (`PlanSpec.strategy`, `batches`, `max_concurrent`):

- rolling: batch by batch, up to `max_concurrent` replacements at once, each add -> Ready ->
  cordon -> drain -> delete;
- an add-only replacement (the fleet grows: a node added, none removed; the planner puts them
  before every removal) is add -> Ready -> prepared -> done in every strategy: it has no old
  node to cordon, drain or delete (daemon/executor/adding.py);
- surge: every new node first; if any fails to become Ready, nothing is drained and the plan
  rolls back; then batch by batch cordon -> drain -> delete;
- blue-green: every new node, then every old node cordoned, `soak_s` of soak, drains, deletes;
  a failure before the deletes rolls everything back;
- a repair (opportunity `repair`): every lost node at once, each new worker -> lost worker
  gone -> cordon and out-of-service taint -> pods deleted -> Node deleted
  (daemon/executor/repair.py); no checks (the blast-radius limits were applied when it was
  made).

The safety checks run again before each batch that has not started, and when a run resumes
work in flight; a failed check rolls the plan back. Nothing here reads the real clock or
sleeps for real: only `ctx.clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal

from daemon.executor.adding import complete_add
from daemon.executor.drain import Drainer, cordon, skip_if_protected
from daemon.executor.execution import (
    PROCESS_CLAIMS,
    ExecutionContext,
    Interrupted,
    Runtime,
    Skipped,
    StepFailed,
    WorkerClaims,
    WorldUnavailable,
)
from daemon.executor.journal import PlanJournal
from daemon.executor.provisioning import provision
from daemon.executor.reconcile import reconcile_pending
from daemon.executor.removal import terminate
from daemon.executor.repair import repair
from daemon.executor.rollback import roll_back_plan, roll_back_replacement
from eventstore import ConcurrencyError
from statemachine import events as ev
from statemachine.fold import PlanState
from statemachine.machines import IllegalTransition, PlanStatus, ReplacementStatus
from statemachine.plan import Action, CheckResult, CheckStatus, Strategy

__all__ = [
    "PROCESS_CLAIMS",
    "ExecutionContext",
    "InvalidRequest",
    "PlanRunner",
    "WorkerClaims",
    "WorldUnavailable",
]

log = logging.getLogger(__name__)

MAX_CONFLICTS = 5  # stream changed under the runner this many times in one run: give up
# Who a pause for a closed maintenance window is recorded as; the service resumes the plans
# it paused when the next window opens (a person's pause waits for a person).
WINDOW_PAUSER = "maintenance-window"

_RS = ReplacementStatus
_PS = PlanStatus

log = logging.getLogger(__name__)

Work = Callable[[str], Awaitable[None]]


def _window_closed(check: CheckResult) -> bool:
    """The timing check failed: no maintenance window is open now."""
    return check.name == "timing"


def _vpsie_busy(check: CheckResult) -> bool:
    """The cluster-health check failed only because VPSie locked or is upgrading the cluster."""
    details = check.details or {}
    return check.name == "cluster_health" and bool(
        details.get("vpsie_cluster_locked") or details.get("vpsie_upgrade_version")
    )


class InvalidRequest(ValueError):
    """pause/resume/cancel asked of a plan in a state that does not allow it."""


class PlanRunner:
    """Runs one plan; one runner per plan at a time (the journal has one writer)."""

    def __init__(self, journal: PlanJournal, ctx: ExecutionContext) -> None:
        self._journal = journal
        self._ctx = ctx
        self._stop = False
        self._running = False
        self._abort = ""  # set when one replacement failed: the others stop at a safe point
        self._forward = Runtime(journal, ctx, self._forward_interrupt)
        self._backward = Runtime(journal, ctx, self._stop_interrupt)

    def __repr__(self) -> str:
        return f"PlanRunner({self._journal!r})"

    @property
    def state(self) -> PlanState:
        return self._journal.state

    def request_stop(self) -> None:
        """Finish the current step (its outcome recorded), then return from run()."""
        self._stop = True

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def _stop_interrupt(self) -> str | None:
        return "stop requested" if self._stop else None

    def _forward_interrupt(self) -> str | None:
        if self._stop:
            return "stop requested"
        status = self._journal.state.status
        if status is not _PS.EXECUTING:
            return f"plan is {status.value}"
        return self._abort or None

    def _at(self) -> str:
        return self._forward.at()

    # -- control ----------------------------------------------------------------------------

    async def pause(self, by: str, reason: str) -> None:
        state = self.state
        if state.status is not _PS.EXECUTING:
            raise InvalidRequest(f"plan {state.plan_id} is {state.status.value}, not executing")
        await self._journal.record(
            ev.PlanPaused(plan_id=state.plan_id, at=self._at(), by=by, reason=reason)
        )

    async def resume(self, by: str) -> None:
        state = self.state
        if state.status is not _PS.PAUSED:
            raise InvalidRequest(f"plan {state.plan_id} is {state.status.value}, not paused")
        await self._journal.record(ev.PlanResumed(plan_id=state.plan_id, at=self._at(), by=by))

    async def cancel(self, by: str, reason: str) -> None:
        """Before execution: PlanCancelled. During it: roll back what this plan did."""
        state = self.state
        why = f"cancelled by {by}" + (f": {reason}" if reason else "")
        match state.status:
            case _PS.PROPOSED | _PS.AWAITING_APPROVAL | _PS.APPROVED:
                await self._journal.record(
                    ev.PlanCancelled(plan_id=state.plan_id, at=self._at(), by=by, reason=reason)
                )
            case _PS.EXECUTING | _PS.PAUSED:
                await self._journal.record(
                    ev.PlanRollbackStarted(plan_id=state.plan_id, at=self._at(), reason=why)
                )
            case _PS.ROLLING_BACK:
                pass
            case _:
                raise InvalidRequest(f"plan {state.plan_id} is {state.status.value}")

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> PlanState:
        """Reconcile, then forward or roll back, to an end or to a stop; returns the state."""
        if self._running:
            raise InvalidRequest(f"plan {self._journal.plan_id} is already running")
        self._running = True
        self._ctx.claims.register(self._journal)
        try:
            conflicts = 0
            while True:
                try:
                    await self._run()
                    break
                except ConcurrencyError as exc:
                    # Someone else appended to this plan's stream: go on from what the log
                    # says now (a daemon that lost the lead is refused by the store instead).
                    conflicts += 1
                    if conflicts > MAX_CONFLICTS:
                        raise
                    log.warning(
                        "plan %s: its stream changed under this runner (%s); folding it again "
                        "and continuing from the log",
                        self._journal.plan_id,
                        exc,
                        extra={"plan_id": self._journal.plan_id},
                    )
                    await self._journal.reload()
        finally:
            self._ctx.claims.unregister(self._journal)
            self._running = False
        return self.state

    async def _run(self) -> None:
        journal = self._journal
        self._abort = ""
        if self.state.status is _PS.APPROVED and not self._stop:
            with contextlib.suppress(IllegalTransition):  # cancelled meanwhile
                await journal.record(
                    ev.PlanExecutionStarted(plan_id=journal.plan_id, at=self._at())
                )
        if self.state.status not in (_PS.EXECUTING, _PS.ROLLING_BACK):
            return
        try:
            await reconcile_pending(self._backward)
        except StepFailed as exc:
            if not exc.permanent:  # an outage: park, never fail with work left in the world
                raise WorldUnavailable(
                    f"could not settle what was in flight: {exc.reason}"
                ) from None
            await self._fail(f"could not settle what was in flight: {exc.reason}")
            return
        except Interrupted:
            return
        if self.state.status is _PS.EXECUTING:
            try:
                if self._in_flight() and not self._forward.repairing:
                    await self._checkpoint("resume")
                await self._execute()
            except Interrupted:
                pass
        if self._stop:
            return
        state = self.state
        if state.status is _PS.EXECUTING and all(  # rolled back alone: skipped
            r.status in (_RS.DONE, _RS.ROLLED_BACK) for r in state.replacements.values()
        ):
            saving = sum(
                (r.monthly_saving or Decimal(0) for r in state.replacements.values()),
                Decimal(0),
            )
            await journal.record(
                ev.PlanCompleted(
                    plan_id=journal.plan_id, at=self._at(), realised_monthly_saving=saving
                )
            )
        elif state.status is _PS.ROLLING_BACK:
            try:
                await roll_back_plan(self._backward, "")
            except Interrupted:
                return

    def _in_flight(self) -> bool:
        return any(
            r.status not in (_RS.PLANNED, _RS.DONE, _RS.ROLLED_BACK, _RS.FAILED)
            for r in self.state.replacements.values()
        )

    async def _fail(self, reason: str) -> None:
        state = self.state
        for rid, r in state.replacements.items():
            if r.status not in (_RS.PLANNED, _RS.DONE, _RS.ROLLED_BACK, _RS.FAILED):
                await self._journal.record(
                    ev.ReplacementFailed(
                        plan_id=state.plan_id, at=self._at(), replacement_id=rid, reason=reason
                    )
                )
        await self._journal.record(
            ev.PlanFailed(plan_id=state.plan_id, at=self._at(), reason=reason)
        )

    # -- safety checks ------------------------------------------------------------------------

    async def _checkpoint(self, step: str) -> None:
        """Re-run the safety checks; a failure starts the rollback (and unwinds)."""
        recheck = self._ctx.recheck
        if recheck is None:
            return
        rt = self._forward
        rt.check()
        deadline = rt.monotonic() + self._ctx.call_retry_s
        first, most = self._ctx.retry_backoff_s
        delay = first
        while True:
            try:
                checks = tuple(await recheck(self.state))
                break
            except Exception as exc:
                if rt.monotonic() >= deadline:
                    checks = (
                        CheckResult(
                            name="recheck",
                            status=CheckStatus.FAILED,
                            message=f"the safety checks could not run: {exc}",
                        ),
                    )
                    break
                await rt.sleep(min(delay, max(0.0, deadline - rt.monotonic())))
                delay = min(delay * 2, most)
        failed = [c for c in checks if c.status is CheckStatus.FAILED]
        if failed and all(_vpsie_busy(c) for c in failed):
            await self._wait_for_vpsie(step, failed)
            return
        if failed and all(_window_closed(c) for c in failed):
            await self._pause_for_window(step, checks, failed)
            raise Interrupted("outside the maintenance windows")
        reasons = tuple(f"{c.name}: {c.message}" for c in failed)
        await self._journal.record(
            ev.SafetyChecksRun(
                plan_id=self._journal.plan_id,
                at=self._at(),
                checks=checks,
                action=Action.REJECT if failed else Action.PROCEED,
                reasons=reasons,
                step=step,
            )
        )
        if failed:
            await self._start_rollback(f"safety checks failed before {step}: {'; '.join(reasons)}")
            raise Interrupted("safety checks failed")

    async def _record_postponed(
        self, step: str, checks: Sequence[CheckResult], failed: Sequence[CheckResult]
    ) -> None:
        """SafetyChecksRun with the action postpone, the failed checks as its reasons."""
        await self._journal.record(
            ev.SafetyChecksRun(
                plan_id=self._journal.plan_id,
                at=self._at(),
                checks=tuple(checks),
                action=Action.POSTPONE,
                reasons=tuple(f"{c.name}: {c.message}" for c in failed),
                step=step,
            )
        )

    async def _pause_for_window(
        self, step: str, checks: Sequence[CheckResult], failed: Sequence[CheckResult]
    ) -> None:
        """No maintenance window is open: pause, never roll back. Replacements past the point
        of no return (drained, their pods confirmed elsewhere) finish forward first: deleting
        an empty worker disrupts nothing. Everything else stays as recorded until the service
        resumes the plan when the next window opens (`WINDOW_PAUSER`)."""
        await self._record_postponed(step, checks, failed)
        forward = [
            rid
            for rid in self._open(list(self.state.replacements))
            if self._forward.forward_only(rid)
        ]
        if forward:
            log.info(
                "plan %s: outside the maintenance windows; %d replacement(s) past their drain "
                "finish first",
                self._journal.plan_id,
                len(forward),
                extra={"plan_id": self._journal.plan_id},
            )
            await self._together(forward, self._terminate, self.state.spec.max_concurrent)
        if self.state.status is _PS.EXECUTING:
            await self._journal.record(
                ev.PlanPaused(
                    plan_id=self._journal.plan_id,
                    at=self._at(),
                    by=WINDOW_PAUSER,
                    reason=f"before {step}: {failed[0].message}",
                )
            )

    async def _wait_for_vpsie(self, step: str, failed: Sequence[CheckResult]) -> None:
        """The VPSie cluster is locked or being upgraded: no time to replace nodes, and no
        reason to undo anything. Record the postponement once, then re-run the checks every
        poll until they pass (checkpoint again, recorded) or fail for another reason."""
        await self._record_postponed(step, failed, failed)
        recheck = self._ctx.recheck
        assert recheck is not None
        rt = self._forward
        while True:
            await rt.sleep(self._ctx.poll_interval_s)
            try:
                checks = tuple(await recheck(self.state))
            except Exception:  # the next poll tries again; _checkpoint handles a lasting failure
                continue
            still = [c for c in checks if c.status is CheckStatus.FAILED]
            if not still or not all(_vpsie_busy(c) for c in still):
                await self._checkpoint(step)
                return

    async def _start_rollback(self, reason: str) -> None:
        if self.state.status in (_PS.EXECUTING, _PS.PAUSED):
            await self._journal.record(
                ev.PlanRollbackStarted(plan_id=self._journal.plan_id, at=self._at(), reason=reason)
            )

    # -- strategies ---------------------------------------------------------------------------

    def _open(self, rids: Sequence[str]) -> list[str]:
        done = (_RS.DONE, _RS.ROLLED_BACK, _RS.FAILED)
        return [rid for rid in rids if self.state.replacements[rid].status not in done]

    def _untouched(self, rids: Sequence[str]) -> bool:
        return all(self.state.replacements[rid].status is _RS.PLANNED for rid in rids)

    async def _execute(self) -> None:
        spec = self.state.spec
        everything = [r.replacement_id for r in spec.replacements]
        if self._forward.repairing:
            # Repairs: every lost node at once (the blast-radius limits bounded how many when
            # the plan was made); no rebalancing checks, no maintenance windows, no screening.
            await self._together(self._open(everything), self._repair, len(everything))
            return
        match spec.strategy:
            case Strategy.ROLLING:
                for number, batch in enumerate(spec.batches, start=1):
                    todo = self._open(batch)
                    if not todo:
                        continue
                    if self._untouched(todo):
                        await self._checkpoint(f"batch {number}")
                        await self._screen(todo)
                    await self._together(self._open(todo), self._replace, spec.max_concurrent)
            case Strategy.SURGE:
                if self._untouched(everything):
                    await self._checkpoint("surge")
                    await self._screen(everything)
                await self._together(self._open(everything), self._provision, len(everything))
                for number, batch in enumerate(spec.batches, start=1):
                    todo = self._open(batch)
                    if not todo:
                        continue
                    if all(self.state.replacements[rid].status is _RS.READY for rid in todo):
                        await self._checkpoint(f"batch {number}")
                    await self._together(todo, self._retire, spec.max_concurrent)
            case Strategy.BLUE_GREEN:
                if self._untouched(everything):
                    await self._checkpoint("blue-green")
                    await self._screen(everything)
                todo = self._open(everything)
                await self._together(todo, self._provision, len(everything))
                await self._together(self._open(todo), self._cordon, len(everything))
                await self._soak(self._open(todo))
                left = [r for r in self._open(todo) if not self._adds_only(r)]
                if left and all(self.state.replacements[r].status is _RS.CORDONED for r in left):
                    # The drains are the disruption: they start inside a window, or wait.
                    await self._checkpoint("blue-green drains")
                await self._together(self._open(todo), self._drain, spec.max_concurrent)
                await self._together(self._open(todo), self._terminate, spec.max_concurrent)

    async def _soak(self, rids: Sequence[str]) -> None:
        """Blue-green: serve on the new nodes for soak_s after the last cordon, counted from
        the log (a restart does not start the soak over, nor skip it)."""
        states = [self.state.replacements[rid] for rid in rids if not self._adds_only(rid)]
        rids = [rid for rid in rids if not self._adds_only(rid)]
        soak = self.state.spec.soak_s
        if soak <= 0 or not states or any(r.status is not _RS.CORDONED for r in states):
            return
        left = soak - min(self._forward.since(rid, ev.NodeCordoned) for rid in rids)
        if left > 0:
            await self._forward.sleep(left)

    async def _together(self, rids: Sequence[str], work: Work, limit: int) -> None:
        """`work` on each replacement, at most `limit` at once. The first failure stops the
        others at their next safe point and starts the plan's rollback."""
        if not rids:
            return
        gate = asyncio.Semaphore(max(1, limit))
        failures: list[str] = []

        async def one(rid: str) -> None:
            async with gate:
                self._forward.check()
                try:
                    await work(rid)
                except Skipped as exc:
                    problem = await self._skip(rid, exc.reason)
                    if problem:
                        failures.append(problem)
                        self._abort = self._abort or f"replacement {rid} failed"
                except StepFailed as exc:
                    failures.append(exc.reason)
                    self._abort = self._abort or f"replacement {rid} failed"

        results = await asyncio.gather(*(one(rid) for rid in rids), return_exceptions=True)
        errors = [
            r for r in results if isinstance(r, BaseException) and not isinstance(r, Interrupted)
        ]
        if errors:
            raise errors[0]
        if failures:
            await self._start_rollback("; ".join(failures))
            raise Interrupted("rolling back")
        if any(isinstance(r, Interrupted) for r in results):
            raise Interrupted("interrupted")

    async def _skip(self, rid: str, reason: str) -> str | None:
        """Roll back one replacement whose node is protected now; the plan goes on."""
        log.info(
            "replacement %s skipped: %s", rid, reason, extra={"plan_id": self._journal.plan_id}
        )
        why = f"skipped: {reason}"
        if self.state.replacements[rid].status is _RS.PLANNED:  # nothing done yet to undo
            base = {"plan_id": self._journal.plan_id, "replacement_id": rid}
            await self._journal.record(
                ev.ReplacementRollbackStarted(**base, at=self._at(), reason=why),
                ev.ReplacementRolledBack(**base, at=self._at()),
            )
            return None
        return await roll_back_replacement(self._backward, rid, why)

    async def _screen(self, rids: Sequence[str]) -> None:
        """Before a batch starts: skip the replacements whose node is protected now."""
        for rid in rids:
            if self._forward.spec_of(rid).adds_only:
                continue  # no old node to protect
            if self.state.replacements[rid].status is _RS.PLANNED:
                try:
                    await skip_if_protected(self._forward, rid)
                except Skipped as exc:
                    problem = await self._skip(rid, exc.reason)
                    if problem:
                        await self._start_rollback(problem)
                        raise Interrupted("rolling back") from None

    async def _provision(self, rid: str) -> None:
        await provision(self._forward, rid)

    def _adds_only(self, rid: str) -> bool:
        return self._forward.spec_of(rid).adds_only

    async def _cordon(self, rid: str) -> None:
        if not self._adds_only(rid):
            await cordon(self._forward, rid)

    async def _drain(self, rid: str) -> None:
        if not self._adds_only(rid):
            await Drainer(self._forward, rid).run()

    async def _terminate(self, rid: str) -> None:
        if self._adds_only(rid):
            await complete_add(self._forward, rid)
        else:
            await terminate(self._forward, rid)

    async def _retire(self, rid: str) -> None:
        """Cordon, drain and delete the old node of a replacement whose new node is Ready."""
        await self._cordon(rid)
        await self._drain(rid)
        await self._terminate(rid)

    async def _repair(self, rid: str) -> None:
        await repair(self._forward, rid)

    async def _replace(self, rid: str) -> None:
        await self._provision(rid)
        await self._retire(rid)
