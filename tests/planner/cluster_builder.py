"""Small, explicit snapshots for planner tests: one node group, VPSie sizes and workers."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal
from typing import TypeVar

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
    VpsieNodeGroup,
    VpsieWorker,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
NOW = "2026-11-26T12:00:00Z"  # a Thursday
T = TypeVar("T")

SMALL = SizeOffer(id=1, name="s-2-4", cpu=2, ram_mb=4096, disk_gb=40, monthly_price=Decimal("20"))
MEDIUM = SizeOffer(id=2, name="s-4-8", cpu=4, ram_mb=8192, disk_gb=80, monthly_price=Decimal("40"))
LARGE = SizeOffer(
    id=3, name="s-8-16", cpu=8, ram_mb=16384, disk_gb=160, monthly_price=Decimal("80")
)
OFFERS = (SMALL, MEDIUM, LARGE)
GROUP_IDS = {SMALL.id: 11, MEDIUM.id: 12, LARGE.id: 13}


def node(name: str, offer: SizeOffer = LARGE, group: str = "pool", **kw: object) -> NodeInfo:
    cap = Resources(cpu_millis=offer.cpu * 1000, memory_bytes=offer.ram_mb * MIB, pods=110)
    fields: dict[str, object] = {
        "name": name,
        "labels": {NODEGROUP_LABEL: group, HOSTNAME_LABEL: name},
        "capacity": cap,
        "allocatable": cap,
        "ready": True,
        "addresses": (),
    }
    fields.update(kw)
    return NodeInfo(**fields)  # type: ignore[arg-type]


def pod(name: str, on: str, cpu: int = 250, mem_mib: int = 256, **kw: object) -> PodInfo:
    fields: dict[str, object] = {
        "namespace": "default",
        "name": name,
        "node_name": on,
        "owner_kind": "ReplicaSet",
        "owner_name": "app",
        "phase": "Running",
        "ready": True,
        "labels": {"app": "web"},
        "requests": Resources(cpu_millis=cpu, memory_bytes=mem_mib * MIB, pods=1),
    }
    fields.update(kw)
    return PodInfo(**fields)  # type: ignore[arg-type]


def pdb(name: str, app: str, allowed: int, namespace: str = "default") -> PdbInfo:
    return PdbInfo(
        namespace=namespace,
        name=name,
        selector=LabelSelector(match_labels={"app": app}),
        disruptions_allowed=allowed,
    )


def cluster(
    nodes: list[NodeInfo],
    pods: list[PodInfo],
    *,
    sizes: dict[str, SizeOffer] | None = None,
    pdbs: tuple[PdbInfo, ...] = (),
    offers: tuple[SizeOffer, ...] = OFFERS,
    **kw: object,
) -> ClusterSnapshot:
    """Each node gets a VPSie worker of the same hostname, listed as VPSie lists it (no group;
    the cpu/ram/disk of its size, `sizes[node]`, default LARGE); each size has a VPSie group."""
    sizes = sizes or {}
    workers = tuple(
        VpsieWorker(
            identifier=f"vm-{n.name}",
            hostname=n.name,
            cpu=sizes.get(n.name, LARGE).cpu,
            ram_mb=sizes.get(n.name, LARGE).ram_mb,
            disk_gb=sizes.get(n.name, LARGE).disk_gb,
        )
        for n in nodes
    )
    groups = tuple(
        VpsieNodeGroup(id=gid, name=f"vpsie-{sid}", size_id=sid) for sid, gid in GROUP_IDS.items()
    )
    return replace(
        ClusterSnapshot(
            taken_at=NOW,
            nodes=tuple(nodes),
            pods=tuple(pods),
            pdbs=pdbs,
            workers=workers,
            vpsie_groups=groups,
            offers=offers,
        ),
        **kw,
    )


def fleet(
    count: int, pods_per_node: int, offer: SizeOffer = LARGE, **pod_kw: object
) -> tuple[list[NodeInfo], list[PodInfo]]:
    nodes = [node(f"n{i}", offer) for i in range(count)]
    pods = [pod(f"p{i}-{j}", f"n{i}", **pod_kw) for i in range(count) for j in range(pods_per_node)]
    return nodes, pods


def random_cluster(rng: random.Random, count: int, pods_per_node: int = 6) -> ClusterSnapshot:
    """A mixed group: three sizes, DaemonSet pods, anti-affinity replicas with PDBs, taints,
    a few nodes that must be excluded."""
    sizes: dict[str, SizeOffer] = {}
    nodes: list[NodeInfo] = []
    pods: list[PodInfo] = []
    budgets: list[PdbInfo] = []
    for i in range(count):
        offer = rng.choice(OFFERS[1:])
        name = f"n{i:03d}"
        sizes[name] = offer
        extra: dict[str, object] = {}
        if rng.random() < 0.1:
            extra["annotations"] = {"autoscaler.vpsie.com/protected": "true"}
        nodes.append(node(name, offer, **extra))
        pods.append(
            pod(
                f"ds-{name}",
                name,
                cpu=100,
                mem_mib=64,
                is_daemonset=True,
                owner_kind="DaemonSet",
                namespace="kube-system",
            )
        )
        for j in range(rng.randrange(pods_per_node)):
            pods.append(
                pod(
                    f"w-{name}-{j}",
                    name,
                    cpu=rng.choice((50, 100, 250, 500)),
                    mem_mib=rng.choice((64, 128, 512)),
                    labels={"app": f"web{j % 3}"},
                    namespace=rng.choice(("a", "b")),
                )
            )
    for d in range(max(count // 3, 1)):
        sel = LabelSelector(match_labels={"app": f"db{d}"})
        for r in range(2):
            host = nodes[(2 * d + r) % count].name
            pods.append(
                pod(
                    f"db{d}-{r}",
                    host,
                    cpu=200,
                    labels={"app": f"db{d}"},
                    anti_affinity_hostname=(sel,),
                    namespace="a",
                )
            )
        budgets.append(pdb(f"db{d}", f"db{d}", allowed=1, namespace="a"))
    budgets.append(pdb("web0", "web0", allowed=rng.randrange(1, 4), namespace="a"))
    return cluster(nodes, pods, sizes=sizes, pdbs=tuple(budgets))


def shuffled(snap: ClusterSnapshot, rng: random.Random) -> ClusterSnapshot:
    """The same world, listed in another order (labels included)."""

    def mix(items: tuple[T, ...]) -> tuple[T, ...]:
        out = list(items)
        rng.shuffle(out)
        return tuple(out)

    def relabel(d: dict[str, str]) -> dict[str, str]:
        keys = list(d)
        rng.shuffle(keys)
        return {k: d[k] for k in keys}

    return replace(
        snap,
        nodes=mix(tuple(replace(n, labels=relabel(n.labels)) for n in snap.nodes)),
        pods=mix(tuple(replace(p, labels=relabel(p.labels)) for p in snap.pods)),
        pdbs=mix(snap.pdbs),
        workers=mix(snap.workers),
        vpsie_groups=mix(snap.vpsie_groups),
        offers=mix(snap.offers),
    )
