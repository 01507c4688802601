"""Planner benchmark: analysis + plan for 1,000 nodes / 30,000 pods and 5,000 / 150,000.

Run: `python bench/planner.py` (`--quick` for 1,000 nodes only, `--repeat N` timed runs per
size, N >= 5, default 7). Prints every run, the best and the median per size, the growth factor
from 1k to 5k (best over best, and median over median), peak Python memory (tracemalloc) and
process RSS; exits 1 when a target is missed on the best runs (1k <= 1 s, 5k <= 5 s,
growth <= 6x).

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
import statistics
import sys
import time
import tracemalloc
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planner import Analysis, NodeGroupPolicy, analyze, make_plan, validate_plan
from statemachine.plan import PlanSpec, Strategy
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
        workers.append(
            VpsieWorker(identifier=f"vm-{i:05d}", hostname=name, cpu=8, ram_mb=32768, disk_gb=160)
        )
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


POLICY = NodeGroupPolicy(
    name="general",
    cluster="k8s-bench",
    strategy=Strategy.ROLLING,
    batch_size=2,
    max_concurrent=2,
    min_nodes=3,
)
NOW = "2026-11-26T06:00:00Z"
LIMITS = {1000: 1.0, 5000: 5.0}
GROWTH_LIMIT = 6.0


# The fleet sized by the mixed-integer solver, and by the heuristic alone.
MODES = {"solver on": POLICY, "solver off": replace(POLICY, fleet_solver=False)}


def plan_once(snap: ClusterSnapshot, policy: NodeGroupPolicy) -> tuple[Analysis, PlanSpec | None]:
    analysis = analyze(snap, policy, now=NOW)
    return analysis, make_plan(analysis, policy)


def timed(snap: ClusterSnapshot, policy: NodeGroupPolicy) -> float:
    gc.collect()
    t0 = time.perf_counter()
    plan_once(snap, policy)
    return time.perf_counter() - t0


def traced_peak(snap: ClusterSnapshot, policy: NodeGroupPolicy) -> int:
    gc.collect()
    tracemalloc.start()
    plan_once(snap, policy)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def describe(snap: ClusterSnapshot, policy: NodeGroupPolicy) -> str:
    analysis, spec = plan_once(snap, policy)
    if spec is None:
        raise SystemExit(f"no plan for {len(snap.nodes)} nodes: {analysis.action_reasons}")
    problems = validate_plan(spec, policy)
    if problems:
        raise SystemExit(f"invalid plan: {problems}")
    return (
        f"{len(spec.replacements)} replacements -> {analysis.fleet_after} "
        f"(${spec.snapshot_summary['fleet_after_monthly_cost']}/mo), saves "
        f"${spec.monthly_saving}/mo, action {spec.recommended_action}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 nodes only")
    parser.add_argument(
        "--repeat", type=int, default=7, help="timed runs per size (at least 5; default 7)"
    )
    args = parser.parse_args()
    if args.repeat < 5:
        parser.error(f"--repeat must be at least 5, got {args.repeat}")
    sizes = [1000] if args.quick else [1000, 5000]
    # Every snapshot is built before anything is timed, so each size runs with the same heap
    # and collector state; one untimed run per size warms the process up for all of them; the
    # timed runs alternate between the sizes so that a noisy moment hits both.
    snaps = {n: build(n) for n in sizes}
    runs = [(n, mode) for n in sizes for mode in MODES]
    whats = {(n, mode): describe(snaps[n], MODES[mode]) for n, mode in runs}
    times: dict[tuple[int, str], list[float]] = {run: [] for run in runs}
    for _ in range(args.repeat):
        for n, mode in runs:
            times[(n, mode)].append(timed(snaps[n], MODES[mode]))
    ok = True
    best: dict[tuple[int, str], float] = {}
    median: dict[tuple[int, str], float] = {}
    for n, mode in runs:
        key = (n, mode)
        best[key] = min(times[key])
        median[key] = statistics.median(times[key])
        verdict = "ok" if best[key] <= LIMITS[n] else "TOO SLOW"
        ok &= best[key] <= LIMITS[n]
        print(
            f"{n:>5} nodes / {n * 30:>6} pods, {mode:<10}: best {best[key]:6.3f} s, median "
            f"{median[key]:6.3f} s of {args.repeat} (limit {LIMITS[n]:.0f} s on the best, "
            f"{verdict}); peak traced memory {traced_peak(snaps[n], MODES[mode]) / MIB:6.1f} MiB"
        )
        print(f"      runs: {' '.join(f'{t:.3f}' for t in times[key])}; {whats[key]}")
    if len(sizes) == 2:
        for mode in MODES:
            growth = best[(5000, mode)] / best[(1000, mode)]
            ok &= growth <= GROWTH_LIMIT
            verdict = "ok" if growth <= GROWTH_LIMIT else "TOO MUCH"
            print(
                f"growth 1k -> 5k, {mode}: {growth:.2f}x best/best (limit {GROWTH_LIMIT:.0f}x, "
                f"{verdict}); {median[(5000, mode)] / median[(1000, mode)]:.2f}x median/median"
            )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"process peak RSS (including building the snapshots): {rss / 1024:.1f} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
