"""A simulated world over HTTP, the real adapters, an in-memory event log, and plan builders.

The simulator runs `SPEED` times faster than real time and the daemon side gets a
`ScaledClock` with the same factor, so the plan's timeouts (in simulated seconds) mean the
same to both sides while a test takes a fraction of a second.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.kubernetes import KubeClient
from adapters.vpsie import VpsieClient
from daemon.clock import ScaledClock, rfc3339
from daemon.executor.execution import ExecutionContext, WorkerClaims
from daemon.executor.journal import PlanJournal
from eventstore import EventStore
from simulator.scenario import parse_scenario
from simulator.serve import RunningSimulator, start_simulator
from statemachine import events as ev
from statemachine.fold import PlanState, fold
from statemachine.plan import Action, Opportunity, PlanSpec, ReplacementSpec, Strategy

SPEED = 1000.0
SMALL = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "small.yaml"
OLD_SIZE, NEW_SIZE = 202, 201
OLD_PRICE, NEW_PRICE = Decimal("48.00"), Decimal("24.00")


def small_text(*, min_available: int = 2) -> str:
    text = SMALL.read_text(encoding="utf-8")
    return text.replace("minAvailable: 2", f"minAvailable: {min_available}")


@dataclass
class Sample:
    """What a watcher saw while a plan ran."""

    min_ready_web: int = 1_000
    samples: int = 0
    seen: set[str] = field(default_factory=set)  # every pod name seen, any app


@dataclass
class World:
    sim: RunningSimulator
    cloud: VpsieClient
    cluster: KubeClient
    clock: ScaledClock
    store: EventStore
    claims: WorkerClaims = field(default_factory=WorkerClaims)
    initial: list[tuple[str, str]] = field(default_factory=list)

    @property
    def cluster_id(self) -> str:
        return self.sim.vpsie.cluster.identifier

    def context(self, **overrides: object) -> ExecutionContext:
        options: dict[str, object] = {
            "cloud": self.cloud,
            "cluster": self.cluster,
            "clock": self.clock,
            "poll_interval_s": 5.0,
            "eviction_backoff_s": (2.0, 10.0),
            "retry_backoff_s": (1.0, 5.0),
            "call_retry_s": 60.0,
            "worker_visible_s": 10.0,
            "rollback_timeout_s": 120.0,
            "claims": self.claims,
        }
        options.update(overrides)
        return ExecutionContext(**options)  # type: ignore[arg-type]

    def spec(
        self,
        plan_id: str,
        strategy: Strategy,
        *,
        count: int = 3,
        batches: tuple[tuple[int, ...], ...] | None = None,
        max_concurrent: int = 1,
        provision_timeout_s: float = 600.0,
        drain_timeout_s: float = 300.0,
        soak_s: float = 0.0,
        remove: tuple[int, ...] = (),
    ) -> PlanSpec:
        olds = self.initial[:count]
        replacements = tuple(
            ReplacementSpec(
                replacement_id=f"{plan_id}/{hostname}",
                batch=i,
                old_node=hostname,
                old_worker=identifier,
                old_size_id=OLD_SIZE,
                old_monthly_price=OLD_PRICE,
                new_size_id=None if i in remove else NEW_SIZE,
                new_size_name="" if i in remove else "k8s-2c-4g",
                new_monthly_price=Decimal(0) if i in remove else NEW_PRICE,
                reason="test",
            )
            for i, (identifier, hostname) in enumerate(olds)
        )
        ids = [r.replacement_id for r in replacements]
        grouping = batches or tuple((i,) for i in range(len(ids)))
        return PlanSpec(
            plan_id=plan_id,
            cluster=self.cluster_id,
            node_group="general",
            strategy=strategy,
            created_at=rfc3339(self.clock.now()),
            opportunity=Opportunity.DOWNSIZE,
            replacements=replacements,
            batches=tuple(tuple(ids[i] for i in batch) for batch in grouping),
            max_concurrent=max_concurrent,
            checks=(),
            recommended_action=Action.PROCEED,
            action_reasons=("test",),
            monthly_saving=sum((r.monthly_saving for r in replacements), Decimal(0)),
            provision_timeout_s=provision_timeout_s,
            drain_timeout_s=drain_timeout_s,
            soak_s=soak_s,
        )

    async def approved(self, spec: PlanSpec) -> PlanJournal:
        journal = await PlanJournal.load(self.store, spec.plan_id)
        at = rfc3339(self.clock.now())
        await journal.record(
            ev.PlanProposed(plan_id=spec.plan_id, at=at, plan=spec),
            ev.PlanApproved(plan_id=spec.plan_id, at=at, by="test"),
        )
        return journal

    async def started(self, spec: PlanSpec) -> PlanJournal:
        journal = await self.approved(spec)
        await journal.record(
            ev.PlanExecutionStarted(plan_id=spec.plan_id, at=rfc3339(self.clock.now()))
        )
        return journal

    async def folded(self, plan_id: str) -> PlanState:
        """The plan as a fresh fold of the whole log says it is."""
        plans = fold([e async for e in self.store.read_all()])
        return plans[plan_id]

    async def settled(self) -> None:
        """Wait (simulated time) until every web pod runs and the PDB reports."""
        for _ in range(200):
            pods = await self.cluster.list_pods()
            web = [p for p in pods if p.labels.get("app") == "web"]
            if web and all(p.phase == "Running" and p.ready for p in web):
                await self.clock.sleep(5)
                return
            await self.clock.sleep(5)
        raise AssertionError("the scenario's pods never became ready")

    def watch(self) -> tuple[Sample, Callable[[], asyncio.Task[None]]]:
        sample = Sample()

        async def loop() -> None:
            while True:
                pods = await self.cluster.list_pods()
                ready = sum(
                    1
                    for p in pods
                    if p.labels.get("app") == "web"
                    and p.phase == "Running"
                    and p.ready
                    and not p.deleting
                )
                sample.min_ready_web = min(sample.min_ready_web, ready)
                sample.seen.update(f"{p.namespace}/{p.name}" for p in pods)
                sample.samples += 1
                await asyncio.sleep(0.005)

        return sample, lambda: asyncio.create_task(loop())


async def open_world(tmp_path: Path, text: str | None = None) -> AsyncIterator[World]:
    scenario = parse_scenario(text or small_text(), source="small.yaml")
    async with start_simulator(scenario, speed=SPEED, state_dir=tmp_path / "sim", seed=3) as sim:
        clock = ScaledClock(SPEED)
        store = await EventStore.open(":memory:", clock=clock.now)
        try:
            async with (
                VpsieClient.from_file(
                    sim.vpsie_credentials_path,
                    clock=clock,
                    rng=random.Random(5),
                    rate_limit_per_min=None,
                ) as cloud,
                KubeClient.from_kubeconfig(str(sim.kubeconfig_path), now=clock.now) as cluster,
            ):
                world = World(
                    sim=sim,
                    cloud=cloud,
                    cluster=cluster,
                    clock=clock,
                    store=store,
                    initial=[(w.identifier, w.hostname) for w in sim.vpsie.workers],
                )
                await world.settled()
                yield world
        finally:
            await store.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in open_world(tmp_path):
        yield w


@pytest.fixture
async def govpsie_world(tmp_path: Path) -> AsyncIterator[World]:
    """The small world, its VPSie API answering node rows in govpsie's shape."""
    text = small_text().replace("spec:\n", "spec:\n  profile: govpsie\n", 1)
    async for w in open_world(tmp_path, text):
        yield w
