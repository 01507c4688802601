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
    _, before = await api.call("GET", f"/k8s/cluster/byId/{api.cluster}")
    known = {n["identifier"] for n in before["data"]["nodes"]}
    status, answer = await api.call(
        "POST", f"/k8s/cluster/byId/{api.cluster}/add/slave/group/{cheap['id']}"
    )
    assert status == 200 and answer["error"] is False
    _, cluster = await api.call("GET", f"/k8s/cluster/byId/{api.cluster}")
    new = [n for n in cluster["data"]["nodes"] if n["identifier"] not in known]
    assert len(new) == 1 and new[0]["status"] == "provisioning"
    assert (new[0]["cpu"], new[0]["ram"], new[0]["disk"]) == (2, 4096, 80)  # the size's shape
    name = new[0]["hostname"].lower()  # VPSie's case is not the Node's
    assert name != new[0]["hostname"] and sim.kube.node(name) is None
    await _until(lambda: sim.kube.node(name) is not None)
    node = sim.kube.node(name)
    assert node is not None
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == name
    assert not [k for k in labels if k.startswith("topology.kubernetes.io/")]
    assert "node.kubernetes.io/instance-type" not in labels
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["ExternalIP"] == new[0]["ip"]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    worker = sim.vpsie.worker(new[0]["identifier"])
    assert worker is not None and worker.status == "running"


async def test_faithful_rows(api: Api, sim: RunningSimulator) -> None:
    """The shapes vpsie-k8s-autoscaler and govpsie read: no group id on node rows, no
    dcIdentifier on cluster rows, numbers as numbers, RFC 3339 times, lists with only `total`."""
    _, cluster = await api.call("GET", f"/k8s/cluster/byId/{api.cluster}")
    nodes = cluster["data"]["nodes"]
    assert [n["role"] for n in nodes].count("master") == 1
    for row in nodes:
        assert set(row) == {"identifier", "hostname", "ip", "status", "role", "cpu", "ram", "disk"}
    _, clusters = await api.call("GET", "/k8s/cluster/all")
    row = clusters["data"][0]
    assert "dcIdentifier" not in row and (row["lock"], row["upgrade_version"]) == (0, None)
    assert "pagination" not in clusters and clusters["total"] == 1
    _, groups = await api.call("GET", f"/k8s/node/groups/byClusterId/{api.cluster}")
    assert "pagination" not in groups and groups["total"] == 1
    assert groups["data"][0]["created_on"].endswith("Z") and "T" in groups["data"][0]["created_on"]
    _, offers = await api.call("POST", "/k8s/offers", json={"dcIdentifier": _dc(api)})
    assert all(isinstance(o["price"], float) for o in offers["data"])
    sim.vpsie.lock, sim.vpsie.upgrade_version = True, "1.31.0"
    _, clusters = await api.call("GET", "/k8s/cluster/all")
    assert (clusters["data"][0]["lock"], clusters["data"][0]["upgrade_version"]) == (1, "1.31.0")


async def test_add_worker_answers_true_or_an_object(api: Api, sim: RunningSimulator) -> None:
    group = sim.vpsie.groups[0].id
    path = f"/k8s/cluster/byId/{api.cluster}/add/slave/group/{group}"
    answers = [(await api.call("POST", path))[1]["data"] for _ in range(3)]
    assert True in answers  # seed 1: both forms within three adds
    objects = [a for a in answers if a is not True]
    assert objects and all(set(a) == {"id", "identifier", "status", "hostname"} for a in objects)
    assert all(sim.vpsie.worker(a["identifier"]) is not None for a in objects)


async def test_delete_leaves_the_node_not_ready_until_someone_deletes_it(
    api: Api, sim: RunningSimulator
) -> None:
    worker = sim.vpsie.workers[0]
    assert sim.kube.node(worker.hostname) is not None
    path = f"/k8s/cluster/byId/{api.cluster}/delete/slave"
    status, _ = await api.call("DELETE", path, json={"identifier": worker.identifier})
    assert status == 200 and sim.vpsie.worker(worker.identifier) is None
    node = sim.kube.node(worker.hostname)
    assert node is not None  # VPSie's cloud controller manager deletes no Nodes
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    status, answer = await api.call("DELETE", path, json={"identifier": worker.identifier})
    assert status == 404 and answer["error"] is True
    nodes = f"{sim.kube_url}/api/v1/nodes/{worker.hostname}"
    stale = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "other"}}
    async with api.http.delete(nodes, json=stale) as response:
        assert response.status == 409  # a precondition on another Node's uid
    uid = node["metadata"]["uid"]
    exact = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}
    async with api.http.delete(nodes, json=exact) as response:
        assert response.status == 200
    assert sim.kube.node(worker.hostname) is None


async def test_quota_message(api: Api, sim: RunningSimulator) -> None:
    group = sim.vpsie.groups[0].id
    path = f"/k8s/cluster/byId/{api.cluster}/add/slave/group/{group}"
    for _ in range(3):
        assert (await api.call("POST", path))[1]["error"] is False
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


async def test_a_lagging_listing_shows_a_worker_only_after_the_lag(
    api: Api, sim: RunningSimulator
) -> None:
    sim.faults.listing_lag_s = 300
    _, groups = await api.call("GET", f"/k8s/node/groups/byClusterId/{api.cluster}")
    group = groups["data"][0]
    _, before = await api.call("GET", f"/k8s/cluster/byId/{api.cluster}")
    known = {n["identifier"] for n in before["data"]["nodes"]}
    status, answer = await api.call(
        "POST", f"/k8s/cluster/byId/{api.cluster}/add/slave/group/{group['id']}"
    )
    assert status == 200 and answer["error"] is False
    added = [w for w in sim.vpsie.workers if w.identifier not in known]
    assert len(added) == 1  # in the account (billed) ...
    _, cluster = await api.call("GET", f"/k8s/cluster/byId/{api.cluster}")
    assert {n["identifier"] for n in cluster["data"]["nodes"]} == known  # ... but not listed
    await _until(lambda: sim.kube.node(added[0].hostname) is not None)  # it joins meanwhile
    await sim.clock.sleep(300)
    _, cluster = await api.call("GET", f"/k8s/cluster/byId/{api.cluster}")
    assert added[0].identifier in {n["identifier"] for n in cluster["data"]["nodes"]}
