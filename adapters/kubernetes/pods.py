"""Pods from Kubernetes JSON into `PodInfo`, decoded straight into typed structs (msgspec).

A list of 150,000 pods is about 200 MB of JSON. Parsing it into dicts (orjson) builds, and
then frees, millions of objects for fields nobody reads (container statuses, conditions,
images, timestamps); msgspec decodes only the fields declared below and skips the rest
unparsed, which makes a full list about twice as fast. What is read, and how:

- requests: max(sum of containers, largest init container) + `spec.overhead`;
- owner: the ownerReference with `controller: true`; DaemonSet pods are flagged, and mirror
  pods by the `kubernetes.io/config.mirror` annotation;
- local storage: an `emptyDir` not backed by `Memory`, or a `hostPath`. PVCs bound to local
  PVs are not looked up (that takes two more reads per claim) and count as not local;
- tolerations and affinity are kept as raw JSON and translated once per distinct text: the
  pods of one controller repeat them byte for byte.

Every field is optional and every map may be null, as the API allows; a value of the wrong
type is a `msgspec.ValidationError`, which the client reports as a malformed answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import msgspec
import orjson

from adapters.kubernetes.quantities import bytes_of, millicores
from adapters.kubernetes.translate import HOSTNAME_TOPOLOGY, label_selector, requirement
from statemachine.world import (
    LabelRequirement,
    LabelSelector,
    PodInfo,
    Resources,
    SpreadConstraint,
    Toleration,
)

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
CACHE_LIMIT = 4096  # distinct request pairs, toleration lists and affinities kept
_EMPTY: dict[str, Any] = {}

Quantity = str | int | float

# The structs name their fields as the JSON does, and declare only what is read. A field kept
# as raw JSON is empty when absent (msgspec.Raw cannot be part of a union with None).
_ABSENT = msgspec.Raw()


class OwnerRef(msgspec.Struct):
    kind: str = ""
    name: str = ""
    controller: bool | None = None


class PodMeta(msgspec.Struct):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    ownerReferences: list[OwnerRef] | None = None
    deletionTimestamp: str | None = None


class ContainerResources(msgspec.Struct):
    requests: dict[str, Quantity] | None = None


class Container(msgspec.Struct):
    resources: ContainerResources | None = None


class EmptyDir(msgspec.Struct):
    medium: str = ""


class Volume(msgspec.Struct):
    hostPath: msgspec.Raw = _ABSENT
    emptyDir: EmptyDir | None = None


class PodSpec(msgspec.Struct):
    nodeName: str = ""
    containers: list[Container] | None = None
    initContainers: list[Container] | None = None
    overhead: dict[str, Quantity] | None = None
    tolerations: msgspec.Raw = _ABSENT
    nodeSelector: dict[str, str] | None = None
    affinity: msgspec.Raw = _ABSENT
    topologySpreadConstraints: msgspec.Raw = _ABSENT
    volumes: list[Volume] | None = None


class Condition(msgspec.Struct):
    type: str = ""
    status: str = ""


class PodStatus(msgspec.Struct):
    phase: str = ""
    conditions: list[Condition] | None = None


class Pod(msgspec.Struct):
    metadata: PodMeta | None = None
    spec: PodSpec | None = None
    status: PodStatus | None = None


class ListMeta(msgspec.Struct):
    resourceVersion: str = ""
    continue_: str = msgspec.field(default="", name="continue")


class PodList(msgspec.Struct):
    items: list[Pod]
    metadata: ListMeta | None = None


_NO_META, _NO_SPEC, _NO_STATUS = PodMeta(), PodSpec(), PodStatus()
_pod_decoder = msgspec.json.Decoder(Pod)
_list_decoder = msgspec.json.Decoder(PodList)


def decode_pod_list(raw: bytes) -> PodList:
    """A PodList answer; msgspec.DecodeError (ValidationError included) when it is not one."""
    return _list_decoder.decode(raw)


def pod_info(obj: dict[str, Any]) -> PodInfo:
    """One pod given as parsed JSON (a watch event's object)."""
    return pod_of(_pod_decoder.decode(orjson.dumps(obj)))


def pod_of(pod: Pod) -> PodInfo:
    meta = pod.metadata or _NO_META
    spec = pod.spec or _NO_SPEC
    status = pod.status or _NO_STATUS
    owner_kind = owner_name = ""
    for ref in meta.ownerReferences or ():
        if ref.controller:
            owner_kind, owner_name = ref.kind, ref.name
            break
    annotations = meta.annotations or {}
    ready = False
    for c in status.conditions or ():
        if c.type == "Ready":
            ready = c.status == "True"
            break
    try:
        required_node, anti = _affinity(spec.affinity) if spec.affinity else _NO_AFFINITY
        spread = _spread(spec.topologySpreadConstraints) if spec.topologySpreadConstraints else ()
    except msgspec.ValidationError as e:
        # The raw-JSON parts are checked once per distinct text; say whose pod it was.
        raise msgspec.ValidationError(f"pod {meta.namespace}/{meta.name}: {e}") from None
    local = False
    for v in spec.volumes or ():
        if v.hostPath or (v.emptyDir is not None and v.emptyDir.medium != "Memory"):
            local = True
            break
    return _new_pod_info(
        meta.namespace,
        meta.name,
        spec.nodeName,
        meta.uid,
        meta.labels or {},
        annotations,
        owner_kind,
        owner_name,
        status.phase or "Pending",
        ready,
        _requests(spec),
        _tolerations(spec.tolerations) if spec.tolerations else (),
        spec.nodeSelector or {},
        required_node,
        anti,
        local,
        owner_kind == "DaemonSet",
        MIRROR_ANNOTATION in annotations,
        bool(meta.deletionTimestamp),
        spread,
    )


# ----- requests --------------------------------------------------------------------------


@lru_cache(maxsize=CACHE_LIMIT)
def _pod_resources(cpu: int, mem: int) -> Resources:
    return Resources(cpu_millis=cpu, memory_bytes=mem, pods=1)


_single_cache: dict[tuple[Quantity | None, Quantity | None], Resources] = {}


def _single(cpu_q: Quantity | None, mem_q: Quantity | None) -> Resources:
    """Requests of a one-container pod, cached by the two raw quantities (they repeat)."""
    key = (cpu_q, mem_q)
    found = _single_cache.get(key)
    if found is None:
        if len(_single_cache) >= CACHE_LIMIT:
            _single_cache.clear()
        found = _single_cache[key] = _pod_resources(millicores(cpu_q), bytes_of(mem_q))
    return found


def _requests(spec: PodSpec) -> Resources:
    containers = spec.containers or ()
    if len(containers) == 1 and spec.initContainers is None and spec.overhead is None:
        res = containers[0].resources
        r = res.requests if res is not None and res.requests is not None else _EMPTY
        return _single(r.get("cpu"), r.get("memory"))
    cpu = mem = 0
    for c in containers:
        if c.resources is not None and c.resources.requests:
            cpu += millicores(c.resources.requests.get("cpu"))
            mem += bytes_of(c.resources.requests.get("memory"))
    for c in spec.initContainers or ():
        if c.resources is not None and c.resources.requests:
            cpu = max(cpu, millicores(c.resources.requests.get("cpu")))
            mem = max(mem, bytes_of(c.resources.requests.get("memory")))
    if spec.overhead:
        cpu += millicores(spec.overhead.get("cpu"))
        mem += bytes_of(spec.overhead.get("memory"))
    return _pod_resources(cpu, mem)


# ----- tolerations and affinity, by their JSON text -----------------------------------------

_toleration_cache: dict[bytes, tuple[Toleration, ...]] = {}


def _tolerations(raw: msgspec.Raw) -> tuple[Toleration, ...]:
    key = bytes(raw)
    found = _toleration_cache.get(key)
    if found is None:
        items = orjson.loads(key) or ()
        if not isinstance(items, list | tuple) or not all(isinstance(t, dict) for t in items):
            raise msgspec.ValidationError("spec.tolerations: expected a list of objects")
        if len(_toleration_cache) >= CACHE_LIMIT:
            _toleration_cache.clear()
        found = _toleration_cache[key] = tuple(
            Toleration(key=t.get("key") or "", operator=t.get("operator") or "Equal",
                       value=t.get("value") or "", effect=t.get("effect") or "")
            for t in items)
    return found


_Affinity = tuple[tuple[tuple[LabelRequirement, ...], ...], tuple[LabelSelector, ...]]
_NO_AFFINITY: _Affinity = ((), ())
_affinity_cache: dict[bytes, _Affinity] = {}


def _affinity(raw: msgspec.Raw) -> _Affinity:
    """Required node affinity terms, and required pod anti-affinity on the hostname."""
    key = bytes(raw)
    found = _affinity_cache.get(key)
    if found is not None:
        return found
    affinity = orjson.loads(key)
    if affinity is None:
        return _NO_AFFINITY
    if not isinstance(affinity, dict):
        raise msgspec.ValidationError("spec.affinity: expected an object")
    node_aff = ((affinity.get("nodeAffinity") or _EMPTY)
                .get("requiredDuringSchedulingIgnoredDuringExecution") or _EMPTY)
    required_node = tuple(
        tuple(requirement(e) for e in term.get("matchExpressions") or ())
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


_spread_cache: dict[bytes, tuple[SpreadConstraint, ...]] = {}


def _spread(raw: msgspec.Raw) -> tuple[SpreadConstraint, ...]:
    """The hard topologySpreadConstraints (whenUnsatisfiable DoNotSchedule, the default), with
    minDomains, matchLabelKeys (kept as keys: the planner ANDs the pod's own values in) and the
    node inclusion policies. One without a labelSelector counts no pod, so it never
    constrains: it is left out (after its fields are checked)."""
    key = bytes(raw)
    found = _spread_cache.get(key)
    if found is not None:
        return found
    items = orjson.loads(key) or ()
    if not isinstance(items, list | tuple) or not all(isinstance(t, dict) for t in items):
        raise msgspec.ValidationError("spec.topologySpreadConstraints: expected a list of objects")
    out: list[SpreadConstraint] = []
    for i, item in enumerate(items):
        if (item.get("whenUnsatisfiable") or "DoNotSchedule") != "DoNotSchedule":
            continue
        skew = item.get("maxSkew")
        topology = item.get("topologyKey")
        if not isinstance(skew, int) or isinstance(skew, bool) or skew < 1:
            raise msgspec.ValidationError(
                f"spec.topologySpreadConstraints[{i}].maxSkew: expected an integer >= 1, "
                f"got {skew!r}")
        if not isinstance(topology, str) or not topology:
            raise msgspec.ValidationError(
                f"spec.topologySpreadConstraints[{i}].topologyKey: expected a label key, "
                f"got {topology!r}")
        where = f"spec.topologySpreadConstraints[{i}]"
        min_domains = item.get("minDomains")
        if min_domains is None:
            min_domains = 1
        elif not isinstance(min_domains, int) or isinstance(min_domains, bool) or min_domains < 1:
            raise msgspec.ValidationError(
                f"{where}.minDomains: expected an integer >= 1, got {min_domains!r}")
        keys = item.get("matchLabelKeys") or []
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise msgspec.ValidationError(
                f"{where}.matchLabelKeys: expected a list of label keys, got {keys!r}")
        affinity_policy = _policy(item, "nodeAffinityPolicy", "Honor", where)
        taints_policy = _policy(item, "nodeTaintsPolicy", "Ignore", where)
        if item.get("labelSelector") is None:
            continue
        out.append(SpreadConstraint(max_skew=skew, topology_key=topology,
                                    selector=label_selector(item.get("labelSelector")),
                                    min_domains=min_domains,
                                    match_label_keys=tuple(dict.fromkeys(keys)),
                                    node_affinity_policy=affinity_policy,
                                    node_taints_policy=taints_policy))
    if len(_spread_cache) >= CACHE_LIMIT:
        _spread_cache.clear()
    _spread_cache[key] = found = tuple(out)
    return found


def _policy(item: dict[str, Any], name: str, default: str, where: str) -> str:
    """A node inclusion policy of a spread constraint: Honor or Ignore (absent: `default`)."""
    value = item.get(name)
    if value is None:
        return default
    if value not in ("Honor", "Ignore"):
        raise msgspec.ValidationError(
            f"{where}.{name}: expected Honor or Ignore, got {value!r}")
    return str(value)


# ----- PodInfo without its generated __init__ ----------------------------------------------

# PodInfo's fields in order, as `_new_pod_info` takes them.
POD_INFO_FIELDS = (
    "namespace", "name", "node_name", "uid", "labels", "annotations", "owner_kind",
    "owner_name", "phase", "ready", "requests", "tolerations", "node_selector",
    "required_node_affinity", "anti_affinity_hostname", "uses_local_storage", "is_daemonset",
    "is_mirror", "deleting", "topology_spread",
)


def _slot_setters() -> tuple[Callable[[PodInfo, Any], None], ...]:
    return tuple(getattr(PodInfo, name).__set__ for name in POD_INFO_FIELDS)


def _pod_info_by_slots(
    namespace: str, name: str, node_name: str, uid: str, labels: dict[str, str],
    annotations: dict[str, str], owner_kind: str, owner_name: str, phase: str, ready: bool,
    requests: Resources, tolerations: tuple[Toleration, ...], node_selector: dict[str, str],
    required_node_affinity: tuple[tuple[LabelRequirement, ...], ...],
    anti_affinity_hostname: tuple[LabelSelector, ...], uses_local_storage: bool,
    is_daemonset: bool, is_mirror: bool, deleting: bool,
    topology_spread: tuple[SpreadConstraint, ...], *,
    _new: Callable[[type[PodInfo]], PodInfo] = object.__new__,
    _s: tuple[Callable[[PodInfo, Any], None], ...] = _slot_setters(),
) -> PodInfo:
    """A PodInfo filled slot by slot, as its generated `__init__` would (that one calls
    `object.__setattr__` per field, a third of the cost of reading a big list). The result
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
    _s[19](p, topology_spread)
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
