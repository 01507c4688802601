"""Ports to the world, as the executor and recovery see them.

The adapters implement these structurally (they do not import this module: the layers forbid
it); `daemon` wires them together and mypy checks that they fit. All errors raised are from
`adapters.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

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


class Clock(Protocol):
    """Injected time. Tests and the demo run it faster than real time."""

    def now(self) -> float:
        """Wall-clock Unix seconds."""
        ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class Cloud(Protocol):
    """VPSie managed Kubernetes."""

    async def list_datacenters(self) -> list[Datacenter]: ...

    async def list_offers(self, dc_identifier: str) -> list[SizeOffer]: ...

    async def list_clusters(self) -> list[VpsieCluster]: ...

    async def list_workers(self, cluster_identifier: str) -> list[VpsieWorker]: ...

    async def list_node_groups(self, cluster_identifier: str) -> list[VpsieNodeGroup]: ...

    async def create_node_group(
        self, cluster_identifier: str, group_name: str, size_id: int
    ) -> None: ...

    async def add_worker(self, cluster_identifier: str, group_id: int) -> str | None:
        """Asynchronous on VPSie's side: returns before the worker exists. The new worker's
        identifier when the answer names one, else None."""
        ...

    async def delete_worker(self, cluster_identifier: str, worker_identifier: str) -> bool:
        """True when VPSie said deleted, False when it said not found. Neither proves the
        worker gone: only a listing without it does."""
        ...


class Cluster(Protocol):
    """The Kubernetes API."""

    async def list_nodes(self) -> list[NodeInfo]: ...

    async def get_node(self, name: str) -> NodeInfo | None: ...

    async def list_pods(self, node_name: str | None = None) -> list[PodInfo]: ...

    async def list_pdbs(self) -> list[PdbInfo]: ...

    async def list_node_group_specs(self) -> list[NodeGroupSpec] | None:
        """None when the NodeGroup CRD is not installed."""
        ...

    async def cordon(self, name: str, annotations: Mapping[str, str | None] | None = None) -> bool:
        """Mark unschedulable by patch; return the prior `unschedulable` value."""
        ...

    async def uncordon(
        self, name: str, annotations: Mapping[str, str | None] | None = None
    ) -> None: ...

    async def set_cordon(
        self,
        name: str,
        cordoned: bool,
        *,
        annotations: Mapping[str, str | None],
        resource_version: str,
    ) -> None:
        """Cordon (or uncordon) and set `annotations` in one patch, only if the node is still
        at `resource_version`; Conflict when it changed since."""
        ...

    async def label_node(self, name: str, labels: Mapping[str, str | None]) -> None: ...

    async def set_taint(
        self,
        name: str,
        key: str,
        value: str = "",
        effect: str = "NoSchedule",
        *,
        present: bool = True,
    ) -> None:
        """Add (or with present=False remove) one taint, keeping the others."""
        ...

    async def delete_node(self, name: str, *, uid: str = "") -> bool:
        """Delete the Node object (only the one with `uid` when given: Conflict otherwise);
        False when it was already gone."""
        ...

    async def evict(self, namespace: str, name: str) -> None:
        """Raises EvictionBlocked on 429; NotFound when the pod is already gone."""
        ...

    async def delete_pod(self, namespace: str, name: str, *, uid: str = "") -> bool:
        """Delete a pod at once (grace period 0: for pods of a node whose worker is gone, no
        kubelet is left to finish a graceful delete); only the pod with `uid` when given
        (Conflict otherwise). False when it was already gone."""
        ...

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
    ) -> None: ...

    def watch_nodes(self, *, timeout_s: float = 60.0) -> AsyncIterator[tuple[str, NodeInfo]]:
        """(ADDED | MODIFIED | DELETED, node) until timeout_s; re-lists on 410 Gone."""
        ...

    def watch_pods(
        self, *, node_name: str | None = None, timeout_s: float = 60.0
    ) -> AsyncIterator[tuple[str, PodInfo]]: ...

    async def get_lease(self, namespace: str, name: str) -> LeaseInfo | None: ...

    async def create_lease(self, lease: LeaseInfo) -> LeaseInfo:
        """Conflict when it already exists."""
        ...

    async def update_lease(self, lease: LeaseInfo) -> LeaseInfo:
        """Replace at lease.resource_version; Conflict when someone else wrote first."""
        ...
