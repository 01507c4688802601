"""Node repair by the running daemon (`vpsie-rebalancer run`, a real subprocess) against the
simulator over HTTP, at 100x: what it repairs, what it refuses to, and how it meets a
rebalance in flight. Every test names its adversary: the provider losing workers (the
simulated VPSie), a Kubernetes API that cannot be read, a kubelet that comes back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from daemon.audit import list_plans, plan_report
from eventstore import EventStore
from simulator.faults import FaultRule
from statemachine.machines import PlanStatus
from tests.crash.invariants import read_log
from tests.crash.rehearsal import Rehearsal, config_text, rehearsal, scenario_text
from tests.service.daemon_process import DaemonProcess
from tests.service.test_service import kube

# No rebalancing plan in these worlds unless a test wants one: no saving is big enough.
NO_REBALANCE = 'minSavingMonthly = "100000"'
REPAIR = """
[node_groups.repair]
readyUnknownAfter = "{unknown}"
readyFalseAfter = "{unknown}"
workerStoppedAfter = "{stopped}"
workerGoneAfter = "{stopped}"
"""


def repair_config(reh: Rehearsal, *, unknown: str = "60s", stopped: str = "30s",
                  extra: str = NO_REBALANCE, **policy: Any) -> None:
    text = config_text(listen=f"unix:{reh.socket}", extra=extra, **policy)
    text = text.replace('analysis_interval = "10m"', 'analysis_interval = "10m"\n\n[repair]\n'
                        'check_interval = "10s"', 1)
    reh.write_config(text + REPAIR.format(unknown=unknown, stopped=stopped))


async def events(reh: Rehearsal, reason: str) -> list[dict[str, Any]]:
    _, body = await kube(reh, "GET", "/apis/events.k8s.io/v1/events")
    return [e for e in body["items"] if e["reason"] == reason]


async def metric(daemon: DaemonProcess, name: str, **labels: str) -> float:
    _, text = await daemon.call("GET", "/metrics")
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(f"vpsie_rebalancing_{name}{{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def group_health(daemon: DaemonProcess) -> dict[str, Any]:
    """The group's part of the status' `repair` (empty before a health round could look)."""
    repair = (await daemon.status())["repair"] or {}
    found: dict[str, Any] = repair.get("node_groups", {}).get("general", {})
    return found


def hostnames(reh: Rehearsal) -> list[str]:
    return [w.hostname for w in reh.sim.vpsie.workers]


async def ready_nodes(reh: Rehearsal) -> dict[str, bool]:
    return {name: view.ready for name, view in (await reh.reader.nodes()).items()}


async def test_one_of_six_stops_and_is_replaced(tmp_path: Path) -> None:
    """Adversary: the provider stops one worker of six (VPSie lists it `stopped`, its Node
    turns Ready=Unknown). It is replaced within toleration + provisioning (+ one health check),
    its pods run elsewhere, its Node object is gone; Events and metrics say so."""
    async with rehearsal(tmp_path, scenario=scenario_text(workers=6), fork=False) as reh:
        repair_config(reh)
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        await daemon.until("the daemon leads", lambda: _leads(daemon))
        lost = hostnames(reh)[1]
        lost_at = reh.sim.clock.now()
        reh.sim.vpsie.lose_worker(lost, "stop")

        async def repaired() -> bool:
            nodes = await ready_nodes(reh)
            return lost not in nodes and len(nodes) == 6 and all(nodes.values())

        await daemon.until("the lost node replaced", repaired, timeout_s=60)
        took = reh.sim.clock.now() - lost_at
        # toleration 30 s + boot 60 s + a check every 10 s + polls; far below 10 minutes.
        assert took < 30 + 60 + 10 + 60, took
        assert lost not in hostnames(reh) and len(hostnames(reh)) == 6
        await reh.settle(30)
        pods = [p for p in await reh.reader.pods() if p["metadata"]["namespace"] == "shop"]
        assert pods and all(p["spec"].get("nodeName") != lost for p in pods)
        assert all(p["status"].get("phase") == "Running" for p in pods)
        status = await daemon.status()
        assert status["repair"]["node_groups"]["general"]["unhealthy"] == []
        unhealthy = await events(reh, "NodeUnhealthy")
        assert any(e["regarding"]["name"] == lost and "worker-stopped" in e["note"]
                   for e in unhealthy)
        assert any(e["regarding"]["name"] == lost for e in await events(reh, "NodeRepairStarted"))
        assert any(e["regarding"]["name"] == lost for e in await events(reh, "NodeRepaired"))
        assert await metric(daemon, "nodes_repaired_total", reason="worker-stopped") == 1
        code, audit = await daemon.call("GET", "/v1/status")
        assert code == 200 and audit["plans"] == []
        assert await daemon.stop() == 0
        # The audit names the repair and why.
        store = await EventStore.open(reh.db_path)
        try:
            rows, problems = await list_plans(store)
            (row,) = [r for r in rows if r.plan_id.startswith("repair-")]
            report = await plan_report(store, row.plan_id)
        finally:
            await store.close()
        assert problems == [] and report.opportunity == "repair" and report.replaced == 1
        (decision,) = report.decisions
        assert any("repair (worker-stopped): VPSie lists worker" in r for r in decision.reasons)
        assert any(e.event == "PodDeleted" for e in report.timeline)


async def _leads(daemon: DaemonProcess) -> bool:
    status = await daemon.status()
    return status.get("repair") is not None and bool(status["repair"]["checked_at"])


async def test_three_of_six_at_once_is_blocked(tmp_path: Path) -> None:
    """Adversary: three of six kubelets fall silent at once (a network partition, not three
    broken nodes). 40% of 6 allows 2: nothing is deleted; a NodeRepairBlocked Event, the
    metric and the status line say why, with the numbers."""
    async with rehearsal(tmp_path, scenario=scenario_text(workers=6), fork=False) as reh:
        repair_config(reh)
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        await daemon.until("the daemon leads", lambda: _leads(daemon))
        before = set(hostnames(reh))
        for host in sorted(before)[:3]:
            reh.sim.vpsie.lose_worker(host, "kubelet")

        async def blocked() -> bool:
            group = await group_health(daemon)
            return bool(group.get("blocked")) and len(group["unhealthy"]) == 3

        await daemon.until("repair blocked", blocked, timeout_s=30)
        await reh.settle(300)  # five simulated minutes more: still nothing done
        group = await group_health(daemon)
        assert "3 of 6 nodes are unhealthy" in group["blocked"] and "(2)" in group["blocked"]
        assert all("nothing while blocked" in u["outlook"] for u in group["unhealthy"])
        assert set(hostnames(reh)) == before
        assert len(await ready_nodes(reh)) == 6
        assert not [c for c in reh.proxy.witness.calls if c[0] in ("DELETE", "PATCH")
                    and "/nodes" in c[1]]
        assert reh.proxy.witness.pod_deletes == []
        notes = [e["note"] for e in await events(reh, "NodeRepairBlocked")]
        assert len(notes) == 1 and "3 of 6" in notes[0]
        assert await metric(daemon, "repairs_blocked_total", reason="group-limit") == 1
        assert await metric(daemon, "unhealthy_nodes", node_group="general") == 3
        assert await daemon.stop() == 0


async def test_kubernetes_unreadable_repairs_nothing(tmp_path: Path) -> None:
    """Adversary: the provider stops a worker, and the Kubernetes API answers 503 to every
    node and pod listing (the Lease still works: this daemon leads). Nothing is repaired for
    as long as it cannot read; status says why."""
    async with rehearsal(tmp_path, scenario=scenario_text(workers=6), fork=False) as reh:
        repair_config(reh)
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        await daemon.until("the daemon leads", lambda: _leads(daemon))
        for path in ("/api/v1/nodes*", "/api/v1/pods*"):
            reh.sim.faults.add_rule(
                FaultRule(service="kubernetes", method="GET", path=path, error_rate=1.0)
            )
        before = set(hostnames(reh))
        reh.sim.vpsie.lose_worker(sorted(before)[0], "stop")

        async def unreadable() -> bool:
            return "could not be read" in (await daemon.status())["repair"]["blocked"]

        await daemon.until("the health round to see it cannot read", unreadable, timeout_s=30)
        await reh.settle(300)
        assert set(hostnames(reh)) == before  # the stopped worker is still there, not deleted
        assert not [c for c in reh.proxy.witness.calls if c[0] in ("DELETE", "PATCH")
                    and "/nodes" in c[1]]
        assert await daemon.stop() == 0


async def test_a_kubelet_back_within_its_toleration_is_left_alone(tmp_path: Path) -> None:
    """Adversary: a kubelet falls silent for 90 simulated seconds (the VM runs) and comes
    back before its 5-minute toleration. Nothing is done; the node is named unhealthy while
    it is, then no more."""
    async with rehearsal(tmp_path, scenario=scenario_text(workers=6), fork=False) as reh:
        repair_config(reh, unknown="5m", stopped="5m")
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        await daemon.until("the daemon leads", lambda: _leads(daemon))
        host = sorted(hostnames(reh))[2]
        reh.sim.vpsie.lose_worker(host, "kubelet")

        async def seen() -> bool:
            group = await group_health(daemon)
            return [u["node"] for u in group.get("unhealthy", [])] == [host]

        await daemon.until("the silent node reported", seen, timeout_s=30)
        group = await group_health(daemon)
        assert re.match(r"repaired at ", group["unhealthy"][0]["outlook"])
        await reh.settle(90)
        reh.sim.kube.set_node_ready(host, True)
        await reh.settle(400)
        group = await group_health(daemon)
        assert group["unhealthy"] == []
        assert host in hostnames(reh) and len(hostnames(reh)) == 6
        assert await events(reh, "NodeRepairStarted") == []
        assert await daemon.stop() == 0


@pytest.mark.parametrize("which", ["new", "old"])
async def test_a_node_lost_during_a_rebalance(tmp_path: Path, which: str) -> None:
    """Adversary: the provider stops a worker while a blue-green rebalance soaks: one of the
    plan's new workers ("new"), or one of the old nodes it has cordoned ("old"). The plan is
    rolled back (its new workers deleted, its cordons lifted); a lost old node is then
    repaired like any lost node."""
    scenario = scenario_text(workers=3, web_replicas=3)
    async with rehearsal(tmp_path, scenario=scenario, fork=False) as reh:
        repair_config(reh, extra="", strategy="blue-green", soak="20m", min_nodes=1)
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        olds = set(hostnames(reh))

        async def soaking() -> bool:
            plans = (await daemon.status())["plans"]
            nodes = await reh.reader.nodes()
            cordoned = [n for n in olds if n in nodes and nodes[n].unschedulable]
            return bool(plans) and len(cordoned) == len(olds)

        await daemon.until("the blue-green plan soaking", soaking, timeout_s=60)
        plan_id = (await daemon.status())["plans"][0]["plan_id"]
        news = sorted(set(hostnames(reh)) - olds)
        victim = news[0] if which == "new" else sorted(olds)[0]
        reh.sim.vpsie.lose_worker(victim, "stop")

        async def rolled_back() -> bool:
            plan = (await read_log(reh.db_path)).state.plans.get(plan_id)
            return plan is not None and plan.status is PlanStatus.ROLLED_BACK

        await daemon.until("the rebalance rolled back", rolled_back, timeout_s=60)
        plan = (await read_log(reh.db_path)).state.plans[plan_id]
        assert any(victim in reason and "lost" in reason for *_, reason in plan.reasons)
        if which == "new":
            assert set(hostnames(reh)) == olds
        else:

            async def repaired() -> bool:
                nodes = await ready_nodes(reh)
                return victim not in nodes and len(nodes) == 3 and all(nodes.values())

            await daemon.until("the lost old node repaired", repaired, timeout_s=60)
            assert any(e["regarding"]["name"] == victim
                       for e in await events(reh, "NodeRepaired"))
        nodes = await reh.reader.nodes()
        assert not [n for n, v in nodes.items() if v.unschedulable]
        assert await daemon.stop() == 0


async def test_dry_run_reports_and_does_nothing(tmp_path: Path) -> None:
    """Adversary: the provider stops a worker of a group whose repair is in dry run. It is
    named unhealthy (status, Event) with what would be done; nothing is added or deleted."""
    async with rehearsal(tmp_path, scenario=scenario_text(workers=4), fork=False) as reh:
        repair_config(reh)
        reh.write_config(reh.config_path.read_text() + "dryRun = true\n")
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        await daemon.until("the daemon leads", lambda: _leads(daemon))
        before = set(hostnames(reh))
        victim = sorted(before)[0]
        reh.sim.vpsie.lose_worker(victim, "stop")

        async def due() -> bool:
            group = await group_health(daemon)
            return any(u["due"] for u in group.get("unhealthy", []))

        await daemon.until("the lost node due", due, timeout_s=30)
        await reh.settle(200)
        (u,) = (await group_health(daemon))["unhealthy"]
        assert u["node"] == victim and "dry run" in u["outlook"]
        assert set(hostnames(reh)) == before and victim in await ready_nodes(reh)
        assert await events(reh, "NodeRepairStarted") == []
        assert any("dry run" in e["note"] for e in await events(reh, "NodeUnhealthy"))
        assert await daemon.stop() == 0


async def test_a_worker_that_never_joins_is_replaced(tmp_path: Path) -> None:
    """Adversary: the provider boots a worker whose kubelet never turns Ready (its Node
    registers NotReady and stays so). After the startup timeout it is replaced like a lost
    node: its worker deleted, a new one Ready, the Node object gone."""
    faults = '  faults:\n    neverReady: ["rh-general-0002"]\n'
    scenario = scenario_text(workers=4, faults=faults)
    async with rehearsal(tmp_path, scenario=scenario, fork=False) as reh:
        repair_config(reh, unknown="30m", stopped="30m")
        reh.write_config(reh.config_path.read_text() + 'startupTimeout = "90s"\n')
        reh.sim.faults.never_ready.clear()  # only the scenario's worker; its replacement boots
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        stuck = "rh-general-0002"

        async def replaced() -> bool:
            nodes = await ready_nodes(reh)
            return stuck not in nodes and len(nodes) == 4 and all(nodes.values())

        await daemon.until("the never-Ready node replaced", replaced, timeout_s=60)
        assert stuck not in hostnames(reh) and len(hostnames(reh)) == 4
        assert await metric(daemon, "nodes_repaired_total", reason="never-ready") == 1
        assert await daemon.stop() == 0
