"""The repair settings: per group `[node_groups.repair]`, cluster-wide `[repair]`."""

from __future__ import annotations

import pytest

from daemon.config import ConfigError, parse_config
from planner.policy import ConditionRule, Limit, RepairPolicy

BASE = """\
cluster = "k8s-1"
kubeconfig = "kube.yaml"
vpsie_credentials = "/etc/v/vpsie.json"
"""
GROUP = """
[[node_groups]]
name = "general"
"""


def test_defaults() -> None:
    cfg = parse_config(BASE + GROUP)
    assert cfg.node_groups[0].repair == RepairPolicy()
    assert cfg.repair_check_interval_s == 30.0
    assert cfg.repair_max_unhealthy == Limit(value=50, percent=True)


def test_every_key() -> None:
    cfg = parse_config(
        BASE
        + """
[repair]
check_interval = "10s"
max_unhealthy = 4
"""
        + GROUP
        + """
[node_groups.repair]
enabled = true
dryRun = true
addFirst = false
readyFalseAfter = "5m"
readyUnknownAfter = "2m"
workerGoneAfter = "0s"
workerStoppedAfter = "30s"
startupTimeout = "20m"
stoppedStatuses = ["Stopped", "hibernated"]
maxUnhealthy = "25%"
conditions = [{ type = "KernelDeadlock", after = "1m" }, { type = "DiskPressure" }]
"""
    )
    assert cfg.repair_check_interval_s == 10.0 and cfg.repair_max_unhealthy == Limit(value=4)
    rp = cfg.node_groups[0].repair
    assert rp == RepairPolicy(
        enabled=True,
        dry_run=True,
        add_first=False,
        ready_false_s=300.0,
        ready_unknown_s=120.0,
        worker_gone_s=0.0,
        worker_stopped_s=30.0,
        startup_s=1200.0,
        stopped_statuses=("stopped", "hibernated"),
        max_unhealthy=Limit(value=25, percent=True),
        conditions=(
            ConditionRule(type="KernelDeadlock", status="True", after_s=60.0),
            ConditionRule(type="DiskPressure", status="True", after_s=300.0),
        ),
    )


@pytest.mark.parametrize(
    ("fragment", "key", "words"),
    [
        ('maxUnhealthy = "140%"', "node_groups[0].repair.maxUnhealthy", "between"),
        ("maxUnhealthy = -1", "node_groups[0].repair.maxUnhealthy", "at least 0"),
        ("maxUnhealthy = true", "node_groups[0].repair.maxUnhealthy", "count"),
        ('readyFalseAfter = "soon"', "node_groups[0].repair.readyFalseAfter", "duration"),
        ("dryrun = true", "node_groups[0].repair.dryrun", "did you mean 'dryRun'"),
        ('conditions = [{ type = "Ready" }]', "node_groups[0].repair.conditions[0].type",
         "own tolerations"),
        ('conditions = [{ type = "X", status = "yes" }]',
         "node_groups[0].repair.conditions[0].status", "True"),
        ("stoppedStatuses = [1]", "node_groups[0].repair.stoppedStatuses", "array"),
    ],
)
def test_bad_values_name_the_key(fragment: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + GROUP + "[node_groups.repair]\n" + fragment + "\n", source="c.toml")
    text = str(err.value)
    assert f"c.toml: {key}: " in text and words in text


def test_bad_cluster_wide_limit() -> None:
    with pytest.raises(ConfigError, match=r"repair.max_unhealthy: expected a percentage"):
        parse_config(BASE + '[repair]\nmax_unhealthy = "half"\n' + GROUP)
