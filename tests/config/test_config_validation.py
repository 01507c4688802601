"""The configuration file: the example loads, and every mistake names file, key and problem."""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config, parse_config, parse_duration
from statemachine.plan import Strategy

REPO = Path(__file__).resolve().parents[2]

BASE = """\
cluster = "k8s-1"
kubeconfig = "kube.yaml"
vpsie_credentials = "/etc/v/vpsie.json"
"""
GROUP = """
[[node_groups]]
name = "general"
"""


def test_example_config_loads() -> None:
    cfg = load_config(REPO / "systemd" / "config.example.toml")
    assert cfg.cluster == "k8s-0a1b2c3d"
    assert str(cfg.listen) == "127.0.0.1:8470"
    assert cfg.analysis_interval_s == 300.0
    general, batch = cfg.node_groups
    assert general.name == "general" and general.cluster == "k8s-0a1b2c3d"
    assert general.min_saving_monthly == Decimal("10.00")
    assert general.provision_timeout_s == 600.0 and general.cooldown_s == 3600.0
    assert general.maintenance_windows[1].start == time(22, 0)
    assert general.maintenance_windows[1].timezone == "America/New_York"
    assert batch.strategy is Strategy.BLUE_GREEN and batch.soak_s == 1800.0
    assert batch.allowed_sizes == ("s-4-8", "12")


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(BASE + GROUP)
    cfg = load_config(f)
    assert cfg.kubeconfig == tmp_path / "kube.yaml"
    assert cfg.vpsie_credentials == Path("/etc/v/vpsie.json")
    assert cfg.database == Path("/var/lib/vpsie-rebalancer/events.db")
    assert cfg.token_file is None
    g = cfg.node_groups[0]
    assert (g.strategy, g.max_concurrent, g.batch_size) == (Strategy.ROLLING, 1, 1)
    assert (g.min_healthy_percent, g.respect_pdbs, g.skip_nodes_with_local_storage) == (
        75,
        True,
        True,
    )
    assert (g.fleet_solver, g.fleet_solver_budget_s) == (True, 0.5)


def test_the_snapshot_interval(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(BASE + GROUP)
    assert load_config(f).snapshot_interval_s == 600.0
    f.write_text('snapshot_interval = "90s"\n' + BASE + GROUP)
    assert load_config(f).snapshot_interval_s == 90.0
    f.write_text('snapshot_interval = "0s"\n' + BASE + GROUP)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert "snapshot_interval: must be at least 1s" in str(info.value)


def test_the_fleet_solver_is_configured_per_group(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(BASE + GROUP + 'fleetSolver = false\nfleetSolverBudget = "2s"\n')
    g = load_config(f).node_groups[0]
    assert (g.fleet_solver, g.fleet_solver_budget_s) == (False, 2.0)
    f.write_text(BASE + GROUP + 'fleetSolverBudget = "0s"\n')
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert "node_groups[0].fleetSolverBudget: must be at least 0.01s" in str(info.value)
    f.write_text(BASE + GROUP + 'fleetSolver = "yes"\n')
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert "node_groups[0].fleetSolver:" in str(info.value)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("[::1]:8470", "[::1]:8470"),
        ("localhost:9000", "localhost:9000"),
        ("unix:/run/vr/control.sock", "unix:/run/vr/control.sock"),
    ],
)
def test_listen_addresses(listen: str, expected: str) -> None:
    cfg = parse_config(BASE + f'listen = "{listen}"\n' + GROUP, source="/etc/vr/config.toml")
    assert str(cfg.listen) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300s", 300), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25), ("2d", 172800)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


