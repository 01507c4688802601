"""Random interleavings of concurrent appends keep seq gap-free and stream versions consistent.

Appends started together are queued in order, so a simple in-order model predicts exactly
which succeed and which are stale, whatever group commit does with them.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import ConcurrencyError, EventStore
from tests.eventstore.builders import StepClock, ev
from tests.pgserver import drop_schema, fresh_schema

# (stream index, number of events, offset of expected_version from the true version)
Append = tuple[int, int, int]

appends = st.tuples(st.integers(0, 3), st.integers(1, 3), st.sampled_from([0, 0, 0, -1, 1]))
rounds = st.lists(st.lists(appends, min_size=1, max_size=12), min_size=1, max_size=6)


async def run(path: str, plan: list[list[Append]]) -> None:
    model: dict[str, list[str]] = {}
    async with await EventStore.open(path, clock=StepClock()) as store:
        for r, round_ in enumerate(plan):
            started = {f"s{i}": len(model.get(f"s{i}", [])) for i in range(4)}
            calls = []
            for a, (i, n, offset) in enumerate(round_):
                stream = f"s{i}"
                types = [f"R{r}A{a}E{k}" for k in range(n)]
                expected = max(0, started[stream] + offset)
                calls.append((stream, expected, types))
            results = await asyncio.gather(
                *(store.append(s, x, [ev(t) for t in ts]) for s, x, ts in calls),
                return_exceptions=True,
            )
            for (stream, expected, types), result in zip(calls, results, strict=True):
                current = model.setdefault(stream, [])
                if expected == len(current):
                    current.extend(types)
                    assert result == len(current)
                else:
                    assert isinstance(result, ConcurrencyError), result
                    assert (result.expected, result.actual) == (expected, len(current))
        everything = [e async for e in store.read_all(batch=7)]
        assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
        assert await store.head() == len(everything)
        for stream, types in model.items():
            events = await store.read_stream(stream)
            assert [e.type for e in events] == types
            assert [e.version for e in events] == list(range(1, len(types) + 1))
        assert await store.streams() == sorted((s, len(t)) for s, t in model.items() if t)
        report = await store.verify()
        assert report.ok and report.checked == len(everything), report.problem


async def run_in_fresh_schema(server: str, plan: list[list[Append]]) -> None:
    dsn = await fresh_schema(server)
    try:
        await run(dsn, plan)
    finally:
        await drop_schema(server, dsn)


@pytest.mark.parametrize("backend", ["memory", "file", "postgres"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plan=rounds)
def test_random_concurrent_appends_match_an_in_order_model(
    backend: str, plan: list[list[Append]], request: pytest.FixtureRequest
) -> None:
    if backend == "memory":
        asyncio.run(run(":memory:", plan))
        return
    if backend == "postgres":
        asyncio.run(run_in_fresh_schema(request.getfixturevalue("postgres_server"), plan))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(os.path.join(tmp, "events.db"), plan))
