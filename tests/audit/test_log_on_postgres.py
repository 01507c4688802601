"""`migrate-log`, `audit` and `verify-log` on a PostgreSQL log, run as a person would run them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.audit.test_audit_cli import build, run, tamper
from tests.pgserver import drop_schema, fresh_schema, postgres_server

__all__ = ["postgres_server"]


@pytest.fixture
def dsn(postgres_server: str) -> Iterator[str]:
    target = asyncio.run(fresh_schema(postgres_server))
    yield target
    asyncio.run(drop_schema(postgres_server, target))


@pytest.fixture
def sqlite_log(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    asyncio.run(build(path, ("completed_rolling", "rolled_back")))
    return path


def test_a_migrated_log_audits_and_verifies_like_the_file(
    sqlite_log: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "migrate-log", "--from", str(sqlite_log), "--to", dsn)
    assert code == 0, err
    assert out.startswith("copied 62 events from ") and "the copy verifies" in out
    assert "snapshots are not copied" in out
    code, out, _ = run(capsys, "verify-log", "--db", dsn)
    assert (code, out.strip()) == (0, "log verifies: 62 events")
    for extra in ((), ("--plan", "golden-rollback"), ("--plan", "golden-rolling", "--json")):
        code_file, from_file, _ = run(capsys, "audit", "--db", str(sqlite_log), *extra)
        code_pg, from_pg, _ = run(capsys, "audit", "--db", dsn, *extra)
        assert code_file == code_pg == 0
        assert from_pg == from_file
    code, _, err = run(capsys, "migrate-log", "--from", str(sqlite_log), "--to", dsn)
    assert code == 2
    assert "the target is not empty (62 events" in err


def test_the_read_tools_never_create_a_log_in_an_empty_database(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "audit", "--db", dsn)
    assert code == 2
    assert "no event log in this database" in err and "Traceback" not in err

    async def tables() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
                )
            )
        finally:
            await conn.close()

    assert asyncio.run(tables()) == 0


def test_a_missing_password_file_is_named_and_nothing_is_copied(
    sqlite_log: Path, dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "pg-password"
    code, _, err = run(
        capsys,
        "migrate-log",
        "--from",
        str(sqlite_log),
        "--to",
        dsn,
        "--to-password-file",
        str(missing),
    )
    assert code == 2
    assert f"database password file {missing}: does not exist" in err
    code, _, err = run(capsys, "verify-log", "--db", dsn)
    assert code == 2 and "no event log" in err


def test_a_damaged_source_is_refused_and_the_target_stays_empty(
    sqlite_log: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(sqlite_log, b"allows 0 disruptions", b"allows 9 disruptions")
    code, _, err = run(capsys, "migrate-log", "--from", str(sqlite_log), "--to", dsn)
    assert code == 1
    assert err.startswith("migrate-log: nothing copied: ")
    assert "(stream 'plan-golden-rollback', type 'SafetyChecksRun')" in err
    assert "does not match its chain hash" in err
    code, out, _ = run(capsys, "verify-log", "--db", dsn)
    assert (code, out.strip()) == (0, "log verifies: 0 events")


def test_the_password_comes_from_its_file_and_never_shows(
    sqlite_log: Path, postgres_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server asks `password_user` for a password (scripts/pg-throwaway's pg_hba.conf)."""
    secret = "pw-" + uuid.uuid4().hex

    async def make_role() -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await conn.execute("DROP SCHEMA IF EXISTS password_user CASCADE")
            await conn.execute("DROP ROLE IF EXISTS password_user")
            await conn.execute(f"CREATE ROLE password_user LOGIN PASSWORD '{secret}'")
            await conn.execute("CREATE SCHEMA password_user AUTHORIZATION password_user")
        finally:
            await conn.close()

    asyncio.run(make_role())
    dsn = postgres_server.replace("user=postgres", "user=password_user")
    password_file = tmp_path / "pg-password"
    password_file.write_text(secret + "\n")
    code, out, err = run(
        capsys,
        "migrate-log",
        "--from",
        str(sqlite_log),
        "--to",
        dsn,
        "--to-password-file",
        str(password_file),
    )
    assert code == 0, err
    assert secret not in out + err
    code, out, err = run(
        capsys, "verify-log", "--db", dsn, "--db-password-file", str(password_file)
    )
    assert (code, out.strip()) == (0, "log verifies: 62 events")
    code, out, err = run(capsys, "verify-log", "--db", dsn)  # no password
    assert code == 2
    assert "password" in err and "Traceback" not in err and secret not in err
