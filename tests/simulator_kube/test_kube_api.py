"""The simulated API's own contract, spoken to with plain aiohttp over 127.0.0.1."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from simulator.clock import SimClock
from simulator.kube import KubeWorld, make_kube_app
from simulator.kube.store import HISTORY


@pytest.fixture
async def base() -> AsyncIterator[tuple[KubeWorld, str]]:
    world = KubeWorld(SimClock(1000), random.Random(5))
    world.register_node(name="a", labels={}, cpu=2, memory_mb=2048, addresses=["10.0.0.1"])
    await world.start()
    runner = web.AppRunner(make_kube_app(world))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield world, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await world.stop()
    await runner.cleanup()


async def test_stale_update_is_a_409_status(base: tuple[KubeWorld, str]) -> None:
    _, url = base
    async with aiohttp.ClientSession() as s:
        node = await (await s.get(f"{url}/api/v1/nodes/a")).json()
        await s.patch(f"{url}/api/v1/nodes/a", data=b'{"metadata":{"labels":{"x":"1"}}}',
                      headers={"Content-Type": "application/merge-patch+json"})
        r = await s.put(f"{url}/api/v1/nodes/a", json=node)
        body = await r.json()
    assert r.status == 409 and body["kind"] == "Status" and body["reason"] == "Conflict"


async def test_watch_from_expired_version_gets_410(base: tuple[KubeWorld, str]) -> None:
    world, url = base
    node = world.node("a")
    assert node is not None
    for _ in range(HISTORY + 5):
        world.store.touch("/nodes", node)
    async with aiohttp.ClientSession() as s:
        r = await s.get(f"{url}/api/v1/nodes?watch=1&resourceVersion=1001&timeoutSeconds=1")
        event = orjson.loads(await r.content.readline())
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


async def test_table_and_bad_requests(base: tuple[KubeWorld, str]) -> None:
    _, url = base
    async with aiohttp.ClientSession() as s:
        r = await s.get(f"{url}/api/v1/nodes",
                        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        table = await r.json()
        assert table["kind"] == "Table" and table["rows"][0]["cells"][:2] == ["a", "Ready"]
        r = await s.get(f"{url}/api/v1/pods?labelSelector=app%20in%20(")
        assert r.status == 400 and (await r.json())["kind"] == "Status"
        r = await s.get(f"{url}/api/v1/widgets")
        assert r.status == 404


def test_manifest_errors_name_the_document() -> None:
    world = KubeWorld(SimClock(1000), random.Random(1))
    with pytest.raises(ValueError, match=r"manifest 1 \(Deployment web\)"):
        world.load_manifests([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "web", "namespace": "shop"}, "spec": {}}])
    with pytest.raises(ValueError, match=r"manifest 0 \(Gadget g\): unknown kind"):
        world.load_manifests([{"apiVersion": "v1", "kind": "Gadget", "metadata": {"name": "g"}}])


async def test_patch_flavours(base: tuple[KubeWorld, str]) -> None:
    world, url = base
    node_url = f"{url}/api/v1/nodes/a"
    async with aiohttp.ClientSession() as s:
        r = await s.patch(node_url, data=orjson.dumps(
            {"spec": {"unschedulable": True}, "status": {"addresses": []}}),
            headers={"Content-Type": "application/strategic-merge-patch+json"})
        assert r.status == 200
        r = await s.patch(node_url, data=orjson.dumps(
            [{"op": "add", "path": "/metadata/labels/tier", "value": "gold"},
             {"op": "test", "path": "/spec/unschedulable", "value": True}]),
            headers={"Content-Type": "application/json-patch+json"})
        assert r.status == 200
        r = await s.patch(node_url, data=b"{}", headers={"Content-Type": "text/plain"})
        assert r.status == 415
        r = await s.patch(node_url, data=orjson.dumps(
            {"metadata": {"resourceVersion": "1"}, "spec": {"unschedulable": None}}),
            headers={"Content-Type": "application/merge-patch+json"})
        assert r.status == 409
    node = world.node("a")
    assert node is not None
    assert node["spec"]["unschedulable"] is True and node["metadata"]["labels"]["tier"] == "gold"
    assert node["status"]["addresses"]  # the main resource never writes status


async def test_the_bearer_token_is_checked(tmp_path: object) -> None:
    world = KubeWorld(SimClock(1000), random.Random(5))
    await world.start()
    runner = web.AppRunner(make_kube_app(world, token="right-token"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/namespaces"
    try:
        async with aiohttp.ClientSession() as s:
            for wrong in ("Bearer wrong-token", "Bearer right-token2", "Basic cmlnaHQtdG9rZW4=",
                          "Bearer", "Bearer rïght"):
                r = await s.get(url, headers={"Authorization": wrong})
                body = await r.json()
                assert r.status == 401, wrong
                assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
                assert "right-token" not in str(body)
            r = await s.get(url, headers={"Authorization": "Bearer right-token"})
            assert r.status == 200 and (await r.json())["kind"] == "NamespaceList"
            # No credentials at all: anonymous, as kubectl over plain http
            r = await s.get(url)
            assert r.status == 200
    finally:
        await world.stop()
        await runner.cleanup()


async def test_generate_name_collisions_draw_again(base: tuple[KubeWorld, str]) -> None:
    world, url = base
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "job-", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    state = world.rng.getstate()
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{url}/api/v1/namespaces/default/pods", json=pod)
        first = (await r.json())["metadata"]["name"]
        assert r.status == 201 and first.startswith("job-")
        world.rng.setstate(state)  # the next draw is `first` again: taken
        r = await s.post(f"{url}/api/v1/namespaces/default/pods", json=pod)
        second = (await r.json())["metadata"]["name"]
    assert r.status == 201 and second.startswith("job-") and second != first
    assert world.store.get("/pods", "default", first) is not None
    assert world.store.get("/pods", "default", second) is not None
