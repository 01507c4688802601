"""Opening the event log the configuration names: an SQLite file or a PostgreSQL database.

The PostgreSQL password is read here from its credentials file (`[database] password_file`)
and handed to the store; it is never part of the DSN, argv, the logs or an error message.
"""

from __future__ import annotations

from pathlib import Path

from daemon.config import Config
from eventstore import EventStore, EventStoreError


def read_password_file(path: Path) -> str:
    """The password in `path` (one line; the trailing newline is not part of it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EventStoreError(f"database password file {path}: does not exist") from None
    except PermissionError:
        raise EventStoreError(f"database password file {path}: permission denied") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EventStoreError(
            f"database password file {path}: cannot be read ({type(exc).__name__})"
        ) from None
    password = text.rstrip("\r\n")
    if not password:
        raise EventStoreError(f"database password file {path}: is empty")
    return password


async def open_event_log(
    database: Path | str, password_file: Path | None = None, *, create: bool = True
) -> EventStore:
    """Open the log at `database` (a path or a postgresql:// DSN)."""
    password = read_password_file(password_file) if password_file is not None else None
    return await EventStore.open(database, password=password, create=create)


async def open_configured_log(config: Config) -> EventStore:
    """Open the log named by the configuration's `database`."""
    return await open_event_log(config.database, config.database_password_file)
