"""The one error tree of the adapters: what the rest of the daemon may catch.

Library errors (aiohttp, kubernetes-asyncio, asyncio timeouts) are translated here, at the
boundary; nothing above the adapters ever sees them.

    AdapterError                    base; message never carries a secret
    ├── TemporaryError              worth retrying later (429, 5xx, timeout, transport, API down)
    │   └── EvictionBlocked         the Eviction API said 429: a PodDisruptionBudget forbids it now
    └── PermanentError              retrying will not help (validation, quota, plan limit, 4xx)
        ├── NotFound                the object does not exist (404)
        ├── Conflict                409 that survived the retries on a fresh read
        ├── AuthenticationError     credentials refused (401/403 after the one re-login)
        └── MalformedResponse       the peer answered something we cannot read; never acted on
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base of every error an adapter raises. `service` is "vpsie" or "kubernetes"."""

    def __init__(self, message: str, *, service: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.service = service
        self.status = status

    def __str__(self) -> str:
        where = f"{self.service}: " if self.service else ""
        code = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{where}{self.message}{code}"


class TemporaryError(AdapterError):
    """Try again later; `retry_after` seconds when the peer said so."""

    def __init__(
        self,
        message: str,
        *,
        service: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, service=service, status=status)
        self.retry_after = retry_after


class EvictionBlocked(TemporaryError):
    """The Eviction API refused with 429: evicting now would break a PodDisruptionBudget."""


class PermanentError(AdapterError):
    """Retrying will not help."""


class NotFound(PermanentError):
    pass


class Conflict(PermanentError):
    pass


class AuthenticationError(PermanentError):
    pass


class MalformedResponse(PermanentError):
    pass
