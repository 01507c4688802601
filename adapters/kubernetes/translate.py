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

import dataclasses
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson

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
CACHE_LIMIT = 4096  # distinct request pairs, toleration lists, affinities kept


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


_single_cache: dict[tuple[Any, Any], Resources] = {}


def _single(cpu_q: Any, mem_q: Any) -> Resources:
    """Requests of a one-container pod, cached by the two raw quantities (they repeat)."""
    key = (cpu_q, mem_q)
    found = _single_cache.get(key)
    if found is None:
        if len(_single_cache) >= CACHE_LIMIT:
            _single_cache.clear()
        found = _single_cache[key] = _pod_resources(millicores(cpu_q), bytes_of(mem_q))
    return found


def _requests(spec: dict[str, Any]) -> Resources:
    containers: list[dict[str, Any]] = spec.get("containers") or []
    if len(containers) == 1 and "initContainers" not in spec and "overhead" not in spec:
        r = (containers[0].get("resources") or _EMPTY).get("requests") or _EMPTY
        return _single(r.get("cpu"), r.get("memory"))
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


_toleration_cache: dict[tuple[tuple[Any, ...], ...], tuple[Toleration, ...]] = {}


def _tolerations(raw: list[dict[str, Any]]) -> tuple[Toleration, ...]:
    """Cached by value: pods of one controller (and every pod's defaults) repeat them."""
    key = tuple((t.get("key"), t.get("operator"), t.get("value"), t.get("effect")) for t in raw)
    found = _toleration_cache.get(key)
    if found is None:
        if len(_toleration_cache) >= CACHE_LIMIT:
            _toleration_cache.clear()
        found = _toleration_cache[key] = tuple(
            Toleration(key=k or "", operator=op or "Equal", value=v or "", effect=eff or "")
            for k, op, v, eff in key)
    return found


_Affinity = tuple[tuple[tuple[LabelRequirement, ...], ...], tuple[LabelSelector, ...]]
_affinity_cache: dict[bytes, _Affinity] = {}


def _affinity(affinity: dict[str, Any]) -> _Affinity:
    """Required node affinity terms and hostname anti-affinity selectors, cached by the JSON
    of the fragment (pods of one controller share it)."""
    key = orjson.dumps(affinity)
    found = _affinity_cache.get(key)
    if found is not None:
        return found
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
    if len(_affinity_cache) >= CACHE_LIMIT:
        _affinity_cache.clear()
    _affinity_cache[key] = found = (required_node, anti)
    return found


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
    required_node, anti = _affinity(affinity) if affinity else _NO_AFFINITY
    tolerations = spec.get("tolerations")
    return _new_pod_info(
        meta.get("namespace", ""),
        meta.get("name", ""),
        spec.get("nodeName") or "",
        meta.get("uid") or "",
        meta.get("labels") or {},
        annotations,
        owner_kind,
        owner_name,
        status.get("phase") or "Pending",
        _ready(status),
        _requests(spec),
        _tolerations(tolerations) if tolerations else (),
        spec.get("nodeSelector") or {},
        required_node,
        anti,
        _local_storage(spec),
        owner_kind == "DaemonSet",
        MIRROR_ANNOTATION in annotations,
        bool(meta.get("deletionTimestamp")),
    )


_NO_AFFINITY: _Affinity = ((), ())
# PodInfo's fields in order, as `_new_pod_info` takes them.
POD_INFO_FIELDS = (
    "namespace", "name", "node_name", "uid", "labels", "annotations", "owner_kind",
    "owner_name", "phase", "ready", "requests", "tolerations", "node_selector",
    "required_node_affinity", "anti_affinity_hostname", "uses_local_storage", "is_daemonset",
    "is_mirror", "deleting",
)


def _slot_setters() -> tuple[Callable[[PodInfo, Any], None], ...]:
    return tuple(getattr(PodInfo, name).__set__ for name in POD_INFO_FIELDS)


def _pod_info_by_slots(
    namespace: str, name: str, node_name: str, uid: str, labels: dict[str, str],
    annotations: dict[str, str], owner_kind: str, owner_name: str, phase: str, ready: bool,
    requests: Resources, tolerations: tuple[Toleration, ...], node_selector: dict[str, str],
    required_node_affinity: tuple[tuple[LabelRequirement, ...], ...],
    anti_affinity_hostname: tuple[LabelSelector, ...], uses_local_storage: bool,
    is_daemonset: bool, is_mirror: bool, deleting: bool, *,
    _new: Callable[[type[PodInfo]], PodInfo] = object.__new__,
    _s: tuple[Callable[[PodInfo, Any], None], ...] = _slot_setters(),
) -> PodInfo:
    """A PodInfo filled slot by slot, as its generated `__init__` would (that one calls
    `object.__setattr__` per field, which is half the cost of reading a big list). The result
    is an ordinary frozen PodInfo."""
    p = _new(PodInfo)
    _s[0](p, namespace)
    _s[1](p, name)
    _s[2](p, node_name)
    _s[3](p, uid)
    _s[4](p, labels)
    _s[5](p, annotations)
    _s[6](p, owner_kind)
    _s[7](p, owner_name)
    _s[8](p, phase)
    _s[9](p, ready)
    _s[10](p, requests)
    _s[11](p, tolerations)
    _s[12](p, node_selector)
    _s[13](p, required_node_affinity)
    _s[14](p, anti_affinity_hostname)
    _s[15](p, uses_local_storage)
    _s[16](p, is_daemonset)
    _s[17](p, is_mirror)
    _s[18](p, deleting)
    return p


def _pod_info_by_init(*values: Any) -> PodInfo:
    return PodInfo(**dict(zip(POD_INFO_FIELDS, values, strict=True)))


def _slots_usable() -> bool:
    """The slot filler is exact only while PodInfo has exactly these fields and no
    `__post_init__`; otherwise the (slower) constructor is used."""
    return (tuple(f.name for f in dataclasses.fields(PodInfo)) == POD_INFO_FIELDS
            and not hasattr(PodInfo, "__post_init__") and hasattr(PodInfo, "__slots__"))


_new_pod_info: Callable[..., PodInfo] = (
    _pod_info_by_slots if _slots_usable() else _pod_info_by_init)


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
