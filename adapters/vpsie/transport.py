"""One VPSie request, done carefully: authenticate, rate-limit, time out, check, type, retry.

- Authentication: `Vpsie-Auth: <token>`, or a bearer token from `POST {prefix}/auth/from/api`
  renewed a few minutes before it expires and, on a 401, renewed once and the request retried
  once. A second 401 is an `AuthenticationError`.
- Every answer is checked, HTTP 200 included: `{"error": true}` is an error. Errors are typed
  into `adapters.errors`: quota/plan phrases, validation and other 4xx are permanent; 429, 5xx,
  timeouts and transport failures are temporary.
- Temporary errors are retried with exponential backoff and full jitter (honouring
  `Retry-After`) when the call is safe to repeat. Calls that are not (adding a worker, creating
  a group) are only retried when the request surely had no effect: a 429 or a refused
  connection. Otherwise the caller reconciles against the live world.
- No secret ever reaches a log line, an exception message or a repr: messages from the server
  are scrubbed of them too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from adapters.errors import (
    AdapterError,
    AuthenticationError,
    Conflict,
    MalformedResponse,
    NotFound,
    PermanentError,
    TemporaryError,
)
from adapters.metrics import RequestObserver, outcome_of_status
from adapters.vpsie.ratelimit import Clock, TokenBucket
from adapters.vpsie.settings import VpsieSettings

SERVICE = "vpsie"
log = logging.getLogger("adapters.vpsie")

PERMANENT_PHRASES = (
    "exceeds the allowed limit",
    "quota exceeded",
    "plan does not allow",
    "maximum number of",
    "limit reached",
    "subscription does not allow",
)
SAME_SIZE_PHRASE = "has same selected size"
DEFAULT_TOKEN_LIFETIME_S = 3600.0
REFRESH_MARGIN_S = 300.0
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


class NotSent(TemporaryError):
    """The connection was refused: the request surely had no effect, so any call may retry."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]


