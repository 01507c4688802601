"""The simulated VPSie API, spoken to with plain aiohttp: its traps, its faults, its Nodes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulator.faults import DownWindow, FaultRule
from simulator.serve import RunningSimulator, start_simulator

SMALL = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "small.yaml"
SPEED = 1000.0  # the small world's 60 s boot takes 0.06 s


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    async with start_simulator(SMALL, speed=SPEED, state_dir=tmp_path, seed=1) as running:
        yield running


class Api:
    """A bare VPSie caller: the test's own reading of VPSIE_API.md, not the adapter's."""

    def __init__(self, sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
        self.base = sim.vpsie_url + sim.vpsie_prefix
        self.http = http
        self.cluster = sim.vpsie.cluster.identifier
        self.headers: dict[str, str] = {}

    async def login(self, sim: RunningSimulator) -> None:
        creds = json.loads(sim.vpsie_credentials_path.read_text())
        form = {"clientId": creds["client_id"], "clientSecret": creds["client_secret"]}
        status, body = await self.call("POST", "/auth/from/api", data=form)
        assert status == 200 and body["error"] is False
        self.headers = {"Authorization": f"Bearer {body['accessToken']['token']}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with self.http.request(
            method, self.base + path, headers=self.headers, **kwargs
        ) as response:
            return response.status, await response.json()


@pytest.fixture
async def api(sim: RunningSimulator) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        caller = Api(sim, http)
        await caller.login(sim)
        yield caller


async def test_credentials_file_is_private_and_complete(sim: RunningSimulator) -> None:
    assert sim.vpsie_credentials_path.stat().st_mode & 0o777 == 0o600
    creds = json.loads(sim.vpsie_credentials_path.read_text())
    assert creds["base_url"] == sim.vpsie_url and creds["prefix"] == "/apps/v2"
    assert creds["auth"] == "client_credentials"
    assert creds["cluster_identifier"] == sim.vpsie.cluster.identifier


async def test_calls_need_credentials(sim: RunningSimulator) -> None:
    async with aiohttp.ClientSession() as http:
        caller = Api(sim, http)
        status, body = await caller.call("GET", "/k8s/cluster/all")
        assert status == 401 and body["error"] is True and "stack" in body
        caller.headers = {"Authorization": "Bearer forged"}
        assert (await caller.call("GET", "/k8s/cluster/all"))[0] == 401
        await caller.login(sim)
        assert (await caller.call("GET", "/k8s/cluster/all"))[0] == 200
        sim.vpsie.expire_tokens()
        assert (await caller.call("GET", "/k8s/cluster/all"))[0] == 401


async def test_lists_paginate(api: Api) -> None:
    status, body = await api.call("POST", "/k8s/offers", json={"dcIdentifier": _dc(api)})
    assert status == 200
    assert len(body["data"]) == 2  # the small world serves 2 rows per page
    assert body["pagination"] == {
        "total": 3,
        "count": 2,
        "per_page": 2,
        "current_page": 1,
        "total_pages": 2,
    }
    _, last = await api.call(
        "POST", "/k8s/offers", params={"offset": "2"}, json={"dcIdentifier": _dc(api)}
    )
    assert [o["id"] for o in last["data"]] == [203] and last["pagination"]["current_page"] == 2


def _dc(api: Api) -> str:
    return "5f1b6c3e-0d2a-4c1e-9f44-2a7b3c9d0e11"


async def test_one_group_per_size_is_an_http_200_error(api: Api) -> None:
    body = {"clusterIdentifier": api.cluster, "groupName": "again", "KubeSizeID": 202}
    status, answer = await api.call("POST", "/k8s/cluster/add/group", json=body)
    assert status == 200 and answer["error"] is True
    assert "has same selected Size, please select another size" in answer["message"]
    lower = {"clusterIdentifier": api.cluster, "groupName": "x", "kubeSizeId": 201}
    status, answer = await api.call("POST", "/k8s/cluster/add/group", json=lower)
    assert status == 400 and "KubeSizeID" in answer["message"]  # capital K, or nothing


async def test_added_worker_boots_later_and_joins_as_a_node(
    api: Api, sim: RunningSimulator
) -> None:
    body = {"clusterIdentifier": api.cluster, "groupName": "cheap", "KubeSizeID": 201}
    status, answer = await api.call("POST", "/k8s/cluster/add/group", json=body)
    assert status == 200 and answer["data"]["groupId"].startswith("GRP-")
    _, groups = await api.call("GET", f"/k8s/node/groups/byClusterId/{api.cluster}")
    cheap = next(g for g in groups["data"] if g["group_name"] == "cheap")
    status, answer = await api.call(
        "POST", f"/k8s/cluster/byId/{api.cluster}/add/slave/group/{cheap['id']}"
    )
    assert (status, answer["data"]) == (200, True)  # no id: the caller must find the worker
    _, cluster = await api.call("GET", f"/k8s/cluster/byId/{api.cluster}")
    new = [n for n in cluster["data"]["nodes"] if n.get("node_group_id") == cheap["id"]]
    assert len(new) == 1 and new[0]["status"] == "provisioning"
    assert sim.kube.node(new[0]["hostname"]) is None
    await _until(lambda: sim.kube.node(new[0]["hostname"]) is not None)
    node = sim.kube.node(new[0]["hostname"])
    assert node is not None
    labels = node["metadata"]["labels"]
    assert labels["node.kubernetes.io/instance-type"] == "k8s-2c-4g"
    assert labels["kubernetes.io/hostname"] == new[0]["hostname"]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == new[0]["private_ip"]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    worker = sim.vpsie.worker(new[0]["identifier"])
    assert worker is not None and worker.status == "running"


async def test_delete_removes_worker_and_node_then_404(api: Api, sim: RunningSimulator) -> None:
    worker = sim.vpsie.workers[0]
    assert sim.kube.node(worker.hostname) is not None
    path = f"/k8s/cluster/byId/{api.cluster}/delete/slave"
    status, _ = await api.call("DELETE", path, json={"identifier": worker.identifier})
    assert status == 200
    assert sim.kube.node(worker.hostname) is None
    status, answer = await api.call("DELETE", path, json={"identifier": worker.identifier})
    assert status == 404 and answer["error"] is True


async def test_quota_message(api: Api, sim: RunningSimulator) -> None:
    group = sim.vpsie.groups[0].id
    path = f"/k8s/cluster/byId/{api.cluster}/add/slave/group/{group}"
    for _ in range(3):
        assert (await api.call("POST", path))[1]["data"] is True
    status, answer = await api.call("POST", path)
    assert (status, answer["error"]) == (200, True)
    assert "exceeds the allowed limit" in answer["message"]
    assert len(sim.vpsie.workers) == 6


async def test_never_ready_worker(api: Api, sim: RunningSimulator) -> None:
    sim.faults.never_ready.add("small-general-0004")
    group = sim.vpsie.groups[0].id
    await api.call("POST", f"/k8s/cluster/byId/{api.cluster}/add/slave/group/{group}")
    await _until(lambda: sim.kube.node("small-general-0004") is not None)
    node = sim.kube.node("small-general-0004")
    assert node is not None
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


async def test_faults_by_rule_and_down_window(api: Api, sim: RunningSimulator) -> None:
    path = f"/k8s/node/groups/byClusterId/{api.cluster}"
    sim.faults.add_rule(
        FaultRule(service="vpsie", path="*/groups/*", throttle_rate=1.0, retry_after_s=4, times=1)
    )
    async with api.http.get(api.base + path, headers=api.headers) as response:
        assert response.status == 429 and response.headers["Retry-After"] == "4"
    assert (await api.call("GET", path))[0] == 200  # `times: 1` is spent
    sim.faults.add_rule(FaultRule(service="vpsie", path="*/groups/*", error_body_rate=1.0, times=1))
    status, body = await api.call("GET", path)
    assert status == 200 and body["error"] is True
    assert sim.faults.origin is not None
    elapsed = sim.clock.now() - sim.faults.origin
    window = DownWindow(service="vpsie", start=elapsed + 300, end=elapsed + 1000)
    sim.faults.down.append(window)
    assert (await api.call("GET", path))[0] == 200  # not yet: 0.3 s of real time away
    await _until(lambda: sim.clock.now() - sim.faults.origin >= window.start)  # type: ignore[operator]
    status, body = await api.call("GET", path)
    assert status == 503 and body["error"] is True
    await _until(lambda: sim.clock.now() - sim.faults.origin >= window.end)  # type: ignore[operator]
    assert (await api.call("GET", path))[0] == 200
    sim.faults.down.clear()
    sim.faults.set_down("kubernetes", True)
    async with api.http.get(sim.kube_url + "/api/v1/nodes") as response:
        assert response.status == 503
        assert (await response.json())["kind"] == "Status"
    assert (await api.call("GET", path))[0] == 200  # VPSie unaffected


async def _until(check: Any, attempts: int = 500) -> None:
    """Poll a condition of the simulated world (it changes on its own clock)."""
    for _ in range(attempts):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the simulated world never reached the expected state")
