"""`database`: an SQLite path, a PostgreSQL DSN, or a [database] table with a password file."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, parse_config
from tests.config.test_config_validation import BASE, GROUP


def config(tmp_path: Path, database: str) -> str:
    return BASE + database + "\n" + GROUP


def test_a_path_is_an_sqlite_file_relative_to_the_config(tmp_path: Path) -> None:
    cfg = parse_config(
        config(tmp_path, 'database = "state/events.db"'), source=tmp_path / "c.toml"
    )
    assert cfg.database == tmp_path / "state" / "events.db"
    assert cfg.database_password_file is None


def test_a_dsn_selects_postgresql(tmp_path: Path) -> None:
    dsn = "postgresql://rebalancer@db.internal:5432/rebalancer?sslmode=verify-full"
    cfg = parse_config(config(tmp_path, f'database = "{dsn}"'), source=tmp_path / "c.toml")
    assert cfg.database == dsn
    assert cfg.database_password_file is None


def test_a_database_table_names_the_password_file(tmp_path: Path) -> None:
    text = config(
        tmp_path,
        'database = { url = "postgresql://rebalancer@db/rebalancer", '
        'password_file = "credentials/pg-password" }',
    )
    cfg = parse_config(text, source=tmp_path / "c.toml")
    assert cfg.database == "postgresql://rebalancer@db/rebalancer"
    assert cfg.database_password_file == tmp_path / "credentials" / "pg-password"


@pytest.mark.parametrize(
    ("database", "words"),
    [
        (
            'database = "postgresql://rebalancer:hunter2@db/rebalancer"',
            "the DSN holds a password; put it in a credentials file",
        ),
        ('database = "mysql://db/x"', "unknown database scheme 'mysql'"),
        ('database = { password_file = "p" }', "needs url"),
        ('database = { url = "events.db" }', "url must be a postgresql:// DSN"),
        ('database = { url = "postgresql://db/x", pasword_file = "p" }', "did you mean"),
        ('database = "postgresql://db:port/x"', "not a valid PostgreSQL DSN"),
    ],
)
def test_bad_database_settings_are_named(tmp_path: Path, database: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config(tmp_path, database), source=tmp_path / "c.toml")
    message = str(info.value)
    assert "database" in message and words in message
    assert "hunter2" not in message
