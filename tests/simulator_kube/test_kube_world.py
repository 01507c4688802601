"""The simulated cluster's behaviour: scheduler, controllers, kubelet, budgets, determinism."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime
from typing import Any

import pytest

from simulator.clock import SimClock
from simulator.kube import KubeWorld
from simulator.kube.store import ApiError


def deployment(name: str, replicas: int, cpu: str = "500m", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "i",
                                                           "resources": {"requests": {
                                                               "cpu": cpu, "memory": "64Mi"}}}],
                                           **spec}}}}


def world_with(nodes: int, *, seed: int = 1, speed: float = 5000) -> KubeWorld:
    w = KubeWorld(SimClock(speed), random.Random(seed))
    for i in range(nodes):
        w.register_node(name=f"n{i}", labels={"zone": "z1" if i % 2 == 0 else "z2"}, cpu=2,
                        memory_mb=4096, addresses=[f"10.0.0.{i}"])
    return w


def placement(w: KubeWorld, app: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in w.pods("default")
            if p["metadata"]["labels"].get("app") == app}


async def settle(w: KubeWorld, cond: Any, rounds: int = 400) -> None:
    for _ in range(rounds):
        if cond():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the world did not settle")


async def test_requests_taints_selectors_and_anti_affinity_are_respected() -> None:
    w = world_with(4)
    node = w.node("n3")
    assert node is not None
    node["spec"]["taints"] = [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]
    w.store.touch("/nodes", node)
    w.load_manifests([
        deployment("big", 3, cpu="1500m"),  # one per node at most (2 cpu each)
        deployment("zoned", 2, cpu="10m", nodeSelector={"zone": "z2"}),
        deployment("spread", 3, cpu="10m", affinity={"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app": "spread"}}}]}}),
        deployment("tolerant", 1, cpu="10m", nodeSelector={"kubernetes.io/hostname": "n3"},
                   tolerations=[{"key": "dedicated", "operator": "Equal", "value": "db"}]),
    ])
    await w.start()
    try:
        big = placement(w, "big")
        assert len(set(big.values())) == 3 and "n3" not in big.values()
        assert set(placement(w, "zoned").values()) <= {"n1"}  # n3 (z2) is tainted
        spread = placement(w, "spread")
        assert len(set(spread.values())) == 3 and "n3" not in spread.values()
        assert set(placement(w, "tolerant").values()) == {"n3"}
    finally:
        await w.stop()


async def test_hard_topology_spread_is_respected_and_a_node_without_the_key_is_out() -> None:
    # Four nodes in zones z1/z2 and one without a zone label; six replicas spread over zones
    # with maxSkew 1 (DoNotSchedule): three per zone, none on the unlabelled node; a
    # ScheduleAnyway constraint does not hold anything back.
    w = world_with(4)
    w.register_node(name="bare", labels={}, cpu=2, memory_mb=4096, addresses=["10.0.0.9"])
    rule = {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "zonal"}}}
    soft = {"maxSkew": 1, "topologyKey": "rack", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "zonal"}}}
    w.load_manifests([deployment("zonal", 6, cpu="10m", topologySpreadConstraints=[rule, soft])])
    await w.start()
    try:
        where = placement(w, "zonal")
        assert all(where.values()) and "bare" not in where.values()
        zones = [int(node[1:]) % 2 for node in where.values()]
        assert zones.count(0) == 3 and zones.count(1) == 3
    finally:
        await w.stop()


HOSTNAME_SPREAD = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                   "labelSelector": {"matchLabels": {"app": "web"}}}


def tracked(name: str, replicas: int, rule: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A Deployment whose pods carry app=web and track=<name>: two of them share the spread
    selector app=web but not their pod-template-hash."""
    d = deployment(name, replicas, cpu="10m", topologySpreadConstraints=[rule], **spec)
    d["spec"]["selector"] = {"matchLabels": {"app": "web", "track": name}}
    d["spec"]["template"]["metadata"]["labels"] = {"app": "web", "track": name}
    return d


