"""The daemon when the world moved while it was down. A real `run --once` subprocess against
the simulator; each test names its adversary."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import yaml

from statemachine import events as ev
from statemachine.world import PROTECTED_ANNOTATION
from tests.crash.invariants import read_log
from tests.crash.rehearsal import Rehearsal, rehearsal
from tests.service.test_service import verdict_ok


async def _annotate_node(reh: Rehearsal, node: str, annotations: dict[str, str]) -> None:
    """An operator's `kubectl annotate node`, over HTTP with the cluster's token."""
    token = yaml.safe_load(reh.sim.kubeconfig_path.read_text())["users"][0]["user"]["token"]
    headers = {"Authorization": f"Bearer {token}",
               "Content-Type": "application/merge-patch+json"}
    async with (
        aiohttp.ClientSession() as session,
        session.patch(f"{reh.sim.kube_url}/api/v1/nodes/{node}",
                      json={"metadata": {"annotations": annotations}},
                      headers=headers) as answer,
    ):
        assert answer.status == 200, await answer.text()


async def test_a_proposal_found_after_a_restart_is_analysed_again(tmp_path: Path) -> None:
    """Adversary: an operator who protects a node while the daemon is down. The daemon died
    right after proposing a plan that replaces that node; after the restart the proposal is
    not approved from its old recommendation: it is superseded, the node group is analysed
    again, and the protected node is left out of what runs."""
    async with rehearsal(tmp_path) as reh:
        reh.configure(strategy="rolling")
        await reh.run_daemon(crash_at="1")
        log = await read_log(reh.db_path)
        proposed = [e for _, e in log.order if isinstance(e, ev.PlanProposed)]
        assert len(proposed) == 1 and len(log.order) == 1, [type(e) for _, e in log.order]
        stale = proposed[0]
        node = stale.plan.replacements[0].old_node
        await _annotate_node(reh, node, {PROTECTED_ANNOTATION: "true"})
        run = await reh.run_daemon(timeout_s=120)
        assert run.returncode == 0, f"the daemon exited {run.returncode}; log: {run.log_path}"
        log = await read_log(reh.db_path)
        mine = [e for _, e in log.order if e.plan_id == stale.plan_id]
        assert [type(e).__name__ for e in mine] == ["PlanProposed", "PlanCancelled"]
        fresh = [
            e for _, e in log.order if isinstance(e, ev.PlanProposed) and e.plan_id != stale.plan_id
        ]
        assert fresh, "the node group was not analysed again"
        assert all(node not in {r.old_node for r in e.plan.replacements} for e in fresh)
        await verdict_ok(reh)
