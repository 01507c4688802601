"""The simulated VPSie account: datacenters, priced sizes, one managed cluster, its node groups
and workers, and the access tokens handed out.

It behaves the way the public VPSie clients describe the service (see
shared/design/VPSIE_API.md), traps included: adding a worker answers at once, mostly with no id,
and the worker only boots later; a cluster holds one node group per size; a worker count quota.
A booted worker registers as a Kubernetes Node through the `NodeRegistry` it is given (the
simulated Kubernetes world), named by its hostname in lower case and addressed by its private
IP (InternalIP) and public IP (ExternalIP), with no topology or instance-type labels. Deleting a
worker stops its VM: the Node turns NotReady and stays until someone deletes it (VPSie's cloud
controller manager deletes no Nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import random
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from simulator.clock import SimClock
from simulator.faults import FaultConfig

HOSTNAME_LABEL = "kubernetes.io/hostname"
PROFILES = ("autoscaler", "govpsie")  # the node shapes public clients read; see api.py


class NodeRegistry(Protocol):
    """The part of the simulated Kubernetes world that VPSie's workers join and leave."""

    def register_node(
        self,
        *,
        name: str,
        labels: dict[str, str],
        cpu: int,
        memory_mb: int,
        pods: int = 110,
        addresses: list[str],
        ready: bool = True,
        taints: list[dict[str, str]] | None = None,
    ) -> None: ...

    def remove_node(self, name: str) -> None: ...

    def set_node_ready(self, name: str, ready: bool) -> None: ...

    def set_node_unreachable(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SimDatacenter:
    identifier: str
    name: str
    country: str = ""
    state: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimPrice:
    monthly: Decimal
    hourly: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSize:
    id: int
    name: str
    cpu: int
    ram_mb: int
    disk_gb: int
    prices: dict[str, SimPrice]  # by datacenter identifier
    # The memory a booted Node of this size reports, when it differs from `ram_mb` (shared-CPU
    # plans are reported to balloon memory); None: the Node reports `ram_mb`.
    node_memory_mb: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SimCluster:
    identifier: str
    name: str
    datacenter: str
    max_workers: int
    kube_version: str = "1.30.4"


@dataclass(slots=True, kw_only=True)
class SimGroup:
    id: int
    identifier: str
    name: str
    size_id: int
    created_on: str


@dataclass(slots=True, kw_only=True)
class SimWorker:
    identifier: str
    node_id: int
    hostname: str  # the Kubernetes Node's name (lower case); VPSie lists `listed_hostname`
    ip: str
    private_ip: str
    group_id: int
    status: str  # provisioning | running
    created_on: str
    listed_from: float = 0.0  # simulated time from which the listings show it (a lagging one)

    @property
    def listed_hostname(self) -> str:
        """The hostname as VPSie lists it: its case differs from the Node's name."""
        return "-".join(part.capitalize() for part in self.hostname.split("-"))


@dataclass(frozen=True, slots=True, kw_only=True)
class SimAuth:
    """Accepted credentials. Either or both of a static token and a client id + secret."""

    token: str = ""
    client_id: str = ""
    client_secret: str = ""
    token_ttl_s: float = 3600.0

    def __repr__(self) -> str:
        return f"SimAuth(token={'***' if self.token else ''}, client_id={self.client_id!r})"


class VpsieError(Exception):
    """An answer the API gives as `{"error": true}`; `status` 200 for VPSie's 200-with-error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Issued:
    expires_at: float


@dataclass(slots=True, kw_only=True)
class VpsieState:
    """Everything the simulated VPSie API knows; the HTTP layer in `api.py` only translates."""

    clock: SimClock
    rng: random.Random
    datacenters: list[SimDatacenter]
    sizes: list[SimSize]
    cluster: SimCluster
    auth: SimAuth
    boot_delay_s: float = 120.0
    page_size: int = 25
    profile: str = "autoscaler"  # one of PROFILES: the node shape `GET /k8s/cluster/byId` answers
    # Cluster row fields whose meaning is undocumented; set by tests (a lock, an upgrade).
    lock: bool = False
    upgrade_version: str = ""
    # How add-worker answers: "random" (seeded: `data: true` or the worker object), "true" or
    # "object". Set by tests that need one form.
    add_answer: str = "random"
    # Another actor (the VPSie autoscaler) adds this many workers to the same group at the same
    # moment as each add-worker call. Set by tests.
    foreign_adds_per_add: int = 0
    faults: FaultConfig = field(default_factory=FaultConfig)
    nodes: NodeRegistry | None = None
    groups: list[SimGroup] = field(default_factory=list)
    workers: list[SimWorker] = field(default_factory=list)
    logins: int = 0
    requests: int = 0
    _tokens: dict[str, _Issued] = field(default_factory=dict)
    _boots: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _host_seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _ip_seq: itertools.count[int] = field(default_factory=lambda: itertools.count(10))

    # --- time and identity -------------------------------------------------------------
    def timestamp(self) -> str:
        """RFC 3339, as govpsie reads `created_on`."""
        return datetime.fromtimestamp(self.clock.now(), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # --- authentication ----------------------------------------------------------------
    def login(self, client_id: str, client_secret: str) -> tuple[str, str, float]:
        """(access token, refresh token, expiry as Unix seconds) or VpsieError 401."""
        id_ok = secrets.compare_digest(client_id.encode(), self.auth.client_id.encode())
        secret_ok = secrets.compare_digest(client_secret.encode(), self.auth.client_secret.encode())
        if not (self.auth.client_id and id_ok and secret_ok):
            raise VpsieError(401, "Invalid client credentials")
        self.logins += 1
        token = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        expires_at = self.clock.now() + self.auth.token_ttl_s
        self._tokens[token] = _Issued(expires_at)
        return token, refresh, expires_at

    def check_static(self, token: str) -> bool:
        return bool(self.auth.token) and secrets.compare_digest(
            token.encode(), self.auth.token.encode()
        )

    def check_bearer(self, token: str) -> bool:
        issued = self._tokens.get(token)
        return issued is not None and self.clock.now() < issued.expires_at

    def issued_tokens(self) -> list[str]:
        """Every access token handed out (tests look for them where they must not be)."""
        return list(self._tokens)

    def expire_tokens(self) -> None:
        """Every issued access token expires now (tests: the next call gets a 401)."""
        for issued in self._tokens.values():
            issued.expires_at = self.clock.now()

    # --- reads -------------------------------------------------------------------------
    def datacenter(self, identifier: str) -> SimDatacenter:
        for dc in self.datacenters:
            if dc.identifier == identifier:
                return dc
        raise VpsieError(404, f"Datacenter {identifier} not found")

    def size(self, size_id: int) -> SimSize:
        for size in self.sizes:
            if size.id == size_id:
                return size
        raise VpsieError(400, f"Size {size_id} is not available")

    def check_cluster(self, identifier: str) -> SimCluster:
        if identifier != self.cluster.identifier:
            raise VpsieError(404, f"Cluster {identifier} not found")
        return self.cluster

    def group(self, group_id: int) -> SimGroup:
        for group in self.groups:
            if group.id == group_id:
                return group
        raise VpsieError(404, f"Node group {group_id} not found")

    def workers_of(self, group_id: int) -> list[SimWorker]:
        return [w for w in self.listed_workers() if w.group_id == group_id]

    def listed_workers(self) -> list[SimWorker]:
        """The workers the API's listings show now: all, except those a lagging listing does
        not show yet (`FaultConfig.listing_lag_s`). `workers` is the account's truth."""
        now = self.clock.now()
        return [w for w in self.workers if w.listed_from <= now]

    def worker(self, identifier: str) -> SimWorker | None:
        return next((w for w in self.workers if w.identifier == identifier), None)

    # --- changes -----------------------------------------------------------------------
    def create_group(self, cluster_identifier: str, name: str, size_id: int) -> SimGroup:
        cluster = self.check_cluster(cluster_identifier)
        size = self.size(size_id)
        if cluster.datacenter not in size.prices:
            raise VpsieError(400, f"Size {size_id} is not offered in this datacenter")
        for group in self.groups:
            if group.size_id == size_id:
                raise VpsieError(
                    200,
                    f"Group {group.identifier} has same selected Size, please select another size",
                )
        group = SimGroup(
            id=next(self._ids) + 100,
            identifier=f"GRP-{self._uuid()[:8].upper()}",
            name=name,
            size_id=size_id,
            created_on=self.timestamp(),
        )
        self.groups.append(group)
        return group

    def add_worker(
        self, cluster_identifier: str, group_id: int, *, booted: bool = False
    ) -> SimWorker:
        """A new worker in `group_id`: provisioning now, a Node after the boot delay."""
        cluster = self.check_cluster(cluster_identifier)
        group = self.group(group_id)
        if len(self.workers) >= cluster.max_workers:
            raise VpsieError(
                200,
                f"The number of worker nodes exceeds the allowed limit of {cluster.max_workers} "
                "for this cluster",
            )
        seq = next(self._host_seq)
        ip_seq = next(self._ip_seq)
        worker = SimWorker(
            identifier=self._uuid(),
            node_id=seq,
            hostname=f"{cluster.name}-{group.name}-{seq:04d}".lower(),
            ip=f"185.{ip_seq // 65536 % 256}.{ip_seq // 256 % 256}.{ip_seq % 256}",
            private_ip=f"10.{ip_seq // 65536 % 256}.{ip_seq // 256 % 256}.{ip_seq % 256}",
            group_id=group.id,
            status="provisioning",
            created_on=self.timestamp(),
            listed_from=self.clock.now() + self.faults.listing_lag_s,
        )
        self.workers.append(worker)
        if booted:
            self._boot(worker.identifier)
        else:
            self._boots[worker.identifier] = self.clock.call_later(
                self.boot_delay_s, lambda: self._boot(worker.identifier)
            )
        return worker

    def delete_worker(self, cluster_identifier: str, identifier: str) -> None:
        """The worker leaves the listing and its VM stops: its Node (if it joined) turns
        NotReady and stays, since nothing on VPSie's side deletes Nodes."""
        self.check_cluster(cluster_identifier)
        worker = self.worker(identifier)
        if worker is None:
            raise VpsieError(404, f"Node {identifier} not found")
        self.workers.remove(worker)
        boot = self._boots.pop(identifier, None)
        if boot is not None:
            boot.cancel()
        elif self.nodes is not None:
            with contextlib.suppress(KeyError):  # someone deleted the Node already
                self.nodes.set_node_ready(worker.hostname, False)

    def lose_worker(self, worker: str, kind: str) -> SimWorker:
        """The provider loses a worker (`WorkerLoss`: stop, suspend, vanish, kubelet).
        `worker`: a hostname glob or `#N` (the N-th listed worker, from 1). KeyError when none
        matches. Its Node turns Ready=Unknown: the kubelet stopped reporting (as the node
        lifecycle controller shows a silent node); its pods stay bound to it."""
        if worker.startswith("#") and worker[1:].isdigit():
            index = int(worker[1:]) - 1
            found = self.workers[index] if 0 <= index < len(self.workers) else None
        else:
            found = next((w for w in self.workers if fnmatch.fnmatchcase(w.hostname, worker)),
                         None)
        if found is None:
            raise KeyError(worker)
        if kind in ("stop", "suspend"):
            found.status = "stopped" if kind == "stop" else "suspended"
        elif kind == "vanish":
            self.workers.remove(found)
            boot = self._boots.pop(found.identifier, None)
            if boot is not None:
                boot.cancel()
        elif kind != "kubelet":
            raise ValueError(f"unknown worker loss {kind!r}")
        if self.nodes is not None:
            with contextlib.suppress(KeyError):
                self.nodes.set_node_unreachable(found.hostname)
        return found

    def stop(self) -> None:
        """Cancel pending boots (the world is going away)."""
        for handle in self._boots.values():
            handle.cancel()
        self._boots.clear()

    def _boot(self, identifier: str) -> None:
        self._boots.pop(identifier, None)
        worker = self.worker(identifier)
        if worker is None:
            return
        worker.status = "running"
        if self.nodes is None:
            return
        size = self.size(self.group(worker.group_id).size_id)
        self.nodes.register_node(
            name=worker.hostname,
            labels={HOSTNAME_LABEL: worker.hostname, "kubernetes.io/os": "linux"},
            cpu=size.cpu,
            memory_mb=size.node_memory_mb or size.ram_mb,
            addresses=[worker.private_ip, worker.ip],
            ready=not self.faults.never_turns_ready(worker.hostname),
        )
