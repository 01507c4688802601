"""A second actor in the rehearsed world, moving while the daemon works (bench/crash.py
--adversary).

Every few simulated seconds it does one of:

- add a worker to the VPSie group the plans drain (`general`), as another autoscaler would,
  and delete its own workers again, before they join (a worker that has joined is deleted
  only while its Node runs no pod, with its Node);
- cordon a schedulable node that carries no mark of ours (a merge patch conditioned on the
  resourceVersion it read, so it never takes our cordon for its own), and uncordon its own
  cordons later, the same way;
- annotate a running pod `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`, or take
  that annotation off again.

It talks to Kubernetes over HTTP as another client (not through the daemon's proxy) and to
the VPSie account in-process, and it remembers what it did, so that the invariants can tell
its doing from the daemon's: `foreign` (the workers it added), `deleted` (those it deleted),
and `cleared` (its cordons found cleared, or its cordoned node deleted, by someone else: a
violation). `annotated_evictions` counts evictions of pods that carried its annotation when
the request arrived (a figure, not an invariant: the Eviction API does not read that
annotation, and the daemon re-reads pods before each batch and each cordon, not before each
eviction).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import yaml

from statemachine.world import CORDONED_BY_ANNOTATION, SAFE_TO_EVICT_ANNOTATION
from tests.crash.rehearsal import Rehearsal

GROUP = "general"


@dataclass(slots=True)
class Adversary:
    reh: Rehearsal
    rng: random.Random
    foreign: set[str] = field(default_factory=set)  # workers it added
    foreign_hosts: set[str] = field(default_factory=set)  # and their hostnames
    prices: dict[str, Decimal] = field(default_factory=dict)  # and their monthly prices
    deleted: set[str] = field(default_factory=set)  # workers it deleted
    cordons: set[str] = field(default_factory=set)  # nodes holding its cordon
    cleared: list[str] = field(default_factory=list)  # its cordons someone else undid
    annotated: set[tuple[str, str]] = field(default_factory=set)
    annotated_evictions: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    _task: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None
    _token: str = ""

    # -- HTTP, as another Kubernetes client ---------------------------------------------------

    async def _call(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[int, Any]:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": ctype}
        data = orjson.dumps(body) if body is not None else None
        async with self._session.request(
            method, self.reh.sim.kube_url + path, headers=headers, data=data
        ) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else None

    async def _nodes(self) -> list[dict[str, Any]]:
        _, body = await self._call("GET", "/api/v1/nodes")
        items: list[dict[str, Any]] = body.get("items", [])
        return items

    # -- the actions ---------------------------------------------------------------------------

    def deletions(
        self, log_plans: Any, before: set[str], seen: set[str], after: set[str]
    ) -> list[str]:
        """Workers that left the account and neither this actor deleted, nor a plan of the
        log added or planned to replace: deleted by the daemon without a plan (a violation)."""
        allowed: set[str] = set()
        for plan in log_plans.values():
            allowed |= {r.old_worker for r in plan.spec.replacements}
            allowed |= {r.new_worker for r in plan.replacements.values() if r.new_worker}
        gone = (before | seen | self.foreign) - after - self.deleted
        # Another actor's worker that joined the drained group is a member like any other: a
        # plan may replace it (then it is in `allowed`); anything else is a violation.
        return [
            f"worker {w}{' (another actor' + chr(39) + 's)' if w in self.foreign else ''} "
            "deleted, and no plan added or replaced it"
            for w in sorted(gone - allowed)
        ]

    def _add_worker(self) -> None:
        vpsie = self.reh.sim.vpsie
        group = next((g for g in vpsie.groups if g.name == GROUP), None)
        if group is None:
            return
        try:
            worker = vpsie.add_worker(vpsie.cluster.identifier, group.id)
        except Exception:  # the cluster is full: another actor is refused too
            self.actions["add refused"] += 1
            return
        self.foreign.add(worker.identifier)
        self.foreign_hosts.add(worker.hostname)
        size = vpsie.size(group.size_id)
        self.prices[worker.identifier] = size.prices[vpsie.cluster.datacenter].monthly
        self.actions["add worker"] += 1

    async def _delete_worker(self) -> None:
        vpsie = self.reh.sim.vpsie
        mine = [w for w in vpsie.workers if w.identifier in self.foreign]
        if not mine:
            return
        worker = self.rng.choice(mine)
        node_name = worker.hostname
        if worker.status != "provisioning":
            _, pods = await self._call(
                "GET", f"/api/v1/pods?fieldSelector=spec.nodeName={node_name}"
            )
            running = [
                p
                for p in pods.get("items", [])
                if not any(
                    o.get("kind") == "DaemonSet" for o in p["metadata"].get("ownerReferences") or []
                )
            ]
            if running:
                return
        vpsie.delete_worker(vpsie.cluster.identifier, worker.identifier)
        self.deleted.add(worker.identifier)
        self.cordons.discard(node_name)  # its own cordon goes with its own worker
        self.actions["delete worker"] += 1
        if worker.status != "provisioning":
            await self._call("DELETE", f"/api/v1/nodes/{node_name}")

    async def _cordon(self) -> None:
        nodes = [
            n
            for n in await self._nodes()
            if not n.get("spec", {}).get("unschedulable")
            and CORDONED_BY_ANNOTATION not in (n["metadata"].get("annotations") or {})
        ]
        if not nodes:
            return
        node = self.rng.choice(nodes)
        meta = node["metadata"]
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "spec": {"unschedulable": True},
        }
        code, _ = await self._call(
            "PATCH", f"/api/v1/nodes/{meta['name']}", patch, "application/merge-patch+json"
        )
        if code == 200:
            self.cordons.add(meta["name"])
            self.actions["cordon"] += 1

    async def _uncordon(self) -> None:
        if not self.cordons:
            return
        name = self.rng.choice(sorted(self.cordons))
        code, node = await self._call("GET", f"/api/v1/nodes/{name}")
        if code != 200:
            return  # judged by _watch_cordons
        meta = node["metadata"]
        if CORDONED_BY_ANNOTATION in (meta.get("annotations") or {}):
            self.cleared.append(f"node {name}: another actor's cordon taken over by a plan")
            self.cordons.discard(name)
            return
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "spec": {"unschedulable": None},
        }
        code, _ = await self._call(
            "PATCH", f"/api/v1/nodes/{name}", patch, "application/merge-patch+json"
        )
        if code == 200:
            self.cordons.discard(name)
            self.actions["uncordon"] += 1

    async def _watch_cordons(self) -> None:
        """Its cordons must still be there: only it undoes them."""
        nodes = {n["metadata"]["name"]: n for n in await self._nodes()}
        for name in sorted(self.cordons):
            node = nodes.get(name)
            if node is None and self._ours_to_delete(name):
                self.actions["cordoned node deleted with a plan's own worker"] += 1
            elif node is None:
                self.cleared.append(f"node {name}, cordoned by another actor, was deleted")
            elif not node.get("spec", {}).get("unschedulable"):
                self.cleared.append(f"node {name}: another actor's cordon was cleared")
            else:
                continue
            self.cordons.discard(name)

    def _ours_to_delete(self, name: str) -> bool:
        """A node that joined for a worker a plan added (neither there before nor this
        actor's): a rollback deletes that worker, and another actor's cordon goes with it."""
        return name not in self.reh.before.nodes and name not in self.foreign_hosts

    async def _annotate(self) -> None:
        if self.annotated and self.rng.random() < 0.5:
            ns, name = self.rng.choice(sorted(self.annotated))
            patch: dict[str, Any] = {"metadata": {"annotations": {SAFE_TO_EVICT_ANNOTATION: None}}}
            await self._call(
                "PATCH",
                f"/api/v1/namespaces/{ns}/pods/{name}",
                patch,
                "application/merge-patch+json",
            )
            self.annotated.discard((ns, name))
            self.actions["unannotate pod"] += 1
            return
        _, body = await self._call("GET", "/api/v1/namespaces/shop/pods")
        pods = [p for p in body.get("items", []) if p.get("spec", {}).get("nodeName")]
        if not pods:
            return
        meta = self.rng.choice(pods)["metadata"]
        patch = {"metadata": {"annotations": {SAFE_TO_EVICT_ANNOTATION: "false"}}}
        code, _ = await self._call(
            "PATCH",
            f"/api/v1/namespaces/shop/pods/{meta['name']}",
            patch,
            "application/merge-patch+json",
        )
        if code == 200:
            self.annotated.add(("shop", meta["name"]))
            self.actions["annotate pod"] += 1

    def on_request(self, method: str, path: str) -> None:
        """The daemon's Kubernetes requests, as the proxy sees them arrive."""
        if method == "POST" and path.endswith("/eviction"):
            parts = path.split("/")
            if (parts[4], parts[6]) in self.annotated:
                self.annotated_evictions += 1

    # -- running ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        clock = self.reh.sim.clock
        while True:
            await clock.sleep(self.rng.uniform(3, 15))
            with contextlib.suppress(aiohttp.ClientError, OSError, KeyError, ValueError):
                await self._watch_cordons()
                roll = self.rng.random()
                if roll < 0.2:
                    self._add_worker()
                elif roll < 0.45:
                    await self._delete_worker()
                elif roll < 0.6:
                    await self._cordon()
                elif roll < 0.8:
                    await self._uncordon()
                else:
                    await self._annotate()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        kubeconfig = yaml.safe_load(self.reh.sim.kubeconfig_path.read_text())
        self._token = kubeconfig["users"][0]["user"]["token"]
        self.reh.proxy.on_request = self.on_request
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop acting, judge its cordons once more, then undo them (and its annotations), so
        that whatever is left cordoned afterwards is the daemon's."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.reh.proxy.on_request = None
        try:
            await self._watch_cordons()
            while self.cordons:
                before = len(self.cordons)
                await self._uncordon()
                if len(self.cordons) == before:  # a 409: read again and retry
                    await asyncio.sleep(0)
            for ns, name in sorted(self.annotated):
                patch = {"metadata": {"annotations": {SAFE_TO_EVICT_ANNOTATION: None}}}
                await self._call(
                    "PATCH",
                    f"/api/v1/namespaces/{ns}/pods/{name}",
                    patch,
                    "application/merge-patch+json",
                )
            self.annotated.clear()
        finally:
            if self._session is not None:
                await self._session.close()