# (case, TOML text, key path, words of the problem)
ERRORS = [
    ("missing cluster", BASE.replace('cluster = "k8s-1"\n', "") + GROUP, "cluster", "required"),
    ("cluster not a string", BASE.replace('"k8s-1"', "7") + GROUP, "cluster", "got an integer"),
    ("no node groups", BASE, "node_groups", "at least one"),
    ("unknown top-level key", BASE + "databse = 'x'\n" + GROUP, "databse", "'database'"),
    (
        "snake_case policy key",
        BASE + GROUP + "max_concurrent = 2\n",
        "node_groups[0].max_concurrent",
        "did you mean 'maxConcurrent'",
    ),
    (
        "misspelt policy key",
        BASE + GROUP + "drainTimout = '5m'\n",
        "node_groups[0].drainTimout",
        "did you mean 'drainTimeout'",
    ),
    (
        "bad strategy",
        BASE + GROUP + "strategy = 'canary'\n",
        "node_groups[0].strategy",
        "rolling, surge, blue-green",
    ),
    (
        "duration as number",
        BASE + GROUP + "drainTimeout = 300\n",
        "node_groups[0].drainTimeout",
        'like "300s"',
    ),
    (
        "bad duration",
        BASE + GROUP + "cooldownPeriod = '1 hour'\n",
        "node_groups[0].cooldownPeriod",
        "not a duration",
    ),
    ("zero batch size", BASE + GROUP + "batchSize = 0\n", "node_groups[0].batchSize", "at least 1"),
    (
        "percent over 100",
        BASE + GROUP + "minHealthyPercent = 101\n",
        "node_groups[0].minHealthyPercent",
        "between 0 and 100",
    ),
    (
        "bool as string",
        BASE + GROUP + "respectPDBs = 'yes'\n",
        "node_groups[0].respectPDBs",
        "true or false",
    ),
    (
        "max below min",
        BASE + GROUP + "minNodes = 5\nmaxNodes = 3\n",
        "node_groups[0].maxNodes",
        "below minNodes 5",
    ),
    (
        "money not a number",
        BASE + GROUP + "minSavingMonthly = 'ten'\n",
        "node_groups[0].minSavingMonthly",
        "not a decimal",
    ),
    (
        "negative money",
        BASE + GROUP + "minSavingMonthly = -1\n",
        "node_groups[0].minSavingMonthly",
        "at least 0",
    ),
    (
        "size neither id nor name",
        BASE + GROUP + "allowedSizes = [true]\n",
        "node_groups[0].allowedSizes",
        "size id",
    ),
    ("bad port", BASE + 'listen = "127.0.0.1:70000"\n' + GROUP, "listen", "out of range"),
    ("bad listen", BASE + 'listen = "8470"\n' + GROUP, "listen", "host:port"),
    ("duplicate group", BASE + GROUP + GROUP, "node_groups[1].name", "already used"),
    (
        "duplicate of an invalid group",
        BASE + GROUP + "batchSize = 0\n" + GROUP,
        "node_groups[1].name",
        "already used by node_groups[0]",
    ),
    (
        "bad day",
        BASE
        + GROUP
        + """
[[node_groups]]
name = "second"
[[node_groups.maintenanceWindows]]
start = "02:00"
end = "04:00"
days = ["mon", "tue", "caturday"]
""",
        "node_groups[1].maintenanceWindows[0].days[2]",
        "not a day",
    ),
    (
        "bad time",
        BASE
        + GROUP
        + """
[[node_groups.maintenanceWindows]]
start = "2am"
end = "04:00"
""",
        "node_groups[0].maintenanceWindows[0].start",
        '"HH:MM"',
    ),
    (
        "missing end",
        BASE
        + GROUP
        + """
[[node_groups.maintenanceWindows]]
start = "02:00"
""",
        "node_groups[0].maintenanceWindows[0].end",
        "required",
    ),
    (
        "bad zone",
        BASE
        + GROUP
        + """
[[node_groups.maintenanceWindows]]
start = "02:00"
end = "04:00"
timeZone = "Mars/Olympus"
""",
        "node_groups[0].maintenanceWindows[0].timeZone",
        "unknown time zone",
    ),
    (
        "unknown window key",
        BASE
        + GROUP
        + """
[[node_groups.maintenanceWindows]]
start = "02:00"
end = "04:00"
timezone = "UTC"
""",
        "node_groups[0].maintenanceWindows[0].timezone",
        "did you mean 'timeZone'",
    ),
]


@pytest.mark.parametrize(("case", "text", "key", "words"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_file_key_and_problem(
    tmp_path: Path, case: str, text: str, key: str, words: str
) -> None:
    f = tmp_path / "config.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    lines = str(info.value).splitlines()
    wanted = [line for line in lines if line.startswith(f"{f}: {key}: ")]
    assert wanted, (case, lines)
    assert any(words in line for line in wanted), (case, wanted)
    assert any(p.key == key for p in info.value.problems)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(BASE + GROUP + "batchSize = 0\nstrategy = 'x'\nbogus = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    keys = {p.key for p in info.value.problems}
    assert keys == {
        "node_groups[0].batchSize",
        "node_groups[0].strategy",
        "node_groups[0].bogus",
    }


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("cluster = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(bad)


def test_secrets_are_never_read_into_the_config(tmp_path: Path) -> None:
    # The credentials file is only a path: its content is not read and so cannot leak.
    secret = tmp_path / "vpsie.json"
    secret.write_text('{"token": "s3cr3t-token"}')
    f = tmp_path / "c.toml"
    f.write_text(BASE.replace("/etc/v/vpsie.json", str(secret)) + GROUP)
    cfg = load_config(f)
    assert cfg.vpsie_credentials == secret
    assert "s3cr3t" not in repr(cfg)


def test_listen_off_loopback_needs_a_token_file() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + 'listen = "0.0.0.0:8470"\n' + GROUP, source="/etc/vr/config.toml")
    assert "token_file" in str(caught.value) and "listen" in str(caught.value)
    cfg = parse_config(
        BASE + 'listen = "0.0.0.0:8470"\ntoken_file = "/etc/vr/token"\n' + GROUP,
        source="/etc/vr/config.toml",
    )
    assert str(cfg.listen) == "0.0.0.0:8470"
