"""Scenario files: one YAML stream describing a whole simulated world.

A scenario holds ordinary Kubernetes manifests (Namespaces, Deployments, DaemonSets, PDBs,
NodeGroup CRs; handed to the simulated Kubernetes API as they are) and exactly one document of
`apiVersion: sim.vpsie-rebalancer.io/v1`, `kind: World` describing the VPSie side: datacenters,
priced sizes, the cluster and its node groups, delays, credentials and faults. The format is
documented in docs/simulator.md. Every validation error names the file, the document index
(0-based, in file order) and the key, e.g.

    demo.yaml: document 0 (World): spec.sizes[2].prices.dc-1.monthly: expected a number
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from simulator.faults import FaultConfig
from simulator.vpsie.state import (
    PROFILES,
    SimAuth,
    SimCluster,
    SimDatacenter,
    SimPrice,
    SimSize,
)

API_VERSION = "sim.vpsie-rebalancer.io/v1"
KIND = "World"


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; the message names file, document and key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSpec:
    name: str
    size_id: int
    workers: int


@dataclass(slots=True, kw_only=True)
class Scenario:
    source: str
    datacenters: list[SimDatacenter]
    sizes: list[SimSize]
    cluster: SimCluster
    groups: list[GroupSpec]
    auth: SimAuth
    faults: FaultConfig = field(default_factory=FaultConfig)
    boot_delay_s: float = 120.0
    pod_start_delay_s: float = 3.0
    page_size: int = 25
    profile: str = "autoscaler"
    manifests: list[dict[str, Any]] = field(default_factory=list)


def load_scenario(path: str | Path) -> Scenario:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"{file}: not a text file (not UTF-8 at byte {exc.start})"
        ) from None
    return parse_scenario(text, source=str(file))


def parse_scenario(text: str, *, source: str = "<scenario>") -> Scenario:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ScenarioError(f"{source}: not valid YAML{where}") from None
    world: tuple[int, Mapping[str, Any]] | None = None
    manifests: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ScenarioError(f"{source}: document {index}: expected a mapping")
        if doc.get("apiVersion") == API_VERSION:
            if doc.get("kind") != KIND:
                raise ScenarioError(
                    f"{source}: document {index}: kind: expected {KIND!r}, got {doc.get('kind')!r}"
                )
            if world is not None:
                raise ScenarioError(
                    f"{source}: document {index}: a second {KIND} document "
                    f"(the first is document {world[0]})"
                )
            world = (index, doc)
        else:
            manifests.append(doc)
    if world is None:
        raise ScenarioError(f"{source}: no document with apiVersion {API_VERSION}, kind {KIND}")
    index, doc = world
    reader = _Reader(f"{source}: document {index} ({KIND})")
    try:
        scenario = reader.world(doc)
    except _Bad as exc:
        raise ScenarioError(str(exc)) from None
    scenario.source = source
    scenario.manifests = manifests
    return scenario


class _Bad(Exception):
    pass


class _Reader:
    def __init__(self, where: str) -> None:
        self.where = where

    def bad(self, key: str, problem: str) -> _Bad:
        return _Bad(f"{self.where}: {key}: {problem}")

    def mapping(self, value: Any, key: str, known: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.bad(key, "expected a mapping")
        unknown = sorted(set(value) - known)
        if unknown:
            raise self.bad(f"{key}.{unknown[0]}", f"unknown key; expected one of {sorted(known)}")
        return value

    def seq(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.bad(key, "expected a list")
        return value

    def string(self, m: Mapping[str, Any], name: str, key: str, default: str | None = None) -> str:
        value = m.get(name, default)
        if value is None:
            raise self.bad(f"{key}.{name}", "required")
        if not isinstance(value, str) or not value:
            raise self.bad(f"{key}.{name}", "expected a non-empty string")
        return value

    def integer(
        self,
        m: Mapping[str, Any],
        name: str,
        key: str,
        default: int | None = None,
        minimum: int = 0,
    ) -> int:
        value = m.get(name, default)
        if value is None:
            raise self.bad(f"{key}.{name}", "required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad(f"{key}.{name}", f"expected a whole number, got {value!r}")
        if value < minimum:
            raise self.bad(f"{key}.{name}", f"must be at least {minimum}, got {value}")
        return value

    def number(self, m: Mapping[str, Any], name: str, key: str, default: float) -> float:
        value = m.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.bad(f"{key}.{name}", f"expected a number >= 0, got {value!r}")
        return float(value)

    def money(self, m: Mapping[str, Any], name: str, key: str) -> Decimal:
        value = m.get(name)
        if value is None:
            raise self.bad(f"{key}.{name}", "required")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.bad(f"{key}.{name}", f"expected a number, got {value!r}")
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            raise self.bad(f"{key}.{name}", f"expected a number, got {value!r}") from None
        if not amount.is_finite() or amount < 0:
            raise self.bad(f"{key}.{name}", f"expected an amount >= 0, got {value!r}")
        return amount

    def world(self, doc: Mapping[str, Any]) -> Scenario:
        top = self.mapping(doc, "(document)", {"apiVersion", "kind", "metadata", "spec"})
        spec = self.mapping(
            top.get("spec"),
            "spec",
            {
                "datacenters",
                "sizes",
                "cluster",
                "nodeGroups",
                "bootDelaySeconds",
                "podStartDelaySeconds",
                "pageSize",
                "profile",
                "auth",
                "faults",
            },
        )
        dcs = self.datacenters(spec.get("datacenters"))
        dc_ids = {dc.identifier for dc in dcs}
        sizes = self.sizes(spec.get("sizes"), dc_ids)
        cluster = self.cluster(spec.get("cluster"), dc_ids)
        groups = self.groups(spec.get("nodeGroups", []), sizes, cluster)
        profile = spec.get("profile", "autoscaler")
        if profile not in PROFILES:
            raise self.bad("spec.profile", f"expected one of {PROFILES}, got {profile!r}")
        faults_raw = spec.get("faults", {})
        if not isinstance(faults_raw, Mapping):
            raise self.bad("spec.faults", "expected a mapping")
        try:
            faults = FaultConfig.from_mapping(faults_raw, "spec.faults")
        except ValueError as exc:
            raise _Bad(f"{self.where}: {exc}") from None
        return Scenario(
            source="",
            datacenters=dcs,
            sizes=sizes,
            cluster=cluster,
            groups=groups,
            auth=self.auth(spec.get("auth", {})),
            faults=faults,
            boot_delay_s=self.number(spec, "bootDelaySeconds", "spec", 120.0),
            pod_start_delay_s=self.number(spec, "podStartDelaySeconds", "spec", 3.0),
            page_size=self.integer(spec, "pageSize", "spec", 25, minimum=1),
            profile=profile,
        )

    def datacenters(self, raw: Any) -> list[SimDatacenter]:
        items = self.seq(raw, "spec.datacenters")
        if not items:
            raise self.bad("spec.datacenters", "at least one datacenter is required")
        found: list[SimDatacenter] = []
        for i, item in enumerate(items):
            key = f"spec.datacenters[{i}]"
            m = self.mapping(item, key, {"identifier", "name", "country", "state"})
            dc = SimDatacenter(
                identifier=self.string(m, "identifier", key),
                name=self.string(m, "name", key, default=str(m.get("identifier", ""))),
                country=str(m.get("country", "")),
                state=str(m.get("state", "")),
            )
            if any(d.identifier == dc.identifier for d in found):
                raise self.bad(f"{key}.identifier", f"duplicate {dc.identifier!r}")
            found.append(dc)
        return found

    def sizes(self, raw: Any, dc_ids: set[str]) -> list[SimSize]:
        items = self.seq(raw, "spec.sizes")
        if not items:
            raise self.bad("spec.sizes", "at least one size is required")
        found: list[SimSize] = []
        for i, item in enumerate(items):
            key = f"spec.sizes[{i}]"
            m = self.mapping(
                item, key, {"id", "name", "cpu", "ramMB", "nodeMemoryMB", "diskGB", "prices"}
            )
            prices_raw = m.get("prices")
            if not isinstance(prices_raw, Mapping) or not prices_raw:
                raise self.bad(f"{key}.prices", "expected a mapping of datacenter -> price")
            prices: dict[str, SimPrice] = {}
            for dc, price in prices_raw.items():
                pkey = f"{key}.prices.{dc}"
                if dc not in dc_ids:
                    raise self.bad(pkey, "not a datacenter of spec.datacenters")
                pm = self.mapping(price, pkey, {"monthly", "hourly"})
                monthly = self.money(pm, "monthly", pkey)
                hourly = (
                    self.money(pm, "hourly", pkey)
                    if "hourly" in pm
                    else (monthly / 730).quantize(Decimal("0.0001"))
                )
                prices[str(dc)] = SimPrice(monthly=monthly, hourly=hourly)
            size = SimSize(
                id=self.integer(m, "id", key, minimum=1),
                name=self.string(m, "name", key),
                cpu=self.integer(m, "cpu", key, minimum=1),
                ram_mb=self.integer(m, "ramMB", key, minimum=1),
                disk_gb=self.integer(m, "diskGB", key, default=0),
                prices=prices,
                node_memory_mb=(
                    self.integer(m, "nodeMemoryMB", key, minimum=1) if "nodeMemoryMB" in m else None
                ),
            )
            if any(s.id == size.id for s in found):
                raise self.bad(f"{key}.id", f"duplicate size id {size.id}")
            found.append(size)
        return found

    def cluster(self, raw: Any, dc_ids: set[str]) -> SimCluster:
        key = "spec.cluster"
        m = self.mapping(
            raw, key, {"identifier", "name", "datacenter", "maxWorkers", "kubeVersion"}
        )
        dc = self.string(m, "datacenter", key)
        if dc not in dc_ids:
            raise self.bad(f"{key}.datacenter", f"{dc!r} is not in spec.datacenters")
        name = self.string(m, "name", key)
        if not name.replace("-", "").isalnum() or name != name.lower():
            raise self.bad(f"{key}.name", "lower-case letters, digits and '-' only")
        return SimCluster(
            identifier=self.string(m, "identifier", key),
            name=name,
            datacenter=dc,
            max_workers=self.integer(m, "maxWorkers", key, default=100, minimum=1),
            kube_version=self.string(m, "kubeVersion", key, default="1.30.4"),
        )

    def groups(self, raw: Any, sizes: list[SimSize], cluster: SimCluster) -> list[GroupSpec]:
        found: list[GroupSpec] = []
        by_id = {s.id: s for s in sizes}
        for i, item in enumerate(self.seq(raw, "spec.nodeGroups")):
            key = f"spec.nodeGroups[{i}]"
            m = self.mapping(item, key, {"name", "sizeId", "workers"})
            group = GroupSpec(
                name=self.string(m, "name", key),
                size_id=self.integer(m, "sizeId", key),
                workers=self.integer(m, "workers", key, default=0),
            )
            size = by_id.get(group.size_id)
            if size is None:
                raise self.bad(f"{key}.sizeId", f"{group.size_id} is not in spec.sizes")
            if cluster.datacenter not in size.prices:
                raise self.bad(
                    f"{key}.sizeId", "this size has no price in the cluster's datacenter"
                )
            if any(g.size_id == group.size_id for g in found):
                raise self.bad(f"{key}.sizeId", "VPSie allows one node group per size per cluster")
            found.append(group)
        total = sum(g.workers for g in found)
        if total > cluster.max_workers:
            raise self.bad("spec.nodeGroups", f"{total} workers exceed maxWorkers")
        return found

    def auth(self, raw: Any) -> SimAuth:
        key = "spec.auth"
        m = self.mapping(raw, key, {"token", "clientId", "clientSecret", "tokenTtlSeconds"})
        token = self.string(m, "token", key) if "token" in m else ""
        client_id = self.string(m, "clientId", key) if "clientId" in m else ""
        client_secret = self.string(m, "clientSecret", key) if "clientSecret" in m else ""
        if bool(client_id) != bool(client_secret):
            raise self.bad(key, "clientId and clientSecret go together")
        if not token and not client_id:
            token = secrets.token_urlsafe(24)  # no credentials given: make a static token
        return SimAuth(
            token=token,
            client_id=client_id,
            client_secret=client_secret,
            token_ttl_s=self.number(m, "tokenTtlSeconds", key, 3600.0),
        )
