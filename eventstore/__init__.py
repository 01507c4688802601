"""What did happen: the append-only, hash-chained event log on SQLite.

Generic by design: payloads are opaque bytes with a type name and schema version; the meaning
of events lives in `statemachine`. See docs/eventstore.md.
"""

from eventstore.errors import (
    ConcurrencyError,
    CorruptLogError,
    EventStoreError,
    FencedError,
    SchemaTooNewError,
    SnapshotRangeError,
)
from eventstore.records import NewEvent, RecordedEvent, Snapshot, VerifyReport
from eventstore.store import EventStore

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
    "VerifyReport",
]
