"""What every step of the executor shares: the context, deadlines, retries and interruption.

A step (provision, cordon, drain, delete, roll back) runs against a `Runtime`: the plan's
journal, the injected ports and clock, and a question it asks at every safe point, "should I
stop here?" (a stop was requested, the plan was paused or cancelled, or another replacement of
the plan failed). The answer unwinds the step with `Interrupted`; the state stays as recorded
and a later `run()` continues from it. Nothing is ever interrupted between an intent and its
outcome: the calls inside a bracket run to an answer or to their deadline.

Whether this daemon may act at all is asked of `ExecutionContext.fence` (the service gives the
leadership check): it is awaited before every attempt of `Runtime.call` and every slice of
`Runtime.sleep`, interruptible or not, and what it raises (the daemon does not lead any more)
unwinds the step at once, without recording anything: another daemon owns the log now.

Temporary adapter errors are retried with exponential backoff (honouring `retry_after`)
until the step's deadline; permanent ones, and deadlines, end the step with `StepFailed`,
whose reason is written so that a person can act on it.

`WorkerClaims` is what makes "the new worker is the one not claimed by another replacement"
true across plans: every running plan's journal is registered in one process-wide registry,
and a replacement takes a worker as its own only under the registry's lock. Adds to one group
are made one at a time (intent, call, worker found), so in the live path the worker that
appears is always the one the current intent asked for; the difference rule is what settles
intents after a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from adapters.errors import NotFound, PermanentError, TemporaryError
from daemon.clock import rfc3339
from daemon.executor.journal import PlanJournal
from daemon.ports import Clock, Cloud, Cluster
from statemachine import events as ev
from statemachine.fold import PlanState, ReplacementState
from statemachine.machines import ReplacementStatus as _RS
from statemachine.plan import CheckResult, Opportunity, PlanSpec, ReplacementSpec

T = TypeVar("T")

Recheck = Callable[[PlanState], Awaitable[Sequence[CheckResult]]]


class StepFailed(Exception):
    """A step cannot complete; `reason` says what happened and what to look at."""

    def __init__(self, reason: str, *, permanent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class WorldUnavailable(Exception):
    """What was in flight could not be settled because VPSie or Kubernetes did not answer (an
    outage, not a refusal): the plan is parked as it is, nothing failed, and a later run
    settles it."""


class Skipped(Exception):
    """This replacement must not go on (its node is protected now); `reason` says why. It is
    rolled back on its own, the reason recorded, and the plan goes on with the others."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Interrupted(Exception):
    """Stop at this safe point: the state is recorded and a later run continues from it."""


class WorkerClaims:
    """The running plans of this process, and the VPSie workers their replacements added."""

    def __init__(self) -> None:
        self._journals: dict[str, PlanJournal] = {}
        self._counts: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._claim_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}

    def register(self, journal: PlanJournal) -> None:
        """Count this plan's workers as claimed until as many `unregister` calls. A runner
        registers itself while it runs; a service may also register every plan in flight
        (paused ones too)."""
        self._journals[journal.plan_id] = journal
        self._counts[journal.plan_id] = self._counts.get(journal.plan_id, 0) + 1

    def unregister(self, journal: PlanJournal) -> None:
        left = self._counts.get(journal.plan_id, 0) - 1
        if left > 0:
            self._counts[journal.plan_id] = left
            return
        self._counts.pop(journal.plan_id, None)
        self._journals.pop(journal.plan_id, None)

    def claimed(self, plan_id: str, replacement_id: str) -> set[str]:
        """Workers other replacements (of any registered plan) took as theirs."""
        found: set[str] = set()
        for journal in self._journals.values():
            if not journal.exists:
                continue
            for r in journal.state.replacements.values():
                if r.new_worker and (journal.plan_id, r.replacement_id) != (
                    plan_id,
                    replacement_id,
                ):
                    found.add(r.new_worker)
        return found

    def _bind(self) -> None:
        # Locks are made per event loop: tests (and restarts) run several loops in one process.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._claim_lock = asyncio.Lock()
            self._locks = {}

    def claim_lock(self) -> asyncio.Lock:
        """Held while choosing a new worker and recording it as claimed."""
        self._bind()
        return self._claim_lock

    def group_lock(self, size_id: int) -> asyncio.Lock:
        """Held while finding or creating the VPSie node group of one size."""
        self._bind()
        return self._locks.setdefault(f"size/{size_id}", asyncio.Lock())

    def add_lock(self, group_id: int) -> asyncio.Lock:
        """Held from an add's intent until its worker is found: one add in flight per group,
        so a worker that appears is the one the current intent asked for."""
        self._bind()
        return self._locks.setdefault(f"group/{group_id}", asyncio.Lock())


