"""The control API over real HTTP: routes, auth, refusals, readiness."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from cli.control_client import ControlClient, ControlClientError
from daemon.control import ControlServer, Readiness, Role
from daemon.control_protocol import parse_address

from .conftest import FakeTarget, Running


async def _get(r: Running, path: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as s, s.get(f"{r.address}{path}") as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def _post(
    r: Running, path: str, *, auth: str | None = None, data: bytes = b""
) -> tuple[int, dict[str, object], str]:
    headers = {"Authorization": auth} if auth is not None else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{r.address}{path}", data=data, headers=headers) as resp,
    ):
        return resp.status, await resp.json(), resp.headers.get("WWW-Authenticate", "")


async def test_health_ready_metrics_status(running: Running) -> None:
    assert (await _get(running, "/healthz"))[0] == 200
    assert (await _get(running, "/readyz"))[0] == 200
    status, body, ctype = await _get(running, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert b"vpsie_rebalancing_plans_created_total" in body
    st = await ControlClient(running.address).status()
    assert st["leader"] is True
    assert st["daemon"] == {"role": "leader", "ready": True, "reason": "leader"}
    assert {p["plan_id"]: p["state"] for p in st["plans"]} == {
        "p-run": "executing",
        "p-wait": "awaiting_approval",
    }


@pytest.mark.parametrize(
    ("role", "recovered", "code", "reason"),
    [
        (Role.STARTING, False, 503, "starting"),
        (Role.LEADER, False, 503, "recovering"),
        (Role.LEADER, True, 200, "leader"),
        (Role.STANDBY, False, 200, "standby"),
        (Role.LOST, False, 503, "lost"),
        (Role.STOPPING, False, 503, "stopping"),
    ],
)
async def test_readiness(
    running: Running, role: Role, recovered: bool, code: int, reason: str
) -> None:
    running.readiness.set_role(Role.STARTING)
    running.readiness.set_role(role)
    if recovered:
        running.readiness.mark_recovered()
    status, body, _ = await _get(running, "/readyz")
    assert status == code
    assert reason.encode() in body


async def test_losing_leadership_resets_recovery() -> None:
    r = Readiness()
    r.set_role(Role.LEADER)
    r.mark_recovered()
    r.set_role(Role.STANDBY)
    r.set_role(Role.LEADER)
    assert r.check() == (False, "recovering")


async def test_approve_with_token_and_reason(running: Running) -> None:
    client = ControlClient(running.address, token=running.token)
    result = await client.act("p-wait", "approve", reason="reviewed the prices")
    assert result == {"plan_id": "p-wait", "state": "approved"}
    assert running.target.calls == [("approve", "p-wait", "cli", "reviewed the prices")]


async def test_by_can_be_given(running: Running) -> None:
    auth = f"Bearer {running.token}"
    status, body, _ = await _post(
        running, "/v1/plans/p-run/pause", auth=auth, data=b'{"by": "alice"}'
    )
    assert (status, body) == (200, {"plan_id": "p-run", "state": "paused"})
    assert running.target.calls == [("pause", "p-run", "alice", "")]


async def test_missing_token_is_401_wrong_token_403(running: Running) -> None:
    status, body, www = await _post(running, "/v1/plans/p-wait/approve")
    assert status == 401 and www.startswith("Bearer")
    status, body, _ = await _post(running, "/v1/plans/p-wait/approve", auth="Basic abc")
    assert status == 401
    status, body, _ = await _post(running, "/v1/plans/p-wait/approve", auth="Bearer nope")
    assert (status, body) == (403, {"error": "wrong token"})
    assert running.target.calls == []
    assert running.target.plans["p-wait"] == "awaiting_approval"


async def test_wrong_state_is_409_naming_the_state(running: Running) -> None:
    client = ControlClient(running.address, token=running.token)
    with pytest.raises(ControlClientError) as err:
        await client.act("p-run", "approve")
    assert "HTTP 409" in err.value.message
    assert "executing" in err.value.message
    with pytest.raises(ControlClientError, match="HTTP 404"):
        await client.act("p-nope", "cancel")


async def test_bad_bodies_are_400(running: Running) -> None:
    auth = f"Bearer {running.token}"
    for data, fragment in [
        (b"{not json", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"reason": 5}', "reason"),
        (b'{"by": ""}', "by"),
        (b'{"reason": "x", "force": true}', "force"),
        (b'{"reason": "' + b"x" * 1001 + b'"}', "1000"),
    ]:
        status, body, _ = await _post(running, "/v1/plans/p-wait/approve", auth=auth, data=data)
        assert status == 400, data
        assert fragment in str(body["error"]), (data, body)
    status, body, _ = await _post(running, "/v1/plans/bad%20id/approve", auth=auth)
    assert status == 400
    assert running.target.calls == []


async def test_unknown_route_is_json_404(running: Running) -> None:
    status, body, _ = await _get(running, "/v1/nothing")
    assert status == 404 and b"error" in body


async def test_no_token_file_disables_mutations() -> None:
    target = FakeTarget(plans={"p-wait": "awaiting_approval"})
    server = ControlServer(target, listen="127.0.0.1:0", readiness=Readiness())
    address = await server.start()
    try:
        client = ControlClient(address, token="x" * 32)
        with pytest.raises(ControlClientError, match="no control token"):
            await client.act("p-wait", "approve")
    finally:
        await server.stop()


async def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a" * 32)
    path.chmod(0o644)
    server = ControlServer(
        FakeTarget(), listen="127.0.0.1:0", readiness=Readiness(), token_file=path
    )
    with pytest.raises(ValueError, match="chmod 600"):
        await server.start()


async def test_unix_socket(tmp_path: Path, token_file: tuple[str, Path]) -> None:
    token, path = token_file
    sock = tmp_path / "control.sock"
    target = FakeTarget(plans={"p-wait": "awaiting_approval"})
    server = ControlServer(target, listen=f"unix:{sock}", readiness=Readiness(), token_file=path)
    address = await server.start()
    try:
        assert address == parse_address(f"unix:{sock}")
        assert sock.stat().st_mode & 0o077 == 0
        client = ControlClient(address, token=token)
        assert (await client.status())["plans"][0]["state"] == "awaiting_approval"
        assert (await client.act("p-wait", "reject", reason="too risky"))["state"] == "cancelled"
    finally:
        await server.stop()


async def test_listening_on_a_busy_port_says_where(running: Running) -> None:
    other = ControlServer(FakeTarget(), listen=str(running.address), readiness=Readiness())
    with pytest.raises(OSError, match="cannot listen on"):
        await other.start()


async def test_client_says_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    client = ControlClient(parse_address(f"unix:{tmp_path}/absent.sock"))
    with pytest.raises(ControlClientError, match="cannot reach the daemon at unix:") as err:
        await client.status()
    assert err.value.exit_code == 3


def test_addresses_parse_or_say_why() -> None:
    assert str(parse_address("127.0.0.1:9464")) == "http://127.0.0.1:9464"
    assert str(parse_address("http://localhost:80")) == "http://localhost:80"
    assert str(parse_address("[::1]:9")) == "http://[::1]:9"
    assert str(parse_address("unix:/run/x.sock")) == "unix:/run/x.sock"
    for bad in ("localhost", "unix:relative", "http://h:1/path", "h:99999"):
        with pytest.raises(ValueError, match="control address"):
            parse_address(bad)


async def test_off_loopback_reads_need_the_token(token_file: tuple[str, Path]) -> None:
    """Adversary: another host on the network, reading status and metrics (plan ids, node
    names, the fleet) from a daemon told to listen on every interface."""
    token, path = token_file
    target = FakeTarget(plans={"p-wait": "awaiting_approval"})
    server = ControlServer(target, listen="0.0.0.0:0", readiness=Readiness(), token_file=path)
    address = await server.start()
    here = parse_address(f"127.0.0.1:{address.port}")
    try:
        async with aiohttp.ClientSession() as s:
            for route in ("/v1/status", "/metrics"):
                async with s.get(f"{here}{route}") as resp:
                    assert resp.status == 401, route
                async with s.get(f"{here}{route}", headers={"Authorization": "Bearer x"}) as resp:
                    assert resp.status == 403, route
            async with s.get(f"{here}/healthz") as resp:
                assert resp.status == 200
        client = ControlClient(address, token=token)
        assert (await client.status())["plans"][0]["plan_id"] == "p-wait"
    finally:
        await server.stop()


async def test_off_loopback_without_a_token_file_is_refused() -> None:
    """Adversary: another host on the network; without a token it could read everything."""
    server = ControlServer(FakeTarget(), listen="0.0.0.0:0", readiness=Readiness())
    with pytest.raises(ValueError, match="not a loopback address"):
        await server.start()
