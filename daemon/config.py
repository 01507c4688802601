"""The daemon's configuration: one TOML file, checked completely before anything starts.

Key style: the daemon's own settings are snake_case (`cluster`, `kubeconfig`, `node_groups`,
...); the rebalancing policy inside each `[[node_groups]]` uses the seed design's camelCase
names (`maxConcurrent`, `drainTimeout`, `maintenanceWindows`, ...), the same names as the
NodeGroup custom resource's `spec.rebalancing`. Unknown keys are refused with a suggestion.

Every problem found is reported (not only the first), each naming the file, the key path
(`node_groups[1].maintenanceWindows[0].days[2]`) and what is wrong, as one `ConfigError`.
Relative paths are relative to the configuration file's directory. The policy types live in
`planner.policy` (the planner cannot import the daemon); this module builds them.
Example: systemd/config.example.toml; reference: docs/configuration.md.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from planner.health import DEFAULT_CLUSTER_LIMIT
from planner.policy import (
    WEEKDAYS,
    ConditionRule,
    Limit,
    MaintenanceWindow,
    NodeGroupPolicy,
    RepairPolicy,
)
from statemachine.plan import Strategy

__all__ = [
    "DEFAULT_PATH",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "ListenAddress",
    "MaintenanceWindow",
    "NodeGroupPolicy",
    "load_config",
    "parse_config",
    "parse_duration",
]

DEFAULT_PATH = Path("/etc/vpsie-rebalancer/config.toml")
DEFAULT_DATABASE = "/var/lib/vpsie-rebalancer/events.db"
DEFAULT_LISTEN = "127.0.0.1:8470"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    key: str  # key path, "" for the file as a whole
    problem: str


class ConfigError(Exception):
    """The configuration file is unusable; `problems` lists every reason found."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [
            f"{source}: {p.key}: {p.problem}" if p.key else f"{source}: {p.problem}"
            for p in problems
        ]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenAddress:
    """Where the control API listens: TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    unix_path: Path | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: Path
    cluster: str
    kubeconfig: Path
    vpsie_credentials: Path
    database: Path | str  # an SQLite file, or a postgresql:// DSN (never with a password)
    database_password_file: Path | None  # PostgreSQL's password, read when the log is opened
    listen: ListenAddress
    token_file: Path | None
    analysis_interval_s: float
    node_groups: tuple[NodeGroupPolicy, ...]
    # How often the leader saves a snapshot of the fold (a cache: recovery reads the snapshot
    # and the tail after it).
    snapshot_interval_s: float = 600.0
    # Node repair, cluster-wide (per group: NodeGroupPolicy.repair): how often health is
    # looked at, and the stop when too many managed nodes are unhealthy at once.
    repair_check_interval_s: float = 30.0
    repair_max_unhealthy: Limit = DEFAULT_CLUSTER_LIMIT


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """ "300s", "10m", "1h30m", "1.5h", "250ms" -> seconds. ValueError otherwise."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f'{text!r} is not a duration like "300s", "10m" or "1h30m"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


class _Reader:
    """Walks the parsed TOML, collecting problems instead of stopping at the first."""

    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base
        self.problems: list[ConfigProblem] = []

    def bad(self, key: str, problem: str) -> None:
        self.problems.append(ConfigProblem(key, problem))

    def known(self, table: Mapping[str, Any], where: str, keys: tuple[str, ...]) -> None:
        for key in table:
            if key in keys:
                continue
            hint = next((k for k in keys if _norm(k) == _norm(key)), None)
            if hint is None:
                close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
                hint = close[0] if close else None
            tip = f"; did you mean {hint!r}?" if hint else f"; known keys: {', '.join(keys)}"
            self.bad(_join(where, key), f"unknown key{tip}")

    def opt(
        self,
        table: Mapping[str, Any],
        where: str,
        key: str,
        convert: Callable[[Any], T],
        default: T,
    ) -> T:
        """The converted value, or `default` when absent or wrong (the problem is recorded)."""
        if key not in table:
            return default
        try:
            return convert(table[key])
        except (TypeError, ValueError) as exc:
            self.bad(_join(where, key), str(exc))
            return default

    def req(
        self, table: Mapping[str, Any], where: str, key: str, convert: Callable[[Any], T]
    ) -> T | None:
        if key not in table:
            self.bad(_join(where, key), "required key is missing")
            return None
        try:
            return convert(table[key])
        except (TypeError, ValueError) as exc:
            self.bad(_join(where, key), str(exc))
            return None

    def path(self, value: Any) -> Path:
        text = _string(value)
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.base / p)


