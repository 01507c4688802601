"""Fencing at the world's door: no side effect unless this daemon may act right now.

The executor's ports are wrapped so that every call that changes the world (add or delete a
worker, create a VPSie node group, cordon, uncordon, label, taint, evict, delete a Node) first
awaits `guard`, which is `LeaderElector.ensure_may_act`: it returns while the Lease was renewed
recently enough (with a safety margin under the renew deadline), waits for the next renewal
when it was not, and raises `NotLeading` once this daemon has stepped down. Reads pass through:
a daemon that does not lead may look, never touch. The event log is the second fence: an append
of an older leadership term is refused by the store (`eventstore.FencedError`).

The ports' methods are delegated one by one, on purpose: a method added to a port fails mypy
here until someone decides whether it is a side effect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from daemon.ports import Cloud, Cluster
from statemachine.world import (
    Datacenter,
    LeaseInfo,
    NodeGroupSpec,
    NodeInfo,
    PdbInfo,
    PodInfo,
    SizeOffer,
    VpsieCluster,
    VpsieNodeGroup,
    VpsieWorker,
)

Guard = Callable[[], Awaitable[None]]


class FencedCloud:
    """The Cloud port; its side effects only while `guard` lets them."""

    def __init__(self, inner: Cloud, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard

    async def list_datacenters(self) -> list[Datacenter]:
        return await self._inner.list_datacenters()

    async def list_offers(self, dc_identifier: str) -> list[SizeOffer]:
        return await self._inner.list_offers(dc_identifier)

    async def list_clusters(self) -> list[VpsieCluster]:
        return await self._inner.list_clusters()

    async def list_workers(self, cluster_identifier: str) -> list[VpsieWorker]:
        return await self._inner.list_workers(cluster_identifier)

    async def list_node_groups(self, cluster_identifier: str) -> list[VpsieNodeGroup]:
        return await self._inner.list_node_groups(cluster_identifier)

    async def create_node_group(
        self, cluster_identifier: str, group_name: str, size_id: int
    ) -> None:
        await self._guard()
        await self._inner.create_node_group(cluster_identifier, group_name, size_id)

    async def add_worker(self, cluster_identifier: str, group_id: int) -> str | None:
        await self._guard()
        return await self._inner.add_worker(cluster_identifier, group_id)

    async def delete_worker(self, cluster_identifier: str, worker_identifier: str) -> bool:
        await self._guard()
        return await self._inner.delete_worker(cluster_identifier, worker_identifier)


class FencedCluster:
    """The Cluster port; its side effects on nodes and pods only while `guard` lets them."""

    def __init__(self, inner: Cluster, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard

    async def list_nodes(self) -> list[NodeInfo]:
        return await self._inner.list_nodes()

    async def get_node(self, name: str) -> NodeInfo | None:
        return await self._inner.get_node(name)

    async def list_pods(self, node_name: str | None = None) -> list[PodInfo]:
        return await self._inner.list_pods(node_name)

    async def list_pdbs(self) -> list[PdbInfo]:
        return await self._inner.list_pdbs()

    async def list_node_group_specs(self) -> list[NodeGroupSpec] | None:
        return await self._inner.list_node_group_specs()

    async def cordon(self, name: str, annotations: Mapping[str, str | None] | None = None) -> bool:
        await self._guard()
        return await self._inner.cordon(name, annotations)

    async def uncordon(
        self, name: str, annotations: Mapping[str, str | None] | None = None
    ) -> None:
        await self._guard()
        await self._inner.uncordon(name, annotations)

    async def set_cordon(
        self,
        name: str,
        cordoned: bool,
        *,
        annotations: Mapping[str, str | None],
        resource_version: str,
    ) -> None:
        await self._guard()
        await self._inner.set_cordon(
            name, cordoned, annotations=annotations, resource_version=resource_version
        )

    async def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        await self._guard()
        await self._inner.label_node(name, labels)

    async def set_taint(
        self,
        name: str,
        key: str,
        value: str = "",
        effect: str = "NoSchedule",
        *,
        present: bool = True,
    ) -> None:
        await self._guard()
        await self._inner.set_taint(name, key, value, effect, present=present)

    async def delete_node(self, name: str, *, uid: str = "") -> bool:
        await self._guard()
        return await self._inner.delete_node(name, uid=uid)

    async def evict(self, namespace: str, name: str) -> None:
        await self._guard()
        await self._inner.evict(namespace, name)

    async def delete_pod(self, namespace: str, name: str, *, uid: str = "") -> bool:
        await self._guard()
        return await self._inner.delete_pod(namespace, name, uid=uid)

    async def emit_event(
        self,
        *,
        regarding_kind: str,
        regarding_name: str,
        regarding_namespace: str,
        reason: str,
        note: str,
        type_: str = "Normal",
        action: str = "Rebalance",
    ) -> None:
        # A Kubernetes Event tells; it changes nothing a plan owns.
        await self._inner.emit_event(
            regarding_kind=regarding_kind,
            regarding_name=regarding_name,
            regarding_namespace=regarding_namespace,
            reason=reason,
            note=note,
            type_=type_,
            action=action,
        )

    def watch_nodes(self, *, timeout_s: float = 60.0) -> AsyncIterator[tuple[str, NodeInfo]]:
        return self._inner.watch_nodes(timeout_s=timeout_s)

    def watch_pods(
        self, *, node_name: str | None = None, timeout_s: float = 60.0
    ) -> AsyncIterator[tuple[str, PodInfo]]:
        return self._inner.watch_pods(node_name=node_name, timeout_s=timeout_s)

    async def get_lease(self, namespace: str, name: str) -> LeaseInfo | None:
        return await self._inner.get_lease(namespace, name)

    async def create_lease(self, lease: LeaseInfo) -> LeaseInfo:
        return await self._inner.create_lease(lease)

    async def update_lease(self, lease: LeaseInfo) -> LeaseInfo:
        return await self._inner.update_lease(lease)
