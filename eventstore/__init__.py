"""What did happen: the append-only, hash-chained event log, on SQLite or PostgreSQL.

Generic by design: payloads are opaque bytes with a type name and schema version; the meaning
of events lives in `statemachine`. See docs/eventstore.md.
"""

from eventstore.base import EventStore, is_postgres
from eventstore.errors import (
    ConcurrencyError,
    CorruptLogError,
    EventStoreError,
    FencedError,
    SchemaTooNewError,
    SnapshotRangeError,
    StoreUnavailable,
)
from eventstore.records import NewEvent, RecordedEvent, Snapshot, VerifyReport

__all__ = [
    "ConcurrencyError",
    "CorruptLogError",
    "EventStore",
    "EventStoreError",
    "FencedError",
    "NewEvent",
    "RecordedEvent",
    "SchemaTooNewError",
    "Snapshot",
    "SnapshotRangeError",
    "StoreUnavailable",
    "VerifyReport",
    "is_postgres",
]
