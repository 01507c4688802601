"""The VPSie client under every fault the simulated API can inject."""

from __future__ import annotations

import random
import socket
import time

import pytest

from adapters.errors import AuthenticationError, TemporaryError
from adapters.vpsie import VpsieClient, VpsieSettings
from simulator.faults import FaultRule
from tests.adapters_vpsie.conftest import VpsieWorld

GROUPS = "/apps/v2/k8s/node/groups/byClusterId/*"
ADD = "/apps/v2/k8s/cluster/byId/*/add/slave/group/*"


async def test_5xx_is_retried_with_jittered_backoff(world: VpsieWorld) -> None:
    world.state.faults.add_rule(
        FaultRule(service="vpsie", method="GET", path=GROUPS, error_rate=1.0, times=3)
    )
    client = world.make_client()
    groups = await client.list_node_groups(world.cluster)
    assert [g.size_id for g in groups] == [202]
    sleeps = world.clock.sleeps
    assert len(sleeps) == 3
    assert all(0 <= s <= 2**i for i, s in enumerate(sleeps))  # full jitter, doubling cap


async def test_5xx_gives_up_after_max_retries(world: VpsieWorld) -> None:
    world.state.faults.add_rule(
        FaultRule(service="vpsie", path=GROUPS, error_rate=1.0, error_status=502)
    )
    client = world.make_client(max_retries=2)
    with pytest.raises(TemporaryError) as caught:
        await client.list_node_groups(world.cluster)
    assert caught.value.status == 502
    assert len(world.clock.sleeps) == 2


async def test_429_honours_retry_after(world: VpsieWorld) -> None:
    world.state.faults.add_rule(
        FaultRule(service="vpsie", path=GROUPS, throttle_rate=1.0, retry_after_s=7, times=2)
    )
    client = world.make_client()
    assert len(await client.list_node_groups(world.cluster)) == 1
    assert world.clock.sleeps == [7.0, 7.0]


async def test_429_is_retried_even_for_add_worker(world: VpsieWorld) -> None:
    world.state.faults.add_rule(
        FaultRule(service="vpsie", path=ADD, throttle_rate=1.0, retry_after_s=3, times=1)
    )
    client = world.make_client()
    await client.add_worker(world.cluster, world.state.groups[0].id)
    assert world.clock.sleeps == [3.0]
    assert len(world.state.workers) == 4


async def test_200_with_error_is_an_error_and_reads_retry(world: VpsieWorld) -> None:
    world.state.faults.add_rule(
        FaultRule(service="vpsie", path=GROUPS, error_body_rate=1.0, times=1)
    )
    client = world.make_client()
    assert len(await client.list_node_groups(world.cluster)) == 1
    assert len(world.clock.sleeps) == 1


async def test_200_with_error_on_add_worker_is_not_retried(world: VpsieWorld) -> None:
    world.state.faults.add_rule(FaultRule(service="vpsie", path=ADD, error_body_rate=1.0))
    client = world.make_client()
    with pytest.raises(TemporaryError, match="add_worker: Something went wrong") as caught:
        await client.add_worker(world.cluster, world.state.groups[0].id)
    assert caught.value.status == 200
    assert world.clock.sleeps == []  # an unsure add is reconciled by the caller, never repeated


async def test_5xx_on_add_worker_is_not_retried(world: VpsieWorld) -> None:
    world.state.faults.add_rule(FaultRule(service="vpsie", path=ADD, error_rate=1.0))
    client = world.make_client()
    with pytest.raises(TemporaryError):
        await client.add_worker(world.cluster, world.state.groups[0].id)
    assert world.clock.sleeps == []


async def test_latency_beyond_the_timeout(world: VpsieWorld) -> None:
    # 30 simulated seconds at speed 100 is 0.3 s of real time; the client waits 0.05 s.
    world.state.faults.add_rule(FaultRule(service="vpsie", path=GROUPS, latency_s=30, times=1))
    client = world.make_client(timeout_s=0.05)
    started = time.monotonic()
    assert len(await client.list_node_groups(world.cluster)) == 1
    assert time.monotonic() - started < 0.3
    assert len(world.clock.sleeps) == 1


