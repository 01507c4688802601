"""VPSie JSON -> the shared domain types, checking every field the daemon relies on.

A missing or mistyped field is a `MalformedResponse` naming the call and the field
(`list_offers: data[3].price: expected a number`); nothing half-read is ever acted on. Where
the public clients disagree (the node shapes of `GET /k8s/cluster/byId`), both are read:
vpsie-k8s-autoscaler's `{identifier, hostname, ip, status, role, cpu, ram, disk}` and
govpsie's `{id, hostname, default_ip, private_ip, node_type: int, node_id: int, ...}`. A row
without an `identifier` is read (for matching and reports) but is never deletable; an integer
`node_id` is never taken for an identifier. Neither shape names the worker's node group.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from adapters.errors import MalformedResponse
from statemachine.world import (
    Datacenter,
    SizeOffer,
    VpsieCluster,
    VpsieNodeGroup,
    VpsieWorker,
)

SERVICE = "vpsie"
_MASTER_ROLES = {"master", "manager", "control-plane", "controlplane"}
_WORKER_ROLES = {"slave", "worker", "node"}
_TRUE = {"1", "true", "yes"}


class _Fields:
    """Typed access to one JSON object, with errors that say where."""

    def __init__(self, call: str, where: str, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise _bad(call, where, "expected an object")
        self.call, self.where, self.raw = call, where, raw

    def _missing(self, key: str) -> MalformedResponse:
        return _bad(self.call, f"{self.where}.{key}", "missing")

    def string(self, key: str, *, required: bool = True) -> str:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self._missing(key)
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _bad(self.call, f"{self.where}.{key}", "expected a string")
        return str(value)

    def integer(self, key: str, *, required: bool = True) -> int | None:
        value = self.raw.get(key)
        if value is None or value == "":
            if required:
                raise self._missing(key)
            return None
        if isinstance(value, bool):
            raise _bad(self.call, f"{self.where}.{key}", "expected an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _bad(self.call, f"{self.where}.{key}", "expected an integer") from None

    def int0(self, key: str) -> int:
        return self.integer(key, required=False) or 0

    def money(self, key: str, *, required: bool = True) -> Decimal:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self._missing(key)
            return Decimal(0)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _bad(self.call, f"{self.where}.{key}", "expected a number")
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            raise _bad(self.call, f"{self.where}.{key}", "expected a number") from None
        if not amount.is_finite() or amount < 0:
            raise _bad(self.call, f"{self.where}.{key}", "expected a non-negative amount")
        return amount


def _bad(call: str, where: str, what: str) -> MalformedResponse:
    return MalformedResponse(f"{call}: {where}: {what}", service=SERVICE)


def items(call: str, data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise _bad(call, "data", "expected a list")
    return data


def datacenter(call: str, i: int, raw: Any) -> Datacenter:
    f = _Fields(call, f"data[{i}]", raw)
    active = raw.get("is_active", 1)
    return Datacenter(
        identifier=f.string("identifier"),
        name=f.string("dc_name", required=False),
        country=f.string("country", required=False),
        active=bool(active) and active not in ("0", "false"),
    )


def offer(call: str, i: int, raw: Any) -> SizeOffer:
    f = _Fields(call, f"data[{i}]", raw)
    return SizeOffer(
        id=f.integer("id") or 0,
        name=f.string("name", required=False),
        cpu=f.integer("cpu") or 0,
        ram_mb=f.integer("ram") or 0,
        disk_gb=f.int0("disk"),
        monthly_price=f.money("price"),
        hourly_price=f.money("hourly_price", required=False),
    )


def cluster(call: str, i: int, raw: Any) -> VpsieCluster:
    f = _Fields(call, f"data[{i}]", raw)
    lock = raw.get("lock")
    if lock is not None and not isinstance(lock, bool | int | str):
        raise _bad(call, f"data[{i}].lock", "expected a flag")
    return VpsieCluster(
        identifier=f.string("identifier"),
        name=f.string("cluster_name", required=False) or f.string("nickname", required=False),
        kube_version=f.string("kube_version", required=False),
        datacenter_identifier=f.string("dcIdentifier", required=False),
        worker_count=f.int0("slaveCount"),
        locked=lock is True or (not isinstance(lock, bool) and str(lock).lower() in _TRUE),
        upgrade_version=f.string("upgrade_version", required=False),
    )


def node_group(call: str, i: int, raw: Any) -> VpsieNodeGroup | None:
    """None for a group VPSie marks deleted."""
    f = _Fields(call, f"data[{i}]", raw)
    deleted = raw.get("is_deleted", 0)
    if deleted and deleted not in ("0", "false"):
        return None
    return VpsieNodeGroup(
        id=f.integer("id") or 0,
        identifier=f.string("identifier", required=False),
        name=f.string("group_name", required=False),
        size_id=f.integer("boxsize_id") or 0,
        datacenter_identifier=f.string("dcIdentifier", required=False),
        nodes_count=f.int0("nodes_count"),
        cpu=f.int0("cpu"),
        ram_mb=f.int0("ram"),
        disk_gb=f.int0("ssd"),
    )


def added_worker(call: str, data: Any) -> str | None:
    """The identifier in an add-worker answer, or None (`data: true` or no identifier)."""
    if data is None or isinstance(data, bool):
        return None
    f = _Fields(call, "data", data)
    return f.string("identifier", required=False) or None


def workers(call: str, data: Any) -> list[VpsieWorker]:
    """Workers of `GET /k8s/cluster/byId`: `nodes` (masters left out by role) or `slaves`."""
    _Fields(call, "data", data)  # an object, or MalformedResponse
    found: list[VpsieWorker] = []
    seen: set[str] = set()
    lists = [key for key in ("nodes", "slaves", "workers") if data.get(key) is not None]
    if not lists:
        raise _bad(call, "data", "no node list (expected 'nodes' or 'slaves')")
    for key in lists:
        for i, raw in enumerate(items(f"{call}: data.{key}", data[key])):
            worker = _worker(call, f"data.{key}[{i}]", raw, listed_as_worker=key != "nodes")
            if worker is None or worker.key in seen:
                continue
            seen.add(worker.key)
            found.append(worker)
    return found


def _worker(call: str, where: str, raw: Any, *, listed_as_worker: bool) -> VpsieWorker | None:
    """One node row in either shape; None for a master."""
    node = _Fields(call, where, raw)
    role = _role(node, listed_as_worker)
    if role == "master":
        return None
    node_id = node.integer("node_id", required=False) if "identifier" not in raw else None
    identifier = node.string("identifier", required=False)
    if not identifier and node_id is None:
        raise _bad(call, f"{where}.identifier", "missing (and no node_id)")
    return VpsieWorker(
        identifier=identifier,
        hostname=node.string("hostname"),
        ip=node.string("ip", required=False) or node.string("default_ip", required=False),
        private_ip=node.string("private_ip", required=False),
        status=node.string("status", required=False),
        node_id=node_id,
        role=role,
        cpu=node.int0("cpu"),
        ram_mb=node.int0("ram"),
        disk_gb=node.int0("disk"),
        created_on=node.string("created_on", required=False),
    )


def _role(node: _Fields, listed_as_worker: bool) -> str:
    """"master", "worker", or "" when the row's role cannot be read as either.

    `role` is a word in the autoscaler's shape; govpsie's `node_type` is an integer whose values
    no public source names, so an integer type leaves the role unknown (such rows have no
    identifier either: read-only)."""
    raw = node.raw.get("role")
    if raw is None:
        raw = node.raw.get("node_type")
    if isinstance(raw, str) and raw.strip():
        word = raw.strip().lower()
        if word in _MASTER_ROLES:
            return "master"
        if word in _WORKER_ROLES:
            return "worker"
        return ""
    if raw is None and listed_as_worker:
        return "worker"
    return ""
