"""The simulated cluster: stored objects plus the controllers and kubelets that act on them.

`KubeWorld` owns the `Store` and keeps the indexes the controllers need (pods by node, by
owner, by label). Writes from the HTTP API go through `create`/`replace`/`delete` here so the
indexes stay true. Controllers run in one background task woken by any change:

- Deployment -> one ReplicaSet -> pods; a deleted or evicted pod is replaced at once;
- DaemonSet -> one pod on every node whose taints it tolerates (cordons are ignored);
- the scheduler binds pending pods first-fit from a rotating start node (deterministic);
- the kubelet turns a bound pod Running and Ready after `pod_start_delay_s` simulated seconds
  (3 by default) and finishes a graceful deletion after `POD_STOP_S`;
- PodDisruptionBudget status (`expectedPods`, `currentHealthy`, `desiredHealthy`,
  `disruptionsAllowed`) is recomputed for every namespace whose pods changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from simulator.clock import SimClock
from simulator.kube.resources import Registry, ResourceType
from simulator.kube.scheduling import (
    Spread,
    anti_affinity_terms,
    node_affinity_ok,
    pod_requests,
    spread_constraints,
    taints_tolerated,
)
from simulator.kube.selectors import Selector, parse_label_selector, selector_from_object
from simulator.kube.store import ApiError, Key, Store, not_found

_log = logging.getLogger(__name__)

POD_START_S = 3.0  # default of KubeWorld(pod_start_delay_s=...)
GENERATE_NAME_TRIES = 8
FREEZE_AT_PODS = 20_000
POD_STOP_S = 2.0
TICK_S = 5.0
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


@dataclass(slots=True)
class NodeSlot:
    cpu: int
    mem: int
    pods: int
    used_cpu: int = 0
    used_mem: int = 0
    pods_on: set[Key] = field(default_factory=set)
    ip: str = ""  # InternalIP


@dataclass(slots=True)
class EvictionBlock:
    namespace: str
    selector: Selector


class KubeWorld:
    """A simulated Kubernetes control plane. Deterministic given the rng's seed."""

    def __init__(self, clock: SimClock, rng: random.Random, *,
                 pod_start_delay_s: float = POD_START_S) -> None:
        if not pod_start_delay_s >= 0:
            raise ValueError(f"pod_start_delay_s must be >= 0, got {pod_start_delay_s}")
        self.clock = clock
        self.rng = rng
        self.pod_start_delay_s = pod_start_delay_s
        self.registry = Registry()
        self.store = Store(clock, rng)
        self.started = False
        self._slots: dict[str, NodeSlot] = {}
        self._node_order: list[str] | None = None
        self._cursor = 0
        self._pod_req: dict[Key, tuple[int, int]] = {}
        self._owner_pods: dict[str, set[Key]] = {}
        self._ns_pods: dict[str, set[Key]] = {}
        self._label_index: dict[tuple[str, str, str], set[Key]] = {}
        self._pending: dict[Key, None] = {}
        self._dirty_owners: set[tuple[str, str, str]] = set()  # (coll, ns, name)
        self._dirty_pdb_ns: set[str] = set()
        self._all_ds_dirty = False
        self._blocks: list[EvictionBlock] = []
        # Nodes whose kubelet stopped reporting: nothing on them finishes a graceful delete.
        self._dead: set[str] = set()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._ip = 0
        self._template_cache: dict[str, tuple[str, bytes, tuple[int, int], dict[str, Any]]] = {}
        self._running_cache: dict[str, tuple[str, bytes, bytes]] = {}
        self._nofit: set[str] = set()  # owners with no room, during one pass before start
        for ns in SYSTEM_NAMESPACES:
            self._create_namespace(ns)

    # ----- public interface --------------------------------------------------------------

    def load_manifests(self, docs: list[dict[str, Any]]) -> None:
        """Apply manifests; ValueError naming the document index, kind and name on bad input."""
        order = {"Namespace": 0, "CustomResourceDefinition": 1}
        indexed = sorted(enumerate(docs), key=lambda p: order.get(_kind_of(p[1]), 2))
        for i, doc in indexed:
            where = f"manifest {i}"
            if not isinstance(doc, dict):
                raise ValueError(f"{where}: expected a mapping, got {type(doc).__name__}")
            kind, api_version = doc.get("kind"), doc.get("apiVersion")
            name = (doc.get("metadata") or {}).get("name") if isinstance(
                doc.get("metadata"), dict) else None
            where = f"manifest {i} ({kind} {name or '?'})"
            if not isinstance(kind, str) or not isinstance(api_version, str):
                raise ValueError(f"{where}: apiVersion and kind are required")
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}: metadata.name is required")
            rt = self.registry.by_kind(api_version, kind)
            if rt is None:
                raise ValueError(f"{where}: unknown kind {api_version}/{kind}")
            obj = orjson.loads(orjson.dumps(doc))
            if rt.namespaced:
                ns = obj["metadata"].setdefault("namespace", "default")
                if self.store.get("/namespaces", "", ns) is None:
                    self._create_namespace(ns)
            else:
                obj["metadata"].pop("namespace", None)
            try:
                self.create(rt, obj)
            except ApiError as e:
                raise ValueError(f"{where}: {e.message}") from None
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                raise ValueError(f"{where}: invalid: {e}") from None
        self._changed()

    def register_node(self, *, name: str, labels: dict[str, str], cpu: int, memory_mb: int,
                      pods: int = 110, addresses: list[str], ready: bool = True,
                      taints: list[dict[str, str]] | None = None) -> None:
        now = self.store.now()
        node_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", **labels}
        addr = [{"type": "InternalIP" if i == 0 else "ExternalIP", "address": a}
                for i, a in enumerate(addresses)]
        addr.append({"type": "Hostname", "address": name})
        capacity = {"cpu": str(cpu), "memory": f"{memory_mb}Mi", "pods": str(pods),
                    "ephemeral-storage": "50Gi"}
        all_taints = [dict(t) for t in taints or []]
        if not ready:
            all_taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": node_labels, "annotations": {}},
            "spec": {"taints": all_taints} if all_taints else {},
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "conditions": [_condition("Ready", ready, "KubeletReady" if ready
                                          else "KubeletNotReady", now)],
                "addresses": addr,
                "nodeInfo": {"kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0",
                             "operatingSystem": "linux", "architecture": "amd64",
                             "containerRuntimeVersion": "containerd://1.7.0",
                             "osImage": "Debian GNU/Linux 12 (simulated)",
                             "kernelVersion": "6.1.0"},
            },
        }
        self.create(self.registry_type("", "nodes"), node)

    def remove_node(self, name: str) -> None:
        """The node is gone (its VM deleted): it and its pods vanish; controllers react."""
        with contextlib.suppress(ApiError):
            self.delete(self.registry_type("", "nodes"), "", name)

    def set_node_ready(self, name: str, ready: bool) -> None:
        node = self.store.get("/nodes", "", name)
        if node is None:
            raise KeyError(name)
        node["status"]["conditions"] = [
            _condition("Ready", ready, "KubeletReady" if ready else "KubeletNotReady",
                       self.store.now())]
        if ready:
            self._dead.discard(name)
        taints = [t for t in node.get("spec", {}).get("taints") or []
                  if t.get("key") != NOT_READY_TAINT]
        if not ready:
            taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
        node.setdefault("spec", {})["taints"] = taints
        self.store.touch("/nodes", node)
        self._all_ds_dirty = True
        self._changed()

    def set_node_unreachable(self, name: str) -> None:
        """The kubelet stopped reporting: Ready=Unknown (reason NodeStatusUnknown) and the
        `node.kubernetes.io/unreachable` NoSchedule taint, as the node lifecycle controller
        sets them; its pods stay bound and keep their last status (no taint manager here)."""
        node = self.store.get("/nodes", "", name)
        if node is None:
            raise KeyError(name)
        now = self.store.now()
        node["status"]["conditions"] = [
            {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
             "message": "Kubelet stopped posting node status.", "lastTransitionTime": now}
        ]
        taints = [t for t in node.get("spec", {}).get("taints") or []
                  if t.get("key") not in (NOT_READY_TAINT, UNREACHABLE_TAINT)]
        taints.append({"key": UNREACHABLE_TAINT, "effect": "NoSchedule"})
        node.setdefault("spec", {})["taints"] = taints
        self._dead.add(name)
        self.store.touch("/nodes", node)
        self._all_ds_dirty = True
        self._changed()

    def block_evictions(self, namespace: str, label_selector: str | dict[str, Any]) -> None:
        """Evictions of matching pods answer 429 for good (a stuck PDB, a finalizer...)."""
        sel = (parse_label_selector(label_selector) if isinstance(label_selector, str)
               else selector_from_object(label_selector))
        self._blocks.append(EvictionBlock(namespace, sel))

    async def start(self) -> None:
        if self.started:
            return
        self.reconcile()
        # A big loaded world is long-lived and acyclic: keep the cyclic collector from
        # rescanning it (with 150,000 pods a full collection costs seconds, again and again).
        if len(self.store.collection("/pods").items) >= FREEZE_AT_PODS:
            gc.freeze()
        self.started = True
        self._task = asyncio.create_task(self._run(), name="kube-world-controllers")

    async def stop(self) -> None:
        self.started = False
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        self.store.close_watchers()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # queries for tests and the composed simulator

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        slot = self._slots.get(node)
        if slot is None:
            return []
        return [o for k in sorted(slot.pods_on)
                if (o := self.store.get("/pods", *k)) is not None]

    def node(self, name: str) -> dict[str, Any] | None:
        return self.store.get("/nodes", "", name)

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [e.obj for e in self.store.entries("/pods", namespace)]

    # ----- generic object operations (the HTTP API calls these) ---------------------------

    def registry_type(self, group: str, plural: str) -> ResourceType:
        for version in ("v1", "v1alpha1", "v1beta1"):
            rt = self.registry.get(group, version, plural)
            if rt is not None:
                return rt
        raise KeyError(f"{group}/{plural}")

    def create(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.namespaced:
            ns = meta.setdefault("namespace", "default")
            if self.store.get("/namespaces", "", ns) is None:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                               {"name": ns, "kind": "namespaces"})
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise ApiError(422, "Invalid", f"{rt.kind}: metadata.name is required")
            meta["name"] = self._free_name(rt, meta.get("namespace", ""), prefix)
        hook = _CREATE_PREP.get(rt.key)
        if hook is not None:
            hook(self, obj)
        self.store.create(rt.key, rt.kind, obj)
        self._after_write(rt, obj, None)
        return obj

    def replace(self, rt: ResourceType, obj: dict[str, Any], *, check_rv: bool = True
                ) -> dict[str, Any]:
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        old = self.store.get(rt.key, meta.get("namespace", ""), meta.get("name", ""))
        old_labels = dict((old or {}).get("metadata", {}).get("labels") or {})
        if rt.key == "/pods" and old is not None:
            # a pod's binding is not changed by an update
            obj.setdefault("spec", {})["nodeName"] = old.get("spec", {}).get("nodeName")
            if obj["spec"]["nodeName"] is None:
                del obj["spec"]["nodeName"]
        self.store.replace(rt.key, rt.kind, obj, check_rv=check_rv)
        self._after_write(rt, obj, old_labels)
        return obj

    def delete(self, rt: ResourceType, ns: str, name: str,
               grace_s: float | None = None) -> dict[str, Any]:
        obj = self.store.get(rt.key, ns, name)
        if obj is None:
            raise not_found(rt.plural, name)
        if rt.key == "/pods":
            return self._delete_pod(ns, name, grace_s)
        if rt.key == "/namespaces":
            if name in SYSTEM_NAMESPACES:
                raise ApiError(403, "Forbidden", f'namespace "{name}" is protected')
            for coll_rt in list(self._all_types()):
                if coll_rt.namespaced:
                    for e in list(self.store.entries(coll_rt.key, name)):
                        self.delete(coll_rt, name, e.obj["metadata"]["name"], 0)
        removed = self.store.delete(rt.key, rt.kind, ns, name)
        self._after_delete(rt, removed)
        return removed

    def _all_types(self) -> Iterable[ResourceType]:
        seen: set[str] = set()
        for g, versions in [("", ["v1"]), *self.registry.group_versions().items()]:
            for v in versions:
                doc = self.registry.resource_list_doc(g, v) or {"resources": []}
                for r in doc["resources"]:
                    if "/" in r["name"]:
                        continue
                    rt = self.registry.get(g, v, r["name"])
                    if rt is not None and rt.key not in seen:
                        seen.add(rt.key)
                        yield rt

    # ----- eviction ------------------------------------------------------------------------

    def evict(self, ns: str, name: str, grace_s: float | None = None) -> None:
        pod = self.store.get("/pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        if "deletionTimestamp" in pod["metadata"]:
            return
        labels = pod["metadata"].get("labels") or {}
        for b in self._blocks:
            if b.namespace == ns and b.selector.matches(labels):
                raise _too_many("The disruption budget is blocked for good (simulated fault)")
        phase = pod.get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed", "Pending"):
            self._delete_pod(ns, name, grace_s)
            return
        pdbs = [p for p in self.store.entries("policy/poddisruptionbudgets", ns)
                if _pdb_selector(p.obj).matches(labels)]
        if len(pdbs) > 1:
            raise ApiError(500, "InternalError",
                           "This pod has more than one PodDisruptionBudget, which the eviction "
                           "subresource does not support.")
        if pdbs:
            pdb = pdbs[0].obj
            self._refresh_pdb(pdb)
            st = pdb["status"]
            if not _pod_ready(pod) and st["currentHealthy"] >= st["desiredHealthy"]:
                self._delete_pod(ns, name, grace_s)
                return
            if st["disruptionsAllowed"] <= 0:
                raise _too_many(
                    f"The disruption budget {pdb['metadata']['name']} needs "
                    f"{st['desiredHealthy']} healthy pods and has {st['currentHealthy']} "
                    "currently", pdb_name=pdb["metadata"]["name"])
            st["disruptionsAllowed"] -= 1
            st.setdefault("disruptedPods", {})[name] = self.store.now()
            self.store.touch("policy/poddisruptionbudgets", pdb)
        self._delete_pod(ns, name, grace_s)

    # ----- controllers ---------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # A timer that sets the event, not a timeout: cancelling a wait that has just
            # completed can leave the task cancelled (Python 3.11).
            tick = loop.call_later(self.clock.real_delay(TICK_S), self._kick.set)
            await self._kick.wait()
            tick.cancel()
            self._kick.clear()
            await asyncio.sleep(0)
            try:
                self.reconcile()
            except Exception:
                _log.exception("simulated controllers: reconcile failed; continuing")

    def _changed(self) -> None:
        self._kick.set()

    def reconcile(self) -> None:
        """One pass of every controller, over what changed since the last pass."""
        # The cyclic collector would rescan the whole (large, acyclic) world many times
        # while a pass creates thousands of pods; pause it for the pass.
        was = gc.isenabled()
        gc.disable()
        try:
            self._reconcile()
        finally:
            self._nofit.clear()
            if was:
                gc.enable()

    def _reconcile(self) -> None:
        if self._all_ds_dirty:
            self._all_ds_dirty = False
            for e in self.store.entries("apps/daemonsets"):
                m = e.obj["metadata"]
                self._dirty_owners.add(("apps/daemonsets", m["namespace"], m["name"]))
        for _ in range(3):  # deployments feed replicasets feed pods
            dirty, self._dirty_owners = sorted(self._dirty_owners), set()
            for coll, ns, name in dirty:
                obj = self.store.get(coll, ns, name)
                if obj is None:
                    continue
                if coll == "apps/deployments":
                    self._sync_deployment(obj)
                elif coll == "apps/replicasets":
                    self._sync_replicaset(obj)
                elif coll == "apps/daemonsets":
                    self._sync_daemonset(obj)
            if not self._dirty_owners:
                break
        self._schedule()
        dirty_ns, self._dirty_pdb_ns = sorted(self._dirty_pdb_ns), set()
        for ns in dirty_ns:
            for e in list(self.store.entries("policy/poddisruptionbudgets", ns)):
                if self._refresh_pdb(e.obj):
                    self.store.touch("policy/poddisruptionbudgets", e.obj)

    def _sync_deployment(self, dep: dict[str, Any]) -> None:
        meta = dep["metadata"]
        ns = meta["namespace"]
        spec = dep.get("spec") or {}
        template = spec.get("template") or {}
        h = hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).hexdigest()
        pth = "".join(NAME_ALPHABET[int(h[i:i + 2], 16) % len(NAME_ALPHABET)]
                      for i in range(0, 20, 2))
        rs_name = f"{meta['name']}-{pth}"
        replicas = int(spec.get("replicas", 1))
        rs_type = self.registry_type("apps", "replicasets")
        for e in list(self.store.entries("apps/replicasets", ns)):
            ref = _controller(e.obj)
            if ref and ref.get("uid") == meta["uid"] and e.obj["metadata"]["name"] != rs_name:
                self.delete(rs_type, ns, e.obj["metadata"]["name"])  # old template: replace
        rs = self.store.get("apps/replicasets", ns, rs_name)
        if rs is None:
            tpl = orjson.loads(orjson.dumps(template))
            tpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pth
            sel = orjson.loads(orjson.dumps(spec.get("selector") or {}))
            sel.setdefault("matchLabels", {})["pod-template-hash"] = pth
            rs = {"metadata": {"name": rs_name, "namespace": ns,
                               "labels": dict(tpl["metadata"]["labels"]),
                               "ownerReferences": [_owner_ref(dep)]},
                  "spec": {"replicas": replicas, "selector": sel, "template": tpl},
                  "status": {"replicas": 0}}
            self.create(rs_type, rs)
        elif rs["spec"].get("replicas") != replicas:
            rs["spec"]["replicas"] = replicas
            self.store.touch("apps/replicasets", rs)
            self._dirty_owners.add(("apps/replicasets", ns, rs_name))
        ready = sum(1 for k in self._owner_pods.get(rs["metadata"]["uid"], ())
                    if (p := self.store.get("/pods", *k)) is not None and _pod_ready(p))
        status = {"observedGeneration": meta.get("generation", 1), "replicas": replicas,
                  "updatedReplicas": replicas, "readyReplicas": ready,
                  "availableReplicas": ready, "unavailableReplicas": max(0, replicas - ready)}
        if dep.get("status") != status:
            dep["status"] = status
            self.store.touch("apps/deployments", dep)

    def _sync_replicaset(self, rs: dict[str, Any]) -> None:
        meta = rs["metadata"]
        replicas = int(rs["spec"].get("replicas", 1))
        keys = self._owner_pods.get(meta["uid"], set())
        # Active pods only, as the ReplicaSet controller counts them: a pod that is being
        # deleted or has finished (Succeeded, Failed, evicted by its kubelet) is replaced.
        live = sorted(k for k in keys if _active(self.store.get("/pods", *k)))
        for _ in range(replicas - len(live)):
            self._new_pod(rs, f"{meta['name']}-{self._suffix()}", None)
        for k in live[replicas:] if len(live) > replicas else []:
            self._delete_pod(k[0], k[1], None)
        ready = sum(1 for k in keys if (p := self.store.get("/pods", *k)) and _pod_ready(p))
        status = {"replicas": min(len(live), replicas) if live else 0, "readyReplicas": ready,
                  "availableReplicas": ready, "fullyLabeledReplicas": len(live),
                  "observedGeneration": meta.get("generation", 1)}
        if rs.get("status") != status:
            rs["status"] = status
            self.store.touch("apps/replicasets", rs)
        ref = _controller(rs)
        if ref and ref.get("kind") == "Deployment":
            self._dirty_owners.add(("apps/deployments", meta["namespace"], ref["name"]))

    def _sync_daemonset(self, ds: dict[str, Any]) -> None:
        meta = ds["metadata"]
        spec = ds["spec"]["template"].get("spec") or {}
        have: dict[str, Key] = {}
        for k in self._owner_pods.get(meta["uid"], set()):
            p = self.store.get("/pods", *k)
            if p is not None and "deletionTimestamp" not in p["metadata"]:
                have[p["spec"].get("nodeName", "")] = k
        tolerations = [*(spec.get("tolerations") or []), *_DS_TOLERATIONS]
        want = [n for n in self._order()
                if (node := self.store.get("/nodes", "", n)) is not None
                and taints_tolerated(node, {"tolerations": tolerations})
                and node_affinity_ok(node["metadata"].get("labels") or {}, spec)]
        for n in want:
            if n not in have:
                self._new_pod(ds, f"{meta['name']}-{self._suffix()}", n)
        for n, k in have.items():
            if n not in want:
                self._delete_pod(k[0], k[1], None)
        ready = sum(1 for k in self._owner_pods.get(meta["uid"], set())
                    if (p := self.store.get("/pods", *k)) and _pod_ready(p))
        status = {"desiredNumberScheduled": len(want), "currentNumberScheduled": len(want),
                  "numberReady": ready, "numberAvailable": ready, "numberMisscheduled": 0,
                  "updatedNumberScheduled": len(want),
                  "observedGeneration": meta.get("generation", 1)}
        if ds.get("status") != status:
            ds["status"] = status
            self.store.touch("apps/daemonsets", ds)

    def _new_pod(self, owner: dict[str, Any], name: str, node: str | None) -> None:
        ometa = owner["metadata"]
        ns = ometa["namespace"]
        cached = self._template_cache.get(ometa["uid"])
        gen = str(ometa.get("generation", 1))
        if cached is None or cached[0] != gen:
            tpl = owner["spec"].get("template") or {}
            spec = dict(tpl.get("spec") or {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            if owner["kind"] == "DaemonSet":
                spec["tolerations"] = [*(spec.get("tolerations") or []), *_DS_TOLERATIONS]
            meta: dict[str, Any] = {"labels": (tpl.get("metadata") or {}).get("labels") or {},
                                    "ownerReferences": [_owner_ref(owner)], "namespace": ns}
            annotations = (tpl.get("metadata") or {}).get("annotations")
            if annotations:
                meta["annotations"] = annotations
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
                    "status": {"phase": "Pending", "qosClass": "Burstable"}}
            raw = orjson.dumps(body)
            cached = (gen, raw, pod_requests(spec), orjson.loads(raw))
            self._template_cache[ometa["uid"]] = cached
        if self.store.get("/pods", ns, name) is not None:
            name = self._free_name(self.registry_type("", "pods"), ns, f"{name.rsplit('-', 1)[0]}-")
        if not self.started and node is None and ometa["uid"] not in self._nofit:
            # Before start the world is "already running": bind and start in one write.
            key = (ns, name)
            self._pod_req[key] = cached[2]
            node = self._find_node(cached[3], key, self._order()) if self._order() else None
            if node is None:
                self._nofit.add(ometa["uid"])
        if node is not None and not self.started:
            pod = self._running_copy(owner, cached[1], node)
        else:
            pod = orjson.loads(cached[1])
            if node is not None:
                pod["spec"]["nodeName"] = node
        pod["metadata"]["name"] = name
        self.store.create("/pods", "Pod", pod)
        self._index_pod(pod, cached[2], by_owner=True)

    def _schedule(self) -> None:
        if not self._pending:
            return
        failed: set[str] = set()
        order = self._order()
        for key in list(self._pending):
            pod = self.store.get("/pods", *key)
            if pod is None or pod["spec"].get("nodeName"):
                self._pending.pop(key, None)
                continue
            ref = _controller(pod)
            sig = ref["uid"] if ref else f"{key[0]}/{key[1]}"
            if sig in failed or not order:
                continue
            node = self._find_node(pod, key, order)
            if node is None:
                failed.add(sig)
                continue
            self._pending.pop(key, None)
            self._bind(pod, key, node)

    def _find_node(self, pod: dict[str, Any], key: Key, order: list[str]) -> str | None:
        cpu, mem = self._pod_req[key]
        spec = pod["spec"]
        anti = anti_affinity_terms(pod)
        spread = spread_constraints(pod)
        counts = self._spread_counts(pod, spread) if spread else []
        n = len(order)
        for i in range(n):
            name = order[(self._cursor + i) % n]
            slot = self._slots[name]
            if (slot.used_cpu + cpu > slot.cpu or slot.used_mem + mem > slot.mem
                    or len(slot.pods_on) + 1 > slot.pods):
                continue
            node = self.store.get("/nodes", "", name)
            if node is None or (node.get("spec") or {}).get("unschedulable"):
                continue
            if not taints_tolerated(node, spec):
                continue
            if not node_affinity_ok(node["metadata"].get("labels") or {}, spec):
                continue
            if anti and self._anti_conflict(anti, slot):
                continue
            if spread and not self._spread_allows(pod, spread, counts, node):
                continue
            self._cursor = (self._cursor + i + 1) % n
            return name
        return None

    def _spread_counts(self, pod: dict[str, Any], spread: list[Spread]
                       ) -> list[dict[str, int]]:
        """Per constraint, matching pods per domain over the nodes that carry the key and
        pass the constraint's node inclusion policies (by default: the pod's node selection;
        taints do not matter)."""
        ns = pod["metadata"].get("namespace", "default")
        out: list[dict[str, int]] = [{} for _ in spread]
        for name, slot in self._slots.items():
            node = self.store.get("/nodes", "", name)
            if node is None:
                continue
            labels = node["metadata"].get("labels") or {}
            for c, rule in enumerate(spread):
                if rule.key not in labels or not rule.counts(node, pod["spec"]):
                    continue
                d = labels[rule.key]
                hits = 0
                for k in slot.pods_on:
                    other = self.store.get("/pods", *k)
                    if other is not None and k[0] == ns and rule.selector.matches(
                            other["metadata"].get("labels") or {}):
                        hits += 1
                out[c][d] = out[c].get(d, 0) + hits
        return out

    @staticmethod
    def _spread_allows(pod: dict[str, Any], spread: list[Spread],
                       counts: list[dict[str, int]], node: dict[str, Any]) -> bool:
        """Skew after placing: the domain's matching pods (plus the pod when it matches)
        less the emptiest domain's, or less 0 while fewer domains than minDomains exist."""
        labels = node["metadata"].get("labels") or {}
        own = pod["metadata"].get("labels") or {}
        for rule, per in zip(spread, counts, strict=True):
            if rule.key not in labels:
                return False
            here = per.get(labels[rule.key], 0) + (1 if rule.selector.matches(own) else 0)
            low = min(per.values(), default=0) if len(per) >= rule.min_domains else 0
            if here - low > rule.max_skew:
                return False
        return True

    def _anti_conflict(self, terms: list[tuple[Selector, frozenset[str]]], slot: NodeSlot
                       ) -> bool:
        for k in slot.pods_on:
            other = self.store.get("/pods", *k)
            if other is None:
                continue
            labels = other["metadata"].get("labels") or {}
            for sel, namespaces in terms:
                if k[0] in namespaces and sel.matches(labels):
                    return True
        return False

    def _bind(self, pod: dict[str, Any], key: Key, node: str) -> None:
        pod["spec"]["nodeName"] = node
        pod["status"]["conditions"] = [_condition("PodScheduled", True, "", self.store.now())]
        self._place(key, node)
        self.store.touch("/pods", pod)
        self._after_bind(pod, key)

    def _after_bind(self, pod: dict[str, Any], key: Key) -> None:
        if self.started:
            uid = pod["metadata"]["uid"]
            self._later(self.pod_start_delay_s, lambda: self._start_pod(key, uid))
        else:
            self._start_pod(key, pod["metadata"]["uid"])

    def _start_pod(self, key: Key, uid: str) -> None:
        pod = self.store.get("/pods", *key)
        if pod is None or pod["metadata"]["uid"] != uid or "deletionTimestamp" in pod["metadata"]:
            return
        self._fill_running(pod)
        self.store.touch("/pods", pod)
        self._pod_changed(pod)

    def _running_copy(self, owner: dict[str, Any], pending: bytes, node: str
                      ) -> dict[str, Any]:
        """A started pod of `owner` on `node`, from a per-owner template (load is hot)."""
        now = self.store.now()
        uid = owner["metadata"]["uid"]
        cached = self._running_cache.get(uid)
        if cached is None or cached[0] != now or cached[1] != pending:
            pod = orjson.loads(pending)
            pod["spec"]["nodeName"] = ""
            self._fill_running(pod)
            cached = (now, pending, orjson.dumps(pod))
            self._running_cache[uid] = cached
        pod = orjson.loads(cached[2])
        pod["spec"]["nodeName"] = node
        self._ip += 1
        st = pod["status"]
        st["hostIP"] = self._host_ip(pod)
        st["podIP"] = f"10.{244 + (self._ip >> 16) % 8}.{(self._ip >> 8) & 255}.{self._ip & 255}"
        return pod  # type: ignore[no-any-return]

    def _fill_running(self, pod: dict[str, Any]) -> None:
        now = self.store.now()
        self._ip += 1
        pod["status"].update({
            "phase": "Running", "startTime": now, "hostIP": self._host_ip(pod),
            "podIP": f"10.{244 + (self._ip >> 16) % 8}.{(self._ip >> 8) & 255}.{self._ip & 255}",
            "conditions": [_condition(t, True, "", now) for t in
                           ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [
                {"name": c.get("name", "c"), "ready": True, "restartCount": 0, "started": True,
                 "image": c.get("image", ""), "imageID": "",
                 "state": {"running": {"startedAt": now}}}
                for c in pod["spec"].get("containers") or []],
        })

    def _host_ip(self, pod: dict[str, Any]) -> str:
        slot = self._slots.get(pod["spec"].get("nodeName", ""))
        return slot.ip if slot is not None else ""

    def _delete_pod(self, ns: str, name: str, grace_s: float | None) -> dict[str, Any]:
        pod = self.store.get("/pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        meta = pod["metadata"]
        grace = grace_s if grace_s is not None else pod["spec"].get(
            "terminationGracePeriodSeconds", 30)
        if not pod["spec"].get("nodeName") or grace == 0 or not self.started:
            return self._remove_pod(ns, name)
        if "deletionTimestamp" not in meta:
            meta["deletionTimestamp"] = self.store.now()
            meta["deletionGracePeriodSeconds"] = int(grace)
            self.store.touch("/pods", pod)
            self._pod_changed(pod)
            uid = meta["uid"]
            if pod["spec"]["nodeName"] in self._dead:
                return pod  # no kubelet to finish it: Terminating until forced or the Node goes
            self._later(min(float(grace), POD_STOP_S), lambda: self._finish_delete(ns, name, uid))
        return pod

    def _finish_delete(self, ns: str, name: str, uid: str) -> None:
        pod = self.store.get("/pods", ns, name)
        if pod is not None and pod["metadata"]["uid"] == uid:
            self._remove_pod(ns, name)

    def _remove_pod(self, ns: str, name: str) -> dict[str, Any]:
        pod = self.store.delete("/pods", "Pod", ns, name)
        self._unindex_pod(pod)
        self._pod_changed(pod)
        return pod

    # ----- indexes and write hooks --------------------------------------------------------

    def _order(self) -> list[str]:
        if self._node_order is None:
            self._node_order = sorted(self._slots)
        return self._node_order

    def _place(self, key: Key, node: str) -> None:
        slot = self._slots.get(node)
        if slot is not None and key not in slot.pods_on:
            cpu, mem = self._pod_req.get(key, (0, 0))
            slot.used_cpu += cpu
            slot.used_mem += mem
            slot.pods_on.add(key)

    def _index_pod(self, pod: dict[str, Any], req: tuple[int, int] | None = None,
                   *, by_owner: bool = False) -> None:
        """Index a new pod; `by_owner` when its controller made it (and needs no wake-up)."""
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        self._pod_req[key] = req if req is not None else pod_requests(pod.get("spec") or {})
        self._ns_pods.setdefault(key[0], set()).add(key)
        for k, v in (meta.get("labels") or {}).items():
            self._label_index.setdefault((key[0], k, v), set()).add(key)
        ref = _controller(pod)
        if ref is not None:
            self._owner_pods.setdefault(ref["uid"], set()).add(key)
        node = pod["spec"].get("nodeName")
        if node:
            self._place(key, node)
            if pod.get("status", {}).get("phase", "Pending") == "Pending":
                self._after_bind(pod, key)
        else:
            self._pending[key] = None
        if by_owner:
            self._dirty_pdb_ns.add(key[0])
            self._changed()
        else:
            self._pod_changed(pod)

    def _unindex_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        cpu, mem = self._pod_req.pop(key, (0, 0))
        self._ns_pods.get(key[0], set()).discard(key)
        for k, v in (meta.get("labels") or {}).items():
            self._label_index.get((key[0], k, v), set()).discard(key)
        ref = _controller(pod)
        if ref is not None:
            self._owner_pods.get(ref["uid"], set()).discard(key)
        self._pending.pop(key, None)
        slot = self._slots.get(pod["spec"].get("nodeName", ""))
        if slot is not None and key in slot.pods_on:
            slot.pods_on.discard(key)
            slot.used_cpu -= cpu
            slot.used_mem -= mem

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self._dirty_pdb_ns.add(meta["namespace"])
        ref = _controller(pod)
        if ref is not None:
            coll = {"ReplicaSet": "apps/replicasets", "DaemonSet": "apps/daemonsets"}.get(
                ref.get("kind", ""))
            if coll:
                self._dirty_owners.add((coll, meta["namespace"], ref["name"]))
        self._changed()

    def _after_write(self, rt: ResourceType, obj: dict[str, Any],
                     old_labels: dict[str, str] | None) -> None:
        key = rt.key
        meta = obj["metadata"]
        if key == "/pods":
            if old_labels is None:
                self._index_pod(obj)
            else:
                k = (meta["namespace"], meta["name"])
                for lk, lv in old_labels.items():
                    self._label_index.get((k[0], lk, lv), set()).discard(k)
                for lk, lv in (meta.get("labels") or {}).items():
                    self._label_index.setdefault((k[0], lk, lv), set()).add(k)
                self._pod_changed(obj)
        elif key == "/nodes":
            self._node_written(obj, created=old_labels is None)
        elif key in ("apps/deployments", "apps/replicasets", "apps/daemonsets"):
            self._dirty_owners.add((key, meta["namespace"], meta["name"]))
        elif key == "policy/poddisruptionbudgets":
            self._dirty_pdb_ns.add(meta["namespace"])
        elif key == "apiextensions.k8s.io/customresourcedefinitions":
            self._register_crd(obj)
        self._changed()

    def _node_written(self, node: dict[str, Any], *, created: bool) -> None:
        from simulator.kube.quantities import cpu_millis, mem_bytes

        name = node["metadata"]["name"]
        alloc = node.get("status", {}).get("allocatable") or {}
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = NodeSlot(0, 0, 0)
            self._node_order = None
        slot.cpu = cpu_millis(alloc.get("cpu", 0))
        slot.mem = mem_bytes(alloc.get("memory", 0))
        slot.pods = int(alloc.get("pods", 110))
        slot.ip = next((str(a["address"]) for a in node.get("status", {}).get("addresses") or []
                        if a.get("type") == "InternalIP"), "")
        spec = node.setdefault("spec", {})
        taints = spec.get("taints") or []
        has = any(t.get("key") == UNSCHEDULABLE_TAINT for t in taints)
        if bool(spec.get("unschedulable")) != has:
            if has:
                spec["taints"] = [t for t in taints if t.get("key") != UNSCHEDULABLE_TAINT]
            else:
                spec["taints"] = [*taints, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule",
                                            "timeAdded": self.store.now()}]
            if not spec["taints"]:
                del spec["taints"]
            self.store.touch("/nodes", node)
        self._all_ds_dirty = True

    def _after_delete(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        key, meta = rt.key, obj["metadata"]
        if key == "/nodes":
            name = meta["name"]
            self._dead.discard(name)
            slot = self._slots.pop(name, None)
            self._node_order = None
            self._cursor = 0
            for k in sorted(slot.pods_on if slot else ()):
                if self.store.get("/pods", *k) is not None:
                    self._remove_pod(*k)
            self._all_ds_dirty = True
        elif key in ("apps/deployments", "apps/replicasets", "apps/daemonsets"):
            self._template_cache.pop(meta["uid"], None)
            for coll in ("apps/replicasets", "/pods"):
                child_rt = self.registry_type(*coll.split("/"))
                for e in list(self.store.entries(coll, meta["namespace"])):
                    ref = _controller(e.obj)
                    if ref and ref.get("uid") == meta["uid"]:
                        with contextlib.suppress(ApiError):
                            self.delete(child_rt, meta["namespace"], e.obj["metadata"]["name"])
            self._owner_pods.pop(meta["uid"], None)
        elif key == "apiextensions.k8s.io/customresourcedefinitions":
            names = obj.get("spec", {}).get("names", {})
            self.registry.remove_group_kind(obj["spec"]["group"], names.get("plural", ""))
        self._changed()

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
        if not (group and plural and kind and spec.get("versions")):
            raise ApiError(422, "Invalid", "CustomResourceDefinition needs spec.group, "
                           "spec.names.plural, spec.names.kind and spec.versions")
        for v in spec["versions"]:
            if v.get("served", True):
                self.registry.add(ResourceType(
                    group, v["name"], plural, kind, spec.get("scope") == "Namespaced",
                    tuple(names.get("shortNames") or ()), ("status",),
                    tuple(names.get("categories") or ())))
        crd["status"] = {"acceptedNames": names, "storedVersions": [
            v["name"] for v in spec["versions"] if v.get("storage")],
            "conditions": [_condition("Established", True, "InitialNamesAccepted",
                                      self.store.now())]}

    def _refresh_pdb(self, pdb: dict[str, Any]) -> bool:
        """Recompute a PDB's status from the pods; True when it changed."""
        ns = pdb["metadata"]["namespace"]
        spec = pdb.get("spec") or {}
        sel = _pdb_selector(pdb)
        pods = [p for k in self._candidates(ns, sel)
                if (p := self.store.get("/pods", *k)) is not None
                and sel.matches(p["metadata"].get("labels") or {})]
        healthy = sum(1 for p in pods if _pod_ready(p) and "deletionTimestamp" not in
                      p["metadata"])
        expected, owners = 0, set()
        for p in pods:
            ref = _controller(p)
            if ref is None:
                expected += 1
            elif ref["uid"] not in owners:
                owners.add(ref["uid"])
                expected += self._scale_of(ns, ref)
        desired = expected
        if "minAvailable" in spec:
            desired = _scaled(spec["minAvailable"], expected, up=True)
        elif "maxUnavailable" in spec:
            desired = max(0, expected - _scaled(spec["maxUnavailable"], expected, up=True))
        allowed = max(0, healthy - desired)
        old = pdb.get("status") or {}
        status = {"observedGeneration": pdb["metadata"].get("generation", 1),
                  "disruptionsAllowed": allowed, "currentHealthy": healthy,
                  "desiredHealthy": desired, "expectedPods": expected,
                  "conditions": [_condition(
                      "DisruptionAllowed", allowed > 0,
                      "SufficientPods" if allowed > 0 else "InsufficientPods", "")]}
        prev = old.get("conditions") or []
        if prev and prev[0].get("status") == status["conditions"][0]["status"]:
            status["conditions"] = prev
        else:
            status["conditions"][0]["lastTransitionTime"] = self.store.now()
        if {k: v for k, v in old.items() if k != "disruptedPods"} == status:
            return False
        pdb["status"] = status
        return True

    def _candidates(self, ns: str, sel: Selector) -> Iterable[Key]:
        eq = sel.equalities()
        if not eq:
            return sorted(self._ns_pods.get(ns, ()))
        sets: list[set[Key]] = [self._label_index.get((ns, k, v), set()) for k, v in eq]
        smallest: set[Key] = min(sets, key=len)
        return sorted(smallest)

    def _scale_of(self, ns: str, ref: dict[str, Any]) -> int:
        kind = ref.get("kind")
        if kind == "ReplicaSet":
            rs = self.store.get("apps/replicasets", ns, ref["name"])
            return int((rs or {}).get("spec", {}).get("replicas", 0))
        if kind == "DaemonSet":
            ds = self.store.get("apps/daemonsets", ns, ref["name"])
            return int((ds or {}).get("status", {}).get("desiredNumberScheduled", 0))
        return len(self._owner_pods.get(ref["uid"], ()))

    # ----- small pieces ----------------------------------------------------------------------

    def _create_namespace(self, ns: str) -> None:
        self.store.create("/namespaces", "Namespace", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})

    def _free_name(self, rt: ResourceType, ns: str, prefix: str) -> str:
        """`prefix` plus a random suffix not taken yet in `ns`: drawn again on a collision
        (deterministic, from the seeded rng), as the API server retries generateName."""
        for _ in range(GENERATE_NAME_TRIES):
            name = prefix + self._suffix()
            if self.store.get(rt.key, ns, name) is None:
                return name
        raise ApiError(409, "AlreadyExists", f"{rt.kind}: no free name for generateName "
                       f"{prefix!r} after {GENERATE_NAME_TRIES} tries")

    def _suffix(self) -> str:
        bits = self.rng.getrandbits(40)
        return "".join(NAME_ALPHABET[(bits >> (8 * i)) % 27] for i in range(5))

    def _later(self, sim_s: float, fn: Callable[[], None]) -> None:
        holder: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._timers.discard(holder[0])
            fn()

        handle = self.clock.call_later(sim_s, fire)
        holder.append(handle)
        self._timers.add(handle)


_DS_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"},
]


def _prep_pdb(world: KubeWorld, obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    if "minAvailable" in spec and "maxUnavailable" in spec:
        raise ApiError(422, "Invalid", "minAvailable and maxUnavailable cannot be both set")
    selector_from_object(spec.get("selector"), "spec.selector")
    obj.setdefault("status", {"disruptionsAllowed": 0, "currentHealthy": 0,
                              "desiredHealthy": 0, "expectedPods": 0})


def _prep_workload(world: KubeWorld, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("template"), dict):
        raise ApiError(422, "Invalid", f"{obj['kind']}: spec.template is required")
    sel = selector_from_object(spec.get("selector"), "spec.selector")
    labels = (spec["template"].get("metadata") or {}).get("labels") or {}
    if not sel.matches(labels):
        raise ApiError(422, "Invalid", f"{obj['kind']}: spec.selector does not match the "
                       "template's labels")
    replicas = spec.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        # As the API server's schema validation answers it.
        raise ApiError(422, "Invalid", f"{obj['kind']}: spec.replicas: Invalid value: "
                       f"{replicas!r}: must be a whole number, zero or more")
    pod_requests(spec["template"].get("spec") or {})
    if not (spec["template"].get("spec") or {}).get("containers"):
        raise ApiError(422, "Invalid", f"{obj['kind']}: the pod template has no containers")


def _prep_pod(world: KubeWorld, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not spec.get("containers"):
        raise ApiError(422, "Invalid", "Pod: spec.containers is required")
    pod_requests(spec)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    obj.setdefault("status", {})
    obj["status"].setdefault("phase", "Pending")


_CREATE_PREP: dict[str, Callable[[KubeWorld, dict[str, Any]], None]] = {
    "policy/poddisruptionbudgets": _prep_pdb,
    "apps/deployments": _prep_workload,
    "apps/replicasets": _prep_workload,
    "apps/daemonsets": _prep_workload,
    "/pods": _prep_pod,
}


def _kind_of(doc: Any) -> str:
    return str(doc.get("kind", "")) if isinstance(doc, dict) else ""


def _active(pod: dict[str, Any] | None) -> bool:
    return (
        pod is not None
        and "deletionTimestamp" not in pod["metadata"]
        and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    )


def _controller(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def _owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def _pod_ready(pod: dict[str, Any]) -> bool:
    for c in pod.get("status", {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def _pdb_selector(pdb: dict[str, Any]) -> Selector:
    return selector_from_object((pdb.get("spec") or {}).get("selector"))


def _scaled(value: Any, total: int, *, up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        pct = int(value[:-1])
        exact = total * pct / 100
        return math.ceil(exact) if up else math.floor(exact)
    return int(value)


def _condition(type_: str, ok: bool, reason: str, now: str) -> dict[str, Any]:
    c: dict[str, Any] = {"type": type_, "status": "True" if ok else "False"}
    if reason:
        c["reason"] = reason
    if now:
        c["lastTransitionTime"] = now
        if type_ == "Ready" and reason.startswith("Kubelet"):
            c["lastHeartbeatTime"] = now
            c["message"] = ("kubelet is posting ready status" if ok
                            else "container runtime network not ready (simulated)")
    return c


def _too_many(message: str, pdb_name: str = "") -> ApiError:
    details: dict[str, Any] = {"causes": [{"reason": "DisruptionBudget", "message": message}]}
    return ApiError(429, "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    details)
