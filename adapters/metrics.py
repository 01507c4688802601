"""Prometheus metrics: what the rebalancer did, in numbers a dashboard can graph.

The names follow the seed design's list, renamed where Prometheus conventions ask for it
(counters end in `_total`, units are a suffix: `_seconds`, `_dollars`); docs/operations.md has
the full table and the mapping from the seed's names.

Each `Metrics` owns its own `CollectorRegistry`, so two daemons in one test process (or two
tests) never share counters. Labels are bounded on purpose: `node_group` (from the config),
`strategy` (three values) and `check` (the five safety checks, anything else is "other"). No
plan id, node or pod name is ever a label: each would be a new time series forever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

SAFETY_CHECKS = frozenset(
    {"cluster_health", "node_group_health", "disruption_budgets", "capacity", "timing"}
)

_PREFIX = "vpsie_rebalancing_"
# Node steps take minutes (provisioning a VM) or seconds (terminating one).
_STEP_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600)
_PLAN_BUCKETS = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)
# An API request: tens of milliseconds, up to a timeout of tens of seconds.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# An event-log append: a group commit with an fsync, milliseconds.
_APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

API_OUTCOMES = frozenset(
    {"ok", "client_error", "server_error", "rate_limited", "timeout", "unreachable", "error"}
)


def outcome_of_status(status: int) -> str:
    """The `outcome` label of an HTTP answer."""
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "ok"


class RequestObserver(Protocol):
    """What an adapter calls after each HTTP request it made: the hook behind the API metrics.

    `api` is "vpsie" or "kubernetes"; `call` a bounded name of the operation (never a node,
    pod or plan name); `outcome` one of `API_OUTCOMES`; `seconds` the wall time of the request.
    """

    def __call__(self, api: str, call: str, outcome: str, seconds: float) -> None: ...


class Metrics:
    """The rebalancer's metrics in a registry of their own; `render()` is the /metrics body."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ng = ("node_group",)
        ngs = ("node_group", "strategy")

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(_PREFIX + name, doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
            return Gauge(_PREFIX + name, doc, labels, registry=r)

        def histogram(
            name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
        ) -> Histogram:
            return Histogram(_PREFIX + name, doc, labels, registry=r, buckets=buckets)

        self.plans_created = counter("plans_created_total", "Plans proposed by the planner.", ngs)
        self.plans_executed = counter("plans_executed_total", "Plans that ran to completion.", ngs)
        self.plans_failed = counter(
            "plans_failed_total", "Plans that ended failed or rolled back.", ngs
        )
        self.plan_duration = histogram(
            "duration_seconds", "Plan run time, start to an end.", ngs, _PLAN_BUCKETS
        )
        self.nodes_provisioned = counter(
            "nodes_provisioned_total", "Replacement workers that became Ready nodes.", ng
        )
        self.nodes_drained = counter("nodes_drained_total", "Old nodes drained.", ng)
        self.nodes_terminated = counter(
            "nodes_terminated_total", "VPSie workers deleted by the rebalancer.", ng
        )
        self.nodes_failed = counter(
            "nodes_failed_total", "Node replacements that ended failed or rolled back.", ng
        )
        self.safety_checks_passed = counter(
            "safety_checks_passed_total", "Safety checks that passed.", ("check",)
        )
        self.safety_checks_failed = counter(
            "safety_checks_failed_total", "Safety checks that failed.", ("check",)
        )
        self.rollbacks = counter("rollbacks_executed_total", "Rollbacks started.", ngs)
        self.progress_percent = gauge(
            "progress_percent", "Share of the running plan's replacements finished (0-100).", ng
        )
        self.current_batch = gauge(
            "current_batch", "Index (from 0) of the batch the running plan is in.", ng
        )
        self.estimated_completion = gauge(
            "estimated_completion_seconds",
            "Estimated seconds until the running plan completes (0 when none runs).",
            ng,
        )
        self.provision_duration = histogram(
            "provision_duration_seconds", "Add-worker request to Ready node.", ng, _STEP_BUCKETS
        )
        self.drain_duration = histogram(
            "drain_duration_seconds", "Cordon to last pod evicted.", ng, _STEP_BUCKETS
        )
        self.terminate_duration = histogram(
            "terminate_duration_seconds",
            "Delete-worker request to worker gone.",
            ng,
            _STEP_BUCKETS,
        )
        self.batch_duration = histogram(
            "batch_duration_seconds",
            "One batch of replacements, start to end.",
            ng,
            _STEP_BUCKETS,
        )
        self.savings_realized = gauge(
            "savings_realized_monthly_dollars",
            "Monthly US dollars saved by the replacements that completed (the log's total).",
            ng,
        )
        self.leader = gauge("leader", "1 while this daemon holds the leader lease, else 0.", ())
        self.plans_in_flight = gauge(
            "plans_in_flight", "Plans not yet in a terminal state, by state.", ("state",)
        )
        self.api_requests = counter(
            "api_requests_total",
            "HTTP requests to the VPSie and Kubernetes APIs, by call and outcome.",
            ("api", "call", "outcome"),
        )
        self.api_request_duration = histogram(
            "api_request_duration_seconds",
            "Wall time of one HTTP request to the VPSie or Kubernetes API.",
            ("api", "call"),
            _REQUEST_BUCKETS,
        )
        self.eventlog_append_duration = histogram(
            "eventlog_append_duration_seconds",
            "One event-log append, from the request to its durable commit (group commit).",
            (),
            _APPEND_BUCKETS,
        )
        self.eventlog_append_group_size = histogram(
            "eventlog_append_group_size",
            "Appends committed together in one event-log transaction.",
            (),
            _GROUP_BUCKETS,
        )
        self.last_analysis = gauge(
            "last_successful_analysis_timestamp_seconds",
            "Unix time of the node group's last analysis that could read the world.",
            ng,
        )
        self.nodes_excluded = gauge(
            "nodes_excluded",
            "Nodes of the group the last analysis left out, by reason.",
            ("node_group", "reason"),
        )
        self.plans_without_runner = gauge(
            "plans_without_runner",
            "Plans executing or rolling back that no runner drives now (restarting, or left "
            "for a person after repeated failures).",
            (),
        )
        self.nodes_repaired = counter(
            "nodes_repaired_total",
            "Lost nodes the rebalancer replaced (repairs completed), by signal.",
            ("node_group", "reason"),
        )
        self.repairs_blocked = counter(
            "repairs_blocked_total",
            "Times repair of a group was found blocked (too many unhealthy, API unreadable); "
            "counted once per distinct block.",
            ("node_group", "reason"),
        )
        self.unhealthy_nodes = gauge(
            "unhealthy_nodes",
            "Nodes of the group showing a repair signal now (due or within their toleration).",
            ng,
        )
        self.leader.set(0)
        self._states_seen: set[str] = set()
        self._exclusions_seen: dict[str, set[str]] = {}

    def node_repaired(self, node_group: str, reason: str) -> None:
        self.nodes_repaired.labels(node_group=node_group, reason=reason).inc()

    def repair_blocked(self, node_group: str, reason: str) -> None:
        self.repairs_blocked.labels(node_group=node_group, reason=reason).inc()

    def set_unhealthy(self, node_group: str, count: int) -> None:
        self.unhealthy_nodes.labels(node_group=node_group).set(count)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)

    def plan_created(self, node_group: str, strategy: str) -> None:
        self.plans_created.labels(node_group, strategy).inc()

    def plan_executed(self, node_group: str, strategy: str, duration_s: float) -> None:
        self.plans_executed.labels(node_group, strategy).inc()
        self.plan_duration.labels(node_group, strategy).observe(duration_s)
        self._idle(node_group)

    def plan_failed(self, node_group: str, strategy: str, duration_s: float | None = None) -> None:
        self.plans_failed.labels(node_group, strategy).inc()
        if duration_s is not None:
            self.plan_duration.labels(node_group, strategy).observe(duration_s)
        self._idle(node_group)

    def rollback_started(self, node_group: str, strategy: str) -> None:
        self.rollbacks.labels(node_group, strategy).inc()

    def node_provisioned(self, node_group: str, duration_s: float) -> None:
        self.nodes_provisioned.labels(node_group).inc()
        self.provision_duration.labels(node_group).observe(duration_s)

    def node_drained(self, node_group: str, duration_s: float) -> None:
        self.nodes_drained.labels(node_group).inc()
        self.drain_duration.labels(node_group).observe(duration_s)

    def node_terminated(self, node_group: str, duration_s: float) -> None:
        self.nodes_terminated.labels(node_group).inc()
        self.terminate_duration.labels(node_group).observe(duration_s)

    def node_failed(self, node_group: str) -> None:
        self.nodes_failed.labels(node_group).inc()

    def batch_finished(self, node_group: str, duration_s: float) -> None:
        self.batch_duration.labels(node_group).observe(duration_s)

    def safety_check(self, check: str, *, passed: bool) -> None:
        """Count one check result; names outside the five known checks count as "other"."""
        name = check if check in SAFETY_CHECKS else "other"
        (self.safety_checks_passed if passed else self.safety_checks_failed).labels(name).inc()

    def progress(self, node_group: str, *, percent: float, batch: int, remaining_s: float) -> None:
        self.progress_percent.labels(node_group).set(max(0.0, min(100.0, percent)))
        self.current_batch.labels(node_group).set(batch)
        self.estimated_completion.labels(node_group).set(max(0.0, remaining_s))

    def set_savings_realized(self, node_group: str, monthly_dollars: float) -> None:
        """Set from the fold of the log, so the figure survives restarts."""
        self.savings_realized.labels(node_group).set(monthly_dollars)

    def set_leader(self, is_leader: bool) -> None:
        self.leader.set(1 if is_leader else 0)

    def set_plans_without_runner(self, count: int) -> None:
        """Plans executing or rolling back that no runner drives (restarting or stopped)."""
        self.plans_without_runner.set(count)

    def set_plans_in_flight(self, by_state: dict[str, int]) -> None:
        """Replace the per-state counts; states absent from `by_state` drop to 0."""
        for state in self._states_seen - by_state.keys():
            self.plans_in_flight.labels(state).set(0)
        self._states_seen |= by_state.keys()
        for state, count in by_state.items():
            self.plans_in_flight.labels(state).set(count)

    def api_request(self, api: str, call: str, outcome: str, seconds: float) -> None:
        """A `RequestObserver`: count one request and its latency."""
        self.api_requests.labels(api, call, outcome if outcome in API_OUTCOMES else "error").inc()
        self.api_request_duration.labels(api, call).observe(max(0.0, seconds))

    def eventlog_committed(self, waits: Sequence[float]) -> None:
        """One event-log transaction (the store's `on_commit`): each append's wait, and how
        many appends it carried."""
        for seconds in waits:
            self.eventlog_append_duration.observe(max(0.0, seconds))
        self.eventlog_append_group_size.observe(len(waits))

    def analysed(self, node_group: str, unix_time: float, excluded: Mapping[str, int]) -> None:
        """A successful analysis: its time and the nodes it left out by reason (others to 0)."""
        self.last_analysis.labels(node_group).set(unix_time)
        seen = self._exclusions_seen.setdefault(node_group, set())
        for reason in seen - excluded.keys():
            self.nodes_excluded.labels(node_group, reason).set(0)
        seen |= excluded.keys()
        for reason, count in excluded.items():
            self.nodes_excluded.labels(node_group, reason).set(count)

    def _idle(self, node_group: str) -> None:
        self.progress_percent.labels(node_group).set(0)
        self.estimated_completion.labels(node_group).set(0)
