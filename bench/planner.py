"""Planner benchmark: analysis + plan for 1,000 nodes / 30,000 pods and 5,000 / 150,000.

Run: `python bench/planner.py` (add `--quick` for 1,000 nodes only). Prints seconds per size,
the growth factor from 1k to 5k, and peak Python memory (tracemalloc) and process RSS; exits 1
when a target is missed (1k <= 1 s, 5k <= 5 s, growth <= 6x).

The synthetic cluster: one node group of 8 vCPU / 32 GiB nodes, 30 pods per node (2 of them
DaemonSet pods), 40 namespaces, requests drawn from 12 shapes, 5% of pods in 3-replica
deployments with hostname anti-affinity and a PDB each, taints/tolerations on a tenth of the
pods, and 8 VPSie sizes on offer. The planner is expected to find a cheaper fleet.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planner import NodeGroupPolicy, analyze, make_plan, validate_plan
from statemachine.plan import Strategy
from statemachine.world import (
    HOSTNAME_LABEL,
    NODEGROUP_LABEL,
    ClusterSnapshot,
    LabelSelector,
    NodeInfo,
    PdbInfo,
    PodInfo,
    Resources,
    SizeOffer,
    Toleration,
    VpsieNodeGroup,
    VpsieWorker,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
SHAPES = [
    (cpu, mem * MIB)
    for cpu, mem in [
        (50, 64),
        (100, 128),
        (100, 256),
        (150, 192),
        (200, 256),
        (250, 384),
        (50, 96),
        (120, 160),
        (80, 200),
        (180, 300),
        (60, 128),
        (90, 180),
    ]
]
OFFERS = tuple(
    SizeOffer(
        id=i + 1,
        name=f"k8s-{c}-{r // 1024}",
        cpu=c,
        ram_mb=r,
        disk_gb=c * 20,
        monthly_price=Decimal(p),
    )
    for i, (c, r, p) in enumerate(
        [
            (1, 2048, "6.00"),
            (2, 4096, "12.00"),
            (4, 8192, "24.00"),
            (4, 16384, "32.00"),
            (8, 16384, "48.00"),
            (8, 32768, "64.00"),
            (16, 32768, "96.00"),
            (16, 65536, "128.00"),
        ]
    )
)


def build(nodes: int, pods_per_node: int = 30, seed: int = 7) -> ClusterSnapshot:
    rng = random.Random(seed)
    node_list: list[NodeInfo] = []
    workers: list[VpsieWorker] = []
    pods: list[PodInfo] = []
    pdbs: list[PdbInfo] = []
    cap = Resources(cpu_millis=8000, memory_bytes=32 * GIB, pods=110)
    for i in range(nodes):
        name = f"worker-{i:05d}"
        node_list.append(
            NodeInfo(
                name=name,
                labels={NODEGROUP_LABEL: "general", HOSTNAME_LABEL: name},
                capacity=cap,
                allocatable=Resources(cpu_millis=7800, memory_bytes=30 * GIB, pods=110),
                ready=True,
                addresses=(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",),
            )
        )
        workers.append(VpsieWorker(identifier=f"vm-{i:05d}", hostname=name, group_id=1))
        for d in range(2):
            pods.append(
                PodInfo(
                    namespace="kube-system",
                    name=f"ds{d}-{name}",
                    node_name=name,
                    owner_kind="DaemonSet",
                    owner_name=f"ds{d}",
                    phase="Running",
                    ready=True,
                    requests=Resources(cpu_millis=100, memory_bytes=128 * MIB, pods=1),
                    is_daemonset=True,
                )
            )
    slots = [n.name for n in node_list for _ in range(pods_per_node - 2)]
    rng.shuffle(slots)
    k = 0
    dep = 0
    anti_pods = len(slots) // 20
    while k < anti_pods - 2:
        ns = f"team-{dep % 40}"
        app = f"api-{dep}"
        cpu, mem = SHAPES[dep % len(SHAPES)]
        sel = LabelSelector(match_labels={"app": app})
        for r in range(3):
            pods.append(
                PodInfo(
                    namespace=ns,
                    name=f"{app}-{r}",
                    node_name=node_list[(3 * dep + r) % nodes].name,
                    owner_kind="ReplicaSet",
                    owner_name=app,
                    phase="Running",
                    ready=True,
                    labels={"app": app},
                    requests=Resources(cpu_millis=cpu, memory_bytes=mem, pods=1),
                    anti_affinity_hostname=(sel,),
                )
            )
            k += 1
        pdbs.append(
            PdbInfo(
                namespace=ns,
                name=app,
                selector=sel,
                disruptions_allowed=1,
                current_healthy=3,
                desired_healthy=2,
                expected_pods=3,
            )
        )
        dep += 1
    tol = (Toleration(key="dedicated", operator="Exists"),)
    while k < len(slots):
        ns = f"team-{rng.randrange(40)}"
        cpu, mem = SHAPES[rng.randrange(len(SHAPES))]
        pods.append(
            PodInfo(
                namespace=ns,
                name=f"web-{k}",
                node_name=slots[k],
                owner_kind="ReplicaSet",
                owner_name=f"web-{k % 500}",
                phase="Running",
                ready=True,
                labels={"app": f"web-{k % 500}"},
                requests=Resources(cpu_millis=cpu, memory_bytes=mem, pods=1),
                tolerations=tol if k % 10 == 0 else (),
            )
        )
        k += 1
    return ClusterSnapshot(
        taken_at="2026-11-26T06:00:00Z",
        nodes=tuple(node_list),
        pods=tuple(pods),
        pdbs=tuple(pdbs),
        workers=tuple(workers),
        vpsie_groups=(VpsieNodeGroup(id=1, name="general", size_id=6),),
        offers=OFFERS,
    )


def run(nodes: int) -> tuple[float, int, str]:
    """Best of three untraced runs for time, then one run under tracemalloc for memory."""
    snap = build(nodes)
    policy = NodeGroupPolicy(
        name="general",
        cluster="k8s-bench",
        strategy=Strategy.ROLLING,
        batch_size=2,
        max_concurrent=2,
        min_nodes=3,
    )
    now = "2026-11-26T06:00:00Z"
    elapsed = float("inf")
    spec = None
    for _ in range(3):
        gc.collect()
        t0 = time.perf_counter()
        analysis = analyze(snap, policy, now=now)
        spec = make_plan(analysis, policy)
        elapsed = min(elapsed, time.perf_counter() - t0)
    gc.collect()
    tracemalloc.start()
    make_plan(analyze(snap, policy, now=now), policy)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if spec is None:
        raise SystemExit(f"no plan for {nodes} nodes: {analysis.action_reasons}")
    problems = validate_plan(spec, policy)
    if problems:
        raise SystemExit(f"invalid plan: {problems}")
    what = (
        f"{len(spec.replacements)} replacements -> {analysis.target_nodes} x "
        f"{spec.replacements[0].new_size_name or 'removal'}, saves ${spec.monthly_saving}/mo, "
        f"action {spec.recommended_action}"
    )
    return elapsed, peak, what


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 nodes only")
    args = parser.parse_args()
    sizes = [1000] if args.quick else [1000, 5000]
    limits = {1000: 1.0, 5000: 5.0}
    times: dict[int, float] = {}
    ok = True
    for n in sizes:
        elapsed, peak, what = run(n)
        times[n] = elapsed
        verdict = "ok" if elapsed <= limits[n] else "TOO SLOW"
        ok &= elapsed <= limits[n]
        print(
            f"{n:>5} nodes / {n * 30:>6} pods: {elapsed:6.3f} s (limit {limits[n]:.0f} s, "
            f"{verdict}); peak traced memory {peak / MIB:7.1f} MiB; {what}"
        )
    if len(times) == 2:
        growth = times[5000] / times[1000]
        ok &= growth <= 6
        print(f"growth 1k -> 5k: {growth:.2f}x (limit 6x, {'ok' if growth <= 6 else 'TOO MUCH'})")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"process peak RSS (including building the snapshots): {rss / 1024:.1f} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