@pytest.mark.parametrize(("field", "value", "placed_without", "placed_with"), [
    # Two zones (n0, n2 in z1; n1, n3 in z2) against minDomains 3: the global minimum is 0,
    # so a zone takes at most maxSkew (1) pods: 2 of 6 run, not 6.
    ("minDomains", 3, 6, 2),
    # n3 is tainted and the pods do not tolerate it. Counted (Ignore, the default) it is an
    # empty domain forever, so each other node takes one pod; not counted (Honor), two each.
    ("nodeTaintsPolicy", "Honor", 3, 6),
    # The pods select zone z1 (n0, n2). Honor (the default) counts only those two nodes;
    # Ignore counts the empty n1 and n3 too, so n0 and n2 take one each.
    ("nodeAffinityPolicy", "Ignore", 6, 2),
])
async def test_spread_fields_change_what_the_scheduler_binds(
        field: str, value: Any, placed_without: int, placed_with: int) -> None:
    for extra, expected in (({}, placed_without), ({field: value}, placed_with)):
        w = world_with(4)
        rule: dict[str, Any] = {**HOSTNAME_SPREAD, **extra}
        spec: dict[str, Any] = {}
        if field == "minDomains":
            rule["topologyKey"] = "zone"
        elif field == "nodeTaintsPolicy":
            node = w.node("n3")
            assert node is not None
            node["spec"]["taints"] = [{"key": "gpu", "effect": "NoSchedule"}]
            w.store.touch("/nodes", node)
        else:
            spec["nodeSelector"] = {"zone": "z1"}
        w.load_manifests([tracked("web", 6, rule, **spec)])
        await w.start()
        try:
            placed = [n for n in placement_of(w).values() if n]
            assert len(placed) == expected, (field, extra, placed)
        finally:
            await w.stop()


def placement_of(w: KubeWorld) -> dict[str, str]:
    return {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in w.pods("default")
            if p["metadata"]["labels"].get("app") == "web"}


async def test_match_label_keys_count_only_the_pods_own_revision() -> None:
    # Two Deployments share app=web; "old" is pinned to n0 (two pods). The new ones spread
    # by hostname over app=web, maxSkew 1, on n0 and n1 only. Counting the old pods, n0
    # already holds 2, so both new pods must go to n1; with matchLabelKeys
    # [pod-template-hash] only their own revision counts, and they take one node each.
    for keys, expected in (([], ["n1", "n1"]), (["pod-template-hash"], ["n0", "n1"])):
        w = world_with(4)
        pin = {"maxSkew": 5, "topologyKey": "zone",
               "labelSelector": {"matchLabels": {"app": "none"}}}
        old = tracked("old", 2, pin, nodeSelector={"kubernetes.io/hostname": "n0"})
        new = tracked("new", 2, {**HOSTNAME_SPREAD, "matchLabelKeys": keys},
                      affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                          "nodeSelectorTerms": [{"matchExpressions": [{
                              "key": "kubernetes.io/hostname", "operator": "In",
                              "values": ["n0", "n1"]}]}]}}})
        w.load_manifests([old])
        await w.start()
        try:
            w.load_manifests([new])

            def where(w: KubeWorld = w) -> list[str]:
                return sorted(p["spec"].get("nodeName", "") for p in w.pods("default")
                              if p["metadata"]["labels"].get("track") == "new")

            await settle(w, lambda: len(where()) == 2 and all(where()))
            assert where() == expected, keys
        finally:
            await w.stop()


async def test_pods_that_do_not_fit_stay_pending_until_a_node_arrives() -> None:
    w = world_with(1)
    w.load_manifests([deployment("big", 2, cpu="1500m")])
    await w.start()
    try:
        assert sorted(placement(w, "big").values()) == ["", "n0"]
        w.register_node(name="late", labels={}, cpu=2, memory_mb=4096, addresses=["10.9.9.9"])
        await settle(w, lambda: sorted(placement(w, "big").values()) == ["late", "n0"])
        await settle(w, lambda: all(p["status"]["phase"] == "Running" for p in w.pods("default")))
    finally:
        await w.stop()


async def test_remove_node_recreates_pods_elsewhere_and_daemonsets_follow_nodes() -> None:
    w = world_with(3)
    w.load_manifests([deployment("web", 3, cpu="100m"), {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "a", "image": "a"}]}}}}])
    await w.start()
    try:
        assert len(w.pods("kube-system")) == 3
        w.remove_node("n0")
        assert all(node != "n0" for node in placement(w, "web").values())
        await settle(w, lambda: len(placement(w, "web")) == 3
                     and all(placement(w, "web").values()))
        assert len(w.pods("kube-system")) == 2
        w.register_node(name="n8", labels={}, cpu=2, memory_mb=4096, addresses=["10.0.0.8"])
        await settle(w, lambda: len(w.pods("kube-system")) == 3)
        # A node that never turns Ready gets nothing: its not-ready taint is NoSchedule and
        # a plain DaemonSet only tolerates not-ready with NoExecute (as in Kubernetes).
        w.register_node(name="n9", labels={}, cpu=2, memory_mb=4096, addresses=["10.0.0.9"],
                        ready=False)
        await asyncio.sleep(0.05)
        node = w.node("n9")
        assert node is not None and node["status"]["conditions"][0]["status"] == "False"
        assert w.pods_on("n9") == [] and len(w.pods("kube-system")) == 3
    finally:
        await w.stop()


