"""Opening the event log the configuration names: an SQLite file or a PostgreSQL database.

The PostgreSQL password is read here from its credentials file (`[database] password_file`)
and handed to the store; it is never part of the DSN, argv, the logs or an error message.
"""

from __future__ import annotations

from pathlib import Path

from daemon.config import Config
from eventstore import EventStore, EventStoreError, is_postgres
from eventstore.store import SqliteEventStore


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
    database: Path | str,
    password_file: Path | None = None,
    *,
    create: bool = True,
    check_integrity: bool = False,
) -> EventStore:
    """Open the log at `database` (a path or a postgresql:// DSN); with `check_integrity`,
    refuse (CorruptLogError) a file SQLite finds damaged anywhere, before anything reads or
    appends to it."""
    password = read_password_file(password_file) if password_file is not None else None
    store = await EventStore.open(database, password=password, create=create)
    if check_integrity:
        try:
            await store.check_integrity()
        except BaseException:
            await store.close()
            raise
    return store


async def open_log_to_read(database: Path | str, password_file: Path | None = None) -> EventStore:
    """Open an existing log only to read it (audit, verify-log): an SQLite file is never
    written, migrated or switched to WAL (see `SqliteEventStore.open_read_only`)."""
    if is_postgres(str(database)):
        return await open_event_log(database, password_file, create=False)
    return await SqliteEventStore.open_read_only(str(database))


async def open_configured_log(config: Config) -> EventStore:
    """Open the log named by the configuration's `database`, to act on it: its integrity is
    checked first (a damaged page anywhere is refused before the daemon acts or appends)."""
    return await open_event_log(
        config.database, config.database_password_file, check_integrity=True
    )
