"""The event store's error tree; every message names the database file.

    EventStoreError            cannot open, read or write the log (path, operation, cause)
    ├── ConcurrencyError       append with a stale expected_version (stream, expected, actual)
    ├── CorruptLogError        SQLite reports a damaged file, or the hash chain does not match
    ├── FencedError            append under a term not the current one (stream, term, current)
    ├── SnapshotRangeError     snapshot seq outside the log as it is now (also a ValueError)
    ├── StoreUnavailable       the database server could not be reached or dropped the
    │                          connection (PostgreSQL); a write it interrupted may or may not
    │                          have been committed: read the log again before acting on it
    └── SchemaTooNewError      the file was written by a newer build (both schema versions)

sqlite3 exceptions never leave the package; they are translated here.
"""

from __future__ import annotations

import sqlite3


class EventStoreError(Exception):
    """Base of all event store errors."""


class ConcurrencyError(EventStoreError):
    """An append expected a stream version that is no longer current."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream!r}: expected version {expected}, but it is at version {actual}"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class CorruptLogError(EventStoreError):
    """The database file is damaged or its hash chain does not match its content."""


class FencedError(EventStoreError):
    """An append carried a leadership term older than the store's: another daemon leads.

    Nothing of the append was written. The caller is no longer the leader and must stop acting.
    """

    def __init__(self, where: str, stream: str, term: int, current: int) -> None:
        if term < current:
            why = f"term {current} has been taken since (another daemon leads)"
        else:
            why = f"that term was never taken (the current term is {current})"
        super().__init__(
            f"{where}: append to {stream!r} refused: it carries leadership term {term}, but {why}"
        )
        self.stream = stream
        self.term = term
        self.current = current


class SnapshotRangeError(EventStoreError, ValueError):
    """A snapshot's seq is not in the log as it is now (read from the database, not a cache)."""


class StoreUnavailable(EventStoreError):
    """The database could not be reached, or the connection was lost during the operation.

    The store connects again at its next operation. What the interrupted operation wrote is
    unknown until the log is read again: a caller acting on what it folded before must fold
    again first.
    """


class SchemaTooNewError(EventStoreError):
    """The database was written by a newer version of the store."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: event log schema version {found} is newer than this build supports "
            f"({supported}); upgrade vpsie-rebalancer before opening it"
        )
        self.found = found
        self.supported = supported


_CORRUPT_MARKERS = ("malformed", "not a database", "file is encrypted", "corrupt")


def translate(exc: sqlite3.Error, path: str, doing: str) -> EventStoreError:
    """Turn a sqlite3 exception into ours, naming the file and what we were doing."""
    message = str(exc) or type(exc).__name__
    if any(marker in message.lower() for marker in _CORRUPT_MARKERS):
        return CorruptLogError(f"{path}: {doing}: the database file is damaged ({message})")
    return EventStoreError(f"{path}: {doing}: {message}")
