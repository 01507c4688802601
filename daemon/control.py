"""The control API: how a person (through the CLI) and a monitor talk to a running daemon.

An aiohttp server on 127.0.0.1:PORT or a Unix socket, never on a public address by default.

    GET  /healthz                     200 while the process and its event loop are alive
    GET  /readyz                      200 when `Readiness.check()` says so (see there), else 503
    GET  /metrics                     Prometheus text
    GET  /v1/status                   JSON: the daemon's role, plans in flight and their states
    POST /v1/plans/{id}/approve       body (optional) {"reason": str, "by": str}
    POST /v1/plans/{id}/reject|pause|resume|cancel
    GET  /                            the status page (daemon/static/), when given a `PageSource`
    GET  /static/{file}               its script and style sheet
    GET  /v1/page, /v1/page/plans/{id}  the page's JSON (daemon/page.py)

On a Unix socket or a loopback address, the GETs need no token. On any other address (a
deliberate choice: `listen = "0.0.0.0:8470"`), the server refuses to start without a token file,
warns in the log at every start, and every GET but /healthz and /readyz (status, metrics, the
status page's JSON) needs the token too.

A POST needs `Authorization: Bearer <token>`, the token read from a file at start (and again on
`reload_token()`, which SIGHUP calls): 401 without the header, 403 with a wrong token, compared
in constant time. The token is never logged, echoed or put in an error. A POST from a page of
another site is refused (403) on its `Origin` header before the token is even looked at; a
browser cannot send a cross-site request with an `Authorization` header without a CORS
preflight, which this server never grants, and no cookie is ever used, so the token (which the
status page keeps in the tab's sessionStorage) is what stands against cross-site requests.
Without a target (`audit --serve`: a recorded log), there are no POST routes at all.

The server knows nothing about plans; it calls a `ControlTarget` (the executor), which raises
`ControlError(http_status, message)` for an unknown plan (404) or an action the plan's state
does not allow (409, naming the state).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web

from adapters.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from daemon.control_protocol import (
    ACTIONS,
    MAX_REASON,
    PLAN_ID,
    Address,
    parse_address,
    read_token_file,
)

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024


class ControlError(Exception):
    """A refusal the control API passes on to the caller as `http_status` and `message`."""

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message


class ControlTarget(Protocol):
    """What the control API drives: the executor. Raises ControlError to refuse.

    `status()` returns a JSON-able dict; the CLI reads `plans`, a list of
    `{"plan_id", "state", "node_group", "strategy", "replacements_done", "replacements_total"}`
    objects (more keys are shown by `status --json`). The actions return a JSON-able dict with
    at least `{"plan_id": ..., "state": <state after the action>}`.
    """

    def status(self) -> dict[str, Any]: ...

    async def approve(self, plan_id: str, by: str, reason: str) -> dict[str, Any]: ...

    async def reject(self, plan_id: str, by: str, reason: str) -> dict[str, Any]: ...

    async def pause(self, plan_id: str, by: str, reason: str) -> dict[str, Any]: ...

    async def resume(self, plan_id: str, by: str, reason: str) -> dict[str, Any]: ...

    async def cancel(self, plan_id: str, by: str, reason: str) -> dict[str, Any]: ...


class MetricsSource(Protocol):
    def render(self) -> bytes: ...


class PageSource(Protocol):
    """The status page's data (daemon.page.LogPages); raises ControlError(404) for no plan."""

    async def overview(self, live: dict[str, Any] | None) -> dict[str, Any]: ...

    async def plan(self, prefix: str) -> dict[str, Any]: ...


STATIC = Path(__file__).parent / "static"
_STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# The page loads only its own script and style sheet and talks only to this server.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Role(StrEnum):
    STARTING = "starting"  # before the first attempt at the lease
    STANDBY = "standby"  # another daemon holds the lease; we wait for it
    LEADER = "leader"
    LOST = "lost"  # held the lease and lost it: stopped acting, about to exit or re-elect
    PARKED = "parked"  # leads, but the event log failed: stopped acting until it answers again
    STOPPING = "stopping"


