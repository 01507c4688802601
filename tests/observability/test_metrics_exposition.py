"""Metrics render in the Prometheus text format, with conventional names and bounded labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics import Metrics


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_seed_metric_is_exposed_under_its_conventional_name() -> None:
    m = Metrics()
    m.plan_created("web", "rolling")
    m.plan_executed("web", "rolling", 900.0)
    m.plan_failed("web", "surge", 30.0)
    m.rollback_started("web", "surge")
    m.node_provisioned("web", 240.0)
    m.node_drained("web", 45.0)
    m.node_terminated("web", 3.0)
    m.node_failed("web")
    m.batch_finished("web", 300.0)
    m.safety_check("capacity", passed=True)
    m.safety_check("timing", passed=False)
    m.progress("web", percent=50, batch=1, remaining_s=600)
    m.set_savings_realized("web", 12.5)
    names = {name for name, _ in _samples(m)}
    for wanted in (
        "vpsie_rebalancing_plans_created_total",
        "vpsie_rebalancing_plans_executed_total",
        "vpsie_rebalancing_plans_failed_total",
        "vpsie_rebalancing_duration_seconds_count",
        "vpsie_rebalancing_nodes_provisioned_total",
        "vpsie_rebalancing_nodes_drained_total",
        "vpsie_rebalancing_nodes_terminated_total",
        "vpsie_rebalancing_nodes_failed_total",
        "vpsie_rebalancing_safety_checks_passed_total",
        "vpsie_rebalancing_safety_checks_failed_total",
        "vpsie_rebalancing_rollbacks_executed_total",
        "vpsie_rebalancing_progress_percent",
        "vpsie_rebalancing_current_batch",
        "vpsie_rebalancing_estimated_completion_seconds",
        "vpsie_rebalancing_provision_duration_seconds_bucket",
        "vpsie_rebalancing_drain_duration_seconds_sum",
        "vpsie_rebalancing_terminate_duration_seconds_count",
        "vpsie_rebalancing_batch_duration_seconds_count",
        "vpsie_rebalancing_savings_realized_monthly_dollars",
        "vpsie_rebalancing_leader",
    ):
        assert wanted in names, wanted


def test_values_and_labels() -> None:
    m = Metrics()
    m.plan_created("web", "rolling")
    m.plan_created("web", "rolling")
    m.node_provisioned("web", 240.0)
    m.progress("web", percent=150, batch=2, remaining_s=-5)
    m.set_leader(True)
    s = _samples(m)
    ngs = (("node_group", "web"), ("strategy", "rolling"))
    assert s[("vpsie_rebalancing_plans_created_total", ngs)] == 2
    assert s[("vpsie_rebalancing_provision_duration_seconds_sum", (("node_group", "web"),))] == 240
    assert s[("vpsie_rebalancing_progress_percent", (("node_group", "web"),))] == 100
    assert s[("vpsie_rebalancing_current_batch", (("node_group", "web"),))] == 2
    assert s[("vpsie_rebalancing_estimated_completion_seconds", (("node_group", "web"),))] == 0
    assert s[("vpsie_rebalancing_leader", ())] == 1
    m.plan_executed("web", "rolling", 60)
    s = _samples(m)
    assert s[("vpsie_rebalancing_progress_percent", (("node_group", "web"),))] == 0


def test_unknown_check_names_do_not_create_new_series() -> None:
    m = Metrics()
    for i in range(50):
        m.safety_check(f"pod-{i}", passed=False)
    m.safety_check("capacity", passed=False)
    failed = {
        labels: v
        for (name, labels), v in _samples(m).items()
        if name == "vpsie_rebalancing_safety_checks_failed_total"
    }
    assert failed == {(("check", "other"),): 50, (("check", "capacity"),): 1}


def test_plans_in_flight_drop_to_zero_when_a_state_empties() -> None:
    m = Metrics()
    m.set_plans_in_flight({"executing": 1, "awaiting_approval": 2})
    m.set_plans_in_flight({"executing": 1})
    s = _samples(m)
    assert s[("vpsie_rebalancing_plans_in_flight", (("state", "awaiting_approval"),))] == 0
    assert s[("vpsie_rebalancing_plans_in_flight", (("state", "executing"),))] == 1


def test_two_instances_share_nothing() -> None:
    a, b = Metrics(), Metrics()
    a.plan_created("web", "surge")
    sample = (
        "vpsie_rebalancing_plans_created_total",
        (("node_group", "web"), ("strategy", "surge")),
    )
    assert _samples(a)[sample] == 1
    assert sample not in _samples(b)
