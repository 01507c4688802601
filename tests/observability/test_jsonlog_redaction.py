"""JSON log lines carry context, and a secret never reaches the output."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from daemon.jsonlog import REDACTED, RedactionFilter, configure_logging, log_context

SECRET = "vps-tok-3f9c1a7e55d04b2b"


@pytest.fixture
def out() -> Iterator[tuple[io.StringIO, RedactionFilter]]:
    stream = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    redaction = configure_logging(logging.DEBUG, stream=stream)
    yield stream, redaction
    for h in list(root.handlers):
        if h not in before[0]:
            root.removeHandler(h)
    root.setLevel(before[1])


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["logger"] != "asyncio"]


def test_one_json_object_per_line(out: tuple[io.StringIO, RedactionFilter]) -> None:
    stream, _ = out
    log = logging.getLogger("daemon.executor.runner")
    log.info("worker %s added", "w-1", extra={"node_group": "web", "attempt": 2})
    log.warning("second")
    first, second = _lines(stream)
    assert first["level"] == "INFO"
    assert first["logger"] == "daemon.executor.runner"
    assert first["msg"] == "worker w-1 added"
    assert first["node_group"] == "web"
    assert first["attempt"] == 2
    assert str(first["ts"]).endswith("Z")
    assert second["msg"] == "second"
    assert "node_group" not in second


async def test_context_follows_tasks(out: tuple[io.StringIO, RedactionFilter]) -> None:
    stream, _ = out
    log = logging.getLogger("daemon.executor.runner")

    async def step() -> None:
        log.info("draining")

    with log_context(plan_id="p-1", node="worker-3"):
        await asyncio.create_task(step())
    log.info("outside")
    inside, outside = _lines(stream)
    assert (inside["plan_id"], inside["node"]) == ("p-1", "worker-3")
    assert "plan_id" not in outside


def test_registered_secret_never_reaches_output(out: tuple[io.StringIO, RedactionFilter]) -> None:
    stream, redaction = out
    redaction.register(SECRET)
    log = logging.getLogger("adapters.vpsie")
    log.info("login with %s", SECRET)
    log.info(f"header was Vpsie-Auth: {SECRET}")
    log.info("retry", extra={"url": f"https://example.invalid/?t={SECRET}", "tries": [SECRET]})
    try:
        raise RuntimeError(f"refused {SECRET}")
    except RuntimeError:
        log.exception("call failed")
    text = stream.getvalue()
    assert SECRET not in text
    assert text.count(REDACTED) >= 5
    assert "call failed" in text and "RuntimeError" in text


def test_sensitive_keys_in_extra_are_redacted(out: tuple[io.StringIO, RedactionFilter]) -> None:
    stream, _ = out
    logging.getLogger("x").info(
        "request",
        extra={
            "token": "plain-value-1",
            "client_secret": "plain-value-2",
            "headers": {"Authorization": "Bearer plain-value-3", "Accept": "application/json"},
            "password": 1234,
        },
    )
    text = stream.getvalue()
    for leaked in ("plain-value-1", "plain-value-2", "plain-value-3", "1234"):
        assert leaked not in text
    (line,) = _lines(stream)
    assert line["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}


def test_bearer_tokens_in_free_text_are_scrubbed(out: tuple[io.StringIO, RedactionFilter]) -> None:
    stream, _ = out
    logging.getLogger("x").info("sent Authorization: Bearer abc.def-ghi")
    assert "abc.def-ghi" not in stream.getvalue()
    assert _lines(stream)[0]["msg"] == f"sent Authorization: Bearer {REDACTED}"


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        RedactionFilter().register("ab")
