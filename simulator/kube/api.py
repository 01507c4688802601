"""The HTTP face of the simulated Kubernetes API server (aiohttp), enough for kubectl.

Paths are parsed by hand rather than by route table, because `/api/v1/namespaces/x` (a
namespace) and `/api/v1/namespaces/x/pods` (pods in it) only differ by what the third segment
names. Every error answers with a `Status` object, as the real server does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from simulator.kube.patches import json_patch, merge_patch, strategic_merge_patch
from simulator.kube.resources import ResourceType
from simulator.kube.selectors import (
    Selector,
    fields_match,
    parse_field_selector,
    parse_label_selector,
)
from simulator.kube.store import ApiError
from simulator.kube.tables import table
from simulator.kube.world import KubeWorld

JSON = "application/json"
WORLD_KEY = web.AppKey("kube_world", KubeWorld)
VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-sim", "gitCommit": "simulated",
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
           "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"}


@dataclass(frozen=True, slots=True)
class Target:
    rt: ResourceType
    namespace: str | None  # None: all namespaces (or cluster-scoped)
    name: str | None
    sub: str | None


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


def _error(e: ApiError) -> web.Response:
    return _json(e.status(), e.code)


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def make_kube_app(kube: KubeWorld, *, middlewares: Sequence[Any] = (),
                  token: str | None = None) -> web.Application:
    """The aiohttp application serving `kube`; start `kube` separately (`await kube.start()`).

    With `token`, a request that presents credentials other than `Bearer <token>` gets a 401
    Status (checked before `middlewares`); see `bearer_middleware` for requests without any."""
    chain = [bearer_middleware(token), *middlewares] if token is not None else [*middlewares]
    app = web.Application(middlewares=chain, client_max_size=64 * 2**20)
    app[WORLD_KEY] = kube
    app.router.add_get("/version", _version)
    for probe in ("/healthz", "/readyz", "/livez"):
        app.router.add_get(probe, _ok)
    app.router.add_route("*", "/api", _dispatch)
    app.router.add_route("*", "/apis", _dispatch)
    app.router.add_route("*", "/api/{tail:.*}", _dispatch)
    app.router.add_route("*", "/apis/{tail:.*}", _dispatch)
    return app


def bearer_middleware(token: str) -> Any:
    """Authentication as an API server with anonymous access on: a request presenting any
    other credentials than `Bearer <token>` is refused with 401; a request without an
    Authorization header is anonymous and served (kubectl, like every client-go program, never
    sends credentials to a plain-http server, and the simulator serves plain http)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization")
        if given is not None and not hmac.compare_digest(
                given.encode("utf-8", "replace"), expected):
            return _error(ApiError(401, "Unauthorized", "Unauthorized"))
        response: web.StreamResponse = await handler(request)
        return response

    return check


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _version(request: web.Request) -> web.Response:
    return _json(VERSION)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    world = request.app[WORLD_KEY]
    try:
        parts = [p for p in request.path.split("/") if p]
        core = parts[0] == "api"
        rest = parts[1:]
        if request.method == "GET":
            doc = _discovery(world, request, core, rest)
            if doc is not None:
                return _json(doc)
        target = _target(world, core, rest)
        return await _serve(world, request, target)
    except ApiError as e:
        return _error(e)


def _discovery(world: KubeWorld, request: web.Request, core: bool, rest: list[str]
               ) -> dict[str, Any] | None:
    reg = world.registry
    host = request.host or "127.0.0.1"
    if core:
        if not rest:
            return reg.api_versions_doc(host)
        if rest == ["v1"]:
            return reg.resource_list_doc("", "v1")
        return None
    if not rest:
        return reg.group_list_doc()
    if len(rest) == 1:
        doc = reg.group_doc(rest[0])
        if doc is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                           f"(group {rest[0]})")
        return doc
    if len(rest) == 2:
        doc = reg.resource_list_doc(rest[0], rest[1])
        if doc is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                           f"({rest[0]}/{rest[1]})")
        return doc
    return None


def _target(world: KubeWorld, core: bool, rest: list[str]) -> Target:
    if core:
        if not rest or rest[0] != "v1":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, version, tail = "", "v1", rest[1:]
    else:
        if len(rest) < 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, version, tail = rest[0], rest[1], rest[2:]
    reg = world.registry
    namespace: str | None = None
    if len(tail) >= 3 and tail[0] == "namespaces":
        rt = reg.get(group, version, tail[2])
        if rt is not None and rt.namespaced:
            namespace, tail = tail[1], tail[2:]
    rt = reg.get(group, version, tail[0])
    if rt is None or len(tail) > 3:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                       f"({'/'.join(tail)})")
    name = tail[1] if len(tail) > 1 else None
    sub = tail[2] if len(tail) > 2 else None
    if sub is not None and sub not in ("status", "eviction", "scale"):
        raise ApiError(404, "NotFound", f"no subresource {sub!r} on {rt.plural}")
    if rt.namespaced and name is not None and namespace is None:
        raise ApiError(404, "NotFound", f"{rt.plural} are namespaced: use "
                       f"/namespaces/<namespace>/{rt.plural}/{name}")
    return Target(rt, namespace, name, sub)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        import yaml

        return yaml.safe_load(raw)
    except Exception:
        raise _bad("the request body is neither JSON nor YAML") from None