async def test_cordoned_node_gets_no_new_pods_but_keeps_its_daemonset() -> None:
    w = world_with(2)
    node = w.node("n0")
    assert node is not None
    node["spec"]["unschedulable"] = True
    w.replace(w.registry_type("", "nodes"), node, check_rv=False)
    w.load_manifests([deployment("web", 4, cpu="100m")])
    await w.start()
    try:
        assert set(placement(w, "web").values()) == {"n1"}
        taints = [t["key"] for t in (w.node("n0") or {})["spec"]["taints"]]
        assert taints == ["node.kubernetes.io/unschedulable"]
    finally:
        await w.stop()


async def test_pdb_status_and_eviction_accounting() -> None:
    w = world_with(3)
    w.load_manifests([deployment("web", 4, cpu="100m"), {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "web"}}}}])
    await w.start()
    try:
        pdb = w.store.get("policy/poddisruptionbudgets", "default", "web")
        assert pdb is not None
        st = pdb["status"]
        assert (st["expectedPods"], st["desiredHealthy"], st["currentHealthy"],
                st["disruptionsAllowed"]) == (4, 3, 4, 1)
        names = sorted(placement(w, "web"))
        w.evict("default", names[0])
        assert pdb["status"]["disruptionsAllowed"] == 0
        with pytest.raises(ApiError) as info:
            w.evict("default", names[1])
        assert info.value.code == 429 and info.value.reason == "TooManyRequests"
        with pytest.raises(ApiError) as info:
            w.evict("default", "missing")
        assert info.value.code == 404
        await settle(w, lambda: pdb["status"]["disruptionsAllowed"] == 1)
        w.load_manifests([{
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web2", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}])
        with pytest.raises(ApiError) as info:
            w.evict("default", names[1])
        assert info.value.code == 500
    finally:
        await w.stop()


async def test_same_seed_same_world() -> None:
    async def snapshot(seed: int) -> list[tuple[str, str, str]]:
        w = world_with(5, seed=seed)
        w.load_manifests([deployment("a", 7, cpu="300m"), deployment("b", 5, cpu="200m")])
        await w.start()
        await w.stop()
        return sorted((p["metadata"]["name"], p["metadata"]["uid"], p["spec"]["nodeName"])
                      for p in w.pods("default"))

    first = await snapshot(42)
    assert first == await snapshot(42)
    assert first != await snapshot(43)


async def test_a_replicaset_of_thousands_loads_with_unique_names() -> None:
    w = KubeWorld(SimClock(5000), random.Random(3))
    for i in range(40):
        w.register_node(name=f"n{i}", labels={}, cpu=64, memory_mb=262144, pods=200,
                        addresses=[f"10.0.1.{i}"])
    w.load_manifests([deployment("many", 6000, cpu="10m")])
    await w.start()
    try:
        names = [p["metadata"]["name"] for p in w.pods("default")]
        assert len(names) == len(set(names)) == 6000
    finally:
        await w.stop()


def at(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())


async def test_pod_start_delay_is_the_worlds() -> None:
    async def started_after(delay: float | None) -> int:
        w = world_with(1, speed=2000) if delay is None else KubeWorld(
            SimClock(2000), random.Random(1), pod_start_delay_s=delay)
        if delay is not None:
            w.register_node(name="n0", labels={}, cpu=2, memory_mb=4096, addresses=["10.0.0.1"])
        await w.start()
        try:
            w.load_manifests([deployment("web", 1, cpu="10m")])
            await settle(w, lambda: all(p["status"].get("phase") == "Running"
                                        for p in w.pods("default")) and w.pods("default"))
            pod = w.pods("default")[0]
            return at(pod["status"]["startTime"]) - at(pod["metadata"]["creationTimestamp"])
        finally:
            await w.stop()

    assert await started_after(None) >= 3  # the default
    assert await started_after(200) >= 200
    with pytest.raises(ValueError, match="pod_start_delay_s"):
        KubeWorld(SimClock(1), random.Random(1), pod_start_delay_s=-1)
