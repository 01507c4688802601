"""Pod JSON as the API may serve it, into PodInfo: optional and null fields, odd quantities."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from adapters.kubernetes.pods import decode_pod_list, pod_info, pod_of


def listed(*pods: dict[str, Any]) -> list[Any]:
    raw = orjson.dumps({"kind": "PodList", "apiVersion": "v1",
                        "metadata": {"resourceVersion": "7", "continue": "abc"},
                        "items": list(pods)})
    doc = decode_pod_list(raw)
    assert doc.metadata is not None
    assert (doc.metadata.resourceVersion, doc.metadata.continue_) == ("7", "abc")
    return [pod_of(p) for p in doc.items]


def test_a_bare_pod_gets_the_defaults() -> None:
    (p,) = listed({})
    assert (p.namespace, p.name, p.node_name, p.phase, p.ready) == ("", "", "", "Pending", False)
    assert p.labels == {} and p.tolerations == () and p.requests.pods == 1
    assert p.requests.cpu_millis == 0 and not p.uses_local_storage and not p.deleting


def test_nulls_where_the_api_allows_them() -> None:
    (p,) = listed({"metadata": {"name": "a", "labels": None, "annotations": None,
                                "ownerReferences": None},
                   "spec": {"containers": None, "tolerations": None, "affinity": None,
                            "nodeSelector": None, "volumes": None},
                   "status": {"conditions": None}})
    assert p.name == "a" and p.labels == {} and p.tolerations == ()
    assert p.required_node_affinity == () and p.anti_affinity_hostname == ()


def test_requests_sum_containers_take_the_largest_init_and_add_overhead() -> None:
    (p,) = listed({"spec": {
        "containers": [{"resources": {"requests": {"cpu": 1, "memory": "512Mi"}}},
                       {"resources": {"requests": {"cpu": "250m"}}}, {}],
        "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "128Mi"}}}],
        "overhead": {"cpu": "10m", "memory": 1024}}})
    assert p.requests.cpu_millis == 2000 + 10
    assert p.requests.memory_bytes == 512 * 2**20 + 1024


def test_owner_storage_mirror_deletion_and_readiness() -> None:
    a, b, c = listed(
        {"metadata": {"name": "a", "namespace": "x", "uid": "u1",
                      "annotations": {"kubernetes.io/config.mirror": "h"},
                      "deletionTimestamp": "2026-01-01T00:00:00Z",
                      "ownerReferences": [{"kind": "Node", "name": "n"},
                                          {"kind": "DaemonSet", "name": "ds",
                                           "controller": True}]},
         "spec": {"nodeName": "n1", "volumes": [{"name": "v", "emptyDir": {}}]},
         "status": {"phase": "Running", "conditions": [
             {"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}]}},
        {"spec": {"volumes": [{"name": "m", "emptyDir": {"medium": "Memory"}},
                              {"name": "s", "secret": {"secretName": "x"}}]},
         "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        {"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/var"}}]}})
    assert (a.owner_kind, a.owner_name, a.is_daemonset, a.is_mirror) == (
        "DaemonSet", "ds", True, True)
    assert a.deleting and a.ready and a.uses_local_storage and a.node_name == "n1"
    assert a.uid == "u1" and a.phase == "Running"
    assert not b.uses_local_storage and not b.ready and b.owner_kind == ""
    assert c.uses_local_storage


def test_tolerations_and_affinity_are_read_and_shared() -> None:
    spec = {"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"},
                            {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}},
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname",
                     "labelSelector": {"matchLabels": {"app": "x"}}},
                    {"topologyKey": "topology.kubernetes.io/zone",
                     "labelSelector": {"matchLabels": {"app": "y"}}}]}}}
    p, q = listed({"metadata": {"name": "p"}, "spec": spec},
                  {"metadata": {"name": "q"}, "spec": spec})
    assert [(t.key, t.operator, t.effect) for t in p.tolerations] == [
        ("k", "Exists", "NoSchedule"), ("node.kubernetes.io/not-ready", "Exists", "NoExecute")]
    assert p.required_node_affinity[0][0].values == ("a", "b")
    assert [s.match_labels for s in p.anti_affinity_hostname] == [{"app": "x"}]
    assert p.tolerations is q.tolerations
    assert p.required_node_affinity is q.required_node_affinity


def test_hard_topology_spread_constraints_are_read() -> None:
    spec = {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
         "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "x"}}},
        {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
         "labelSelector": {"matchExpressions": [
             {"key": "app", "operator": "In", "values": ["x"]}]}},
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"app": "x"}}},
        {"maxSkew": 1, "topologyKey": "rack"}]}
    (p,) = listed({"metadata": {"name": "p"}, "spec": spec})
    # The default whenUnsatisfiable is DoNotSchedule; ScheduleAnyway is a preference, and a
    # constraint without a labelSelector counts no pod: neither is kept.
    assert [(c.max_skew, c.topology_key) for c in p.topology_spread] == [
        (1, "kubernetes.io/hostname"), (2, "topology.kubernetes.io/zone")]
    assert p.topology_spread[0].selector.match_labels == {"app": "x"}
    assert p.topology_spread[1].selector.match_expressions[0].values == ("x",)
    for bad in ({"maxSkew": 0, "topologyKey": "zone"}, {"maxSkew": 1, "topologyKey": ""}):
        with pytest.raises(msgspec.ValidationError, match="topologySpreadConstraints"):
            listed({"metadata": {"name": "b"}, "spec": {"topologySpreadConstraints": [bad]}})


def test_spread_min_domains_match_label_keys_and_node_policies_are_read() -> None:
    spec = {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "minDomains": 3,
         "matchLabelKeys": ["pod-template-hash", "pod-template-hash", "track"],
         "nodeAffinityPolicy": "Ignore", "nodeTaintsPolicy": "Honor",
         "labelSelector": {"matchLabels": {"app": "x"}}},
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "minDomains": None,
         "matchLabelKeys": None, "nodeAffinityPolicy": None, "nodeTaintsPolicy": None,
         "labelSelector": {"matchLabels": {"app": "x"}}}]}
    (p,) = listed({"metadata": {"name": "p"}, "spec": spec})
    full, plain = p.topology_spread
    assert (full.min_domains, full.match_label_keys) == (3, ("pod-template-hash", "track"))
    assert (full.node_affinity_policy, full.node_taints_policy) == ("Ignore", "Honor")
    # Absent or null: minDomains 1 (no effect), no keys, Honor for affinity, Ignore for taints.
    assert (plain.min_domains, plain.match_label_keys) == (1, ())
    assert (plain.node_affinity_policy, plain.node_taints_policy) == ("Honor", "Ignore")


@pytest.mark.parametrize(("field", "value", "says"), [
    ("minDomains", 0, "minDomains: expected an integer >= 1, got 0"),
    ("minDomains", -2, "minDomains: expected an integer >= 1, got -2"),
    ("minDomains", "3", "minDomains: expected an integer >= 1, got '3'"),
    ("minDomains", True, "minDomains: expected an integer >= 1, got True"),
    ("matchLabelKeys", "hash",
     "matchLabelKeys: expected a list of label keys, got 'hash'"),
    ("matchLabelKeys", ["a", 7], "matchLabelKeys: expected a list of label keys, got ['a', 7]"),
    ("matchLabelKeys", [""], "matchLabelKeys: expected a list of label keys, got ['']"),
    ("nodeAffinityPolicy", "honor", "nodeAffinityPolicy: expected Honor or Ignore, got 'honor'"),
    ("nodeTaintsPolicy", 1, "nodeTaintsPolicy: expected Honor or Ignore, got 1"),
])
def test_a_malformed_spread_field_names_the_pod_and_the_field(
        field: str, value: Any, says: str) -> None:
    good = {"maxSkew": 1, "topologyKey": "zone", "labelSelector": {"matchLabels": {"a": "b"}}}
    pod = {"metadata": {"name": "web-1", "namespace": "shop"},
           "spec": {"topologySpreadConstraints": [good, {**good, field: value}]}}
    with pytest.raises(msgspec.ValidationError) as err:
        listed(pod)
    assert str(err.value) == f"pod shop/web-1: spec.topologySpreadConstraints[1].{says}"
    with pytest.raises(msgspec.ValidationError) as watched:
        pod_info(pod)
    assert str(watched.value) == str(err.value)


def test_one_pod_from_a_watch_event_reads_the_same() -> None:
    obj = {"metadata": {"name": "w", "namespace": "n", "labels": {"a": "1"}},
           "spec": {"nodeName": "x", "containers": [{"resources": {"requests": {
               "cpu": "100m", "memory": "64Mi"}}}]},
           "status": {"phase": "Running"}}
    (listed_pod,) = listed(obj)
    assert pod_info(obj) == listed_pod


@pytest.mark.parametrize("bad", [
    {"metadata": {"labels": {"a": 1}}},
    {"spec": {"containers": [{"resources": {"requests": {"cpu": ["1"]}}}]}},
    {"status": {"conditions": "Ready"}},
])
def test_wrong_types_are_decode_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        listed(bad)


def test_a_bad_quantity_or_affinity_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        listed({"spec": {"containers": [{"resources": {"requests": {"cpu": "lots"}}}]}})
    with pytest.raises(msgspec.ValidationError, match="affinity"):
        listed({"spec": {"affinity": ["not", "an", "object"]}})
