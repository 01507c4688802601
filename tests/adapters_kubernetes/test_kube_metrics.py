"""Kubernetes requests counted by the client's RequestObserver hook, named by verb and
resource (never an object's name), over HTTP against the simulated API."""

from __future__ import annotations

from adapters.kubernetes import KubeClient
from adapters.metrics import Metrics
from tests.adapters_kubernetes.conftest import Sim
from tests.observability.test_api_request_metrics import requests


async def test_kubernetes_requests_are_named_by_verb_and_resource(sim: Sim) -> None:
    metrics = Metrics()
    async with KubeClient.from_kubeconfig(
        str(sim.kubeconfig), observer=metrics.api_request
    ) as kube:
        nodes = await kube.list_nodes()
        await kube.cordon(nodes[0].name)
        assert await kube.get_node("no-such-node") is None
    counted = requests(metrics)
    assert counted[("kubernetes", "list nodes", "ok")] >= 1
    assert counted[("kubernetes", "patch nodes", "ok")] >= 1
    assert counted[("kubernetes", "get nodes", "client_error")] == 1  # the 404
    for _, call, _ in counted:
        assert "node-" not in call, call  # no object name in a label
