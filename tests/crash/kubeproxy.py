"""A recording proxy in front of the simulated Kubernetes API: the crash suite's witness.

The daemon under test talks to the proxy (its kubeconfig points here); the proxy forwards every
request unchanged and keeps what an auditor needs, without trusting the daemon's log or the
simulator's own enforcement:

- the number of requests, by verb and resource (requests per replaced node, for bench/execute);
- every pod eviction with its answer, and whether the PodDisruptionBudget allowed it, judged
  here from the pods and the PDB's spec read through the API just before the request is
  forwarded and, when that says no but the API said yes, again right after (a pending pod may
  have turned Ready in between); evictions are serialised so no other eviction interleaves;
- every pod DELETE (the daemon must never delete pods; it evicts them).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

EVICTION = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction$")
POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass(frozen=True, slots=True)
class Eviction:
    namespace: str
    pod: str
    status: int
    allowed: bool  # what the PDB allowed just before, judged by the proxy
    why: str


@dataclass(slots=True)
class Witness:
    requests: Counter[str] = field(default_factory=Counter)
    evictions: list[Eviction] = field(default_factory=list)
    pod_deletes: list[str] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path), in order

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def accepted_evictions(self) -> list[Eviction]:
        return [e for e in self.evictions if 200 <= e.status < 300]


def _resource(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    if parts[:1] == ["namespaces"] and len(parts) > 2:
        parts = parts[2:]
    if not parts:
        return "discovery"
    return "/".join([parts[0], *parts[2:3]]) if len(parts) > 2 else parts[0]


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _ready(pod: Mapping[str, Any]) -> bool:
    if "deletionTimestamp" in pod.get("metadata", {}):
        return False
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _scaled(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(total * int(value[:-1]) / 100)
    return int(value)


class KubeProxy:
    """Forward everything to `upstream`, keeping a `Witness`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.witness = Witness()
        # Called with (method, path) as each request arrives, before it is forwarded: a test
        # stops the calling daemon exactly while its request is in flight.
        self.on_request: Callable[[str, str], None] | None = None
        # Given (method, path, body) before forwarding; an answer (status, JSON body) it
        # returns is sent instead of the upstream's (a test's stale or lying API server).
        self.respond: Callable[[str, str, bytes], Awaitable[tuple[int, bytes] | None]] | None = (
            None
        )
        self._eviction_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            yield self.url
        finally:
            await runner.cleanup()
            await self._session.close()

    async def _get(self, path: str, headers: Mapping[str, str]) -> Any:
        assert self._session is not None
        auth = {"Authorization": headers["Authorization"]} if "Authorization" in headers else {}
        async with self._session.get(self.upstream + path, headers=auth) as resp:
            return await resp.json()

    async def _budget(
        self, namespace: str, pod_name: str, headers: Mapping[str, str]
    ) -> tuple[dict[str, Any] | None, list[tuple[str, int, int]]]:
        """The pod, and for each PDB selecting it: (name, healthy pods, desired healthy)."""
        pods = (await self._get(f"/api/v1/namespaces/{namespace}/pods", headers)).get("items", [])
        path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets"
        pdbs = (await self._get(path, headers)).get("items", [])
        pod = next((p for p in pods if p["metadata"]["name"] == pod_name), None)
        if pod is None:
            return None, []
        labels = pod["metadata"].get("labels") or {}
        found: list[tuple[str, int, int]] = []
        for pdb in pdbs:
            spec = pdb.get("spec") or {}
            selector = spec.get("selector") or {}
            if not _matches(selector, labels):
                continue
            members = [p for p in pods if _matches(selector, p["metadata"].get("labels") or {})]
            expected = sum(1 for p in members if "deletionTimestamp" not in p["metadata"])
            healthy = sum(1 for p in members if _ready(p))
            if "minAvailable" in spec:
                desired = _scaled(spec["minAvailable"], expected)
            elif "maxUnavailable" in spec:
                desired = max(0, expected - _scaled(spec["maxUnavailable"], expected))
            else:
                desired = expected
            found.append((pdb["metadata"]["name"], healthy, desired))
        return pod, found

    async def _judge(
        self, namespace: str, pod_name: str, headers: Mapping[str, str]
    ) -> tuple[bool, str]:
        """Whether the budget allowed evicting the pod, from the pods just before."""
        pod, budgets = await self._budget(namespace, pod_name, headers)
        if pod is None:
            return True, "pod already gone"
        for name, healthy, desired in budgets:
            if not _ready(pod) and healthy >= desired:
                return True, f"{name}: pod not ready, {healthy} healthy >= {desired}"
            if healthy - 1 < desired:
                return False, f"{name}: {healthy} healthy before, needs {desired}"
            return True, f"{name}: {healthy} healthy, needs {desired}"
        return True, "no PodDisruptionBudget"

    async def _held_after(
        self, namespace: str, pod_name: str, headers: Mapping[str, str]
    ) -> tuple[bool, str]:
        """Whether, right after the eviction, every budget of the pod still holds.

        A pod that turned Ready between the first reading and the eviction made it legal; an
        eviction the budget did not allow leaves fewer healthy pods than it needs.
        """
        _, budgets = await self._budget(namespace, pod_name, headers)
        for name, healthy, desired in budgets:
            if healthy < desired:
                return False, f"{name}: {healthy} healthy after, needs {desired}"
        return True, ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.witness.requests[f"{request.method} {_resource(path)}"] += 1
        self.witness.calls.append((request.method, path))
        if self.on_request is not None:
            self.on_request(request.method, path)
        evicted = EVICTION.match(path) if request.method == "POST" else None
        if request.method == "DELETE" and POD.match(path):
            self.witness.pod_deletes.append(path)
        if self.respond is not None:
            answer = await self.respond(request.method, path, await request.read())
            if answer is not None:
                return web.Response(
                    status=answer[0], body=answer[1], content_type="application/json"
                )
        if evicted is None:
            return await self._forward(request)
        async with self._eviction_lock:
            allowed, why = await self._judge(evicted[1], evicted[2], request.headers)
            response = await self._forward(request)
            if not allowed and 200 <= response.status < 300:
                held, after = await self._held_after(evicted[1], evicted[2], request.headers)
                allowed = held
                why = f"{why}; {after or 'but the budget held right after'}"
            self.witness.evictions.append(
                Eviction(evicted[1], evicted[2], response.status, allowed, why)
            )
            return response

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        try:
            body = await request.read()
        except ConnectionResetError:  # the daemon died mid-request (a crash test killed it)
            return web.Response(status=499)
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body or None,
                allow_redirects=False,
            )
        except aiohttp.ClientError:
            return web.Response(status=502, text="proxy: upstream unreachable")
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in _HOP:
                response.headers[key] = value
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientError):
            pass  # the daemon hung up (a watch it stopped, a process it killed)
        finally:
            upstream.release()
        return response
