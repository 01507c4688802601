"""VPSie requests counted by the client's RequestObserver hook, by call and outcome, with
their latency, over HTTP against the simulated API."""

from __future__ import annotations

from adapters.metrics import Metrics
from simulator.faults import FaultRule
from tests.adapters_vpsie.conftest import VpsieWorld
from tests.observability.test_api_request_metrics import latency_count, requests

GROUPS = "/apps/v2/k8s/node/groups/byClusterId/*"


async def test_vpsie_requests_by_call_and_outcome(world: VpsieWorld) -> None:
    """The adversary: the API throttles twice (429) before it answers."""
    world.state.faults.add_rule(
        FaultRule(service="vpsie", path=GROUPS, throttle_rate=1.0, retry_after_s=1, times=2)
    )
    metrics = Metrics()
    client = world.make_client(observer=metrics.api_request)
    await client.list_node_groups(world.cluster)
    await client.list_workers(world.cluster)
    counted = requests(metrics)
    assert counted[("vpsie", "list_node_groups", "rate_limited")] == 2
    assert counted[("vpsie", "list_node_groups", "ok")] == 1
    assert counted[("vpsie", "list_workers", "ok")] >= 1
    assert latency_count(metrics, "vpsie", "list_node_groups") == 3
