"""Structured logs: one JSON object per line, and no secret ever written.

journald keeps whatever the daemon prints on stderr; one orjson object per line makes that
greppable with `jq` and parseable by any log shipper. A line looks like

    {"ts":"2026-01-01T00:00:00.123Z","level":"INFO","logger":"daemon.executor.runner",
     "msg":"worker added","plan_id":"p-1f3a","node":"worker-3","node_group":"web"}

`plan_id`, `node` and `node_group` come from `log_context(...)` (contextvars, so every line
logged inside one replacement's task carries them) or from `extra=`; other `extra` keys are
copied as they are.

`RedactionFilter` runs on the handler, before formatting: values of keys that look like
credentials (token, secret, password, authorization, ...) become "[REDACTED]", and every string
registered with `register()` (the VPSie token, client secret, control token, as soon as they
are read) is replaced wherever it appears: in the message, its arguments, extras and
tracebacks. A bearer token in free text is scrubbed too.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any

import orjson

REDACTED = "[REDACTED]"
CONTEXT_KEYS = ("plan_id", "node", "node_group")

_context: dict[str, contextvars.ContextVar[str | None]] = {
    key: contextvars.ContextVar(f"log_{key}", default=None) for key in CONTEXT_KEYS
}
_SENSITIVE_KEY = re.compile(
    r"token|secret|passw|authori[sz]ation|api[-_]?key|credential|cookie|bearer|private[-_]?key",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_MIN_SECRET_LEN = 4
MIN_SECRET_LEN = _MIN_SECRET_LEN  # shorter values cannot be redacted without mangling logs
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


@contextlib.contextmanager
def log_context(
    *, plan_id: str | None = None, node: str | None = None, node_group: str | None = None
) -> Iterator[None]:
    """Tag every line logged inside the block (and in tasks started from it)."""
    values = {"plan_id": plan_id, "node": node, "node_group": node_group}
    tokens = [(_context[k], _context[k].set(v)) for k, v in values.items() if v is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class RedactionFilter(logging.Filter):
    """Scrubs credentials from records; attach to handlers (logger filters miss propagation)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        for s in secrets:
            self.register(s)

    def register(self, secret: str) -> None:
        """Never write `secret` again. Very short strings are refused: they would scrub words."""
        secret = secret.strip()
        if len(secret) < _MIN_SECRET_LEN:
            raise ValueError(f"a secret to redact must be at least {_MIN_SECRET_LEN} characters")
        self._secrets.add(secret)

    def scrub(self, text: str) -> str:
        for s in sorted(self._secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, REDACTED)
        return _BEARER.sub(rf"\1 {REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        record.exc_info = None  # the scrubbed text replaces it
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        for key in list(vars(record)):
            if key not in _STANDARD:
                setattr(record, key, self._scrub_value(key, getattr(record, key)))
        return True

    def _scrub_value(self, key: str, value: Any) -> Any:
        if _SENSITIVE_KEY.search(key):
            return REDACTED
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {str(k): self._scrub_value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub_value("", v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.scrub(str(value))


class JsonFormatter(logging.Formatter):
    """One orjson object per line: ts, level, logger, msg, context keys, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC)
        out: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None) or _context[key].get()
            if value is not None:
                out[key] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return orjson.dumps(out, default=str).decode()


def configure_logging(
    level: int | str = logging.INFO,
    *,
    stream: IO[str] | None = None,
    secrets: Iterable[str] = (),
) -> RedactionFilter:
    """Send the root logger's records as JSON lines to `stream` (stderr); return the filter
    so that secrets read later can be registered with it."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    redaction = RedactionFilter(secrets)
    handler.addFilter(redaction)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_vpsie_rebalancer", False):
            root.removeHandler(old)
    handler._vpsie_rebalancer = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return redaction