async def _serve(world: KubeWorld, request: web.Request, t: Target) -> web.StreamResponse:
    method = request.method
    q = request.query
    if method == "GET" and t.name is None:
        if q.get("watch") in ("1", "true", "True"):
            return await _watch(world, request, t)
        return _list(world, request, t)
    if method == "GET":
        obj = _existing(world, t)
        if _wants_table(request):
            return _json(table(t.rt.kind, [obj], world.clock.now(), str(world.store.rv)))
        entry = world.store.entry(t.rt.key, t.namespace or "", t.name or "")
        assert entry is not None
        return web.Response(body=entry.raw, content_type=JSON)
    if method == "POST" and t.name is None:
        body = await _body(request)
        obj = _check_body(t, body)
        created = world.create(t.rt, obj)
        return _json(created, 201)
    if method == "POST" and t.sub == "eviction" and t.rt.key == "/pods":
        body = await _body(request) or {}
        opts = (body.get("deleteOptions") or {}) if isinstance(body, dict) else {}
        grace = opts.get("gracePeriodSeconds")
        if "All" not in q.getall("dryRun", []):
            world.evict(t.namespace or "", t.name or "", grace)
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Success", "code": 201}, 201)
    if method == "PUT" and t.name is not None:
        body = await _body(request)
        obj = _check_body(t, body)
        if obj["metadata"].get("name") != t.name:
            raise _bad(f"the name in the body ({obj['metadata'].get('name')!r}) does not match "
                       f"the URL ({t.name!r})")
        old = _existing(world, t)
        obj = _keep_other_half(t, old, obj)
        return _json(world.replace(t.rt, obj, check_rv=True))
    if method == "PATCH" and t.name is not None:
        return _json(await _patch(world, request, t))
    if method == "DELETE" and t.name is not None:
        body = await _body(request)
        _check_preconditions(_existing(world, t), body)
        grace = q.get("gracePeriodSeconds")
        grace_s = float(grace) if grace is not None else (
            body.get("gracePeriodSeconds") if isinstance(body, dict) else None)
        return _json(world.delete(t.rt, t.namespace or "", t.name, grace_s))
    raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {request.path}")


def _check_preconditions(obj: dict[str, Any], body: Any) -> None:
    """DeleteOptions.preconditions (uid, resourceVersion): 409 when the object differs."""
    pre = body.get("preconditions") if isinstance(body, dict) else None
    if not isinstance(pre, dict):
        return
    meta = obj.get("metadata") or {}
    for field, key in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        wanted = pre.get(field)
        if wanted and wanted != meta.get(field):
            raise ApiError(409, "Conflict", f"Precondition failed: {key} in precondition: "
                           f"{wanted}, {key} in object meta: {meta.get(field)}")


def _existing(world: KubeWorld, t: Target) -> dict[str, Any]:
    obj = world.store.get(t.rt.key, t.namespace or "", t.name or "")
    if obj is None:
        raise ApiError(404, "NotFound", f'{t.rt.plural} "{t.name}" not found',
                       {"name": t.name, "kind": t.rt.plural})
    return obj


