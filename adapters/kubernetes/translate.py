"""Kubernetes JSON (as the API serves it) into the frozen world types, and back for Leases.

The adapter reads raw JSON rather than kubernetes-asyncio's model objects: building models for
150,000 pods takes minutes, reading dicts takes about a second. What is read, and how:

- pod requests: max(sum of containers, largest init container) + `spec.overhead`;
- owner: the ownerReference with `controller: true`; DaemonSet pods are flagged, and mirror
  pods by the `kubernetes.io/config.mirror` annotation;
- local storage: an `emptyDir` not backed by `Memory`, or a `hostPath`. PVCs bound to local
  PVs are not looked up (that takes two more reads per claim) and count as not local.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from adapters.kubernetes.quantities import bytes_of, millicores
from statemachine.world import (
    LabelRequirement,
    LabelSelector,
    LeaseInfo,
    NodeGroupSpec,
    NodeInfo,
    PdbInfo,
    PodInfo,
    Resources,
    Taint,
    Toleration,
)

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_EMPTY: dict[str, Any] = {}
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
    )


@lru_cache(maxsize=4096)
def _pod_resources(cpu: int, mem: int) -> Resources:
    return Resources(cpu_millis=cpu, memory_bytes=mem, pods=1)


@lru_cache(maxsize=4096)
def _single(cpu: str | None, mem: str | None) -> Resources:
    return _pod_resources(millicores(cpu), bytes_of(mem))


def _requests(spec: dict[str, Any]) -> Resources:
    containers: list[dict[str, Any]] = spec.get("containers") or []
    if len(containers) == 1 and "initContainers" not in spec and "overhead" not in spec:
        # the common case, answered from a cache keyed by the two request strings
        r = (containers[0].get("resources") or _EMPTY).get("requests") or _EMPTY
        cpu_q, mem_q = r.get("cpu"), r.get("memory")
        return _single(None if cpu_q is None else str(cpu_q),
                       None if mem_q is None else str(mem_q))
    cpu = mem = 0
    for c in spec.get("containers") or ():
        r = (c.get("resources") or _EMPTY).get("requests")
        if r:
            cpu += millicores(r.get("cpu"))
            mem += bytes_of(r.get("memory"))
    for c in spec.get("initContainers") or ():
        r = (c.get("resources") or _EMPTY).get("requests")
        if r:
            cpu = max(cpu, millicores(r.get("cpu")))
            mem = max(mem, bytes_of(r.get("memory")))
    over = spec.get("overhead")
    if over:
        cpu += millicores(over.get("cpu"))
        mem += bytes_of(over.get("memory"))
    return _pod_resources(cpu, mem)


def _requirement(e: dict[str, Any]) -> LabelRequirement:
    return LabelRequirement(key=e.get("key", ""), operator=e.get("operator", ""),
                            values=tuple(str(v) for v in e.get("values") or []))


def label_selector(d: dict[str, Any] | None) -> LabelSelector:
    d = d or {}
    return LabelSelector(
        match_labels={str(k): str(v) for k, v in (d.get("matchLabels") or {}).items()},
        match_expressions=tuple(_requirement(e) for e in d.get("matchExpressions") or []))


def _local_storage(spec: dict[str, Any]) -> bool:
    for v in spec.get("volumes") or ():
        if "hostPath" in v:
            return True
        if "emptyDir" in v and (v["emptyDir"] or _EMPTY).get("medium") != "Memory":
            return True
    return False


def _ready(status: dict[str, Any]) -> bool:
    for c in status.get("conditions") or ():
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def pod_info(obj: dict[str, Any]) -> PodInfo:
    """One pod. The dicts of the parsed answer are reused, not copied (they are ours)."""
    meta = obj.get("metadata") or _EMPTY
    spec = obj.get("spec") or _EMPTY
    status = obj.get("status") or _EMPTY
    owner_kind = owner_name = ""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            owner_kind, owner_name = ref.get("kind", ""), ref.get("name", "")
            break
    annotations = meta.get("annotations") or {}
    affinity = spec.get("affinity")
    required_node: tuple[tuple[LabelRequirement, ...], ...] = ()
    anti: tuple[LabelSelector, ...] = ()
    if affinity:
        node_aff = ((affinity.get("nodeAffinity") or _EMPTY)
                    .get("requiredDuringSchedulingIgnoredDuringExecution") or _EMPTY)
        required_node = tuple(
            tuple(_requirement(e) for e in term.get("matchExpressions") or ())
            for term in node_aff.get("nodeSelectorTerms") or ())
        anti = tuple(
            label_selector(term.get("labelSelector"))
            for term in ((affinity.get("podAntiAffinity") or _EMPTY)
                         .get("requiredDuringSchedulingIgnoredDuringExecution") or ())
            if term.get("topologyKey") == HOSTNAME_TOPOLOGY)
    tolerations = spec.get("tolerations")
    return PodInfo(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        node_name=spec.get("nodeName") or "",
        uid=meta.get("uid") or "",
        labels=meta.get("labels") or {},
        annotations=annotations,
        owner_kind=owner_kind,
        owner_name=owner_name,
        phase=status.get("phase") or "Pending",
        ready=_ready(status),
        requests=_requests(spec),
        tolerations=tuple(Toleration(key=t.get("key") or "", operator=t.get("operator") or "Equal",
                                     value=t.get("value") or "", effect=t.get("effect") or "")
                          for t in tolerations) if tolerations else (),
        node_selector=spec.get("nodeSelector") or {},
        required_node_affinity=required_node,
        anti_affinity_hostname=anti,
        uses_local_storage=_local_storage(spec),
        is_daemonset=owner_kind == "DaemonSet",
        is_mirror=MIRROR_ANNOTATION in annotations,
        deleting=bool(meta.get("deletionTimestamp")),
    )


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
