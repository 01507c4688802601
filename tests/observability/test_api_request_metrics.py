"""The API request metrics' names stay bounded; helpers to read them (the adapters' tests
count real requests to the simulated APIs: tests/adapters_*/test_*_metrics.py)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from adapters.kubernetes.client import call_name
from adapters.metrics import Metrics


def requests(m: Metrics) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            if s.name == "vpsie_rebalancing_api_requests_total":
                out[(s.labels["api"], s.labels["call"], s.labels["outcome"])] = s.value
    return out


def latency_count(m: Metrics, api: str, call: str) -> float:
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            if (
                s.name == "vpsie_rebalancing_api_request_duration_seconds_count"
                and s.labels == {"api": api, "call": call}
            ):
                return s.value
    return 0.0


def test_call_names_stay_bounded() -> None:
    assert call_name("GET", "/api/v1/nodes") == "list nodes"
    assert call_name("GET", "/api/v1/nodes/worker-17") == "get nodes"
    assert call_name("GET", "/api/v1/pods", {"watch": "true"}) == "watch pods"
    assert call_name("POST", "/api/v1/namespaces/shop/pods/web-1/eviction") == (
        "create pods/eviction"
    )
    assert call_name(
        "PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/vpsie-rebalancer"
    ) == "update leases"
    assert call_name("GET", "/apis/policy/v1/poddisruptionbudgets") == (
        "list poddisruptionbudgets"
    )