PROCESS_CLAIMS = WorkerClaims()


@dataclass(frozen=True, slots=True, kw_only=True)
class LeftoverNode:
    """A Node object of a worker a plan deleted, which the plan leaves behind."""

    plan_id: str
    replacement_id: str
    node: str
    uid: str
    worker: str  # the VPSie worker identifier the plan deleted
    reason: str
    at: str


@dataclass(frozen=True, kw_only=True)
class ExecutionContext:
    """The world a plan runs against, and how patiently. Durations are clock seconds."""

    cloud: Cloud
    cluster: Cluster
    clock: Clock
    poll_interval_s: float = 5.0
    eviction_backoff_s: tuple[float, float] = (5.0, 60.0)
    # Re-run the safety checks before each batch and before resuming after a crash.
    recheck: Recheck | None = None
    # Backoff between retries of temporary adapter errors (first, maximum).
    retry_backoff_s: tuple[float, float] = (1.0, 30.0)
    # How long one bracketed call (cordon, delete, uncordon) is retried at most.
    call_retry_s: float = 120.0
    # How long a worker VPSie accepted may take to appear in its list before the add is
    # taken as not made (also the wait before reconciling an add after a crash).
    worker_visible_s: float = 60.0
    # The most a rollback step is retried before the plan fails and needs a person.
    rollback_timeout_s: float = 600.0
    # The node group's rule for pods with local storage, as the planner applied it.
    skip_local_storage: bool = True
    claims: WorkerClaims = PROCESS_CLAIMS
    # Told of an add whose worker the listing did not show in time (the intent, the target's
    # (cpu, ram MB), why), before its outcome is recorded: the service keeps looking for it.
    on_unaccounted: (
        Callable[[ev.WorkerAddRequested, tuple[int, int], str], Awaitable[None]] | None
    ) = None
    # Told of a Node object of a worker this plan deleted that it leaves behind (still Ready
    # after `call_retry_s`, or its delete failed), before the outcome is recorded: the service
    # deletes it later, once the world agrees (daemon/service/leftovers.py).
    on_leftover: Callable[[LeftoverNode], Awaitable[None]] | None = None
    # Awaited before every call and every retry wait: raises when this daemon may not act
    # (it lost the lead); None when nothing else could lead (tests of the executor alone).
    fence: Callable[[], Awaitable[None]] | None = None


