"""Mixed fleets planned and carried out: the real daemon (`run --once`, a subprocess) against the
simulator over HTTP, judged by the crash suite's invariants (no pod lost, nothing orphaned,
nothing left cordoned, the bill as the log says).

Adversaries: the simulator's own scheduler places the evicted pods (round robin, not the
planner's packing), and a PodDisruptionBudget that allows no disruption at all.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from tests.crash.invariants import check, read_log
from tests.crash.rehearsal import CLUSTER, DC, Rehearsal, rehearsal

SIZES = (
    (301, "k8s-2c-4g", 2, 4096, "24.00"),
    (302, "k8s-4c-8g", 4, 8192, "48.00"),
    (303, "k8s-8c-16g", 8, 16384, "96.00"),
    (304, "k8s-4c-4g", 4, 4096, "36.00"),  # CPU-leaning
    (305, "k8s-2c-8g", 2, 8192, "34.00"),  # memory-leaning
)


def deployment(name: str, replicas: int, cpu: str, mem: str, pdb: str) -> str:
    return f"""\
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: {name}
          image: {name}:1
          resources: {{requests: {{cpu: {cpu}, memory: {mem}}}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: {name}, namespace: shop}}
spec:
  {pdb}
  selector: {{matchLabels: {{app: {name}}}}}
"""


def world(
    workers: int,
    size_id: int,
    deployments: str,
    *,
    sizes_offered: tuple[tuple[int, str, int, int, str], ...] = SIZES,
    max_workers: int | None = None,
) -> str:
    """A world of `workers` nodes of `size_id` running `deployments` and a small DaemonSet;
    `sizes_offered` as (id, name, cpu, ram MB, monthly price)."""
    sizes = "\n".join(
        f"    - {{id: {sid}, name: {name}, cpu: {cpu}, ramMB: {ram}, diskGB: 80, "
        f'prices: {{{DC}: {{monthly: "{price}", hourly: "0.05"}}}}}}'
        for sid, name, cpu, ram, price in sizes_offered
    )
    return f"""\
apiVersion: sim.vpsie-rebalancer.io/v1
kind: World
metadata:
  name: fleet
spec:
  datacenters:
    - identifier: {DC}
      name: Rehearsal 1
      country: CA
  sizes:
{sizes}
  cluster:
    identifier: {CLUSTER}
    name: rh
    datacenter: {DC}
    maxWorkers: {max_workers or workers * 2}
  nodeGroups:
    - {{name: general, sizeId: {size_id}, workers: {workers}}}
  bootDelaySeconds: 60
  podStartDelaySeconds: 5
  pageSize: 10
  auth:
    clientId: rehearsal-client
    clientSecret: rehearsal-secret-5c1d7e
---
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
{deployments}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: node-agent, namespace: kube-system}}
spec:
  selector: {{matchLabels: {{app: node-agent}}}}
  template:
    metadata: {{labels: {{app: node-agent}}}}
    spec:
      tolerations: [{{operator: Exists}}]
      containers:
        - name: agent
          image: agent:1
          resources: {{requests: {{cpu: 50m, memory: 64Mi}}}}