def _check_body(t: Target, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad(f"{t.rt.kind}: the body must be a JSON object")
    kind = body.get("kind")
    if kind is not None and kind != t.rt.kind:
        raise _bad(f"the body's kind {kind!r} does not match the URL ({t.rt.kind})")
    meta = body.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise _bad(f"{t.rt.kind}: metadata must be an object")
    if t.rt.namespaced:
        ns = meta.get("namespace")
        if ns and t.namespace and ns != t.namespace:
            raise _bad(f"the namespace of the object ({ns}) does not match the namespace on "
                       f"the request ({t.namespace})")
        meta["namespace"] = t.namespace or ns or "default"
    return body


def _keep_other_half(t: Target, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A status subresource writes only status; the main resource never writes status."""
    if "status" not in t.rt.subresources:
        return new
    if t.sub == "status":
        merged = orjson.loads(orjson.dumps(old))
        merged["status"] = new.get("status", {})
        merged["metadata"]["resourceVersion"] = new["metadata"].get("resourceVersion")
        return merged  # type: ignore[no-any-return]
    if "status" in old:
        new["status"] = orjson.loads(orjson.dumps(old["status"]))
    return new


async def _patch(world: KubeWorld, request: web.Request, t: Target) -> dict[str, Any]:
    ctype = request.content_type
    patch = await _body(request)
    old = _existing(world, t)
    current = orjson.loads(orjson.dumps(old))
    if ctype == "application/merge-patch+json":
        new = merge_patch(current, patch)
    elif ctype == "application/strategic-merge-patch+json":
        new = strategic_merge_patch(current, patch)
    elif ctype == "application/json-patch+json":
        new = json_patch(current, patch)
    else:
        raise ApiError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format ({ctype}); accepted: "
                       "application/json-patch+json, application/merge-patch+json, "
                       "application/strategic-merge-patch+json")
    if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
        raise ApiError(422, "Invalid", "the patch removed the object's metadata")
    for fixed in ("name", "namespace", "uid"):
        if new["metadata"].get(fixed) != old["metadata"].get(fixed):
            raise ApiError(422, "Invalid", f"metadata.{fixed} cannot be changed by a patch")
    new = _keep_other_half(t, old, new)
    return world.replace(t.rt, new, check_rv=True)


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _selectors(request: web.Request) -> tuple[Selector, list[tuple[str, bool, str]]]:
    q = request.query
    try:
        labels = parse_label_selector(q.get("labelSelector", ""))
        fields = parse_field_selector(q.get("fieldSelector", ""))
    except ValueError as e:
        raise _bad(str(e)) from None
    return labels, fields


def _accept(t: Target, labels: Selector, fields: list[tuple[str, bool, str]]
            ) -> Callable[[dict[str, Any]], bool]:
    ns = t.namespace

    def accept(obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if ns is not None and meta.get("namespace") != ns:
            return False
        if labels.requirements and not labels.matches(meta.get("labels") or {}):
            return False
        return not fields or fields_match(obj, fields)

    return accept


def _list(world: KubeWorld, request: web.Request, t: Target) -> web.Response:
    q = request.query
    labels, fields = _selectors(request)
    accept = _accept(t, labels, fields)
    try:
        limit = int(q.get("limit", "0") or 0)
    except ValueError:
        raise _bad(f"limit must be an integer, got {q.get('limit')!r}") from None
    start = None
    token = q.get("continue")
    if token:
        try:
            decoded = orjson.loads(base64.urlsafe_b64decode(token.encode()))
            start = (str(decoded["start"][0]), str(decoded["start"][1]))
        except (ValueError, KeyError, TypeError, IndexError):
            raise ApiError(400, "BadRequest", "the continue token is not valid") from None
    store = world.store
    coll = store.collection(t.rt.key)
    keys = coll.keys_after(start)
    if t.namespace is not None and not token:
        keys = [k for k in keys if k[0] == t.namespace] if t.rt.namespaced else keys
    selected: list[bytes] = []
    objs: list[dict[str, Any]] = []
    table_mode = _wants_table(request)
    plain = not labels.requirements and not fields and t.namespace is None
    next_token = ""
    remaining = 0
    items = coll.items
    for i, k in enumerate(keys):
        e = items[k]
        if not plain and not accept(e.obj):
            continue
        if limit and len(selected) + len(objs) >= limit:
            next_token = base64.urlsafe_b64encode(
                orjson.dumps({"rv": store.rv, "start": keys[i - 1]})).decode()
            remaining = len(keys) - i
            break
        if table_mode:
            objs.append(e.obj)
        else:
            selected.append(e.raw)
    rv = str(store.rv)
    if table_mode:
        return _json(table(t.rt.kind, objs, world.clock.now(), rv, next_token))
    meta: dict[str, Any] = {"resourceVersion": rv}
    if next_token:
        meta["continue"] = next_token
        if plain:
            meta["remainingItemCount"] = remaining
    head = orjson.dumps({"kind": f"{t.rt.kind}List", "apiVersion": t.rt.api_version,
                         "metadata": meta})
    body = head[:-1] + b',"items":[' + b",".join(selected) + b"]}"
    return web.Response(body=body, content_type=JSON)


async def _watch(world: KubeWorld, request: web.Request, t: Target) -> web.StreamResponse:
    q = request.query
    labels, fields = _selectors(request)
    accept = _accept(t, labels, fields)
    rv_text = q.get("resourceVersion", "")
    try:
        timeout = float(q.get("timeoutSeconds", "1800"))
        since = int(rv_text) if rv_text not in ("", "0") else None
    except ValueError:
        raise _bad("resourceVersion and timeoutSeconds must be numbers") from None
    resp = web.StreamResponse(headers={"Content-Type": JSON})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    store = world.store
    try:
        watcher = store.watch(t.rt.key, accept, since)
    except ApiError as e:
        await resp.write(orjson.dumps({"type": "ERROR", "object": e.status()}) + b"\n")
        return resp
    try:
        if since is None:
            for entry in list(store.entries(t.rt.key)):
                if accept(entry.obj):
                    await resp.write(b'{"type":"ADDED","object":' + entry.raw + b"}\n")
        # The deadline arrives as a None in the queue: no cancellation races with a get().
        end = asyncio.get_running_loop().call_later(timeout, watcher.queue.put_nowait, None)
        try:
            while (line := await watcher.queue.get()) is not None:
                await resp.write(line)
        finally:
            end.cancel()
    except ConnectionResetError:
        return resp  # the client went away
    finally:
        store.unwatch(watcher)
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp
