"""Nodes an analysis leaves out are named in Kubernetes Events with their reason, posted to the
simulated Kubernetes API, at most once per node and reason every LEFT_OUT_EVERY_S: an analysis
every ten minutes must not fill the Events with the same line."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from adapters.kubernetes import KubeClient
from adapters.metrics import Metrics
from daemon.service.reporter import Regarding, Reporter
from statemachine.plan import Exclusion
from tests.adapters_kubernetes.conftest import TOKEN, Sim, sim  # noqa: F401  (the fixture)

LOCAL = Exclusion(node="node-1", reason="local-storage", message="pod shop/db uses emptyDir")
PROTECTED = Exclusion(node="node-2", reason="protected", message="annotated do-not-replace")


async def left_out_events(s: Sim) -> list[tuple[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{s.port}/apis/events.k8s.io/v1/events",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp,
    ):
        body = await resp.json()
    return sorted(
        (e["regarding"]["name"], e["note"])
        for e in body["items"]
        if e["reason"] == "NodeLeftOut"
    )


async def test_left_out_nodes_get_a_rate_limited_event(sim: Sim) -> None:  # noqa: F811
    every = Reporter.LEFT_OUT_EVERY_S
    async with KubeClient.from_kubeconfig(str(sim.kubeconfig)) as kube:
        reporter = Reporter(kube, Metrics(), Regarding("Lease", "vpsie-rebalancer", "kube-system"))
        sender = asyncio.create_task(reporter.run())
        try:
            reporter.note_left_out("web", [LOCAL, PROTECTED], 0.0)  # both named
            reporter.note_left_out("web", [LOCAL, PROTECTED], 600.0)  # ten minutes on: quiet
            reporter.note_left_out("web", [LOCAL], 1200.0)  # node-2 no longer left out
            reporter.note_left_out("web", [LOCAL, PROTECTED], 1800.0)  # node-2 again: named
            reporter.note_left_out("web", [LOCAL, PROTECTED], every + 1.0)  # node-1 due again
            await reporter.flush(timeout_s=10)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    local = "Not replaced by the rebalancer (local-storage): pod shop/db uses emptyDir"
    protected = "Not replaced by the rebalancer (protected): annotated do-not-replace"
    assert await left_out_events(sim) == sorted(
        [("node-1", local), ("node-1", local), ("node-2", protected), ("node-2", protected)]
    )
    assert reporter.sent == 4 and reporter.dropped == 0
