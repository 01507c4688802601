"""Taking a picture of the world for the planner: one `ClusterSnapshot` from both ports.

The planner is pure; everything it reads comes from here, gathered concurrently from the
Kubernetes API (nodes, pods, PodDisruptionBudgets, NodeGroup custom resources) and from VPSie
(the cluster, its node groups, its workers, and the sizes with prices of its datacenter).

The two sides fail differently on purpose:
- Kubernetes unreadable: the snapshot is still returned, with `api_reachable=False` and no
  cluster objects, so the planner's cluster-health check fails with a reason that lands in the
  log ("why does nothing happen?" has an answer) instead of the round vanishing;
- VPSie unreadable: without prices and workers there is nothing to decide, so
  `SnapshotError` is raised, naming the call that failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from adapters.errors import AdapterError
from daemon.clock import rfc3339
from daemon.ports import Cloud, Cluster
from statemachine.world import (
    ClusterSnapshot,
    NodeGroupSpec,
    NodeInfo,
    PdbInfo,
    PodInfo,
    SizeOffer,
    VpsieCluster,
    VpsieNodeGroup,
)

T = TypeVar("T")


class SnapshotError(Exception):
    """VPSie could not be read (or named no datacenter); the message says which call and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Gathered:
    """A snapshot, the VPSie cluster it belongs to, and what could not be read (human text)."""

    snapshot: ClusterSnapshot
    cluster: VpsieCluster
    datacenter: str
    problems: tuple[str, ...] = ()


async def _cloud_call(what: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except AdapterError as exc:
        raise SnapshotError(f"cannot read {what} from VPSie: {exc}") from None


async def gather_snapshot(
    cloud: Cloud,
    cluster: Cluster,
    *,
    cluster_identifier: str,
    now: float,
    datacenter: str = "",
    logged_sizes: Mapping[str, int] | None = None,
    nodes_only: bool = False,
) -> Gathered:
    """Read both worlds at once. `datacenter` overrides the one VPSie names for the cluster.
    `logged_sizes`: what our log recorded of the workers we added (identifier -> size id).
    `nodes_only`: of Kubernetes, only the Nodes (node health runs every `check_interval`;
    listing every pod that often would cost a big cluster dearly)."""
    kube_task = asyncio.ensure_future(
        _read_nodes(cluster) if nodes_only else _read_kubernetes(cluster)
    )
    try:
        clusters, groups, workers = await asyncio.gather(
            _cloud_call("the cluster list", cloud.list_clusters()),
            _cloud_call("the node groups", cloud.list_node_groups(cluster_identifier)),
            _cloud_call("the workers", cloud.list_workers(cluster_identifier)),
        )
        vpsie_cluster = next((c for c in clusters if c.identifier == cluster_identifier), None)
        if vpsie_cluster is None:
            known = ", ".join(sorted(c.identifier for c in clusters)) or "none"
            raise SnapshotError(
                f"VPSie has no cluster {cluster_identifier!r} (clusters seen: {known})"
            )
        dc = datacenter or vpsie_cluster.datacenter_identifier or _group_datacenter(groups)
        if not dc:
            raise SnapshotError(
                f"VPSie names no datacenter for cluster {cluster_identifier!r}; "
                "set `datacenter` in the configuration"
            )
        offers = await _cloud_call(f"the sizes of datacenter {dc!r}", cloud.list_offers(dc))
    except BaseException:
        kube_task.cancel()
        await asyncio.gather(kube_task, return_exceptions=True)
        raise
    nodes, pods, pdbs, specs, problem = await kube_task
    snapshot = ClusterSnapshot(
        taken_at=rfc3339(now),
        nodes=tuple(sorted(nodes, key=lambda n: n.name)),
        pods=tuple(sorted(pods, key=lambda p: (p.namespace, p.name))),
        pdbs=tuple(sorted(pdbs, key=lambda p: (p.namespace, p.name))),
        node_groups=tuple(sorted(specs, key=lambda g: (g.namespace, g.name))),
        vpsie_groups=tuple(sorted(groups, key=lambda g: g.id)),
        workers=tuple(sorted(workers, key=lambda w: w.key)),
        offers=tuple(sorted(offers, key=_offer_key)),
        api_reachable=problem is None,
        logged_sizes=dict(logged_sizes or {}),
        cluster_locked=vpsie_cluster.locked,
        cluster_upgrade_version=vpsie_cluster.upgrade_version,
    )
    return Gathered(
        snapshot=snapshot,
        cluster=vpsie_cluster,
        datacenter=dc,
        problems=() if problem is None else (problem,),
    )


def _offer_key(offer: SizeOffer) -> tuple[int, int]:
    return (offer.id, offer.cpu)


def _group_datacenter(groups: list[VpsieNodeGroup]) -> str:
    found = sorted({g.datacenter_identifier for g in groups if g.datacenter_identifier})
    return found[0] if len(found) == 1 else ""


async def _read_nodes(
    cluster: Cluster,
) -> tuple[list[NodeInfo], list[PodInfo], list[PdbInfo], list[NodeGroupSpec], str | None]:
    try:
        nodes = await cluster.list_nodes()
    except AdapterError as exc:
        return [], [], [], [], f"cannot read the Kubernetes API: {exc}"
    return nodes, [], [], [], None


async def _read_kubernetes(
    cluster: Cluster,
) -> tuple[list[NodeInfo], list[PodInfo], list[PdbInfo], list[NodeGroupSpec], str | None]:
    try:
        nodes, pods, pdbs, specs = await asyncio.gather(
            cluster.list_nodes(),
            cluster.list_pods(),
            cluster.list_pdbs(),
            cluster.list_node_group_specs(),
        )
    except AdapterError as exc:
        return [], [], [], [], f"cannot read the Kubernetes API: {exc}"
    return nodes, pods, pdbs, specs or [], None
