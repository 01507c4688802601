"""`KubeClient`: the Kubernetes side of the world (implements `daemon.ports.Cluster`).

kubernetes-asyncio supplies configuration (kubeconfig or in-cluster), authentication, TLS and
the connection pool; requests go through `ApiClient.call_api` with `_preload_content=False` and
the JSON is read with orjson, pods with msgspec (model objects are far too slow for 150,000
pods). Every library error is translated here into `adapters.errors`; the bearer token is never
put in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, TypeVar

import aiohttp
import msgspec
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException
from yarl import URL

from adapters.errors import (
    AuthenticationError,
    Conflict,
    EvictionBlocked,
    MalformedResponse,
    NotFound,
    PermanentError,
    TemporaryError,
)
from adapters.kubernetes.kubeconfig import read_kubeconfig
from adapters.kubernetes.pods import decode_pod_list, pod_info, pod_of
from adapters.kubernetes.translate import (
    lease_body,
    lease_info,
    node_group_spec,
    node_info,
    pdb_info,
)
from adapters.metrics import RequestObserver, outcome_of_status
from statemachine.world import LeaseInfo, NodeGroupSpec, NodeInfo, PdbInfo, PodInfo

SERVICE = "kubernetes"
NODEGROUPS = "/apis/autoscaler.vpsie.com/v1alpha1/nodegroups"
CONFLICT_RETRIES = 5
T = TypeVar("T")


_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic collector while a big list is read and translated.

    A list of 150,000 pods creates millions of acyclic objects; with the collector on, CPython
    runs full collections over the growing heap again and again, which costs more than the
    parsing itself. Nested and concurrent pauses are counted; the last one out restores it.
    """
    global _gc_pauses, _gc_was_enabled
    if _gc_pauses == 0:
        _gc_was_enabled = gc.isenabled()
        gc.disable()
    _gc_pauses += 1
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0 and _gc_was_enabled:
            gc.enable()


class _Gone(TemporaryError):
    """410: a watch or continue token older than the server remembers."""


def _raise_for(status: int, method: str, path: str, body: bytes, retry_after: str | None
               ) -> None:
    message = ""
    try:
        doc = orjson.loads(body) if body else {}
        if isinstance(doc, dict):
            message = str(doc.get("message") or "")
    except orjson.JSONDecodeError:
        message = body[:200].decode("utf-8", "replace")
    what = f"{method} {path}: {message or 'HTTP error'}"
    if status in (401, 403):
        raise AuthenticationError(what, service=SERVICE, status=status)
    if status == 404:
        raise NotFound(what, service=SERVICE, status=status)
    if status == 409:
        raise Conflict(what, service=SERVICE, status=status)
    if status == 410:
        raise _Gone(what, service=SERVICE, status=status)
    if status == 429 or status >= 500:
        after = None
        if retry_after:
            try:
                after = float(retry_after)
            except ValueError:
                after = None
        raise TemporaryError(what, service=SERVICE, status=status, retry_after=after)
    raise PermanentError(what, service=SERVICE, status=status)


def _peek_continue(raw: bytes) -> str | None:
    """The continue token of a list answer, read from its head without parsing the items
    (the API server writes kind, apiVersion and metadata before items). Only a guess: the
    token in the fully parsed answer decides."""
    end = raw.find(b'"items":', 0, 8192)
    head = raw[:end].rstrip() if end > 0 else b""
    if not head.endswith(b","):
        return None
    try:
        doc = orjson.loads(head[:-1] + b"}")
    except orjson.JSONDecodeError:
        return None
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    token = meta.get("continue") if isinstance(meta, dict) else None
    return token if isinstance(token, str) and token else None


Page = tuple[Sequence[Any], str, str]  # items, continue token, resourceVersion


def _decode_dicts(path: str, raw: bytes) -> Page:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedResponse(f"GET {path}: the answer is not JSON", service=SERVICE) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise MalformedResponse(f"GET {path}: not a list", service=SERVICE)
    meta = doc.get("metadata") or {}
    return doc["items"], str(meta.get("continue") or ""), str(meta.get("resourceVersion") or "")


def _decode_pods(path: str, raw: bytes) -> Page:
    try:
        doc = decode_pod_list(raw)
    except msgspec.DecodeError as e:
        raise MalformedResponse(f"GET {path}: not a pod list: {e}", service=SERVICE) from None
    meta = doc.metadata
    return doc.items, meta.continue_ if meta else "", meta.resourceVersion if meta else ""


