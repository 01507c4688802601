"""What the client must never do: leak a secret, or act on an answer it could not read."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.errors import AdapterError, MalformedResponse
from adapters.vpsie import SettingsError, VpsieClient, VpsieSettings
from simulator.faults import FaultRule
from simulator.vpsie.server import serve_app
from simulator.vpsie.state import SimAuth
from tests.adapters_vpsie.conftest import InstantClock, VpsieWorld, small_scenario

GROUPS = "/apps/v2/k8s/node/groups/byClusterId/*"


async def _provoke_everything(world: VpsieWorld) -> list[AdapterError]:
    faults = world.state.faults
    client = world.make_client(timeout_s=0.05, max_retries=1)
    errors: list[AdapterError] = []

    async def expect_error(coro: Any) -> None:
        try:
            await coro
        except AdapterError as exc:
            errors.append(exc)
        else:
            raise AssertionError("expected an error")

    await client.list_clusters()
    for rule in (
        FaultRule(service="vpsie", path=GROUPS, error_rate=1.0),
        FaultRule(service="vpsie", path=GROUPS, throttle_rate=1.0),
        FaultRule(service="vpsie", path=GROUPS, error_body_rate=1.0),
        FaultRule(service="vpsie", path=GROUPS, latency_s=30),
    ):
        faults.clear()
        faults.add_rule(rule)
        await expect_error(client.list_node_groups(world.cluster))
    faults.clear()
    faults.set_down("vpsie", True)
    await expect_error(client.list_workers(world.cluster))
    faults.set_down("vpsie", False)
    await expect_error(client.create_node_group(world.cluster, "dup", 202))
    for _ in range(3):
        await client.add_worker(world.cluster, world.state.groups[0].id)
    await expect_error(client.add_worker(world.cluster, world.state.groups[0].id))
    await expect_error(client.list_workers("no-such-cluster"))
    world.state.expire_tokens()
    await client.list_clusters()  # one re-login
    world.state.auth = dataclasses.replace(world.state.auth, token_ttl_s=0)
    world.state.expire_tokens()
    await expect_error(client.list_clusters())  # 401 after the re-login
    return errors


async def test_no_secret_in_logs_errors_or_reprs(
    world: VpsieWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors = await _provoke_everything(world)
    assert len(errors) == 9
    bad = json.loads(world.credentials.read_text())
    bad["client_secret"] = "wrong-" + bad["client_secret"]
    world.credentials.write_text(json.dumps(bad))
    wrong = world.make_client()
    with pytest.raises(AdapterError) as caught:
        await wrong.list_clusters()
    errors.append(caught.value)

    secrets = [world.state.auth.client_secret, bad["client_secret"], *world.state.issued_tokens()]
    assert len(secrets) >= 4
    assert "vpsie list_node_groups" in caplog.text  # the debug log did record the calls
    texts = [caplog.text, repr(wrong), repr(wrong.settings), repr(world.make_client())]
    for exc in errors:
        texts += [str(exc), repr(exc), str(exc.__cause__), str(exc.__context__)]
    for secret in secrets:
        for text in texts:
            assert secret not in text


async def test_static_token_never_shown(
    serve: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "static-5ecret-token-81c2"
    scenario = dataclasses.replace(small_scenario(), auth=SimAuth(token=token))
    async for world in serve(scenario, tmp_path):
        client = world.make_client(max_retries=0)
        world.state.faults.add_rule(FaultRule(service="vpsie", error_rate=1.0))
        with pytest.raises(AdapterError) as caught:
            await client.list_clusters()
        texts = [caplog.text, repr(client), str(caught.value), repr(caught.value)]
        assert all(token not in text for text in texts)
        assert "list_clusters" in str(caught.value)


CANNED: dict[str, tuple[int, str]] = {
    "/apps/v2/k8s/offers": (200, '{"error": false, "data": [{"id": 1, "ram": 1, "price": "1"}]}'),
    "/apps/v2/datacenter": (200, "<html>maintenance</html>"),
    "/apps/v2/k8s/cluster/all": (200, '{"error": false}'),
    "/apps/v2/k8s/node/groups/byClusterId/c": (200, '{"data": [{"id": "abc", "boxsize_id": 1}]}'),
    "/apps/v2/k8s/cluster/byId/c": (200, '{"data": {"nodes": [{"hostname": "w1"}]}}'),
    "/apps/v2/k8s/cluster/byId/d": (200, '{"data": {"masters": []}}'),
}


async def _canned(request: web.Request) -> web.Response:
    status, body = CANNED[request.path]
    return web.Response(status=status, text=body, content_type="application/json")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("list_offers", r"list_offers: data\[0\]\.cpu: missing"),
        ("list_datacenters", "list_datacenters: the answer is not JSON"),
        ("list_clusters", "list_clusters: data: missing"),
        ("list_node_groups", r"list_node_groups: data\[0\]\.id: expected an integer"),
        ("list_workers", r"list_workers: data\.nodes\[0\]\.identifier: missing"),
        ("list_workers_d", "list_workers: data: no node list"),
    ],
)
async def test_malformed_answers_name_call_and_field(call: str, message: str) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _canned)
    async with serve_app(app) as url:
        settings = VpsieSettings(base_url=url, auth="token", token="t")
        async with VpsieClient(
            settings, clock=InstantClock(), rng=random.Random(0), rate_limit_per_min=None
        ) as client:
            calls: dict[str, Any] = {
                "list_offers": lambda: client.list_offers("dc"),
                "list_datacenters": client.list_datacenters,
                "list_clusters": client.list_clusters,
                "list_node_groups": lambda: client.list_node_groups("c"),
                "list_workers": lambda: client.list_workers("c"),
                "list_workers_d": lambda: client.list_workers("d"),
            }
            with pytest.raises(MalformedResponse, match=message):
                await calls[call]()


def _write(path: Path, data: object, mode: int = 0o600) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(
    ("data", "mode", "message"),
    [
        ({"base_url": "http://x", "auth": "token", "token": "t"}, 0o644, "chmod 600"),
        ("{not json", 0o600, r"not valid JSON \(line 1\)"),
        ({"base_url": "ftp://x", "token": "t"}, 0o600, "'base_url' must be an http"),
        ({"base_url": "http://x", "auth": "token"}, 0o600, "'token' is required"),
        (
            {"base_url": "http://x", "auth": "client_credentials", "client_id": "i"},
            0o600,
            "'client_secret' is required",
        ),
        ({"base_url": "http://x", "token": "t", "tokn": "t"}, 0o600, "unknown key 'tokn'"),
        ({"base_url": "http://x", "auth": "magic"}, 0o600, "'auth' must be one of"),
    ],
)
def test_bad_credentials_files(tmp_path: Path, data: object, mode: int, message: str) -> None:
    path = _write(tmp_path / "vpsie.json", data, mode)
    with pytest.raises(SettingsError, match=message) as caught:
        VpsieSettings.from_file(path)
    assert str(path) in str(caught.value)


def test_missing_credentials_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        VpsieSettings.from_file(tmp_path / "absent.json")


def test_credentials_file_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path / "v.json", {"base_url": "https://api.example/", "token": "sekrit"})
    settings = VpsieSettings.from_file(path)
    assert (settings.base_url, settings.prefix, settings.auth) == (
        "https://api.example",
        "/apps/v2",
        "token",
    )
    assert "sekrit" not in repr(settings)
