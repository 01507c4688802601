"""The throwaway PostgreSQL server the tests run against (real server, Unix socket only).

`scripts/test` starts one with `scripts/pg-throwaway` and exports its DSN in
`VPSIE_TEST_POSTGRES`; when that is not set (pytest run by hand), the first test that needs
PostgreSQL starts one for the session in a temporary directory and stops it at the end. A
server that cannot start fails those tests with the reason: they never skip.

Each test gets its own schema (`search_path` in its DSN), dropped afterwards, so tests do not
see each other's logs and no database has to be created per test.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

ENV = "VPSIE_TEST_POSTGRES"
_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg-throwaway"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(_SCRIPT), *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The DSN of the session's server (without a schema)."""
    given = os.environ.get(ENV)
    if given:
        yield given
        return
    directory = tempfile.mkdtemp(prefix="vpsie-pg-")
    started = _run("start", directory)
    if started.returncode != 0:
        pytest.fail(
            f"PostgreSQL tests need a server and none could be started "
            f"(scripts/pg-throwaway start: {started.stderr.strip()})",
            pytrace=False,
        )
    try:
        yield started.stdout.strip()
    finally:
        _run("stop", directory)
        subprocess.run(["rm", "-rf", directory], check=False)


async def fresh_schema(server: str) -> str:
    """Create an empty schema and return a DSN whose search_path is it."""
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
    finally:
        await conn.close()
    return f"{server}&search_path={name}"


async def drop_schema(server: str, dsn: str) -> None:
    name = dsn.rsplit("search_path=", 1)[1]
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"DROP SCHEMA {name} CASCADE")
    finally:
        await conn.close()