_PG_SCHEMES = ("postgresql://", "postgres://")
_DATABASE_KEYS = ("url", "password_file")


def _database(r: _Reader, value: Any) -> tuple[Path | str, Path | None]:
    """`database = "PATH"`, `database = "postgresql://..."`, or a `[database]` table with
    `url` and `password_file` (the password never goes into the DSN)."""
    password_file: Path | None = None
    if isinstance(value, dict):
        r.known(value, "database", _DATABASE_KEYS)
        if "url" not in value:
            raise ValueError("the [database] table needs url = \"postgresql://...\"")
        text = _string(value["url"])
        if "password_file" in value:
            password_file = r.path(value["password_file"])
        if not text.startswith(_PG_SCHEMES):
            raise ValueError("url must be a postgresql:// DSN (an SQLite file is a plain path)")
    else:
        text = _string(value)
    if text.startswith(_PG_SCHEMES):
        try:
            parts = urlsplit(text)
            has_password = parts.password is not None
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"not a valid PostgreSQL DSN: {exc}") from None
        if has_password:
            raise ValueError(
                "the DSN holds a password; put it in a credentials file named by "
                "[database] password_file, so it never shows in the configuration or the logs"
            )
        return text, password_file
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(f"unknown database scheme {scheme!r}: use postgresql:// or a file path")
    return r.path(text), None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_kind(value)}")
    return value


