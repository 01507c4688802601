"""KubeClient against the simulated Kubernetes API over real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.errors import (
    AdapterError,
    Conflict,
    EvictionBlocked,
    NotFound,
    PermanentError,
    TemporaryError,
)
from adapters.kubernetes import KubeClient, kubeconfig_secrets
from simulator.faults import FaultRule
from statemachine.world import CORDONED_BY_ANNOTATION, LeaseInfo
from tests.adapters_kubernetes.conftest import TOKEN, Sim, pdb, web_deployment

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "nodegroups.autoscaler.vpsie.com"},
    "spec": {"group": "autoscaler.vpsie.com", "scope": "Namespaced",
             "names": {"plural": "nodegroups", "singular": "nodegroup", "kind": "NodeGroup"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True}]},
}


async def test_nodes_are_listed_and_translated(kube: KubeClient) -> None:
    nodes = await kube.list_nodes()
    assert [n.name for n in nodes] == ["node-0", "node-1", "node-2"]
    n0 = nodes[0]
    assert n0.ready and not n0.unschedulable
    assert n0.allocatable.cpu_millis == 4000
    assert n0.allocatable.memory_bytes == 8192 * 2**20
    assert n0.allocatable.pods == 110
    assert n0.addresses == ("10.0.0.1", "203.0.113.1")
    assert n0.labels["pool"] == "a" and n0.resource_version
    assert await kube.get_node("nope") is None
    got = await kube.get_node("node-1")
    assert got is not None and got.name == "node-1"


async def test_pods_are_paginated_filtered_and_translated(sim: Sim, kube: KubeClient) -> None:
    pods = await kube.list_pods()  # page_size=2: several pages
    web = [p for p in pods if p.namespace == "shop"]
    assert len(web) == 4
    p = web[0]
    assert p.owner_kind == "ReplicaSet" and p.owner_name.startswith("web-")
    assert p.requests.cpu_millis == 250 and p.requests.memory_bytes == 256 * 2**20
    assert p.phase == "Running" and p.ready and not p.is_daemonset
    on_node = await kube.list_pods("node-0")
    assert {q.name for q in on_node} == {
        o["metadata"]["name"] for o in sim.world.pods_on("node-0")}
    assert all(q.node_name == "node-0" for q in on_node)


async def test_daemonset_local_storage_affinity_and_init_containers(sim: Sim,
                                                                    kube: KubeClient) -> None:
    sim.world.load_manifests([
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "agent", "namespace": "kube-system"},
         "spec": {"selector": {"matchLabels": {"app": "agent"}},
                  "template": {"metadata": {"labels": {"app": "agent"}},
                               "spec": {"containers": [{"name": "c", "image": "x"}],
                                        "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}}},
        web_deployment("cache", 1, initContainers=[{
            "name": "i", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
            volumes=[{"name": "m", "emptyDir": {"medium": "Memory"}}],
            affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname",
                 "labelSelector": {"matchLabels": {"app": "cache"}}}]},
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "pool", "operator": "In", "values": ["a"]}]}]}}},
            tolerations=[{"key": "dedicated", "operator": "Exists"}]),
    ])
    sim.world.reconcile()
    pods = await kube.list_pods()
    agents = [p for p in pods if p.namespace == "kube-system"]
    assert len(agents) == 3 and all(p.is_daemonset and p.uses_local_storage for p in agents)
    (cache,) = [p for p in pods if p.labels.get("app") == "cache"]
    assert cache.requests.cpu_millis == 2000 and cache.requests.memory_bytes == 2**30
    assert not cache.uses_local_storage
    assert cache.anti_affinity_hostname[0].match_labels == {"app": "cache"}
    assert cache.required_node_affinity[0][0].values == ("a",)
    assert cache.tolerations[0].key == "dedicated"


async def test_pdbs_carry_computed_status(kube: KubeClient) -> None:
    (p,) = await kube.list_pdbs()
    assert (p.name, p.expected_pods, p.desired_healthy, p.current_healthy,
            p.disruptions_allowed) == ("web", 4, 3, 4, 1)
    assert p.selector.match_labels == {"app": "web"}


async def test_node_groups_none_without_crd_then_listed(sim: Sim, kube: KubeClient) -> None:
    assert await kube.list_node_group_specs() is None
    sim.world.load_manifests([CRD, {
        "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "NodeGroup",
        "metadata": {"name": "workers", "namespace": "kube-system"},
        "spec": {"minNodes": 2, "maxNodes": 5, "kubeSizeID": 12, "datacenterID": "dc-1"},
        "status": {"vpsieGroupID": 77}}])
    (g,) = await kube.list_node_group_specs() or []
    assert (g.name, g.min_nodes, g.max_nodes, g.kube_size_id, g.datacenter_id,
            g.vpsie_group_id) == ("workers", 2, 5, 12, "dc-1", 77)


async def test_cordon_reports_prior_state_and_uncordon_clears(sim: Sim,
                                                              kube: KubeClient) -> None:
    assert await kube.cordon("node-1", {CORDONED_BY_ANNOTATION: "plan-1"}) is False
    assert await kube.cordon("node-1") is True
    node = await kube.get_node("node-1")
    assert node is not None and node.unschedulable
    assert node.annotations[CORDONED_BY_ANNOTATION] == "plan-1"
    assert any(t.key == "node.kubernetes.io/unschedulable" for t in node.taints)
    await kube.uncordon("node-1", {CORDONED_BY_ANNOTATION: None})
    node = await kube.get_node("node-1")
    assert node is not None and not node.unschedulable
    assert CORDONED_BY_ANNOTATION not in node.annotations
    with pytest.raises(NotFound):
        await kube.cordon("ghost")


async def test_label_and_taint(kube: KubeClient) -> None:
    await kube.label_node("node-2", {"tier": "gold", "pool": None})
    node = await kube.get_node("node-2")
    assert node is not None and node.labels.get("tier") == "gold" and "pool" not in node.labels
    await kube.set_taint("node-2", "dedicated", "x")
    node = await kube.get_node("node-2")
    assert node is not None and [t.key for t in node.taints] == ["dedicated"]
    await kube.set_taint("node-2", "dedicated", present=False)
    node = await kube.get_node("node-2")
    assert node is not None and node.taints == ()


async def test_patch_conflict_is_retried_on_a_fresh_read(sim: Sim, kube: KubeClient) -> None:
    sim.faults.add_rule(FaultRule(service="kubernetes", method="PATCH", path="/api/v1/nodes/*",
                                  error_rate=1.0, error_status=409, times=2))
    assert await kube.cordon("node-0") is False
    node = await kube.get_node("node-0")
    assert node is not None and node.unschedulable


async def test_patch_conflict_that_persists_is_reported(sim: Sim, kube: KubeClient) -> None:
    sim.faults.add_rule(FaultRule(service="kubernetes", method="PATCH", path="/api/v1/nodes/*",
                                  error_rate=1.0, error_status=409))
    with pytest.raises(Conflict):
        await kube.label_node("node-0", {"a": "b"})


async def test_eviction_respects_pdb_and_blocks(sim: Sim, kube: KubeClient) -> None:
    sim.world.load_manifests([web_deployment("db", 2), pdb("db", "db", maxUnavailable=0)])
    for _ in range(200):
        db = [p for p in await kube.list_pods() if p.labels.get("app") == "db" and p.ready]
        if len(db) == 2:
            break
        await asyncio.sleep(0.005)
    with pytest.raises(EvictionBlocked) as info:
        await kube.evict("shop", db[0].name)
    assert info.value.status == 429 and "disruption budget" in str(info.value)
    with pytest.raises(NotFound):
        await kube.evict("shop", "no-such-pod")
    web = [p for p in await kube.list_pods() if p.labels.get("app") == "web"]
    await kube.evict("shop", web[0].name)
    for _ in range(200):
        names = {p.name for p in await kube.list_pods() if p.labels.get("app") == "web"}
        if web[0].name not in names and len(names) == 4:
            break
        await asyncio.sleep(0.005)
    assert web[0].name not in names and len(names) == 4
    sim.world.block_evictions("shop", "app=web")
    with pytest.raises(EvictionBlocked):
        await kube.evict("shop", sorted(names)[0])


async def test_events_are_posted(sim: Sim, kube: KubeClient) -> None:
    await kube.emit_event(regarding_kind="Node", regarding_name="node-0",
                          regarding_namespace="", reason="NodeDraining", note="draining node-0")
    events = [e.obj for e in sim.world.store.entries("events.k8s.io/events")]
    assert len(events) == 1
    assert events[0]["reason"] == "NodeDraining" and events[0]["regarding"]["name"] == "node-0"


async def test_watch_nodes_sees_initial_state_and_changes(sim: Sim, kube: KubeClient) -> None:
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async for kind, node in kube.watch_nodes(timeout_s=1.0):
            seen.append((kind, node.name))
            if kind == "ADDED" and node.name == "node-9":
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    sim.world.register_node(name="node-9", labels={}, cpu=2, memory_mb=4096,
                            addresses=["10.0.0.9"])
    await asyncio.wait_for(task, 5)
    assert seen[:3] == [("ADDED", "node-0"), ("ADDED", "node-1"), ("ADDED", "node-2")]
    assert seen[-1] == ("ADDED", "node-9")


async def test_watch_pods_on_a_node_sees_deletion(sim: Sim, kube: KubeClient) -> None:
    victims = [p for p in await kube.list_pods("node-0") if p.namespace == "shop"]
    assert victims
    kinds: list[tuple[str, str, bool]] = []

    async def consume() -> None:
        async for kind, pod in kube.watch_pods(node_name="node-0", timeout_s=2.0):
            kinds.append((kind, pod.name, pod.deleting))
            if kind == "DELETED":
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await kube.evict("shop", victims[0].name)
    await asyncio.wait_for(task, 5)
    assert ("MODIFIED", victims[0].name, True) in kinds
    assert kinds[-1][:2] == ("DELETED", victims[0].name)


async def test_watch_ends_at_its_timeout(kube: KubeClient) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    events = [e async for e in kube.watch_nodes(timeout_s=0.3)]
    assert len(events) == 3 and 0.25 <= loop.time() - start < 2


async def test_leases(kube: KubeClient) -> None:
    assert await kube.get_lease("kube-system", "rebalancer") is None
    created = await kube.create_lease(LeaseInfo(
        namespace="kube-system", name="rebalancer", holder="a", duration_s=15,
        acquire_time="2026-01-01T00:00:00.000000Z", renew_time="2026-01-01T00:00:00.000000Z"))
    assert created.holder == "a" and created.resource_version
    with pytest.raises(Conflict):
        await kube.create_lease(created)
    renewed = await kube.update_lease(LeaseInfo(
        namespace="kube-system", name="rebalancer", holder="a", duration_s=15,
        renew_time="2026-01-01T00:00:05.000000Z", resource_version=created.resource_version))
    assert renewed.renew_time == "2026-01-01T00:00:05.000000Z"
    with pytest.raises(Conflict):
        await kube.update_lease(LeaseInfo(namespace="kube-system", name="rebalancer",
                                          holder="b", resource_version=created.resource_version))
    got = await kube.get_lease("kube-system", "rebalancer")
    assert got is not None and got.holder == "a"


async def test_server_errors_become_temporary(sim: Sim, kube: KubeClient) -> None:
    errors: list[AdapterError] = []
    sim.faults.add_rule(FaultRule(service="kubernetes", path="/api/v1/nodes", error_rate=1.0,
                                  error_status=503, times=1))
    with pytest.raises(TemporaryError) as info:
        await kube.list_nodes()
    assert info.value.status == 503
    errors.append(info.value)
    sim.faults.add_rule(FaultRule(service="kubernetes", path="/api/v1/nodes",
                                  throttle_rate=1.0, retry_after_s=7, times=1))
    with pytest.raises(TemporaryError) as info:
        await kube.list_nodes()
    assert info.value.status == 429 and info.value.retry_after == 7
    errors.append(info.value)
    sim.faults.set_down("kubernetes", True)
    with pytest.raises(TemporaryError) as info:
        await kube.get_node("node-0")
    errors.append(info.value)
    sim.faults.set_down("kubernetes", False)
    assert await kube.get_node("node-0") is not None
    assert all(TOKEN not in str(e) and TOKEN not in repr(e) for e in errors)
    assert TOKEN not in repr(kube)


async def test_unreachable_server_is_temporary(tmp_path: Path) -> None:
    from tests.adapters_kubernetes.conftest import write_kubeconfig

    path = write_kubeconfig(tmp_path / "kc", 1)
    async with KubeClient.from_kubeconfig(str(path), request_timeout_s=2) as client:
        with pytest.raises(TemporaryError) as info:
            await client.list_nodes()
    assert TOKEN not in str(info.value)


async def test_bad_kubeconfig_is_a_clear_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as info:
        async with KubeClient.from_kubeconfig(str(tmp_path / "missing")):
            pass
    assert "missing" in str(info.value)


async def test_a_wrong_token_is_an_authentication_error(sim: Sim, tmp_path: Path) -> None:
    from adapters.errors import AuthenticationError
    from tests.adapters_kubernetes.conftest import write_kubeconfig

    wrong = "not-the-token-the-simulator-wrote"
    path = write_kubeconfig(tmp_path / "wrong", sim.port, token=wrong)
    async with KubeClient.from_kubeconfig(str(path)) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.list_nodes()
    assert info.value.status == 401
    assert wrong not in str(info.value) and TOKEN not in str(info.value)


def test_pods_are_built_slot_by_slot_and_equal_to_the_constructor() -> None:
    import dataclasses

    from adapters.kubernetes import pods as translate
    from statemachine.world import PodInfo, Resources, SpreadConstraint, Toleration

    # The fast path is in use only while it covers PodInfo's fields exactly.
    assert tuple(f.name for f in dataclasses.fields(PodInfo)) == translate.POD_INFO_FIELDS
    assert translate._new_pod_info is translate._pod_info_by_slots
    values = ("ns", "p", "n1", "u", {"a": "1"}, {"b": "2"}, "ReplicaSet", "rs", "Running",
              True, Resources(cpu_millis=5, memory_bytes=6, pods=1),
              (Toleration(key="k", operator="Exists"),), {"z": "1"}, (), (), True, False,
              True, False, (SpreadConstraint(max_skew=1, topology_key="zone"),))
    fast = translate._pod_info_by_slots(*values)
    slow = translate._pod_info_by_init(*values)
    assert type(fast) is PodInfo and fast == slow and repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.name = "other"  # type: ignore[misc]
    assert dataclasses.replace(fast, name="q").name == "q"


def test_repeated_fragments_are_translated_once() -> None:
    from adapters.kubernetes.pods import pod_info

    def pod(name: str) -> dict[str, object]:
        return {"metadata": {"name": name, "namespace": "x"},
                "spec": {"containers": [{"resources": {"requests": {"cpu": "1",
                                                                    "memory": "1Gi"}}}],
                         "tolerations": [{"key": "k", "operator": "Exists",
                                          "effect": "NoSchedule"}],
                         "affinity": {"nodeAffinity": {
                             "requiredDuringSchedulingIgnoredDuringExecution": {
                                 "nodeSelectorTerms": [{"matchExpressions": [
                                     {"key": "zone", "operator": "In",
                                      "values": ["a"]}]}]}}}},
                "status": {"phase": "Running",
                           "conditions": [{"type": "Ready", "status": "True"}]}}

    a, b = pod_info(pod("a")), pod_info(pod("b"))
    assert (a.name, b.name) == ("a", "b") and a.ready and b.ready
    assert a.requests.cpu_millis == 1000 and a.requests.memory_bytes == 2**30
    assert a.tolerations[0].key == "k" and a.tolerations[0].effect == "NoSchedule"
    assert a.required_node_affinity[0][0].values == ("a",)
    assert a.tolerations is b.tolerations
    assert a.required_node_affinity is b.required_node_affinity


async def test_a_malformed_pod_list_is_reported_with_where(sim: Sim, kube: KubeClient) -> None:
    from adapters.errors import MalformedResponse

    sim.world.create(sim.world.registry_type("", "pods"), {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "odd", "namespace": "shop", "labels": {"n": 1}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}})
    with pytest.raises(MalformedResponse) as info:
        await kube.list_pods()
    assert "metadata.labels" in str(info.value) and "/api/v1/pods" in str(info.value)
    sim.world.delete(sim.world.registry_type("", "pods"), "shop", "odd", 0)
    pod = sim.world.pods("shop")[0]  # stored as no API server would accept it
    pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "a lot"
    sim.world.store.touch("/pods", pod)
    with pytest.raises(MalformedResponse, match="not a Kubernetes quantity: 'a lot'"):
        await kube.list_pods()
    pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1"
    pod["spec"]["topologySpreadConstraints"] = [{  # minDomains 0: the API server refuses it
        "maxSkew": 1, "topologyKey": "zone", "minDomains": 0,
        "labelSelector": {"matchLabels": {"app": "web"}}}]
    sim.world.store.touch("/pods", pod)
    with pytest.raises(MalformedResponse) as spread:
        await kube.list_pods()
    name = pod["metadata"]["name"]
    assert (f"pod shop/{name}: spec.topologySpreadConstraints[0].minDomains: expected an "
            "integer >= 1, got 0") in str(spread.value)


async def test_a_proxy_from_the_environment_is_used(sim: Sim, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.adapters_kubernetes.conftest import write_kubeconfig

    # The kubeconfig names a host that does not resolve; only the proxy (the simulator,
    # which serves absolute-form request targets) makes the request succeed.
    path = write_kubeconfig(tmp_path / "kc", sim.port)
    path.write_text(path.read_text().replace(f"127.0.0.1:{sim.port}", "kube.invalid:6443"))
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{sim.port}")
    async with KubeClient.from_kubeconfig(str(path), request_timeout_s=5) as client:
        assert [n.name for n in await client.list_nodes()] == ["node-0", "node-1", "node-2"]
        assert len(await client.list_pods()) == 4


def test_the_kubeconfig_credentials_are_found_for_the_log_redactor(tmp_path: Path) -> None:
    """Every credential in a kubeconfig is handed to the redactor; nothing else is."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://k:6443'}}]\n"
        "users:\n"
        "  - {name: a, user: {token: tok-aaaa}}\n"
        "  - {name: b, user: {username: bob, password: pw-bbbb, client-key-data: a2V5LWRhdGE=}}\n"
        "  - {name: c, user: {auth-provider: {name: oidc, config: {id-token: id-cccc,"
        " refresh-token: rf-cccc}}}}\n"
    )
    assert sorted(kubeconfig_secrets(str(kubeconfig))) == sorted(
        ["tok-aaaa", "pw-bbbb", "a2V5LWRhdGE=", "id-cccc", "rf-cccc"]
    )
