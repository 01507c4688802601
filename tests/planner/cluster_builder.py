"""Small, explicit snapshots for planner tests: one node group, VPSie sizes and workers."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

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
    """Each node gets a VPSie worker of the same hostname in the VPSie group of its size
    (`sizes[node]`, default LARGE)."""
    sizes = sizes or {}
    workers = tuple(
        VpsieWorker(
            identifier=f"vm-{n.name}",
            hostname=n.name,
            group_id=GROUP_IDS[sizes.get(n.name, LARGE).id],
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
