"""`vpsie-rebalancer run` as systemd runs it: READY after recovery, approval through the control
API, Kubernetes Events and metrics, SIGTERM, SIGHUP, a standby daemon, a lost lease, and the
crash-injection variable refused when malformed. The daemon is a real subprocess against the
simulator; the assertions read the world, the log and what the daemon tells systemd."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from tests.crash.invariants import check, read_log
from tests.crash.rehearsal import CLUSTER, REPO, Rehearsal, config_text, rehearsal
from tests.service.daemon_process import TOKEN, DaemonProcess
from tests.service.two_daemons import leadership_holders

MUTATING = ("POST pods/eviction", "PATCH nodes", "PUT nodes")
DEMO_CLUSTER = "7d2f4a6c-8e0b-4d1f-93a5-c7e9b1d3f5a7"  # simulator/scenarios/demo.yaml
LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/vpsie-rebalancer"


async def verdict_ok(reh: Rehearsal) -> None:
    await reh.settle(30)
    await reh.sampler.sample()
    after = await reh.reader.picture()
    log = await read_log(reh.db_path)
    verdict = check(reh, log, after, report=None)
    assert verdict.ok, verdict.explain()


async def kube(reh: Rehearsal, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    token = yaml.safe_load(reh.sim.kubeconfig_path.read_text())["users"][0]["user"]["token"]
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            reh.sim.kube_url + path,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            data=orjson.dumps(body) if body is not None else None,
        ) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


async def test_approval_events_metrics_and_sigterm(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(strategy="rolling", require_approval=True, max_concurrent=2, batch_size=2)
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start(env={"WATCHDOG_USEC": "200000"})
        waiting = await daemon.plan("awaiting_approval")
        assert daemon.notify.seen("READY")
        requests_before = sum(
            n for r, n in reh.proxy.witness.requests.items() if r.startswith(MUTATING)
        )
        code, metrics = await daemon.call("GET", "/metrics")
        assert code == 200 and "vpsie_rebalancing_plans_created_total{" in metrics

        refused, _ = await daemon.call("POST", f"/v1/plans/{waiting['plan_id']}/approve", token="x")
        code, approved = await daemon.call(
            "POST", f"/v1/plans/{waiting['plan_id']}/approve", {"by": "alice", "reason": "ok"}
        )
        assert refused == 403 and code == 200, approved

        async def done() -> bool:
            return not (await daemon.status())["plans"]

        await daemon.until("the approved plan to finish", done, timeout_s=60)
        _, metrics_after = await daemon.call("GET", "/metrics")
        exit_code = await daemon.stop()
        daemon_log = daemon.log()
        kube_token = yaml.safe_load(reh.sim.kubeconfig_path.read_text())["users"][0]["user"]
        secrets = ("rehearsal-secret-5c1d7e", TOKEN, kube_token["token"])
        _, events = await kube(reh, "GET", "/apis/events.k8s.io/v1/events")
        await verdict_ok(reh)
        log = await read_log(reh.db_path)

    assert requests_before == 0, "the daemon acted before the plan was approved"
    assert "control: approve by alice" in daemon_log
    for secret in secrets:
        assert secret not in daemon_log
    assert exit_code == 0
    assert any(m.get("STOPPING") == "1" for m in daemon.notify.messages)
    assert sum(1 for m in daemon.notify.messages if m.get("WATCHDOG") == "1") >= 2
    plan = log.state.plans[waiting["plan_id"]]
    assert plan.status.value == "completed" and plan.approved_by == "alice"
    approvals = [e for _, e in log.order if type(e).__name__ == "PlanApproved"]
    assert [(e.by, e.reason) for e in approvals] == [("alice", "ok")]  # type: ignore[attr-defined]
    audit = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "audit", "--db", str(reh.db_path), "--plan",
        waiting["plan_id"], stdout=asyncio.subprocess.PIPE, cwd=str(REPO),
    )
    shown, _ = await asyncio.wait_for(audit.communicate(), 60)
    assert "by alice: ok" in shown.decode(), shown.decode()
    saved = re.search(
        r'^vpsie_rebalancing_savings_realized_monthly_dollars\{node_group="general"\} (\S+)$',
        metrics_after,
        re.M,
    )
    assert saved is not None and float(saved.group(1)) == float(plan.realised_monthly_saving or 0)
    assert re.search(
        r'^vpsie_rebalancing_nodes_provisioned_total\{node_group="general"\} [1-9]',
        metrics_after,
        re.M,
    )
    reasons = {e["reason"] for e in events["items"]}
    for reason in (
        "PlanCreated",
        "SafetyCheckPassed",
        "PlanAwaitingApproval",
        "PlanStarted",
        "BatchStarted",
        "NodeProvisioning",
        "NodeProvisioned",
        "NodeDraining",
        "NodeDrained",
        "NodeTerminating",
        "NodeTerminated",
        "BatchCompleted",
        "PlanCompleted",
        "SavingsRealized",
    ):
        assert reason in reasons, f"no {reason} Event; got {sorted(reasons)}"


async def test_reject_and_sighup_keeps_a_good_config_and_takes_a_new_one(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(strategy="surge", require_approval=True)
        good = reh.config_path.read_text()
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        waiting = await daemon.plan("awaiting_approval")
        code, body = await daemon.call(
            "POST", f"/v1/plans/{waiting['plan_id']}/reject", {"reason": "not this week"}
        )
        assert code == 200 and body["state"] == "rejected", body
        again, _ = await daemon.call("POST", f"/v1/plans/{waiting['plan_id']}/approve")

        reh.config_path.write_text(good.replace("minNodes", "minNodez"))
        daemon.signal(signal.SIGHUP)
        await daemon.until("the bad configuration refused", _logged(daemon, "not reloaded"))
        alive = await daemon.status()

        reh.config_path.write_text(
            good.replace('analysis_interval = "10m"', 'analysis_interval = "20m"')
        )
        daemon.signal(signal.SIGHUP)
        await daemon.until("the new configuration taken", _logged(daemon, "configuration reloaded"))
        # The token rotated (adversary: whoever still holds the old one): SIGHUP reads it again.
        (reh.dir / "control.token").write_text("rotated-control-token-0c41d2\n")
        daemon.signal(signal.SIGHUP)
        await daemon.until("the new token taken", _logged(daemon, "control token reloaded"))
        approve = f"/v1/plans/{waiting['plan_id']}/approve"
        old_token, _ = await daemon.call("POST", approve)
        new_token, _ = await daemon.call("POST", approve, token="rotated-control-token-0c41d2")
        exit_code = await daemon.stop()
        after = await reh.reader.picture()
        log = await read_log(reh.db_path)

    assert again == 409
    assert (old_token, new_token) == (403, 409)  # refused; allowed (then refused by state)
    assert alive["leader"] is True
    assert log.state.plans[waiting["plan_id"]].status.value == "rejected"
    assert after.workers.keys() == reh.before.workers.keys()
    assert any(m.get("RELOADING") == "1" for m in daemon.notify.messages)
    assert sum(1 for m in daemon.notify.messages if m.get("READY") == "1") >= 3
    assert exit_code == 0


def _logged(daemon: DaemonProcess, text: str) -> Any:
    async def check() -> bool:
        return text in daemon.log()

    return check


async def test_a_standby_waits_for_the_lease_and_takes_over(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(require_approval=True)
        assert reh.socket is not None
        second_socket = reh.socket.with_name("control-b.sock")
        second = tmp_path / "config-b.toml"
        second.write_text(reh.config_path.read_text().replace(str(reh.socket), str(second_socket)))
        a = DaemonProcess(reh, identity="a")
        b = DaemonProcess(reh, identity="b", config=second, socket_path=second_socket)
        await a.start()
        waiting = await a.plan("awaiting_approval")
        await b.start()

        async def b_standby() -> bool:
            code, ready = await b.call("GET", "/readyz")
            return code == 200 and ready["reason"] == "standby"

        await b.until("b to wait as a standby", b_standby)
        b_status = await b.status()
        assert b_status["leader"] is False
        await a.stop()

        async def b_leads() -> bool:
            status = await b.status()
            return bool(status["leader"]) and any(
                p["plan_id"] == waiting["plan_id"] for p in status["plans"]
            )

        await b.until("b to lead with a's plan", b_leads, timeout_s=20)
        code, _ = await b.call("POST", f"/v1/plans/{waiting['plan_id']}/approve")
        assert code == 200

        async def done() -> bool:
            return not (await b.status())["plans"]

        await b.until("b to finish the plan", done, timeout_s=60)
        assert await b.stop() == 0
        await verdict_ok(reh)


async def test_sigterm_mid_plan_records_the_step_and_a_restart_finishes(tmp_path: Path) -> None:
    async with rehearsal(tmp_path) as reh:
        reh.configure(strategy="rolling", max_concurrent=2, batch_size=2)
        daemon = DaemonProcess(reh, identity="rehearsal-daemon")
        await daemon.start()
        await daemon.plan("executing")

        async def a_node_joined() -> bool:
            return len(reh.reader.workers()) > len(reh.before.workers)

        await daemon.until("a worker added", a_node_joined)
        assert await daemon.stop() == 0
        stopped = await read_log(reh.db_path)
        run = await reh.run_daemon()
        await verdict_ok(reh)
        finished = await read_log(reh.db_path)

    plan_id = next(iter(stopped.state.plans))
    halted = stopped.state.plans[plan_id]
    assert halted.status.value == "executing"
    assert all(r.pending_intent is None for r in halted.replacements.values())
    assert run.returncode == 0
    assert finished.state.plans[plan_id].status.value == "completed"


async def test_losing_the_lease_stops_acting_within_its_duration(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(strategy="rolling", max_concurrent=2, batch_size=2)
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        await daemon.plan("executing")

        async def intruder(stop: asyncio.Event) -> None:
            while not stop.is_set():
                code, lease = await kube(reh, "GET", LEASE)
                if code == 200:
                    now = datetime.fromtimestamp(reh.sim.clock.now(), tz=UTC)
                    lease["spec"]["holderIdentity"] = "intruder"
                    lease["spec"]["renewTime"] = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    await kube(reh, "PUT", LEASE, lease)
                await reh.sim.clock.sleep(5)

        stop = asyncio.Event()
        grabbing = asyncio.create_task(intruder(stop))

        async def stepped_down() -> bool:
            return (await daemon.status())["leader"] is False

        await daemon.until("the daemon to step down", stepped_down, timeout_s=20)
        await reh.sim.clock.sleep(60)  # the lease duration: anything in flight has stopped
        quiet_from = sum(n for r, n in reh.proxy.witness.requests.items() if r.startswith(MUTATING))
        await reh.sim.clock.sleep(120)
        quiet_to = sum(n for r, n in reh.proxy.witness.requests.items() if r.startswith(MUTATING))
        stop.set()
        await grabbing

        async def leads_and_finishes() -> bool:
            # Ready: it leads and has recovered (until then its plans are not listed yet).
            status = await daemon.status()
            return bool(status["leader"] and status["daemon"]["ready"]) and not status["plans"]

        await daemon.until("the daemon to lead again and finish", leads_and_finishes, 60)
        assert await daemon.stop() == 0
        await verdict_ok(reh)
        log = await read_log(reh.db_path)

    assert quiet_to == quiet_from, "the daemon kept acting without the lease"
    assert [p.status.value for p in log.state.plans.values()] == ["completed"]


async def test_run_once_analyses_each_group_once_even_when_it_leads_twice(tmp_path: Path) -> None:
    """Adversary: another holder takes the Lease while `run --once` executes its plan (as a
    lapse under load does), and lets it go again. The daemon steps down, leads again with a new
    term and finishes its plan; it does not analyse the group a second time (which recorded a
    second, postponed proposal, cooldown, and broke the demo on a loaded machine)."""
    demo = REPO / "simulator" / "scenarios" / "demo.yaml"  # savings left after one plan
    async with rehearsal(tmp_path, scenario=demo.read_text(), fork=False) as reh:
        config = config_text(
            strategy="rolling", min_nodes=3, max_concurrent=3, batch_size=3, soak="60s",
            listen=f"unix:{reh.socket}",
            extra='allowedSizes = ["k8s-4c-8g", "k8s-4c-16g", "k8s-2c-4g"]\n',
        )
        reh.write_config(config.replace(CLUSTER, DEMO_CLUSTER))
        stole = asyncio.Event()

        async def intruder() -> None:
            while len(reh.reader.workers()) <= len(reh.before.workers):  # a worker added
                await reh.sim.clock.sleep(1)
            for _ in range(12):  # one minute of simulated time: past the daemon's lease
                code, lease = await kube(reh, "GET", LEASE)
                if code == 200:
                    now = datetime.fromtimestamp(reh.sim.clock.now(), tz=UTC)
                    lease["spec"]["holderIdentity"] = "intruder"
                    lease["spec"]["renewTime"] = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    if (await kube(reh, "PUT", LEASE, lease))[0] == 200:
                        stole.set()
                await reh.sim.clock.sleep(5)

        grabbing = asyncio.create_task(intruder())
        run = await reh.run_daemon(timeout_s=120)
        await grabbing
        await verdict_ok(reh)
        log = await read_log(reh.db_path)
        terms = await leadership_holders(reh.db_path)

    assert stole.is_set()
    assert run.returncode == 0, run.log_path.read_text()[-2000:]
    assert len(terms) >= 2, "the daemon never lost the lead: the adversary did not act"
    assert [p.status.value for p in log.state.plans.values()] == ["completed"]


def test_a_malformed_crash_point_is_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'cluster = "c"\nkubeconfig = "k"\nvpsie_credentials = "v"\n'
        '[[node_groups]]\nname = "general"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "tests.crash.crashing_daemon", "run", "--config", str(config)],
        env={"VPSIE_REBALANCER_CRASH_AT": "soon", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "VPSIE_REBALANCER_CRASH_AT='soon'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_pause_holds_still_resume_continues_cancel_rolls_back(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(strategy="rolling", max_concurrent=1, batch_size=1)
        daemon = DaemonProcess(reh, identity="a")
        await daemon.start()
        plan = await daemon.plan("executing")
        path = f"/v1/plans/{plan['plan_id']}"

        async def a_worker_added() -> bool:
            return len(reh.reader.workers()) > len(reh.before.workers)

        await daemon.until("a worker added", a_worker_added)
        code, paused = await daemon.call("POST", f"{path}/pause", {"reason": "lunch"})
        assert code == 200 and paused["state"] == "paused", paused

        async def settled() -> bool:
            status = await daemon.status()
            return not any(p["running"] for p in status["plans"])

        await daemon.until("the runner to stop at a safe point", settled)
        still_from = sum(n for r, n in reh.proxy.witness.requests.items() if r.startswith(MUTATING))
        await reh.sim.clock.sleep(200)
        still_to = sum(n for r, n in reh.proxy.witness.requests.items() if r.startswith(MUTATING))
        twice, _ = await daemon.call("POST", f"{path}/pause")

        code, resumed = await daemon.call("POST", f"{path}/resume")
        assert code == 200 and resumed["state"] == "executing", resumed
        code, cancelled = await daemon.call("POST", f"{path}/cancel", {"reason": "changed mind"})
        assert code == 200, cancelled

        async def ended() -> bool:
            return not (await daemon.status())["plans"]

        await daemon.until("the cancelled plan to end", ended, timeout_s=60)
        assert await daemon.stop() == 0
        await verdict_ok(reh)
        log = await read_log(reh.db_path)

    assert still_to == still_from, "the daemon acted while the plan was paused"
    assert twice == 409
    final = log.state.plans[plan["plan_id"]]
    assert final.status.value == "rolled_back", final.status
    kinds = [kind for _, kind, _, _ in final.reasons]
    assert "PlanPaused" in kinds and "PlanResumed" in kinds and "PlanRollbackStarted" in kinds
