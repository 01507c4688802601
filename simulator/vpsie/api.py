"""The simulated VPSie HTTP API: routes, authentication, pagination and error bodies.

Paths live under a prefix (default `/apps/v2`). Every call but the login needs either
`Vpsie-Auth: <static token>` or `Authorization: Bearer <token from /auth/from/api>`; an expired
bearer token gets a 401. Errors are `{"error": true, "code", "message", "stack"}`, sometimes with
HTTP 200, as the real service does. Lists accept `offset`/`limit` and answer one page, with a
`pagination` object (offers) or only a top-level `total` (datacenters, clusters, node groups),
so a client that reads only the first page misses data.

The answers follow the public clients, not our adapter (docs/simulator.md says which client
each one follows): node rows carry no group id; cluster rows no `dcIdentifier`; prices are JSON
numbers; times RFC 3339; hostnames differ in case from the Node names. The node rows come in
one of two shapes, the scenario's `profile`: `autoscaler` (vpsie-k8s-autoscaler's
`{identifier, hostname, ip, status, role, cpu, ram, disk}`) or `govpsie` (govpsie's
`{id, user_id, hostname, default_ip, private_ip, node_type, node_id, datacenter_id,
created_on}`, integers, no identifier, no status).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from simulator.vpsie.state import SimWorker, VpsieError, VpsieState

STATE_KEY = web.AppKey("vpsie_state", VpsieState)


def make_vpsie_app(
    state: VpsieState, *, prefix: str = "/apps/v2", middlewares: Sequence[Middleware] = ()
) -> web.Application:
    """The aiohttp application serving `state` under `prefix`."""
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    app = web.Application(middlewares=[*middlewares, _errors, _authenticated(state, prefix)])
    app[STATE_KEY] = state
    routes = [
        web.post(f"{prefix}/auth/from/api", _login),
        web.get(f"{prefix}/datacenter", _datacenters),
        web.post(f"{prefix}/k8s/offers", _offers),
        web.get(f"{prefix}/k8s/cluster/all", _clusters),
        web.get(f"{prefix}/k8s/cluster/byId/{{cluster}}", _cluster),
        web.get(f"{prefix}/k8s/node/groups/byClusterId/{{cluster}}", _groups),
        web.post(f"{prefix}/k8s/cluster/add/group", _create_group),
        web.post(f"{prefix}/k8s/cluster/byId/{{cluster}}/add/slave/group/{{group}}", _add_worker),
        web.delete(f"{prefix}/k8s/cluster/byId/{{cluster}}/delete/slave", _delete_worker),
    ]
    app.add_routes(routes)
    return app


def _error(status: int, message: str) -> web.Response:
    body = {"error": True, "code": status, "message": message, "stack": "simulated"}
    return web.json_response(body, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except VpsieError as exc:
        return _error(exc.status, exc.message)
    except web.HTTPNotFound:
        return _error(404, f"Route {request.method} {request.path} not found")
    except web.HTTPMethodNotAllowed:
        return _error(405, f"Method {request.method} not allowed on {request.path}")


def _authenticated(state: VpsieState, prefix: str) -> Middleware:
    login_path = f"{prefix}/auth/from/api"

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        state.requests += 1
        if request.path == login_path:
            return await handler(request)
        static = request.headers.get("Vpsie-Auth", "")
        bearer = request.headers.get("Authorization", "")
        if static and state.check_static(static):
            return await handler(request)
        if bearer.startswith("Bearer ") and state.check_bearer(bearer[len("Bearer ") :]):
            return await handler(request)
        if static or bearer:
            return _error(401, "Unauthorized: invalid or expired token")
        return _error(401, "Unauthorized: no credentials")

    return middleware


def _state(request: web.Request) -> VpsieState:
    return request.app[STATE_KEY]


def _ok(data: Any, **extra: Any) -> web.Response:
    return web.json_response({"error": False, "data": data, **extra})


def _page(
    request: web.Request, items: list[dict[str, Any]], *, pagination_object: bool = True
) -> web.Response:
    state = _state(request)
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", str(state.page_size)))
    except ValueError:
        raise VpsieError(400, "offset and limit must be integers") from None
    if offset < 0 or limit < 1:
        raise VpsieError(400, "offset must be >= 0 and limit >= 1")
    limit = min(limit, state.page_size)
    page = items[offset : offset + limit]
    if not pagination_object:
        return _ok(page, total=len(items))
    pagination = {
        "total": len(items),
        "count": len(page),
        "per_page": limit,
        "current_page": offset // limit + 1,
        "total_pages": max(1, math.ceil(len(items) / limit)),
    }
    return _ok(page, total=len(items), pagination=pagination)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise VpsieError(400, "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise VpsieError(400, "Request body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str:
    """A required non-empty string field of a JSON body, or a 400 naming it."""
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise VpsieError(400, f"{key} is required")
    return value


async def _login(request: web.Request) -> web.Response:
    state = _state(request)
    form = await request.post()
    client_id, client_secret = form.get("clientId"), form.get("clientSecret")
    if not isinstance(client_id, str) or not isinstance(client_secret, str):
        raise VpsieError(400, "clientId and clientSecret are required")
    token, refresh, expires_at = state.login(client_id, client_secret)
    expires = datetime.fromtimestamp(expires_at, tz=UTC).isoformat().replace("+00:00", "Z")
    return web.json_response(
        {
            "error": False,
            "code": 200,
            "message": "Authenticated",
            "accessToken": {"token": token, "expires": expires},
            "refreshToken": {"token": refresh, "expires": expires},
        }
    )


async def _datacenters(request: web.Request) -> web.Response:
    items = [
        {
            "identifier": dc.identifier,
            "dc_name": dc.name,
            "state": dc.state,
            "country": dc.country,
            "is_active": 1,
        }
        for dc in _state(request).datacenters
    ]
    return _page(request, items, pagination_object=False)


async def _offers(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _json_body(request)
    dc = _text(body, "dcIdentifier")
    state.datacenter(dc)
    items = [
        {
            "id": size.id,
            "name": size.name,
            "cpu": size.cpu,
            "ram": size.ram_mb,
            "disk": size.disk_gb,
            "price": float(size.prices[dc].monthly),
            "hourly_price": float(size.prices[dc].hourly),
        }
        for size in state.sizes
        if dc in size.prices
    ]
    return _page(request, items)


async def _clusters(request: web.Request) -> web.Response:
    state = _state(request)
    c = state.cluster
    listed = state.listed_workers()
    item = {
        "identifier": c.identifier,
        "cluster_name": c.name,
        "nickname": c.name,
        "kube_version": c.kube_version,
        "count": len(listed) + 1,
        "managerCount": 1,
        "slaveCount": len(listed),
        "cpu": sum(state.size(state.group(w.group_id).size_id).cpu for w in listed),
        "ram": sum(state.size(state.group(w.group_id).size_id).ram_mb for w in listed),
        "price": float(sum(_monthly(state, w) for w in listed)),
        "lock": 1 if state.lock else 0,
        "upgrade_version": state.upgrade_version or None,
        "created_on": "2025-06-01T10:00:00Z",
    }
    return _page(request, [item], pagination_object=False)


def _monthly(state: VpsieState, worker: SimWorker) -> Decimal:
    size = state.size(state.group(worker.group_id).size_id)
    price = size.prices.get(state.cluster.datacenter)
    return price.monthly if price is not None else Decimal(0)


# govpsie reads `node_type` as an integer whose values no public source names; these are ours.
GOVPSIE_MASTER_TYPE = 1
GOVPSIE_WORKER_TYPE = 2


def _node(state: VpsieState, worker: SimWorker) -> dict[str, Any]:
    """One worker row in the scenario's profile; neither shape names the worker's group."""
    if state.profile == "govpsie":
        return {
            "id": worker.node_id,
            "user_id": 1,
            "hostname": worker.listed_hostname,
            "default_ip": worker.ip,
            "private_ip": worker.private_ip,
            "node_type": GOVPSIE_WORKER_TYPE,
            "node_id": 1000 + worker.node_id,
            "datacenter_id": 1,
            "created_on": worker.created_on,
        }
    size = state.size(state.group(worker.group_id).size_id)
    return {
        "identifier": worker.identifier,
        "hostname": worker.listed_hostname,
        "ip": worker.ip,
        "status": worker.status,
        "role": "slave",
        "cpu": size.cpu,
        "ram": size.ram_mb,
        "disk": size.disk_gb,
    }


async def _cluster(request: web.Request) -> web.Response:
    state = _state(request)
    c = state.check_cluster(request.match_info["cluster"])
    if state.profile == "govpsie":
        master: dict[str, Any] = {
            "id": 0,
            "user_id": 1,
            "hostname": f"{c.name.capitalize()}-Master",
            "default_ip": "185.0.0.1",
            "private_ip": "10.0.0.1",
            "node_type": GOVPSIE_MASTER_TYPE,
            "node_id": 1000,
            "datacenter_id": 1,
            "created_on": "2025-06-01T10:00:00Z",
        }
    else:
        master = {
            "identifier": f"{c.identifier}-master",
            "hostname": f"{c.name.capitalize()}-Master",
            "ip": "185.0.0.1",
            "status": "running",
            "role": "master",
            "cpu": 2,
            "ram": 4096,
            "disk": 80,
        }
    data: dict[str, Any] = {
        "identifier": c.identifier,
        "cluster_name": c.name,
        "nickname": c.name,
        "kube_version": c.kube_version,
        "count": len(state.listed_workers()) + 1,
        "created_on": "2025-06-01T10:00:00Z",
        "nodes": [master, *(_node(state, w) for w in state.listed_workers())],
    }
    return _ok(data)


async def _groups(request: web.Request) -> web.Response:
    state = _state(request)
    c = state.check_cluster(request.match_info["cluster"])
    items = []
    for group in state.groups:
        size = state.size(group.size_id)
        items.append(
            {
                "id": group.id,
                "identifier": group.identifier,
                "group_name": group.name,
                "boxsize_id": group.size_id,
                "datacenter_id": 1,
                "dcIdentifier": c.datacenter,
                "cpu": size.cpu,
                "ram": size.ram_mb,
                "ssd": size.disk_gb,
                "nodes_count": len(state.workers_of(group.id)),
                "cluster_id": 1,
                "is_active": 1,
                "is_deleted": 0,
                "created_on": group.created_on,
            }
        )
    return _page(request, items, pagination_object=False)


async def _create_group(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _json_body(request)
    cluster, name = _text(body, "clusterIdentifier"), _text(body, "groupName")
    size_id = body.get("KubeSizeID")
    if isinstance(size_id, bool) or not isinstance(size_id, int):
        raise VpsieError(400, "KubeSizeID is required and must be an integer")
    group = state.create_group(cluster, name, size_id)
    return _ok({"groupId": group.identifier})


async def _add_worker(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        group_id = int(request.match_info["group"])
    except ValueError:
        raise VpsieError(400, "groupId must be an integer") from None
    worker = state.add_worker(request.match_info["cluster"], group_id)
    for _ in range(state.foreign_adds_per_add):
        state.add_worker(request.match_info["cluster"], group_id)
    if state.profile == "govpsie" or state.add_answer == "true":
        return _ok(True)
    if state.add_answer == "random" and state.rng.random() < 0.5:
        return _ok(True)
    # Sometimes an object; only `identifier` is something a client can delete by.
    return _ok(
        {
            "id": worker.node_id,
            "identifier": worker.identifier,
            "status": worker.status,
            "hostname": worker.listed_hostname,
        }
    )


async def _delete_worker(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _json_body(request)
    identifier = _text(body, "identifier")
    state.delete_worker(request.match_info["cluster"], identifier)
    return _ok(True, message="Node deleted")
