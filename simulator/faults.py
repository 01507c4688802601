"""Faults the simulated APIs inject, so the clients are rehearsed against a bad day.

Both simulated services (VPSie and Kubernetes) run every request through
`fault_middleware(service, faults, clock, rng)`. A `FaultConfig` holds:

- rules (`FaultRule`): for requests of one service matching a method and a path glob, a rate of
  5xx answers, of 429 answers with `Retry-After`, of HTTP 200 with `{"error": true}` (VPSie
  only: its clients must check every body), of answers lost after their effect (the request is
  carried out, then answered 5xx as if it timed out: the client cannot tell it from an error
  before the effect), and added latency in simulated seconds. A rule can be limited to its
  first `times` matches, which makes a test exact ("the next two calls 503");
- down windows: the service answers 503 from simulated second `start` to `end` after the world
  started, or while `set_down(service, True)` holds;
- world-level faults that the worlds read themselves: worker hostnames that never turn Ready
  (`never_ready`), `namespace/selector` pairs whose pods can never be evicted
  (`eviction_blocked`), and workers the provider loses at a simulated second (`losses`: one
  that stops, one that vanishes from the listing, a kubelet that stops reporting while its VM
  runs; see `WorkerLoss`);
- a listing that lags (`listing_lag_s`, scenario `listingLagSeconds`): a worker added shows
  in VPSie's listings only that many simulated seconds after the add;
- a foreign actor (`act_after`, from Python only): another client's action run right after a
  matching request was handled and before its answer leaves, so what the client read is
  already stale when it arrives (an operator who cordons between our read and our write).

Randomness comes from the injected, seeded `random.Random`, so a seed replays the same faults.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from simulator.clock import SimClock

SERVICES = ("vpsie", "kubernetes")


LOSS_KINDS = ("stop", "suspend", "vanish", "kubelet")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLoss:
    """The provider loses a worker `at` simulated seconds after the world started.

    `worker` is a hostname glob (Node names, lower case) or `#N`, the N-th worker (from 1) of
    the listing. Kinds: `stop` (VPSie lists it `stopped`, its Node turns Ready=Unknown),
    `suspend` (the same, listed `suspended`), `vanish` (gone from VPSie's listing, Node
    Unknown), `kubelet` (the VM runs and is listed `running`; the Node turns Unknown)."""

    kind: str
    worker: str
    at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRule:
    """What goes wrong for requests of `service` matching `method` and the `path` glob."""

    service: str
    method: str = "*"
    path: str = "*"
    error_rate: float = 0.0
    error_status: int = 503
    throttle_rate: float = 0.0
    retry_after_s: float = 1.0
    error_body_rate: float = 0.0
    latency_s: float = 0.0
    lost_answer_rate: float = 0.0  # carried out, then answered `error_status`
    times: int | None = None  # apply to the first `times` matching requests only

    def matches(self, service: str, method: str, path: str) -> bool:
        return (
            self.service == service
            and (self.method == "*" or self.method.upper() == method.upper())
            and fnmatch.fnmatchcase(path, self.path)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DownWindow:
    """The service answers 503 from `start` to `end` simulated seconds after the world started."""

    service: str
    start: float
    end: float


@dataclass(slots=True, kw_only=True)
class ForeignAction:
    """`action()` run once (or `times` times) right after a matching request was handled."""

    service: str
    method: str
    path: str
    action: Callable[[], Awaitable[None]]
    times: int = 1

    def matches(self, service: str, method: str, path: str) -> bool:
        return (
            self.times > 0
            and self.service == service
            and self.method.upper() == method.upper()
            and fnmatch.fnmatchcase(path, self.path)
        )


@dataclass(slots=True)
class FaultConfig:
    """All faults of one simulated world; mutable at runtime by tests and the demo."""

    rules: list[FaultRule] = field(default_factory=list)
    down: list[DownWindow] = field(default_factory=list)
    never_ready: set[str] = field(default_factory=set)  # worker hostnames (globs)
    losses: list[WorkerLoss] = field(default_factory=list)
    eviction_blocked: set[str] = field(default_factory=set)  # "namespace/selector"
    # A listing that lags: a worker added appears in the cluster's and groups' listings only
    # this many simulated seconds after the add (its VM boots on its own schedule meanwhile).
    listing_lag_s: float = 0.0
    origin: float | None = None  # simulated time the world started; set by the first middleware
    _down_now: set[str] = field(default_factory=set)
    _used: dict[int, int] = field(default_factory=dict)
    _foreign: list[ForeignAction] = field(default_factory=list)

    def act_after(
        self,
        service: str,
        method: str,
        path: str,
        action: Callable[[], Awaitable[None]],
        *,
        times: int = 1,
    ) -> None:
        """Run `action` (another actor's change) after the next `times` requests matching
        `method` and the `path` glob are handled, before their answers are sent."""
        _check_service(service, "act_after")
        self._foreign.append(ForeignAction(service=service, method=method, path=path,
                                           action=action, times=times))

    def foreign_actions(self, service: str, method: str, path: str) -> list[ForeignAction]:
        found = [f for f in self._foreign if f.matches(service, method, path)]
        for f in found:
            f.times -= 1
        return found

    def set_down(self, service: str, down: bool) -> None:
        _check_service(service, "set_down")
        if down:
            self._down_now.add(service)
        else:
            self._down_now.discard(service)

    def add_rule(self, rule: FaultRule) -> None:
        _check_service(rule.service, "rule")
        self.rules.append(rule)

    def clear(self) -> None:
        """Remove every rule, window and runtime outage (world-level faults stay)."""
        self.rules.clear()
        self.down.clear()
        self._down_now.clear()
        self._used.clear()
        self._foreign.clear()

    def is_down(self, service: str, elapsed_s: float) -> bool:
        if service in self._down_now:
            return True
        return any(w.service == service and w.start <= elapsed_s < w.end for w in self.down)

    def never_turns_ready(self, hostname: str) -> bool:
        return any(fnmatch.fnmatchcase(hostname, pattern) for pattern in self.never_ready)

    def take(self, service: str, method: str, path: str) -> list[FaultRule]:
        """The rules that apply to this request, counting it against limited rules."""
        found: list[FaultRule] = []
        for index, rule in enumerate(self.rules):
            if not rule.matches(service, method, path):
                continue
            if rule.times is not None:
                used = self._used.get(index, 0)
                if used >= rule.times:
                    continue
                self._used[index] = used + 1
            found.append(rule)
        return found

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "faults") -> FaultConfig:
        """Build from the scenario's `faults:` mapping; ValueError names the bad key."""
        known = {"rules", "down", "neverReady", "evictionBlocked", "listingLagSeconds", "losses"}
        _reject_unknown(data, known, where)
        config = cls()
        for i, raw in enumerate(_as_list(data.get("rules", []), f"{where}.rules")):
            config.add_rule(_rule_from(raw, f"{where}.rules[{i}]"))
        for i, raw in enumerate(_as_list(data.get("down", []), f"{where}.down")):
            here = f"{where}.down[{i}]"
            if not isinstance(raw, Mapping):
                raise ValueError(f"{here}: expected a mapping")
            _reject_unknown(raw, {"service", "start", "end"}, here)
            service = _service(raw.get("service"), f"{here}.service")
            start = _number(raw.get("start", 0), f"{here}.start")
            end = _number(raw.get("end"), f"{here}.end")
            if end <= start:
                raise ValueError(f"{here}.end: must be after start ({start})")
            config.down.append(DownWindow(service=service, start=start, end=end))
        config.never_ready.update(_strings(data.get("neverReady", []), f"{where}.neverReady"))
        for i, raw in enumerate(_as_list(data.get("losses", []), f"{where}.losses")):
            here = f"{where}.losses[{i}]"
            if not isinstance(raw, Mapping):
                raise ValueError(f"{here}: expected a mapping with kind, worker, at")
            _reject_unknown(raw, {"kind", "worker", "at"}, here)
            kind = raw.get("kind")
            if kind not in LOSS_KINDS:
                raise ValueError(f"{here}.kind: {kind!r} is not one of {', '.join(LOSS_KINDS)}")
            worker = raw.get("worker")
            if not isinstance(worker, str) or not worker:
                raise ValueError(f"{here}.worker: expected a hostname glob or #N")
            at = raw.get("at", 0)
            if isinstance(at, bool) or not isinstance(at, int | float) or at < 0:
                raise ValueError(f"{here}.at: expected seconds >= 0")
            config.losses.append(WorkerLoss(kind=kind, worker=worker, at=float(at)))
        blocked = _strings(data.get("evictionBlocked", []), f"{where}.evictionBlocked")
        for i, item in enumerate(blocked):
            if "/" not in item:
                raise ValueError(f"{where}.evictionBlocked[{i}]: expected 'namespace/selector'")
        config.eviction_blocked.update(blocked)
        lag = _number(data.get("listingLagSeconds", 0), f"{where}.listingLagSeconds")
        if lag < 0:
            raise ValueError(f"{where}.listingLagSeconds: must not be negative")
        config.listing_lag_s = lag
        return config


def fault_middleware(
    service: str, faults: FaultConfig, clock: SimClock, rng: random.Random
) -> Middleware:
    """An aiohttp middleware that applies `faults` to every request of `service`."""
    _check_service(service, "fault_middleware")
    if faults.origin is None:
        faults.origin = clock.now()
    origin = faults.origin

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if faults.is_down(service, clock.now() - origin):
            return _failure(service, 503, "the service is down (simulated outage)")
        rules = faults.take(service, request.method, request.path)
        latency = sum(r.latency_s for r in rules)
        if latency > 0:
            await clock.sleep(latency)
        for rule in rules:
            if rule.error_rate and rng.random() < rule.error_rate:
                return _failure(service, rule.error_status, "simulated server error")
            if rule.throttle_rate and rng.random() < rule.throttle_rate:
                response = _failure(service, 429, "too many requests (simulated)")
                response.headers["Retry-After"] = _seconds(rule.retry_after_s)
                return response
            if service == "vpsie" and rule.error_body_rate and rng.random() < rule.error_body_rate:
                return web.json_response(
                    {"error": True, "code": 500, "message": "Something went wrong (simulated)"}
                )
        lost = next(
            (r for r in rules if r.lost_answer_rate and rng.random() < r.lost_answer_rate), None
        )
        answer = await handler(request)
        for foreign in faults.foreign_actions(service, request.method, request.path):
            await foreign.action()
        if lost is not None:
            return _failure(service, lost.error_status, "simulated timeout (the request was done)")
        return answer

    return middleware


def _failure(service: str, status: int, message: str) -> web.Response:
    if service == "vpsie":
        body: dict[str, Any] = {
            "error": True,
            "code": status,
            "message": message,
            "stack": "simulated",
        }
    else:
        reasons = {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "Timeout"}
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reasons.get(status, "InternalError"),
            "code": status,
        }
    return web.json_response(body, status=status)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _check_service(service: str, where: str) -> None:
    if service not in SERVICES:
        raise ValueError(f"{where}: unknown service {service!r}; expected one of {SERVICES}")