def _int_in(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {_kind(value)}")
        if value < lo or (hi is not None and value > hi):
            span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ValueError(f"must be {span}, got {value}")
        return value

    return convert


def _duration(minimum: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if not isinstance(value, str):
            raise TypeError(
                f'expected a duration string like "300s", "10m" or "1h", got {_kind(value)}'
            )
        seconds = parse_duration(value)
        if seconds < minimum:
            raise ValueError(f"must be at least {minimum:g}s, got {value!r}")
        return seconds

    return convert


def _decimal(lo: Decimal, hi: Decimal | None = None) -> Callable[[Any], Decimal]:
    def convert(value: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(f"expected a number or a decimal string, got {_kind(value)}")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
        if not amount.is_finite() or amount < lo or (hi is not None and amount > hi):
            span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ValueError(f"must be {span}, got {value!r}")
        return amount

    return convert


def _clock(value: Any) -> time:
    text = _string(value)
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if m is None:
        raise ValueError(f'expected a time of day "HH:MM", got {text!r}')
    hour, minute = int(m.group(1)), int(m.group(2))
    if (hour, minute) == (24, 0):
        return time(0, 0)
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a valid time of day")
    return time(hour, minute)


def _zone(value: Any) -> str:
    text = _string(value)
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        hint = "use an IANA name like Europe/Berlin"
        raise ValueError(f"unknown time zone {text!r} ({hint})") from None
    return text


def _private(listen: ListenAddress) -> bool:
    """A Unix socket, localhost or a loopback IP address: only this host can connect."""
    if listen.unix_path is not None or listen.host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(listen.host).is_loopback
    except ValueError:
        return False


def _listen(reader: _Reader) -> Callable[[Any], ListenAddress]:
    def convert(value: Any) -> ListenAddress:
        text = _string(value).strip()
        if text.startswith("unix:"):
            rest = text[len("unix:") :]
            if not rest:
                raise ValueError('"unix:" needs a socket path, e.g. "unix:/run/x.sock"')
            return ListenAddress(unix_path=reader.path(rest))
        m = re.fullmatch(r"(?:\[([0-9a-fA-F:]+)\]|([^:\[\]]+)):(\d{1,5})", text)
        if m is None:
            raise ValueError(f'expected "host:port", "[ipv6]:port" or "unix:/path", got {text!r}')
        port = int(m.group(3))
        if port > 65535:
            raise ValueError(f"port {port} is out of range")
        return ListenAddress(host=m.group(1) or m.group(2), port=port)

    return convert


_TOP_KEYS = (
    "cluster",
    "kubeconfig",
    "vpsie_credentials",
    "database",
    "listen",
    "token_file",
    "analysis_interval",
    "snapshot_interval",
    "node_groups",
    "repair",
)
_REPAIR_TOP_KEYS = ("check_interval", "max_unhealthy")
_REPAIR_KEYS = (
    "enabled",
    "dryRun",
    "addFirst",
    "readyFalseAfter",
    "readyUnknownAfter",
    "workerGoneAfter",
    "workerStoppedAfter",
    "startupTimeout",
    "conditions",
    "stoppedStatuses",
    "maxUnhealthy",
)
_CONDITION_KEYS = ("type", "status", "after")
_GROUP_KEYS = (
    "name",
    "strategy",
    "maxConcurrent",
    "batchSize",
    "drainTimeout",
    "provisionTimeout",
    "cooldownPeriod",
    "requireApproval",
    "minHealthyPercent",
    "skipNodesWithLocalStorage",
    "respectPDBs",
    "maintenanceWindows",
    "minNodes",
    "maxNodes",
    "allowedSizes",
    "minSavingMonthly",
    "minSavingPercent",
    "soakTime",
    "headroomPercent",
    "fleetSolver",
    "fleetSolverBudget",
    "provisionEstimate",
    "drainEstimate",
    "repair",
)
_WINDOW_KEYS = ("start", "end", "days", "timeZone")
_DAY_ALIASES = {d: d for d in WEEKDAYS} | {d[:3]: d for d in WEEKDAYS}


def _window(r: _Reader, raw: Any, where: str) -> MaintenanceWindow | None:
    if not isinstance(raw, dict):
        r.bad(where, f"expected a table with start, end, days, timeZone; got {_kind(raw)}")
        return None
    r.known(raw, where, _WINDOW_KEYS)
    start = r.req(raw, where, "start", _clock)
    end = r.req(raw, where, "end", _clock)
    zone = r.opt(raw, where, "timeZone", _zone, "UTC")
    days: list[str] = []
    raw_days = raw.get("days", [])
    if not isinstance(raw_days, list):
        r.bad(_join(where, "days"), f"expected an array of day names, got {_kind(raw_days)}")
    else:
        for i, d in enumerate(raw_days):
            name = _DAY_ALIASES.get(d.strip().lower()) if isinstance(d, str) else None
            if name is None:
                r.bad(f"{where}.days[{i}]", f"{d!r} is not a day (monday..sunday or mon..sun)")
            elif name not in days:
                days.append(name)
    if start is None or end is None or zone is None:
        return None
    ordered = tuple(d for d in WEEKDAYS if d in days)
    return MaintenanceWindow(start=start, end=end, days=ordered, timezone=zone)


def _limit(value: Any) -> Limit:
    """A count (`3`) or a percentage (`"40%"`) of nodes."""
    if isinstance(value, bool):
        raise TypeError(f'expected a count like 3 or a percentage like "40%", got {_kind(value)}')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be at least 0, got {value}")
        return Limit(value=value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d{1,3})\s*%\s*", value)
        if m is None or int(m.group(1)) > 100:
            raise ValueError(f'expected a percentage between "0%" and "100%", got {value!r}')
        return Limit(value=int(m.group(1)), percent=True)
    raise TypeError(f'expected a count like 3 or a percentage like "40%", got {_kind(value)}')


def _statuses(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TypeError("expected an array of VPSie status names (strings)")
    return tuple(v.strip().lower() for v in value)


def _condition_rule(r: _Reader, raw: Any, where: str) -> ConditionRule | None:
    if not isinstance(raw, dict):
        r.bad(where, f"expected a table with type, status, after; got {_kind(raw)}")
        return None
    r.known(raw, where, _CONDITION_KEYS)
    type_ = r.req(raw, where, "type", _string)
    status = r.opt(raw, where, "status", _condition_status, "True")
    after = r.opt(raw, where, "after", _duration(0), 300.0)
    if type_ is None:
        return None
    if type_ == "Ready":
        r.bad(_join(where, "type"), "Ready has its own tolerations (readyFalseAfter, "
              "readyUnknownAfter); list other conditions here")
        return None
    return ConditionRule(type=type_, status=status, after_s=after)


def _condition_status(value: Any) -> str:
    text = _string(value)
    if text not in ("True", "False", "Unknown"):
        raise ValueError(f'expected "True", "False" or "Unknown", got {text!r}')
    return text


def _repair(r: _Reader, raw: Any, where: str) -> RepairPolicy:
    d = RepairPolicy()
    if not isinstance(raw, dict):
        r.bad(where, f"expected a table, got {_kind(raw)}")
        return d
    r.known(raw, where, _REPAIR_KEYS)
    rules: list[ConditionRule] = []
    raw_rules = raw.get("conditions", [])
    if not isinstance(raw_rules, list):
        r.bad(_join(where, "conditions"), f"expected an array of tables, got {_kind(raw_rules)}")
    else:
        for i, c in enumerate(raw_rules):
            rule = _condition_rule(r, c, f"{where}.conditions[{i}]")
            if rule is not None:
                rules.append(rule)
    return RepairPolicy(
        enabled=r.opt(raw, where, "enabled", _bool, d.enabled),
        dry_run=r.opt(raw, where, "dryRun", _bool, d.dry_run),
        add_first=r.opt(raw, where, "addFirst", _bool, d.add_first),
        ready_false_s=r.opt(raw, where, "readyFalseAfter", _duration(0), d.ready_false_s),
        ready_unknown_s=r.opt(raw, where, "readyUnknownAfter", _duration(0), d.ready_unknown_s),
        worker_gone_s=r.opt(raw, where, "workerGoneAfter", _duration(0), d.worker_gone_s),
        worker_stopped_s=r.opt(
            raw, where, "workerStoppedAfter", _duration(0), d.worker_stopped_s
        ),
        startup_s=r.opt(raw, where, "startupTimeout", _duration(1), d.startup_s),
        conditions=tuple(rules),
        stopped_statuses=r.opt(raw, where, "stoppedStatuses", _statuses, d.stopped_statuses),
        max_unhealthy=r.opt(raw, where, "maxUnhealthy", _limit, d.max_unhealthy),
    )


def _strategy(value: Any) -> Strategy:
    text = _string(value)
    try:
        return Strategy(text)
    except ValueError:
        choices = ", ".join(s.value for s in Strategy)
        raise ValueError(f"unknown strategy {text!r}; choose one of {choices}") from None


def _sizes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected an array of size ids or names, got {_kind(value)}")
    out: list[str] = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int | str) or (isinstance(v, str) and not v):
            raise ValueError(f"[{i}]: expected a size id (integer) or name (string)")
        out.append(str(v))
    return tuple(out)


def _group(r: _Reader, raw: Any, where: str, cluster: str) -> NodeGroupPolicy | None:
    if not isinstance(raw, dict):
        r.bad(where, f"expected a table, got {_kind(raw)}")
        return None
    r.known(raw, where, _GROUP_KEYS)
    before = len(r.problems)
    d = NodeGroupPolicy(name="-")
    name = r.req(raw, where, "name", _string)
    windows: list[MaintenanceWindow] = []
    raw_windows = raw.get("maintenanceWindows", [])
    if not isinstance(raw_windows, list):
        r.bad(
            _join(where, "maintenanceWindows"),
            f"expected an array of tables, got {_kind(raw_windows)}",
        )
    else:
        for i, w in enumerate(raw_windows):
            window = _window(r, w, f"{where}.maintenanceWindows[{i}]")
            if window is not None:
                windows.append(window)
    min_nodes = r.opt(raw, where, "minNodes", _int_in(0), d.min_nodes)
    max_nodes: int | None = r.opt(raw, where, "maxNodes", _int_in(1), None)
    if min_nodes is not None and max_nodes is not None and min_nodes > max_nodes:
        r.bad(_join(where, "maxNodes"), f"maxNodes {max_nodes} is below minNodes {min_nodes}")
    policy = NodeGroupPolicy(
        name=name or "",
        cluster=cluster,
        strategy=r.opt(raw, where, "strategy", _strategy, d.strategy),
        max_concurrent=r.opt(raw, where, "maxConcurrent", _int_in(1), d.max_concurrent),
        batch_size=r.opt(raw, where, "batchSize", _int_in(1), d.batch_size),
        drain_timeout_s=r.opt(raw, where, "drainTimeout", _duration(1), d.drain_timeout_s),
        provision_timeout_s=r.opt(
            raw, where, "provisionTimeout", _duration(1), d.provision_timeout_s
        ),
        cooldown_s=r.opt(raw, where, "cooldownPeriod", _duration(0), d.cooldown_s),
        require_approval=r.opt(raw, where, "requireApproval", _bool, d.require_approval),
        min_healthy_percent=r.opt(
            raw, where, "minHealthyPercent", _int_in(0, 100), d.min_healthy_percent
        ),
        skip_nodes_with_local_storage=r.opt(
            raw, where, "skipNodesWithLocalStorage", _bool, d.skip_nodes_with_local_storage
        ),
        respect_pdbs=r.opt(raw, where, "respectPDBs", _bool, d.respect_pdbs),
        maintenance_windows=tuple(windows),
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        allowed_sizes=r.opt(raw, where, "allowedSizes", _sizes, ()),
        min_saving_monthly=r.opt(
            raw, where, "minSavingMonthly", _decimal(Decimal(0)), d.min_saving_monthly
        ),
        min_saving_percent=r.opt(
            raw,
            where,
            "minSavingPercent",
            _decimal(Decimal(0), Decimal(100)),
            d.min_saving_percent,
        ),
        soak_s=r.opt(raw, where, "soakTime", _duration(0), d.soak_s),
        headroom_percent=r.opt(raw, where, "headroomPercent", _int_in(0, 90), d.headroom_percent),
        fleet_solver=r.opt(raw, where, "fleetSolver", _bool, d.fleet_solver),
        fleet_solver_budget_s=r.opt(
            raw, where, "fleetSolverBudget", _duration(0.01), d.fleet_solver_budget_s
        ),
        provision_estimate_s=r.opt(
            raw, where, "provisionEstimate", _duration(0), d.provision_estimate_s
        ),
        drain_estimate_s=r.opt(raw, where, "drainEstimate", _duration(0), d.drain_estimate_s),
        repair=_repair(r, raw["repair"], _join(where, "repair")) if "repair" in raw else d.repair,
    )
    return policy if len(r.problems) == before else None


def parse_config(text: str, *, source: str | Path = "<config>") -> Config:
    """Parse TOML text; `source` names the file in messages and anchors relative paths."""
    src = Path(source)
    r = _Reader(str(source), src.parent if str(source) != "<config>" else Path.cwd())
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(source), [ConfigProblem("", f"not valid TOML: {exc}")]) from None
    r.known(raw, "", _TOP_KEYS)
    cluster = r.req(raw, "", "cluster", _string) or ""
    kubeconfig = r.req(raw, "", "kubeconfig", r.path)
    credentials = r.req(raw, "", "vpsie_credentials", r.path)
    no_password: Path | None = None
    default_database: tuple[Path | str, Path | None] = (r.path(DEFAULT_DATABASE), no_password)
    database, database_password_file = r.opt(
        raw, "", "database", lambda v: _database(r, v), default_database
    )
    listen = r.opt(raw, "", "listen", _listen(r), _listen(r)(DEFAULT_LISTEN))
    token_file: Path | None = r.opt(raw, "", "token_file", r.path, None)
    if not _private(listen) and token_file is None:
        r.bad(
            "listen",
            f"{listen} is not a loopback address or Unix socket: set token_file too (off "
            "loopback, status and metrics are read only with the token)",
        )
    interval = r.opt(raw, "", "analysis_interval", _duration(1), 300.0)
    snapshot_interval = r.opt(raw, "", "snapshot_interval", _duration(1), 600.0)
    repair_interval, repair_limit = 30.0, DEFAULT_CLUSTER_LIMIT
    raw_repair = raw.get("repair", {})
    if not isinstance(raw_repair, dict):
        r.bad("repair", f"expected a table, got {_kind(raw_repair)}")
    else:
        r.known(raw_repair, "repair", _REPAIR_TOP_KEYS)
        repair_interval = r.opt(raw_repair, "repair", "check_interval", _duration(1), 30.0)
        repair_limit = r.opt(raw_repair, "repair", "max_unhealthy", _limit, repair_limit)
    groups: list[NodeGroupPolicy] = []
    raw_groups = raw.get("node_groups")
    if raw_groups is None:
        r.bad("node_groups", "required: at least one [[node_groups]] table")
    elif not isinstance(raw_groups, list) or not raw_groups:
        r.bad("node_groups", "expected one or more [[node_groups]] tables")
    else:
        seen: dict[str, int] = {}
        for i, g in enumerate(raw_groups):
            policy = _group(r, g, f"node_groups[{i}]", cluster)
            name = g.get("name") if isinstance(g, dict) else None
            if isinstance(name, str) and name in seen:
                r.bad(
                    f"node_groups[{i}].name",
                    f"{name!r} is already used by node_groups[{seen[name]}]",
                )
            elif isinstance(name, str):
                seen[name] = i
            if policy is not None:
                groups.append(policy)
    if r.problems:
        raise ConfigError(str(source), r.problems)
    assert kubeconfig is not None and credentials is not None
    return Config(
        source=src,
        cluster=cluster,
        kubeconfig=kubeconfig,
        vpsie_credentials=credentials,
        database=database,
        database_password_file=database_password_file,
        listen=listen,
        token_file=token_file,
        analysis_interval_s=interval,
        snapshot_interval_s=snapshot_interval,
        node_groups=tuple(groups),
        repair_check_interval_s=repair_interval,
        repair_max_unhealthy=repair_limit,
    )


def load_config(path: str | Path = DEFAULT_PATH) -> Config:
    """Read and validate the file; every failure is a `ConfigError`, never a traceback."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), [ConfigProblem("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(str(p), [ConfigProblem("", f"cannot read: {reason}")]) from None
    return parse_config(text, source=p)