"""


async def finish(reh: Rehearsal) -> tuple[dict[str, str], int, str]:
    run = await reh.run_daemon(timeout_s=240)
    assert run.returncode == 0, f"the daemon exited {run.returncode}; log: {run.log_path}"
    await reh.settle(30)
    await reh.sampler.sample()
    after = await reh.reader.picture()
    log = await read_log(reh.db_path)
    verdict = check(reh, log, after, report=run.report())
    assert verdict.ok, verdict.explain()
    return verdict.plans, verdict.replaced, run.log_path.read_text()


async def test_a_26_node_mixed_world_is_planned_as_a_mix_and_completed(tmp_path: Path) -> None:
    # 26 x 8c/16g ($2,496/month) carrying CPU-heavy, memory-heavy and small pods.
    deployments = (
        deployment("web", 40, "250m", "256Mi", "maxUnavailable: 10")
        + deployment("api", 60, "1000m", "512Mi", "maxUnavailable: 10")
        + deployment("cache", 40, "200m", "2560Mi", "maxUnavailable: 10")
    )
    async with rehearsal(tmp_path, scenario=world(26, 303, deployments), speed=100) as reh:
        # Generous timeouts: on a loaded machine the daemon's own work takes simulated time.
        reh.configure(
            strategy="rolling",
            max_concurrent=4,
            batch_size=4,
            provision_timeout="900s",
            drain_timeout="900s",
        )
        before = reh.before.monthly_cost()
        plans, replaced, _ = await finish(reh)
        after = await reh.reader.picture()
    # One plan completes; a later analysis in the same run meets the cooldown.
    assert "completed" in plans.values(), plans
    assert not {"rolled_back", "failed"} & set(plans.values()), plans
    assert replaced >= 10
    sizes = {w.size_id for w in after.workers.values()}
    assert len(sizes) >= 2, f"one size only: {sizes}"
    assert after.monthly_cost() < before - Decimal(1000), (before, after.monthly_cost())
    assert all(ready == total for ready, total in after.deployments.values()), after.deployments


async def test_a_node_no_budget_lets_go_is_left_out_and_the_rest_replaced(tmp_path: Path) -> None:
    # Four 8c/16g nodes; "ledger" runs one replica whose PDB allows no disruption at all.
    deployments = deployment("web", 4, "250m", "256Mi", "maxUnavailable: 1") + deployment(
        "ledger", 1, "100m", "128Mi", "minAvailable: 1"
    )
    async with rehearsal(tmp_path, scenario=world(4, 303, deployments), speed=100) as reh:
        reh.configure(strategy="rolling", min_nodes=1, drain_timeout="900s")
        pods = await reh.reader.pods()
        ledger_node = next(
            p["spec"]["nodeName"] for p in pods if p["metadata"]["labels"].get("app") == "ledger"
        )
        plans, replaced, _ = await finish(reh)
        after = await reh.reader.picture()
    # One plan completes; a later analysis in the same run meets the cooldown.
    assert "completed" in plans.values(), plans
    assert not {"rolled_back", "failed"} & set(plans.values()), plans
    assert ledger_node in after.nodes, "the node holding the unevictable pod was replaced"
    assert replaced >= 2
    others = set(reh.before.nodes) - {ledger_node}
    assert not (others & set(after.nodes)), "the rest of the group was not replaced"


def spread_deployment(name: str, replicas: int, cpu: str, mem: str) -> str:
    return f"""\
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: DoNotSchedule
          labelSelector: {{matchLabels: {{app: {name}}}}}
      containers:
        - name: {name}
          image: {name}:1
          resources: {{requests: {{cpu: {cpu}, memory: {mem}}}}}
"""


async def test_a_hard_hostname_spread_is_kept_through_a_completed_plan(tmp_path: Path) -> None:
    """Adversary: the simulator's own scheduler, which refuses to place a replica that
    would break the spread (the pod would stay Pending and the invariants would see it).
    Six 8c/16g nodes with one `edge` replica each (maxSkew 1 over hostnames) and small API
    pods: the fleet keeps a node per replica, and every replica runs again after the plan."""
    deployments = spread_deployment("edge", 6, "100m", "128Mi") + deployment(
        "api", 12, "400m", "256Mi", "maxUnavailable: 3"
    )
    async with rehearsal(tmp_path, scenario=world(6, 303, deployments), speed=100) as reh:
        reh.configure(strategy="rolling", min_nodes=1, drain_timeout="900s")
        before = reh.before.monthly_cost()
        plans, replaced, _ = await finish(reh)
        after = await reh.reader.picture()
        pods = await reh.reader.pods()
    assert "completed" in plans.values(), plans
    assert not {"rolled_back", "failed"} & set(plans.values()), plans
    assert replaced >= 1 and after.monthly_cost() < before
    edge = [
        p["spec"].get("nodeName", "") for p in pods if p["metadata"]["labels"].get("app") == "edge"
    ]
    assert len(edge) == 6 and all(edge) and len(set(edge)) == 6, edge
    assert all(ready == total for ready, total in after.deployments.values()), after.deployments