@dataclass(frozen=True, slots=True)
class _Kind(Generic[T]):
    """How one kind of object is read: a list page, one item of it, one watched object."""

    decode_page: Callable[[str, bytes], Page]
    item: Callable[[Any], T]
    event: Callable[[dict[str, Any]], T]


# What translating a well-formed answer of an unexpected shape raises.
UNREADABLE = (msgspec.DecodeError, ValueError, TypeError, AttributeError, KeyError)

NODES = _Kind(_decode_dicts, node_info, node_info)
PODS = _Kind(_decode_pods, pod_of, pod_info)
PDBS = _Kind(_decode_dicts, pdb_info, pdb_info)
NODE_GROUPS = _Kind(_decode_dicts, node_group_spec, node_group_spec)


async def _discard(task: asyncio.Task[Any] | None) -> None:
    """Cancel a read ahead that is no longer wanted, and collect its outcome."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _resolve_environment_once(rest: Any, server: str) -> None:
    """Read the proxy settings from the environment now, once, instead of on every request.

    kubernetes-asyncio's session trusts the environment, so aiohttp looks for proxy variables
    and a ~/.netrc in a worker thread before every request: two thread round trips that delay
    each request, and keep a page asked for ahead from leaving before the current one is
    decoded. A proxy given in the kubeconfig (`proxy-url`) wins, as before; netrc credentials
    play no part in bearer-token authentication.
    """
    if not rest.proxy and server:
        try:
            proxy, auth = get_env_proxy_for_url(URL(server))
        except LookupError:
            pass
        else:
            rest.proxy = str(proxy)
            if auth is not None:
                rest.proxy_headers = {**(rest.proxy_headers or {}),
                                      "Proxy-Authorization": auth.encode()}
    # aiohttp has no public setter for trust_env: move the connector to a session made without it.
    session: aiohttp.ClientSession = rest.pool_manager
    if session.trust_env:
        connector = session.connector
        session.detach()
        # read_bufsize as kubernetes-asyncio sets it: watch events can be large.
        rest.pool_manager = aiohttp.ClientSession(
            connector=connector, trust_env=False, read_bufsize=2**21
        )


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def call_name(method: str, path: str, query: Mapping[str, Any] | None = None) -> str:
    """A bounded name for a request, for the metrics: `verb resource[/subresource]`.

    `/api/v1/namespaces/ns/pods/web-1/eviction` with POST is "create pods/eviction"; object
    and namespace names never appear, so the label set stays as small as the API we use.
    """
    parts = [p for p in path.split("?")[0].split("/") if p]
    # /api/v1/... or /apis/GROUP/VERSION/...
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:] if parts[:1] == ["apis"] else parts
    if len(rest) >= 2 and rest[0] == "namespaces":
        rest = rest[2:]
    resource = rest[0] if rest else "unknown"
    named = len(rest) >= 2
    sub = f"/{rest[2]}" if len(rest) >= 3 else ""
    if method == "GET":
        verb = "watch" if (query or {}).get("watch") in (True, "true", "1") else (
            "get" if named else "list")
    else:
        verb = _VERBS.get(method, method.lower())
    return f"{verb} {resource}{sub}"


class KubeClient:
    """The Kubernetes API through kubernetes-asyncio. Use as an async context manager."""

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None,
                 page_size: int = 2000, request_timeout_s: float = 30.0,
                 reporting_controller: str = "rebalancer.vpsie.com/vpsie-rebalancer",
                 now: Callable[[], float] = time.time,
                 observer: RequestObserver | None = None) -> None:
        self._kubeconfig = kubeconfig
        self._observer = observer
        self._context = context
        self._page_size = page_size
        self._timeout = request_timeout_s
        self._controller = reporting_controller
        self._now = now
        self._api: Any = None
        self.server = ""

    @classmethod
    def from_kubeconfig(cls, path: str | None, *, context: str | None = None,
                        **kwargs: Any) -> KubeClient:
        """A client for `path` (in-cluster service account when None); enter it to connect."""
        return cls(kubeconfig=path, context=context, **kwargs)

    def __repr__(self) -> str:
        return f"KubeClient(server={self.server!r})"

    async def __aenter__(self) -> KubeClient:
        cfg = k8s_client.Configuration()
        try:
            if self._kubeconfig is None:
                k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                read_kubeconfig(self._kubeconfig)  # not readable, not text, not YAML: one line
                await k8s_config.load_kube_config(config_file=self._kubeconfig,
                                                  context=self._context,
                                                  client_configuration=cfg,
                                                  persist_config=False)
        except (ConfigException, OSError, ValueError, TypeError, KeyError) as e:
            where = self._kubeconfig or "in-cluster configuration"
            raise PermanentError(f"cannot load {where}: {type(e).__name__}: {e}",
                                 service=SERVICE) from None
        self.server = cfg.host or ""
        self._api = k8s_client.ApiClient(configuration=cfg)
        _resolve_environment_once(self._api.rest_client, cfg.host or "")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    # ----- the boundary ----------------------------------------------------------------------

    async def _open(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                    body: Any = None, content_type: str = "application/json",
                    read_timeout_s: float | None = None) -> Any:
        if self._api is None:
            raise PermanentError("KubeClient used outside `async with`", service=SERVICE)
        started = time.monotonic()
        outcome = "error"
        try:
            resp = await self._api.call_api(
                path, method, query_params=list((query or {}).items()),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body, auth_settings=["BearerToken"], _preload_content=False,
                _request_timeout=read_timeout_s or self._timeout)
            outcome = outcome_of_status(resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            outcome = ("timeout" if isinstance(e, TimeoutError)
                       else "unreachable" if isinstance(e, aiohttp.ClientConnectorError)
                       else "error")
            raise TemporaryError(f"{method} {path}: {type(e).__name__}: {e}",
                                 service=SERVICE) from None
        except ConfigException as e:
            raise AuthenticationError(f"{method} {path}: credentials: {e}",
                                      service=SERVICE) from None
        finally:
            if self._observer is not None:
                self._observer("kubernetes", call_name(method, path, query), outcome,
                               time.monotonic() - started)
        if resp.status >= 400:
            try:
                data = await resp.read()
            except (aiohttp.ClientError, TimeoutError, OSError):
                data = b""
            finally:
                resp.release()
            _raise_for(resp.status, method, path, data, resp.headers.get("Retry-After"))
        return resp

    async def _read(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                    body: Any = None, content_type: str = "application/json") -> bytes:
        resp = await self._open(method, path, query=query, body=body, content_type=content_type)
        try:
            return bytes(await resp.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise TemporaryError(f"{method} {path}: reading the answer: {type(e).__name__}",
                                 service=SERVICE) from None
        finally:
            resp.release()

    async def _request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                       body: Any = None, content_type: str = "application/json") -> Any:
        data = await self._read(method, path, query=query, body=body, content_type=content_type)
        if not data:
            return None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise MalformedResponse(f"{method} {path}: the answer is not JSON",
                                    service=SERVICE) from None

    async def _list(self, path: str, query: Mapping[str, Any] | None, kind: _Kind[T]
                    ) -> tuple[list[T], str]:
        """Every item, page by page, translated; restarts when the continue token expired."""
        with _no_gc():
            return await self._list_pages(path, query, kind)

    async def _list_pages(self, path: str, query: Mapping[str, Any] | None, kind: _Kind[T]
                          ) -> tuple[list[T], str]:
        """Pipelined: the next page is asked for (its token read from the head of the current
        one) before the current page is decoded, so the server works while we decode."""
        for _ in range(3):
            items: list[T] = []
            base = {**(query or {}), "limit": self._page_size}
            ahead: asyncio.Task[bytes] | None = None
            try:
                raw = await self._read("GET", path, query=base)
                while True:
                    guess = _peek_continue(raw)
                    if guess:
                        ahead = asyncio.create_task(
                            self._read("GET", path, query={**base, "continue": guess}))
                        await asyncio.sleep(0)  # the request leaves now
                    page, token, rv = kind.decode_page(path, raw)
                    del raw
                    try:
                        items.extend(map(kind.item, page))
                    except UNREADABLE as e:
                        raise MalformedResponse(f"GET {path}: an item cannot be read: {e}",
                                                service=SERVICE) from None
                    del page
                    if not token:
                        return items, rv
                    if ahead is None or token != guess:
                        await _discard(ahead)
                        ahead = asyncio.create_task(
                            self._read("GET", path, query={**base, "continue": token}))
                    raw = await ahead
                    ahead = None
            except _Gone:
                continue
            finally:
                await _discard(ahead)
        raise TemporaryError(f"GET {path}: the list kept expiring", service=SERVICE)

    # ----- reads -----------------------------------------------------------------------------

    async def list_nodes(self) -> list[NodeInfo]:
        items, _ = await self._list("/api/v1/nodes", None, NODES)
        return items

    async def get_node(self, name: str) -> NodeInfo | None:
        try:
            return node_info(await self._request("GET", f"/api/v1/nodes/{name}"))
        except NotFound:
            return None

    async def list_pods(self, node_name: str | None = None) -> list[PodInfo]:
        query = {"fieldSelector": f"spec.nodeName={node_name}"} if node_name else None
        items, _ = await self._list("/api/v1/pods", query, PODS)
        return items

    async def list_pdbs(self) -> list[PdbInfo]:
        items, _ = await self._list("/apis/policy/v1/poddisruptionbudgets", None, PDBS)
        return items

    async def list_node_group_specs(self) -> list[NodeGroupSpec] | None:
        try:
            items, _ = await self._list(NODEGROUPS, None, NODE_GROUPS)
        except NotFound:
            return None
        return items

    # ----- node writes -----------------------------------------------------------------------

    async def _patch_node(self, name: str, build: Callable[[dict[str, Any]], dict[str, Any]]
                          ) -> dict[str, Any]:
        """Merge-patch conditioned on the resourceVersion just read; on 409 read again."""
        for attempt in range(CONFLICT_RETRIES):
            current = await self._request("GET", f"/api/v1/nodes/{name}")
            patch = build(current)
            patch.setdefault("metadata", {})["resourceVersion"] = (
                current.get("metadata") or {}).get("resourceVersion")
            try:
                await self._request("PATCH", f"/api/v1/nodes/{name}", body=patch,
                                    content_type="application/merge-patch+json")
                return current  # type: ignore[no-any-return]
            except Conflict:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def cordon(self, name: str, annotations: Mapping[str, str | None] | None = None
                     ) -> bool:
        def build(current: dict[str, Any]) -> dict[str, Any]:
            patch: dict[str, Any] = {"spec": {"unschedulable": True}}
            if annotations:
                patch["metadata"] = {"annotations": dict(annotations)}
            return patch

        prior = await self._patch_node(name, build)
        return bool((prior.get("spec") or {}).get("unschedulable"))

    async def _merge_patch_node(self, name: str, patch: dict[str, Any]) -> None:
        """A patch that does not depend on what the node holds: no read, no precondition."""
        await self._request("PATCH", f"/api/v1/nodes/{name}", body=patch,
                            content_type="application/merge-patch+json")

    async def uncordon(self, name: str, annotations: Mapping[str, str | None] | None = None
                       ) -> None:
        patch: dict[str, Any] = {"spec": {"unschedulable": None}}
        if annotations:
            patch["metadata"] = {"annotations": dict(annotations)}
        await self._merge_patch_node(name, patch)

    async def set_cordon(self, name: str, cordoned: bool, *,
                         annotations: Mapping[str, str | None], resource_version: str) -> None:
        """One merge patch of `spec.unschedulable` and `annotations`, conditioned on
        `resource_version`: Conflict when the node changed since that version was read (no
        read, no retry here: the caller reads again and decides again)."""
        patch: dict[str, Any] = {
            "metadata": {"annotations": dict(annotations), "resourceVersion": resource_version},
            "spec": {"unschedulable": True if cordoned else None},
        }
        await self._request("PATCH", f"/api/v1/nodes/{name}", body=patch,
                            content_type="application/merge-patch+json")

    async def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        await self._merge_patch_node(name, {"metadata": {"labels": dict(labels)}})

    async def set_taint(self, name: str, key: str, value: str = "", effect: str = "NoSchedule",
                        *, present: bool = True) -> None:
        """Add (or with present=False remove) one taint, keeping the others."""

        def build(current: dict[str, Any]) -> dict[str, Any]:
            taints = [t for t in (current.get("spec") or {}).get("taints") or []
                      if not (t.get("key") == key and t.get("effect") == effect)]
            if present:
                taints.append({"key": key, "value": value, "effect": effect})
            return {"spec": {"taints": taints or None}}

        await self._patch_node(name, build)

    async def delete_node(self, name: str, *, uid: str = "") -> bool:
        """Delete the Node object; True when deleted now, False when it was already gone.

        With `uid`, only that very Node (a precondition): a Node registered later under the
        same name is left alone and the call raises Conflict."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._request("DELETE", f"/api/v1/nodes/{name}", body=body)
        except NotFound:
            return False
        return True

    async def delete_pod(self, namespace: str, name: str, *, uid: str = "") -> bool:
        """Delete a pod with grace period 0; True when deleted now, False when already gone.
        With `uid`, only that very pod (a precondition; Conflict for a later one)."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "gracePeriodSeconds": 0}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                                body=body)
        except NotFound:
            return False
        return True

    # ----- eviction and events ---------------------------------------------------------------

    async def evict(self, namespace: str, name: str) -> None:
        body = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": name, "namespace": namespace}}
        try:
            await self._request("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction",
                                body=body)
        except TemporaryError as e:
            if e.status == 429:
                raise EvictionBlocked(e.message, service=SERVICE, status=429,
                                      retry_after=e.retry_after) from None
            if e.status == 500 and "more than one PodDisruptionBudget" in e.message:
                # The API server's answer for a pod two budgets select: it will not change by
                # retrying, only by a person fixing the budgets.
                raise PermanentError(e.message, service=SERVICE, status=500) from None
            raise

    async def emit_event(self, *, regarding_kind: str, regarding_name: str,
                         regarding_namespace: str, reason: str, note: str,
                         type_: str = "Normal", action: str = "Rebalance") -> None:
        namespace = regarding_namespace or "default"
        now = datetime.fromtimestamp(self._now(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        regarding: dict[str, Any] = {"kind": regarding_kind, "name": regarding_name}
        if regarding_namespace:
            regarding["namespace"] = regarding_namespace
        if regarding_kind in ("Node", "Pod", "Namespace"):
            regarding["apiVersion"] = "v1"
        body = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": f"{regarding_name}.{secrets.token_hex(8)}",
                         "namespace": namespace},
            "eventTime": now, "reportingController": self._controller,
            "reportingInstance": self._controller, "action": action[:128],
            "reason": reason[:128], "note": note[:1024], "type": type_,
            "regarding": regarding,
        }
        await self._request("POST", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events",
                            body=body)

    # ----- watches ---------------------------------------------------------------------------

    def watch_nodes(self, *, timeout_s: float = 60.0) -> AsyncIterator[tuple[str, NodeInfo]]:
        return self._watch("/api/v1/nodes", {}, timeout_s, NODES)

    def watch_pods(self, *, node_name: str | None = None, timeout_s: float = 60.0
                   ) -> AsyncIterator[tuple[str, PodInfo]]:
        query = {"fieldSelector": f"spec.nodeName={node_name}"} if node_name else {}
        return self._watch("/api/v1/pods", query, timeout_s, PODS)

    async def _watch(self, path: str, query: dict[str, str], timeout_s: float,
                     kind: _Kind[T]) -> AsyncIterator[tuple[str, T]]:
        """The current objects as ADDED, then changes, until timeout_s; re-lists on 410."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        rv = ""
        while loop.time() < deadline:
            if not rv:
                items, rv = await self._list(path, query, kind)
                for item in items:
                    yield "ADDED", item
            left = deadline - loop.time()
            if left <= 0:
                return
            params = {**query, "watch": "true", "resourceVersion": rv,
                      "timeoutSeconds": str(max(1, int(left + 0.999)))}
            try:
                resp = await self._open("GET", path, query=params, read_timeout_s=left + 5)
            except _Gone:
                rv = ""
                continue
            try:
                while True:
                    left = deadline - loop.time()
                    if left <= 0:
                        return
                    try:
                        line = await asyncio.wait_for(resp.content.readline(), left)
                    except TimeoutError:
                        return
                    except (aiohttp.ClientError, OSError, ValueError) as e:
                        raise TemporaryError(f"watch {path}: {type(e).__name__}",
                                             service=SERVICE) from None
                    if not line:
                        break  # the server ended the stream: watch again from rv
                    try:
                        event = orjson.loads(line)
                        event_type, obj = event["type"], event["object"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        raise MalformedResponse(f"watch {path}: unreadable event",
                                                service=SERVICE) from None
                    if event_type == "ERROR":
                        if obj.get("code") == 410:
                            rv = ""
                            break
                        _raise_for(int(obj.get("code") or 500), "GET", path,
                                   orjson.dumps(obj), None)
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if event_type == "BOOKMARK":
                        continue
                    try:
                        item = kind.event(obj)
                    except UNREADABLE as e:
                        raise MalformedResponse(f"watch {path}: an object cannot be read: {e}",
                                                service=SERVICE) from None
                    yield event_type, item
            finally:
                resp.release()

    # ----- leases ----------------------------------------------------------------------------

    @staticmethod
    def _lease_path(namespace: str, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{base}/{name}" if name else base

    async def get_lease(self, namespace: str, name: str) -> LeaseInfo | None:
        try:
            return lease_info(await self._request("GET", self._lease_path(namespace, name)))
        except NotFound:
            return None

    async def create_lease(self, lease: LeaseInfo) -> LeaseInfo:
        body = lease_body(lease)
        body["metadata"].pop("resourceVersion", None)
        return lease_info(await self._request("POST", self._lease_path(lease.namespace),
                                              body=body))

    async def update_lease(self, lease: LeaseInfo) -> LeaseInfo:
        return lease_info(await self._request(
            "PUT", self._lease_path(lease.namespace, lease.name), body=lease_body(lease)))