class Transport:
    """Authenticated, rate-limited, checked and retried requests to one VPSie endpoint."""

    def __init__(
        self,
        settings: VpsieSettings,
        *,
        clock: Clock,
        rng: random.Random,
        rate_limit_per_min: float | None,
        timeout_s: float,
        max_retries: int,
        observer: RequestObserver | None = None,
    ) -> None:
        self.settings = settings
        self._observer = observer
        self._clock = clock
        self._rng = rng
        self._bucket = TokenBucket(rate_limit_per_min, clock) if rate_limit_per_min else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._session: aiohttp.ClientSession | None = None
        self._bearer = ""
        self._bearer_renew_at = 0.0
        self._login_lock = asyncio.Lock()
        self.logins = 0
        # Awaited right before each attempt of a call that changes the world (`effect=True`),
        # retries included; what it raises ends the call unsent (the daemon lost the lead).
        self.effect_guard: Callable[[], Awaitable[None]] | None = None

    def __repr__(self) -> str:
        return f"Transport({self.settings!r})"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"Accept": "application/json"}
            )
        return self._session

    def scrub(self, text: str) -> str:
        for secret in (*self.settings.secrets(), self._bearer):
            if secret:
                text = text.replace(secret, "***")
        return text

    # --- retries ------------------------------------------------------------------------
    async def call(
        self,
        call: str,
        method: str,
        path: str,
        *,
        payload: Any = None,
        params: dict[str, str] | None = None,
        idempotent: bool = True,
        effect: bool = False,
    ) -> Answer:
        attempt = 0
        while True:
            try:
                return await self._authenticated(
                    call, method, path, payload=payload, params=params, effect=effect
                )
            except TemporaryError as exc:
                safe = idempotent or exc.status == 429 or isinstance(exc, NotSent)
                if not safe or attempt >= self._max_retries:
                    raise
                delay = self._backoff(attempt, exc.retry_after)
                attempt += 1
                log.debug(
                    "vpsie %s: %s; retry %d/%d in %.2fs",
                    call,
                    exc,
                    attempt,
                    self._max_retries,
                    delay,
                )
                await self._clock.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, BACKOFF_CAP_S * 5)
        return self._rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))

    # --- authentication -----------------------------------------------------------------
    async def _authenticated(
        self,
        call: str,
        method: str,
        path: str,
        *,
        payload: Any,
        params: dict[str, str] | None,
        effect: bool = False,
    ) -> Answer:
        if self.settings.auth == "token":
            return await self._send(
                call, method, path, payload=payload, params=params,
                headers={"Vpsie-Auth": self.settings.token}, effect=effect,
            )  # fmt: skip
        await self._logged_in(self._ensure_bearer(call))
        try:
            return await self._send(
                call, method, path, payload=payload, params=params,
                headers={"Authorization": f"Bearer {self._bearer}"}, effect=effect,
            )  # fmt: skip
        except AuthenticationError as exc:
            if exc.status != 401:
                raise
            log.debug("vpsie %s: token refused; logging in again once", call)
            await self._logged_in(self._login(call, force=True))
            return await self._send(
                call, method, path, payload=payload, params=params,
                headers={"Authorization": f"Bearer {self._bearer}"}, effect=effect,
            )  # fmt: skip

    async def _logged_in(self, login: Awaitable[None]) -> None:
        """A login that failed for a passing reason: the request itself was never sent."""
        try:
            await login
        except NotSent:
            raise
        except TemporaryError as exc:
            raise NotSent(
                exc.message, service=SERVICE, status=exc.status, retry_after=exc.retry_after
            ) from None

    async def _ensure_bearer(self, call: str) -> None:
        if not self._bearer or self._clock.monotonic() >= self._bearer_renew_at:
            await self._login(call, force=False)

    async def _login(self, call: str, *, force: bool) -> None:
        stale = self._bearer
        async with self._login_lock:
            if self._bearer and self._bearer != stale:
                return  # another task logged in while we waited
            if not force and self._bearer and self._clock.monotonic() < self._bearer_renew_at:
                return
            form = {
                "clientId": self.settings.client_id,
                "clientSecret": self.settings.client_secret,
            }
            answer = await self._send(
                f"{call}: login", "POST", self.settings.auth_path, form=form, headers={}
            )
            token = answer.body.get("accessToken")
            if not isinstance(token, dict) or not isinstance(token.get("token"), str):
                raise MalformedResponse(
                    f"{call}: login: accessToken.token: missing", service=SERVICE
                )
            if not token["token"]:
                raise MalformedResponse(f"{call}: login: accessToken.token: empty", service=SERVICE)
            self._bearer = token["token"]
            lifetime = self._lifetime(token.get("expires"))
            margin = min(REFRESH_MARGIN_S, lifetime / 2)
            self._bearer_renew_at = self._clock.monotonic() + lifetime - margin
            self.logins += 1
            log.debug("vpsie: logged in; token renews in %.0fs", lifetime - margin)

    def _lifetime(self, expires: Any) -> float:
        if not isinstance(expires, str):
            return DEFAULT_TOKEN_LIFETIME_S
        try:
            at = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            return DEFAULT_TOKEN_LIFETIME_S
        if at.tzinfo is None:
            return DEFAULT_TOKEN_LIFETIME_S
        lifetime = at.timestamp() - self._clock.now()
        # A clock skewed by days says nothing useful: fall back to the documented default.
        return lifetime if 0 < lifetime <= 7 * 86400 else DEFAULT_TOKEN_LIFETIME_S

    # --- one HTTP exchange --------------------------------------------------------------
    async def _send(
        self,
        call: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        payload: Any = None,
        params: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        effect: bool = False,
    ) -> Answer:
        if self._bucket is not None:
            await self._bucket.acquire()
        if effect and self.effect_guard is not None:
            await self.effect_guard()
        url = f"{self.settings.base_url}{self.settings.prefix}{path}"
        started = self._clock.monotonic()
        outcome = "error"
        try:
            async with self._http().request(
                method, url, json=payload, params=params, data=form, headers=headers
            ) as response:
                status = response.status
                retry_after = self._retry_after(response.headers.get("Retry-After"))
                raw = await response.read()
            outcome = outcome_of_status(status)
        except TimeoutError:
            outcome = "timeout"
            raise TemporaryError(
                f"{call}: no answer within {self._timeout_s:g}s", service=SERVICE
            ) from None
        except aiohttp.ClientConnectorError as exc:
            outcome = "unreachable"
            raise NotSent(
                f"{call}: cannot connect to {self.settings.base_url}: {type(exc).__name__}",
                service=SERVICE,
            ) from None
        except aiohttp.ClientError as exc:
            raise TemporaryError(
                f"{call}: transport error: {type(exc).__name__}", service=SERVICE
            ) from None
        finally:
            if self._observer is not None:
                self._observer("vpsie", call, outcome, self._clock.monotonic() - started)
        log.debug(
            "vpsie %s: %s %s%s -> %d in %.3fs",
            call,
            method,
            self.settings.prefix,
            path,
            status,
            self._clock.monotonic() - started,
        )
        return self._check(call, status, raw, retry_after)

    def _retry_after(self, value: str | None) -> float | None:
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - self._clock.now())
        except (TypeError, ValueError):
            return None

    def _check(self, call: str, status: int, raw: bytes, retry_after: float | None) -> Answer:
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
                if 200 <= status < 300:
                    raise MalformedResponse(
                        f"{call}: the answer is not JSON", service=SERVICE, status=status
                    ) from None
        elif status == 204 or 200 <= status < 300:
            return Answer(status, {})
        if body is not None and not isinstance(body, dict):
            if 200 <= status < 300:
                raise MalformedResponse(
                    f"{call}: the answer is not a JSON object", service=SERVICE, status=status
                )
            body = None
        message = ""
        if isinstance(body, dict):
            text = body.get("message")
            message = self.scrub(str(text)) if text is not None else ""
        failed = isinstance(body, dict) and body.get("error") in (True, "true", 1)
        if 200 <= status < 300 and not failed:
            return Answer(status, body if isinstance(body, dict) else {})
        raise self._error(call, status, message or "no message", retry_after)

    def _error(
        self, call: str, status: int, message: str, retry_after: float | None
    ) -> AdapterError:
        text = f"{call}: {message}"
        lowered = message.lower()
        if any(phrase in lowered for phrase in PERMANENT_PHRASES):
            return PermanentError(text, service=SERVICE, status=status)
        if SAME_SIZE_PHRASE in lowered:
            return Conflict(text, service=SERVICE, status=status)
        if status in (401, 403):
            return AuthenticationError(text, service=SERVICE, status=status)
        if status == 404 or (200 <= status < 300 and "not found" in lowered):
            return NotFound(text, service=SERVICE, status=status)
        if status == 409:
            return Conflict(text, service=SERVICE, status=status)
        if status == 429 or status >= 500:
            return TemporaryError(text, service=SERVICE, status=status, retry_after=retry_after)
        if 400 <= status < 500:
            return PermanentError(text, service=SERVICE, status=status)
        # HTTP 2xx with "error": true and no recognisable cause: the service failed this once.
        return TemporaryError(text, service=SERVICE, status=status)