def _reject_unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; expected one of {sorted(known)}")


def _as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    return value


def _strings(value: Any, where: str) -> list[str]:
    items = _as_list(value, where)
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise ValueError(f"{where}[{i}]: expected a non-empty string")
    return list(items)


def _number(value: Any, where: str, *, rate: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if value < 0 or (rate and value > 1):
        bounds = "between 0 and 1" if rate else "zero or more"
        raise ValueError(f"{where}: must be {bounds}, got {value!r}")
    return float(value)


def _service(value: Any, where: str) -> str:
    if value not in SERVICES:
        raise ValueError(f"{where}: expected one of {SERVICES}, got {value!r}")
    return str(value)


def _rule_from(raw: Any, where: str) -> FaultRule:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    keys = {
        "service": "service",
        "method": "method",
        "path": "path",
        "errorRate": "error_rate",
        "errorStatus": "error_status",
        "throttleRate": "throttle_rate",
        "retryAfterSeconds": "retry_after_s",
        "errorBodyRate": "error_body_rate",
        "latencySeconds": "latency_s",
        "lostAnswerRate": "lost_answer_rate",
        "times": "times",
    }
    _reject_unknown(raw, set(keys), where)
    args: dict[str, Any] = {"service": _service(raw.get("service"), f"{where}.service")}
    for key in ("method", "path"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key]:
                raise ValueError(f"{where}.{key}: expected a non-empty string")
            args[key] = raw[key]
    for key in ("errorRate", "throttleRate", "errorBodyRate", "lostAnswerRate"):
        if key in raw:
            args[keys[key]] = _number(raw[key], f"{where}.{key}", rate=True)
    for key in ("retryAfterSeconds", "latencySeconds"):
        if key in raw:
            args[keys[key]] = _number(raw[key], f"{where}.{key}")
    for key in ("errorStatus", "times"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}.{key}: expected a whole number, got {value!r}")
            args[keys[key]] = value
    if "errorStatus" in raw and not 500 <= raw["errorStatus"] <= 599:
        raise ValueError(f"{where}.errorStatus: expected a 5xx status, got {raw['errorStatus']}")
    return FaultRule(**args)
