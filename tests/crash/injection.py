"""Crash injection for the crash suite: the daemon SIGKILLs itself at a chosen point.

`VPSIE_REBALANCER_CRASH_AT=N` makes the process SIGKILL itself right after the Nth event it
appended is durable (before acting on it); `N:after-call` waits for the next side-effect call to
the world (add/delete worker, create group, cordon, uncordon, label, evict) to return, then dies
before its outcome is recorded.

This is test support, not part of the daemon: the service receives it from outside, as a
journal observer (`CrashInjector.on_event`) and a wrapper around its Cloud and Cluster ports
(`WatchedCloud`, `WatchedCluster`). `tests/crash/crashing_daemon.py` reads the variable and
runs the real `run` command with them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from daemon.ports import Cloud, Cluster
from statemachine import events as ev
from statemachine.world import (
    Datacenter,
    LeaseInfo,
    NodeGroupSpec,
    NodeInfo,
    PdbInfo,
    PodInfo,
    SizeOffer,
    VpsieCluster,
    VpsieNodeGroup,
    VpsieWorker,
)

log = logging.getLogger(__name__)

CRASH_ENV = "VPSIE_REBALANCER_CRASH_AT"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CrashPoint:
    """Die after the `event`-th event this process appends (or after the call that follows)."""

    event: int
    after_call: bool = False


def parse_crash_at(text: str) -> CrashPoint:
    """`N` or `N:after-call`; ValueError naming the variable and the text."""
    raw = text.strip()
    number, sep, mode = raw.partition(":")
    if (sep and mode != "after-call") or not number.isdigit() or int(number) < 1:
        raise ValueError(
            f"{CRASH_ENV}={text!r}: expected N or N:after-call with N a whole number >= 1"
        )
    return CrashPoint(int(number), after_call=mode == "after-call")


def crash_point_from_env(environ: Mapping[str, str]) -> CrashPoint | None:
    raw = environ.get(CRASH_ENV, "")
    return parse_crash_at(raw) if raw else None


class CrashInjector:
    """Counts the events this process appended; SIGKILLs it at the chosen point."""

    def __init__(self, point: CrashPoint | None, kill: Callable[[], None] | None = None) -> None:
        self.point = point
        self.seen = 0
        self._armed = False
        self._kill = kill if kill is not None else _sigkill_self

    def on_event(self, state: object, event: ev.Event) -> None:
        self.seen += 1
        if self.point is None or self.seen != self.point.event:
            return
        if self.point.after_call:
            self._armed = True
        else:
            log.warning(
                "crash injection: killing myself after event %d (%s)", self.seen, event.type_name()
            )
            self._kill()

    def after_call(self, what: str) -> None:
        if self._armed:
            log.warning("crash injection: killing myself after %s (event %d)", what, self.seen)
            self._kill()


def _sigkill_self() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _Watched:
    """Tells the crash injector when a side-effect call returned. The ports' methods are
    delegated one by one, on purpose: a method added to a port fails mypy here until someone
    decides whether it is a side effect."""

    def __init__(self, injector: CrashInjector) -> None:
        self._injector = injector

    async def _effect(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        finally:
            self._injector.after_call(what)


class WatchedCloud(_Watched):
    """The Cloud port, watched."""

    def __init__(self, inner: Cloud, injector: CrashInjector) -> None:
        super().__init__(injector)
        self._inner = inner

    async def list_datacenters(self) -> list[Datacenter]:
        return await self._inner.list_datacenters()

    async def list_offers(self, dc_identifier: str) -> list[SizeOffer]:
        return await self._inner.list_offers(dc_identifier)

    async def list_clusters(self) -> list[VpsieCluster]:
        return await self._inner.list_clusters()

    async def list_workers(self, cluster_identifier: str) -> list[VpsieWorker]:
        return await self._inner.list_workers(cluster_identifier)

    async def list_node_groups(self, cluster_identifier: str) -> list[VpsieNodeGroup]:
        return await self._inner.list_node_groups(cluster_identifier)

    async def create_node_group(
        self, cluster_identifier: str, group_name: str, size_id: int
    ) -> None:
        await self._effect(
            "create_node_group",
            self._inner.create_node_group(cluster_identifier, group_name, size_id),
        )

    async def add_worker(self, cluster_identifier: str, group_id: int) -> str | None:
        return await self._effect(
            "add_worker", self._inner.add_worker(cluster_identifier, group_id)
        )

    async def delete_worker(self, cluster_identifier: str, worker_identifier: str) -> bool:
        return await self._effect(
            "delete_worker", self._inner.delete_worker(cluster_identifier, worker_identifier)
        )


class WatchedCluster(_Watched):
    """The Cluster port, watched."""

    def __init__(self, inner: Cluster, injector: CrashInjector) -> None:
        super().__init__(injector)
        self._inner = inner

    async def list_nodes(self) -> list[NodeInfo]:
        return await self._inner.list_nodes()

    async def get_node(self, name: str) -> NodeInfo | None:
        return await self._inner.get_node(name)

    async def list_pods(self, node_name: str | None = None) -> list[PodInfo]:
        return await self._inner.list_pods(node_name)

    async def list_pdbs(self) -> list[PdbInfo]:
        return await self._inner.list_pdbs()

    async def list_node_group_specs(self) -> list[NodeGroupSpec] | None:
        return await self._inner.list_node_group_specs()

    async def cordon(self, name: str, annotations: Mapping[str, str | None] | None = None) -> bool:
        return await self._effect("cordon", self._inner.cordon(name, annotations))

    async def uncordon(
        self, name: str, annotations: Mapping[str, str | None] | None = None
    ) -> None:
        await self._effect("uncordon", self._inner.uncordon(name, annotations))

    async def set_cordon(
        self,
        name: str,
        cordoned: bool,
        *,
        annotations: Mapping[str, str | None],
        resource_version: str,
    ) -> None:
        await self._effect(
            "cordon" if cordoned else "uncordon",
            self._inner.set_cordon(
                name, cordoned, annotations=annotations, resource_version=resource_version
            ),
        )

    async def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        await self._effect("label_node", self._inner.label_node(name, labels))

    async def set_taint(
        self, name: str, key: str, value: str = "", effect: str = "NoSchedule", *,
        present: bool = True,
    ) -> None:
        await self._effect(
            "set_taint", self._inner.set_taint(name, key, value, effect, present=present)
        )

    async def delete_node(self, name: str, *, uid: str = "") -> bool:
        return await self._effect("delete_node", self._inner.delete_node(name, uid=uid))

    async def evict(self, namespace: str, name: str) -> None:
        await self._effect("evict", self._inner.evict(namespace, name))

    async def delete_pod(self, namespace: str, name: str, *, uid: str = "") -> bool:
        return await self._effect("delete_pod", self._inner.delete_pod(namespace, name, uid=uid))

    async def emit_event(
        self,
        *,
        regarding_kind: str,
        regarding_name: str,
        regarding_namespace: str,
        reason: str,
        note: str,
        type_: str = "Normal",
        action: str = "Rebalance",
    ) -> None:
        await self._inner.emit_event(
            regarding_kind=regarding_kind,
            regarding_name=regarding_name,
            regarding_namespace=regarding_namespace,
            reason=reason,
            note=note,
            type_=type_,
            action=action,
        )

    def watch_nodes(self, *, timeout_s: float = 60.0) -> AsyncIterator[tuple[str, NodeInfo]]:
        return self._inner.watch_nodes(timeout_s=timeout_s)

    def watch_pods(
        self, *, node_name: str | None = None, timeout_s: float = 60.0
    ) -> AsyncIterator[tuple[str, PodInfo]]:
        return self._inner.watch_pods(node_name=node_name, timeout_s=timeout_s)

    async def get_lease(self, namespace: str, name: str) -> LeaseInfo | None:
        return await self._inner.get_lease(namespace, name)

    async def create_lease(self, lease: LeaseInfo) -> LeaseInfo:
        return await self._inner.create_lease(lease)

    async def update_lease(self, lease: LeaseInfo) -> LeaseInfo:
        return await self._inner.update_lease(lease)


def watch_world(injector: CrashInjector) -> Callable[[Cloud, Cluster], tuple[Cloud, Cluster]]:
    """The hook the service wraps its ports with: every side-effect call reports back."""

    def wrap(cloud: Cloud, cluster: Cluster) -> tuple[Cloud, Cluster]:
        return WatchedCloud(cloud, injector), WatchedCluster(cluster, injector)

    return wrap
