"""Every Cloud call of the VPSie client against the simulated API, pages and both auths."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.errors import Conflict, PermanentError
from simulator.vpsie.state import SimAuth
from tests.adapters_vpsie.conftest import VpsieWorld, small_scenario


async def test_reads_every_page_of_every_list(world: VpsieWorld) -> None:
    client = world.make_client()
    before = world.state.requests
    offers = await client.list_offers(world.state.cluster.datacenter)
    # 3 sizes at 2 per page: two pages, plus the login.
    assert world.state.requests - before == 3
    assert [(o.id, o.name, o.cpu, o.ram_mb, o.monthly_price) for o in offers] == [
        (201, "k8s-2c-4g", 2, 4096, Decimal("24.00")),
        (202, "k8s-4c-8g", 4, 8192, Decimal("48.00")),
        (203, "k8s-8c-16g", 8, 16384, Decimal("96.00")),
    ]
    assert offers[1].hourly_price == Decimal("0.0658")
    dcs = await client.list_datacenters()
    assert [d.identifier for d in dcs] == [world.state.cluster.datacenter]
    clusters = await client.list_clusters()
    assert [(c.identifier, c.name, c.worker_count) for c in clusters] == [
        (world.cluster, "small", 3)
    ]
    groups = await client.list_node_groups(world.cluster)
    assert [(g.name, g.size_id, g.nodes_count) for g in groups] == [("general", 202, 3)]


async def test_pagination_across_many_groups(world: VpsieWorld) -> None:
    client = world.make_client()
    for size_id, name in ((201, "small"), (203, "large")):
        await client.create_node_group(world.cluster, name, size_id)
    groups = await client.list_node_groups(world.cluster)
    assert sorted(g.size_id for g in groups) == [201, 202, 203]  # pages of 2: all three read


async def test_workers_in_the_autoscaler_shape(world: VpsieWorld) -> None:
    client = world.make_client()
    workers = await client.list_workers(world.cluster)
    assert sorted(w.identifier for w in workers) == sorted(
        w.identifier for w in world.state.workers
    )  # the master row is left out
    assert all(w.deletable and w.role == "worker" and w.status == "running" for w in workers)
    assert all((w.cpu, w.ram_mb, w.disk_gb) == (4, 8192, 160) for w in workers)
    # VPSie's hostnames differ in case from the Node names; the client keeps them as listed.
    assert sorted(w.hostname for w in workers) == [f"Small-General-000{i}" for i in (1, 2, 3)]
    assert all(w.ip.startswith("185.") and not w.private_ip for w in workers)


async def test_workers_in_govpsie_shape_are_read_only(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scenario = small_scenario()
    scenario.profile = "govpsie"
    async for world in serve(scenario, tmp_path):
        client = world.make_client()
        workers = await client.list_workers(world.cluster)
        # govpsie's integer node_type names no role: the master row is read, read-only too.
        assert len(workers) == 4
        assert all(not w.identifier and not w.deletable for w in workers)
        assert all(isinstance(w.node_id, int) and w.key.startswith("node_id:") for w in workers)
        hosts = sorted(w.hostname.lower() for w in workers)
        assert hosts == ["small-general-0001", "small-general-0002", "small-general-0003",
                         "small-master"]
        assert all(w.private_ip.startswith("10.") and w.created_on.endswith("Z") for w in workers)
        group = world.state.groups[0].id
        assert await client.add_worker(world.cluster, group) is None  # always `data: true`


async def test_add_worker_is_asynchronous_and_boots_later(world: VpsieWorld) -> None:
    client = world.make_client()
    group = (await client.list_node_groups(world.cluster))[0]
    before = {w.identifier for w in await client.list_workers(world.cluster)}
    named: list[str | None] = []
    for _ in range(3):
        named.append(await client.add_worker(world.cluster, group.id))
    after = await client.list_workers(world.cluster)
    new = [w for w in after if w.identifier not in before]
    assert len(new) == 3 and {w.status for w in new} == {"provisioning"}
    # Seeded: some answers are `data: true` (None), some name the new worker.
    assert None in named and {n for n in named if n} < {w.identifier for w in new}


async def test_cluster_lock_and_upgrade_are_read(world: VpsieWorld) -> None:
    client = world.make_client()
    (row,) = await client.list_clusters()
    assert (row.locked, row.upgrade_version, row.datacenter_identifier) == (False, "", "")
    world.state.lock, world.state.upgrade_version = True, "1.31.0"
    (row,) = await client.list_clusters()
    assert (row.locked, row.upgrade_version) == (True, "1.31.0")


async def test_create_group_of_a_size_already_grouped_is_a_conflict(world: VpsieWorld) -> None:
    client = world.make_client()
    with pytest.raises(Conflict, match="has same selected Size") as caught:
        await client.create_node_group(world.cluster, "again", 202)
    assert caught.value.status == 200  # VPSie's HTTP 200 with "error": true
    assert len(world.state.groups) == 1


async def test_quota_is_permanent_and_not_retried(world: VpsieWorld) -> None:
    client = world.make_client()
    group = world.state.groups[0].id
    for _ in range(3):
        await client.add_worker(world.cluster, group)
    before = world.state.requests
    with pytest.raises(PermanentError, match="exceeds the allowed limit"):
        await client.add_worker(world.cluster, group)
    assert world.state.requests - before == 1
    assert world.clock.sleeps == []
    assert len(world.state.workers) == 6


async def test_delete_worker_then_again_is_false(world: VpsieWorld) -> None:
    client = world.make_client()
    victim = world.state.workers[0].identifier
    assert await client.delete_worker(world.cluster, victim) is True
    assert victim not in {w.identifier for w in await client.list_workers(world.cluster)}
    assert await client.delete_worker(world.cluster, victim) is False


async def test_static_token_auth(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scenario = dataclasses.replace(small_scenario(), auth=SimAuth(token="static-tok-93af0e"))
    async for world in serve(scenario, tmp_path):
        client = world.make_client()
        assert len(await client.list_workers(world.cluster)) == 3
        assert world.state.logins == 0 and client.logins == 0