async def test_latency_timeout_every_time_is_temporary(world: VpsieWorld) -> None:
    world.state.faults.add_rule(FaultRule(service="vpsie", path=GROUPS, latency_s=30, times=2))
    client = world.make_client(timeout_s=0.05, max_retries=1)
    with pytest.raises(TemporaryError, match=r"no answer within 0\.05s"):
        await client.list_node_groups(world.cluster)


async def test_api_down_for_a_while_then_back(world: VpsieWorld) -> None:
    client = world.make_client()
    await client.list_clusters()  # logged in while the API was up
    world.state.faults.set_down("vpsie", True)

    def back_after_third_wait(waits: int) -> None:
        if waits == 3:
            world.state.faults.set_down("vpsie", False)

    world.clock.on_sleep = back_after_third_wait
    workers = await client.list_workers(world.cluster)
    assert len(workers) == 3
    assert len(world.clock.sleeps) == 3


async def test_api_down_for_good_is_temporary(world: VpsieWorld) -> None:
    world.state.faults.set_down("vpsie", True)
    client = world.make_client(max_retries=3)
    with pytest.raises(TemporaryError) as caught:
        await client.list_workers(world.cluster)
    assert caught.value.status == 503
    assert len(world.clock.sleeps) == 3


async def test_connection_refused_is_temporary(world: VpsieWorld) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = VpsieSettings(base_url=f"http://127.0.0.1:{port}", auth="token", token="x")
    dead = VpsieClient(
        settings, clock=world.clock, rng=random.Random(1), rate_limit_per_min=None, max_retries=1
    )
    async with dead:
        with pytest.raises(TemporaryError, match="cannot connect"):
            await dead.add_worker(world.cluster, 1)
    assert len(world.clock.sleeps) == 1  # a refused connection had no effect: retried


async def test_expired_token_means_one_login_and_a_retry(world: VpsieWorld) -> None:
    client = world.make_client()
    await client.list_clusters()
    assert world.state.logins == 1
    world.state.expire_tokens()
    assert len(await client.list_workers(world.cluster)) == 3
    assert world.state.logins == 2 and client.logins == 2


async def test_token_is_renewed_before_it_expires(world: VpsieWorld) -> None:
    client = world.make_client()
    await client.list_clusters()
    world.clock.advance(3600 - 299)  # within the five-minute margin
    await client.list_clusters()
    assert world.state.logins == 2
    await client.list_clusters()
    assert world.state.logins == 2


async def test_a_second_401_is_an_authentication_error(world: VpsieWorld) -> None:
    client = world.make_client()
    await client.list_clusters()
    world.state.expire_tokens()
    # Every token the simulator issues from now on is born expired.
    world.state.auth = type(world.state.auth)(
        client_id=world.state.auth.client_id,
        client_secret=world.state.auth.client_secret,
        token_ttl_s=0,
    )
    with pytest.raises(AuthenticationError) as caught:
        await client.list_clusters()
    assert caught.value.status == 401
    assert world.state.logins == 2  # exactly one re-login


async def test_wrong_secret_is_an_authentication_error(world: VpsieWorld) -> None:
    world.credentials.write_text(
        world.credentials.read_text().replace(world.state.auth.client_secret, "wrong")
    )
    client = world.make_client()
    with pytest.raises(AuthenticationError, match="login: Invalid client credentials"):
        await client.list_clusters()
    assert world.clock.sleeps == []


async def test_client_side_rate_limit(world: VpsieWorld) -> None:
    client = world.make_client(rate_limit_per_min=60)  # one a second, a burst of 10
    for _ in range(20):
        await client.list_clusters()
    # 21 requests (the login too): 11 beyond the burst, a second apart.
    assert world.clock.monotonic() == pytest.approx(11, abs=0.01)


async def test_a_failed_login_lets_even_add_worker_retry(world: VpsieWorld) -> None:
    world.state.faults.add_rule(
        FaultRule(service="vpsie", path="*/auth/from/api", error_rate=1.0, times=1)
    )
    client = world.make_client()
    await client.add_worker(world.cluster, world.state.groups[0].id)
    assert len(world.clock.sleeps) == 1  # the add itself was never sent before the login worked
    assert len(world.state.workers) == 4 and world.state.logins == 1
