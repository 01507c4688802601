"""`VpsieClient`: the daemon's `Cloud` port (daemon.ports.Cloud) spoken over VPSie's HTTP API.

Each method is one VPSie call (plus its pages); `transport.py` does authentication, checking,
typing of errors and retries, `decode.py` turns answers into the shared domain types. Use it as
an async context manager so its HTTP session is closed:

    async with VpsieClient.from_file(path, clock=clock, rng=random.Random()) as vpsie:
        groups = await vpsie.list_node_groups(cluster)
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from adapters.errors import MalformedResponse, NotFound
from adapters.metrics import RequestObserver
from adapters.vpsie import decode
from adapters.vpsie.ratelimit import Clock
from adapters.vpsie.settings import VpsieSettings
from adapters.vpsie.transport import SERVICE, Transport
from statemachine.world import (
    Datacenter,
    SizeOffer,
    VpsieCluster,
    VpsieNodeGroup,
    VpsieWorker,
)

PAGE_LIMIT = 100
MAX_PAGES = 10_000


class VpsieClient:
    """VPSie managed Kubernetes; implements `daemon.ports.Cloud` structurally."""

    def __init__(
        self,
        settings: VpsieSettings,
        *,
        clock: Clock,
        rng: random.Random,
        rate_limit_per_min: float | None = 100,
        timeout_s: float = 30,
        max_retries: int = 5,
        observer: RequestObserver | None = None,
    ) -> None:
        self.settings = settings
        self._transport = Transport(
            settings,
            clock=clock,
            rng=rng,
            rate_limit_per_min=rate_limit_per_min,
            timeout_s=timeout_s,
            max_retries=max_retries,
            observer=observer,
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Clock,
        rng: random.Random,
        rate_limit_per_min: float | None = 100,
        timeout_s: float = 30,
        max_retries: int = 5,
        observer: RequestObserver | None = None,
    ) -> VpsieClient:
        """Settings and secrets from the JSON credentials file; SettingsError when it is bad."""
        return cls(
            VpsieSettings.from_file(path),
            clock=clock,
            rng=rng,
            rate_limit_per_min=rate_limit_per_min,
            timeout_s=timeout_s,
            max_retries=max_retries,
            observer=observer,
        )

    def __repr__(self) -> str:
        return f"VpsieClient({self.settings!r})"

    def guard_effects(self, guard: Callable[[], Awaitable[None]] | None) -> None:
        """Await `guard` right before every attempt of a call that changes the account (create
        a node group, add or delete a worker), the transport's own retries included; what it
        raises ends the call unsent. The daemon gives its leadership check."""
        self._transport.effect_guard = guard

    @property
    def logins(self) -> int:
        """How many times the client logged in (client-credentials mode)."""
        return self._transport.logins

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- reads ------------------------------------------------------------------------
    async def list_datacenters(self) -> list[Datacenter]:
        call = "list_datacenters"
        rows = await self._all_pages(call, "GET", "/datacenter")
        return [decode.datacenter(call, i, raw) for i, raw in enumerate(rows)]

    async def list_offers(self, dc_identifier: str) -> list[SizeOffer]:
        call = "list_offers"
        rows = await self._all_pages(
            call, "POST", "/k8s/offers", payload={"dcIdentifier": dc_identifier}
        )
        return [decode.offer(call, i, raw) for i, raw in enumerate(rows)]

    async def list_clusters(self) -> list[VpsieCluster]:
        call = "list_clusters"
        rows = await self._all_pages(call, "GET", "/k8s/cluster/all")
        return [decode.cluster(call, i, raw) for i, raw in enumerate(rows)]

    async def list_workers(self, cluster_identifier: str) -> list[VpsieWorker]:
        call = "list_workers"
        answer = await self._transport.call(
            call, "GET", f"/k8s/cluster/byId/{_segment(cluster_identifier)}"
        )
        return decode.workers(call, _data(call, answer.body))

    async def list_node_groups(self, cluster_identifier: str) -> list[VpsieNodeGroup]:
        call = "list_node_groups"
        rows = await self._all_pages(
            call, "GET", f"/k8s/node/groups/byClusterId/{_segment(cluster_identifier)}"
        )
        groups = (decode.node_group(call, i, raw) for i, raw in enumerate(rows))
        return [g for g in groups if g is not None]

    # --- changes ------------------------------------------------------------------------
    async def create_node_group(
        self, cluster_identifier: str, group_name: str, size_id: int
    ) -> None:
        """Conflict when the cluster already has a group of this size (VPSie allows one)."""
        body: dict[str, Any] = {
            "clusterIdentifier": cluster_identifier,
            "groupName": group_name,
            "KubeSizeID": int(size_id),
        }
        await self._transport.call(
            "create_node_group",
            "POST",
            "/k8s/cluster/add/group",
            payload=body,
            idempotent=False,
            effect=True,
        )

    async def add_worker(self, cluster_identifier: str, group_id: int) -> str | None:
        """Asynchronous on VPSie's side: returns before the worker exists. The new worker's
        identifier when the answer names one (`{id, identifier, status, hostname}`), None when
        it is `data: true`; an integer `id` is not an identifier and is ignored."""
        call = "add_worker"
        answer = await self._transport.call(
            call,
            "POST",
            f"/k8s/cluster/byId/{_segment(cluster_identifier)}/add/slave/group/{int(group_id)}",
            idempotent=False,
            effect=True,
        )
        return decode.added_worker(call, answer.body.get("data"))

    async def delete_worker(self, cluster_identifier: str, worker_identifier: str) -> bool:
        """True when VPSie said deleted, False when it said not found (404, or 200 with an
        error saying so). Neither proves anything: list the workers again to know."""
        _segment(worker_identifier)
        try:
            await self._transport.call(
                "delete_worker",
                "DELETE",
                f"/k8s/cluster/byId/{_segment(cluster_identifier)}/delete/slave",
                payload={"identifier": worker_identifier},
                effect=True,
            )
        except NotFound:
            return False
        return True

    # --- pages --------------------------------------------------------------------------
    async def _all_pages(
        self, call: str, method: str, path: str, *, payload: Any = None
    ) -> list[Any]:
        """Every row of a list, following `offset`/`limit` until `total` rows are read."""
        rows: list[Any] = []
        for _ in range(MAX_PAGES):
            params = {"offset": str(len(rows)), "limit": str(PAGE_LIMIT)}
            answer = await self._transport.call(call, method, path, payload=payload, params=params)
            page = decode.items(call, _data(call, answer.body))
            rows.extend(page)
            total = _total(call, answer.body)
            if total is None or not page or len(rows) >= total:
                return rows
        raise MalformedResponse(f"{call}: more than {MAX_PAGES} pages", service=SERVICE)


def _data(call: str, body: dict[str, Any]) -> Any:
    if "data" not in body:
        raise MalformedResponse(f"{call}: data: missing", service=SERVICE)
    return body["data"]


def _total(call: str, body: dict[str, Any]) -> int | None:
    """The list's total row count (`pagination.total`, else the top-level `total` some lists
    carry alone), or None when the answer gives neither (not paginated)."""
    pagination = body.get("pagination")
    where = "pagination.total"
    if pagination is None:
        total, where = body.get("total"), "total"
        if total is None:
            return None
    elif not isinstance(pagination, dict):
        raise MalformedResponse(f"{call}: pagination: expected an object", service=SERVICE)
    else:
        total = pagination.get("total", body.get("total"))
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise MalformedResponse(f"{call}: {where}: expected an integer", service=SERVICE)
    return total


def _segment(value: str) -> str:
    """A path segment; identifiers never contain '/', so one that does is a caller bug."""
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"not a valid VPSie identifier: {value!r}")
    return value
