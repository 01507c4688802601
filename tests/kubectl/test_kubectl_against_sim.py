"""The real kubectl (not written here) accepts the simulated API: get, cordon, drain."""

from __future__ import annotations

from tests.kubectl.conftest import Kubectl


def _app_pods(k: Kubectl, app: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["spec"].get("nodeName", "")
            for p in k.world.pods("shop") if p["metadata"]["labels"].get("app") == app}


async def test_get_nodes_and_pods(kubectl: Kubectl) -> None:
    rc, out, err = await kubectl.run("get", "nodes")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "STATUS"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["worker-0", "worker-1", "worker-2"]
    assert all(line.split()[1] == "Ready" for line in lines[1:])
    rc, out, err = await kubectl.run("get", "pods", "-A")
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert len(rows) == 9  # 3 web, 3 db, 3 node agents
    assert {r[0] for r in rows} == {"shop", "kube-system"}
    assert all(r[2] == "1/1" and r[3] == "Running" for r in rows)


async def test_cordon_and_uncordon(kubectl: Kubectl) -> None:
    rc, out, err = await kubectl.run("cordon", "worker-1")
    assert rc == 0, err
    assert "cordoned" in out
    node = kubectl.world.node("worker-1")
    assert node is not None and node["spec"].get("unschedulable") is True
    rc, out, _ = await kubectl.run("get", "node", "worker-1")
    assert "SchedulingDisabled" in out
    rc, out, err = await kubectl.run("uncordon", "worker-1")
    assert rc == 0, err
    node = kubectl.world.node("worker-1")
    assert node is not None and not node["spec"].get("unschedulable")


async def test_drain_moves_pods_to_other_nodes(kubectl: Kubectl) -> None:
    world = kubectl.world
    # Let the db pods be evictable on this node: drop its PDB for this test.
    rc, _, err = await kubectl.run("delete", "pdb", "db", "-n", "shop")
    assert rc == 0, err
    before = {**_app_pods(kubectl, "web"), **_app_pods(kubectl, "db")}
    victims = {name for name, node in before.items() if node == "worker-0"}
    assert victims
    rc, out, err = await kubectl.run("drain", "worker-0", "--ignore-daemonsets",
                                     "--delete-emptydir-data", "--timeout=30s")
    assert rc == 0, err + out
    assert "drained" in out
    after = {**_app_pods(kubectl, "web"), **_app_pods(kubectl, "db")}
    assert not victims & set(after)
    assert len(after) == 6
    assert all(node in ("worker-1", "worker-2") for node in after.values())
    remaining = [p["metadata"]["labels"]["app"] for p in world.pods_on("worker-0")]
    assert remaining == ["node-agent"]


async def test_drain_blocked_by_pdb_fails_and_pods_stay(kubectl: Kubectl) -> None:
    before = _app_pods(kubectl, "db")
    on_node = {name for name, node in before.items() if node == "worker-1"}
    assert on_node
    rc, out, err = await kubectl.run("drain", "worker-1", "--ignore-daemonsets",
                                     "--delete-emptydir-data", "--pod-selector=app=db",
                                     "--timeout=2s")
    assert rc != 0
    assert "disruption budget" in (out + err)
    assert _app_pods(kubectl, "db") == before


async def test_get_workloads_and_budgets(kubectl: Kubectl) -> None:
    rc, out, err = await kubectl.run("get", "pdb", "-n", "shop")
    assert rc == 0, err
    header, row = out.splitlines()
    assert "ALLOWED DISRUPTIONS" in header
    assert row.split()[:4] == ["db", "N/A", "0", "0"]
    rc, out, err = await kubectl.run("get", "deployments", "-n", "shop", "-o", "name")
    assert rc == 0, err
    assert sorted(out.split()) == ["deployment.apps/db", "deployment.apps/web"]
    rc, out, err = await kubectl.run("get", "deploy", "web", "-n", "shop")
    assert rc == 0, err
    assert out.splitlines()[1].split()[:2] == ["web", "3/3"]