class Runtime:
    """One run of one plan: journal, ports, clock and the interruption check."""

    def __init__(
        self,
        journal: PlanJournal,
        ctx: ExecutionContext,
        interrupt: Callable[[], str | None],
    ) -> None:
        self.journal = journal
        self.ctx = ctx
        self._interrupt = interrupt

    @property
    def state(self) -> PlanState:
        return self.journal.state

    @property
    def spec(self) -> PlanSpec:
        return self.journal.state.spec

    @property
    def plan_id(self) -> str:
        return self.journal.plan_id

    def replacement(self, rid: str) -> ReplacementState:
        return self.journal.state.replacements[rid]

    def spec_of(self, rid: str) -> ReplacementSpec:
        return next(s for s in self.spec.replacements if s.replacement_id == rid)

    def at(self) -> str:
        return rfc3339(self.ctx.clock.now())

    def monotonic(self) -> float:
        return self.ctx.clock.monotonic()

    def since(self, rid: str, event_type: type[ev.Event]) -> float:
        """Clock seconds since `event_type` was last recorded for `rid` (0 if never): the
        part of a timeout already used before a restart."""
        at = self.journal.last_at(rid, event_type)
        if at is None:
            return 0.0
        try:
            return max(0.0, self.ctx.clock.now() - datetime.fromisoformat(at).timestamp())
        except ValueError:
            return 0.0

    def acting_since(self, rid: str, event_type: type[ev.Event]) -> float:
        """The part of a step's timeout already used: seconds a daemon was acting on `rid`
        since `event_type`, downtime left out (`PlanJournal.acting_s`)."""
        return self.journal.acting_s(rid, event_type, self.ctx.clock.now())

    @property
    def repairing(self) -> bool:
        """Whether this plan is a repair (planner/health.py; the repair machine)."""
        return self.spec.opportunity is Opportunity.REPAIR

    def forward_only(self, rid: str) -> bool:
        """Past the point of no return: the old worker is being deleted, or the old node is
        drained and its pods were confirmed running elsewhere. Rolling back from here would
        disrupt those pods a second time; the only way out is forward (delete the old worker,
        retry, or leave it to a person)."""
        status = self.replacement(rid).status
        if status in (_RS.TERMINATING, _RS.TERMINATED, _RS.DONE):
            return True
        if self.repairing:  # a repair: once the lost worker's delete was asked for
            return status in (_RS.CORDONING, _RS.CORDONED, _RS.DRAINING, _RS.DRAINED)
        return (
            status is _RS.DRAINED
            and self.journal.last_at(rid, ev.ReschedulingConfirmed) is not None
        )

    def check(self) -> None:
        reason = self._interrupt()
        if reason:
            raise Interrupted(reason)

    async def fence(self) -> None:
        """Raise (whatever the context's fence raises) when this daemon may not act now."""
        if self.ctx.fence is not None:
            await self.ctx.fence()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the injected clock, in slices of at most `poll_interval_s`, stopping at the
        next slice if asked to (a pause during a long soak takes effect within a poll)."""
        self.check()
        end = self.monotonic() + max(0.0, seconds)
        while (left := end - self.monotonic()) > 0:
            await self.ctx.clock.sleep(min(left, max(self.ctx.poll_interval_s, 0.001)))
            await self.fence()
            self.check()

    async def record(self, *events: ev.Event) -> None:
        await self.journal.record(*events)

    async def call(
        self,
        what: str,
        fn: Callable[[], Awaitable[T]],
        *,
        deadline: float,
        interruptible: bool = True,
    ) -> T:
        """`fn()`, retrying temporary errors until `deadline` (monotonic clock seconds).

        StepFailed on a permanent error (NotFound included: callers that accept it catch it
        themselves by passing a function that does) or when the deadline passes.
        """
        first, most = self.ctx.retry_backoff_s
        delay = first
        attempts = 0
        while True:
            attempts += 1
            await self.fence()
            try:
                return await fn()
            except NotFound as exc:
                raise StepFailed(f"{what}: {exc}") from None
            except PermanentError as exc:
                raise StepFailed(f"{what}: {exc}") from None
            except TemporaryError as exc:
                left = deadline - self.monotonic()
                if left <= 0:
                    raise StepFailed(
                        f"{what}: still failing after {attempts} attempts: {exc}",
                        permanent=False,
                    ) from None
                wait = min(exc.retry_after if exc.retry_after else delay, left)
                if interruptible:
                    await self.sleep(wait)
                else:
                    await self.ctx.clock.sleep(wait)
                delay = min(delay * 2, most)
