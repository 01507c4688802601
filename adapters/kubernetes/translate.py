"""Kubernetes JSON (as the API serves it) into the frozen world types, and back for Leases.

The adapter reads raw JSON rather than kubernetes-asyncio's model objects: building models for
thousands of objects takes far too long. Nodes, PDBs, NodeGroups and Leases are read from
parsed dicts here; pods, by far the most numerous, in `adapters.kubernetes.pods`.
"""

from __future__ import annotations

from typing import Any

from adapters.kubernetes.quantities import bytes_of, millicores
from statemachine.world import (
    LabelRequirement,
    LabelSelector,
    LeaseInfo,
    NodeCondition,
    NodeGroupSpec,
    NodeInfo,
    PdbInfo,
    Resources,
    Taint,
)

HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"


def _resources(d: dict[str, Any] | None) -> Resources:
    d = d or {}
    return Resources(cpu_millis=millicores(d.get("cpu")), memory_bytes=bytes_of(d.get("memory")),
                     pods=int(d.get("pods") or 0))


def node_info(obj: dict[str, Any]) -> NodeInfo:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    return NodeInfo(
        name=meta.get("name", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        capacity=_resources(status.get("capacity")),
        allocatable=_resources(status.get("allocatable")),
        ready=ready,
        unschedulable=bool(spec.get("unschedulable")),
        taints=tuple(Taint(key=t.get("key", ""), value=t.get("value") or "",
                           effect=t.get("effect") or "NoSchedule")
                     for t in spec.get("taints") or []),
        addresses=tuple(a.get("address", "") for a in status.get("addresses") or []
                        if a.get("type") in ("InternalIP", "ExternalIP")),
        created_at=meta.get("creationTimestamp") or "",
        resource_version=meta.get("resourceVersion") or "",
        uid=meta.get("uid") or "",
        conditions=tuple(
            NodeCondition(type=str(c.get("type") or ""), status=str(c.get("status") or "Unknown"),
                          last_transition=str(c.get("lastTransitionTime") or ""),
                          reason=str(c.get("reason") or ""))
            for c in status.get("conditions") or [] if c.get("type")
        ),
    )


def requirement(e: dict[str, Any]) -> LabelRequirement:
    return LabelRequirement(key=e.get("key", ""), operator=e.get("operator", ""),
                            values=tuple(str(v) for v in e.get("values") or []))


def label_selector(d: dict[str, Any] | None) -> LabelSelector:
    d = d or {}
    return LabelSelector(
        match_labels={str(k): str(v) for k, v in (d.get("matchLabels") or {}).items()},
        match_expressions=tuple(requirement(e) for e in d.get("matchExpressions") or []))


def pdb_info(obj: dict[str, Any]) -> PdbInfo:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return PdbInfo(
        namespace=meta.get("namespace", ""), name=meta.get("name", ""),
        selector=label_selector((obj.get("spec") or {}).get("selector")),
        disruptions_allowed=int(status.get("disruptionsAllowed") or 0),
        current_healthy=int(status.get("currentHealthy") or 0),
        desired_healthy=int(status.get("desiredHealthy") or 0),
        expected_pods=int(status.get("expectedPods") or 0),
    )


def _int_or_none(v: Any) -> int | None:
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def node_group_spec(obj: dict[str, Any]) -> NodeGroupSpec:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return NodeGroupSpec(
        name=meta.get("name", ""), namespace=meta.get("namespace") or "",
        min_nodes=_int_or_none(spec.get("minNodes")),
        max_nodes=_int_or_none(spec.get("maxNodes")),
        kube_size_id=_int_or_none(spec.get("kubeSizeID")),
        datacenter_id=str(spec.get("datacenterID") or ""),
        vpsie_group_id=_int_or_none(status.get("vpsieGroupID")),
    )


def lease_info(obj: dict[str, Any]) -> LeaseInfo:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return LeaseInfo(
        namespace=meta.get("namespace", ""), name=meta.get("name", ""),
        holder=spec.get("holderIdentity") or "",
        duration_s=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=spec.get("acquireTime") or "", renew_time=spec.get("renewTime") or "",
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=meta.get("resourceVersion") or "",
    )


def lease_body(lease: LeaseInfo) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": lease.name, "namespace": lease.namespace}
    if lease.resource_version:
        meta["resourceVersion"] = lease.resource_version
    spec: dict[str, Any] = {"holderIdentity": lease.holder,
                            "leaseDurationSeconds": lease.duration_s,
                            "leaseTransitions": lease.transitions}
    if lease.acquire_time:
        spec["acquireTime"] = lease.acquire_time
    if lease.renew_time:
        spec["renewTime"] = lease.renew_time
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": spec}