class Readiness:
    """When /readyz answers 200.

    Ready means "this daemon is doing what it should": either it leads and has finished
    recovery (folded the log and reconciled every replacement in flight), or it is a healthy
    standby waiting for the lease. Not ready: starting, leading but still recovering, lost the
    lease, stopping. A standby counts as ready so that a second, waiting daemon is not
    reported as broken; `/v1/status` says which one leads.
    """

    def __init__(self) -> None:
        self.role = Role.STARTING
        self.recovered = False

    def set_role(self, role: Role) -> None:
        if role is not Role.LEADER:
            self.recovered = False  # a new term as leader starts with recovery again
        self.role = role

    def mark_recovered(self) -> None:
        self.recovered = True

    def check(self) -> tuple[bool, str]:
        if self.role is Role.LEADER:
            return (True, "leader") if self.recovered else (False, "recovering")
        if self.role is Role.STANDBY:
            return True, "standby"
        return False, self.role.value


@dataclass(frozen=True, slots=True)
class _ActionBody:
    by: str
    reason: str


def _host_name(header: str) -> str:
    """The name in a `Host` header: `[::1]:8470` -> `::1`, `127.0.0.1:8470` -> `127.0.0.1`."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_address_or_localhost(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str, **headers: str) -> web.Response:
    resp = _json({"error": message}, status)
    resp.headers.update(headers)
    return resp


class ControlServer:
    """The control API server. `start()` returns where it listens (with the real port)."""

    def __init__(
        self,
        target: ControlTarget | None,
        *,
        listen: str | Address,
        readiness: Readiness,
        metrics: MetricsSource | None = None,
        token_file: str | Path | None = None,
        pages: PageSource | None = None,
    ) -> None:
        self._target = target
        self._pages = pages
        self._address = parse_address(listen) if isinstance(listen, str) else listen
        self._readiness = readiness
        self._metrics = metrics
        self._token_file = Path(token_file) if token_file is not None else None
        self._token: bytes | None = None
        self._runner: web.AppRunner | None = None
        self.address: Address | None = None

    def __repr__(self) -> str:
        return f"ControlServer({self.address or self._address})"

    def reload_token(self) -> None:
        """(Re)read the token file; ValueError with the path and reason when unusable."""
        if self._token_file is None:
            self._token = None
            return
        self._token = read_token_file(self._token_file, strict_mode=True).encode()

    async def start(self) -> Address:
        self.reload_token()
        if not self._address.private:
            if self._token is None:
                raise ValueError(
                    f"control API on {self._address}: not a loopback address or Unix socket, "
                    "and no token_file: refusing to serve status and metrics to the network "
                    "without a token"
                )
            log.warning(
                "control API on %s, which is not a loopback address: every request but "
                "/healthz and /readyz needs the token; prefer a Unix socket or 127.0.0.1 "
                "behind a proxy",
                self._address,
            )
        app = web.Application(
            client_max_size=MAX_BODY, middlewares=[self._errors, self._known_host]
        )
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/v1/status", self._status)
        if self._target is not None:
            for action in ACTIONS:
                app.router.add_post(
                    f"/v1/plans/{{plan_id}}/{action}", self._action_handler(action)
                )
        if self._pages is not None:
            app.router.add_get("/", self._page_file("index.html"))
            for name in ("page.js", "page.css"):
                app.router.add_get(f"/static/{name}", self._page_file(name))
            app.router.add_get("/v1/page", self._page_overview)
            app.router.add_get("/v1/page/plans/{plan_id}", self._page_plan)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        a = self._address
        site: web.BaseSite
        try:
            if a.unix_path:
                site = web.UnixSite(runner, a.unix_path)
                await site.start()
                # Connecting needs write permission on the socket: owner only.
                os.chmod(a.unix_path, 0o600)
                self.address = a
            else:
                site = web.TCPSite(runner, a.host, a.port, reuse_address=True)
                await site.start()
                bound = [addr for addr in runner.addresses if isinstance(addr, tuple)]
                port = int(bound[0][1]) if bound else a.port
                self.address = Address(host=a.host, port=port)
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno, f"control API cannot listen on {a}: {exc.strerror or exc}"
            ) from None
        self._runner = runner
        log.info("control API listening on %s", self.address)
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ControlError as exc:
            return _error(exc.http_status, exc.message)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise
        except Exception:
            log.exception("control API: %s %s failed", request.method, request.path)
            return _error(500, "internal error; see the daemon's log")

    @web.middleware
    async def _known_host(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """On TCP, answer only requests addressed to an IP address or `localhost`.

        A page of another site whose name an attacker makes resolve to 127.0.0.1 (DNS
        rebinding) is, to the browser, of the same origin as this server; its requests carry
        that name in `Host`, and are refused here, so it can read nothing (and without the
        token, which lives in the real origin's session, it could change nothing anyway).
        """
        tcp = self._address is not None and not self._address.unix_path
        if tcp and not _is_address_or_localhost(_host_name(request.host or "")):
            return _error(403, "unexpected Host header: use the IP address or localhost")
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, reason = self._readiness.check()
        return _json({"ready": ready, "reason": reason}, 200 if ready else 503)

    def _readable(self, request: web.Request) -> web.Response | None:
        """None when this GET may be answered: always on a private address, else with the
        token (401/403 as for a POST)."""
        if self._address.private:
            return None
        return self._authorize(request)

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        if (refused := self._readable(request)) is not None:
            return refused
        if self._metrics is None:
            return _error(404, "metrics are not enabled")
        resp = web.Response(body=self._metrics.render())
        resp.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return resp

    def status(self) -> dict[str, Any]:
        """What `GET /v1/status` answers (the page adds it to its overview)."""
        ready, reason = self._readiness.check()
        body: dict[str, Any] = {
            "daemon": {"role": self._readiness.role.value, "ready": ready, "reason": reason},
            "leader": self._readiness.role is Role.LEADER,
            "mutations": self._target is not None and self._token is not None,
        }
        if self._target is not None:
            body.update(self._target.status())
        return body

    async def _status(self, request: web.Request) -> web.Response:
        if (refused := self._readable(request)) is not None:
            return refused
        return _json(self.status())

    def _page_file(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        path = STATIC / name
        content_type = _STATIC_TYPES[path.suffix]

        async def handle(request: web.Request) -> web.StreamResponse:
            resp = web.Response(body=path.read_bytes(), content_type=content_type)
            resp.headers.update(_PAGE_HEADERS)
            return resp

        return handle

    async def _page_overview(self, request: web.Request) -> web.Response:
        assert self._pages is not None
        if (refused := self._readable(request)) is not None:
            return refused
        body = await self._pages.overview(self.status() if self._target is not None else None)
        body["mutations"] = self._target is not None and self._token is not None
        return _json(body)

    async def _page_plan(self, request: web.Request) -> web.Response:
        assert self._pages is not None
        if (refused := self._readable(request)) is not None:
            return refused
        plan_id = request.match_info["plan_id"]
        if not PLAN_ID.match(plan_id):
            return _error(400, "not a plan id")
        return _json(await self._pages.plan(plan_id))

    def _action_handler(
        self, action: str
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            denied = self._same_origin(request) or self._authorize(request)
            if denied is not None:
                return denied
            plan_id = request.match_info["plan_id"]
            if not PLAN_ID.match(plan_id):
                return _error(400, "not a plan id")
            body = await self._read_body(request)
            method: Callable[[str, str, str], Awaitable[dict[str, Any]]] = getattr(
                self._target, action
            )  # the route exists only with a target
            result = await method(plan_id, body.by, body.reason)
            log.info(
                "control: %s by %s",
                action,
                body.by,
                extra={"plan_id": plan_id, "reason": body.reason},
            )
            return _json(result)

        return handle

    def _same_origin(self, request: web.Request) -> web.Response | None:
        """403 for a request a browser sent from a page of another origin."""
        origin = request.headers.get("Origin")
        if origin is None:
            return None  # not a browser's cross-origin request (the CLI, curl)
        if origin != f"{request.scheme}://{request.host}":
            return _error(403, "cross-origin request refused")
        return None

    def _authorize(self, request: web.Request) -> web.Response | None:
        if self._token is None:
            return _error(403, "mutating calls are disabled: the daemon has no control token file")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _error(
                401,
                "missing bearer token",
                **{"WWW-Authenticate": 'Bearer realm="vpsie-rebalancer"'},
            )
        if not hmac.compare_digest(given.strip().encode(), self._token):
            return _error(403, "wrong token")
        return None

    async def _read_body(self, request: web.Request) -> _ActionBody:
        raw = await request.read()
        if not raw.strip():
            return _ActionBody(by="cli", reason="")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ControlError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise ControlError(400, "the body must be a JSON object")
        unknown = set(data) - {"by", "reason"}
        if unknown:
            raise ControlError(400, f"unknown fields in the body: {', '.join(sorted(unknown))}")
        by = data.get("by", "cli")
        reason = data.get("reason", "")
        if reason is None:
            reason = ""
        if not isinstance(by, str) or not by.strip() or len(by) > 100:
            raise ControlError(400, "`by` must be a non-empty string of at most 100 characters")
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise ControlError(400, f"`reason` must be a string of at most {MAX_REASON} characters")
        return _ActionBody(by=by.strip(), reason=reason)
