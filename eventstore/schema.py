"""The database layout, its version, and the migrations from older layouts.

The version lives in `PRAGMA user_version`; `PRAGMA application_id` marks the file as ours so
that another program's SQLite file is refused instead of being written into.

Version 1, the first layout: `events` (seq, stream, version, type, schema_version, data,
recorded_at) and `snapshots` (name, seq, schema_version, data); no hash chain, and stream
versions found with max(version).
Version 2: adds the chain hash to every event and snapshot, a `streams` table kept
by a trigger (O(1) version lookups and listings without scanning events), and triggers that
refuse UPDATE and DELETE on events.
Version 3 (current): fencing. A `leadership` table holds the current leadership term (one
row); every event records the term it was appended under (0: an unfenced append), and a
trigger refuses, inside the inserting statement, an event whose term is not the current
one. Rows of term 0 hash as in version 2, so the migration rewrites no row.
"""

from __future__ import annotations

APPLICATION_ID = 0x56525342  # "VRSB"
CURRENT_VERSION = 3

# The stream the store itself writes: one LeadershipAcquired event per term (version = term).
# Stream names starting with "$" are the store's; callers cannot append to them.
LEADERSHIP_STREAM = "$leadership"
LEADERSHIP_EVENT = "LeadershipAcquired"
FENCED_MESSAGE = "fenced: the term of this append is not the current leadership term"

SCHEMA_V1 = """
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    recorded_at    REAL    NOT NULL,
    UNIQUE (stream, version)
);
CREATE TABLE snapshots (
    name           TEXT    PRIMARY KEY,
    seq            INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    data           BLOB    NOT NULL
);
"""

# Statements that turn a version-1 layout into version 2, except the hash backfill, which is
# computed in Python between them (see EventStore._migrate).
V1_TO_V2_BEFORE_BACKFILL = (
    "ALTER TABLE events ADD COLUMN hash BLOB NOT NULL DEFAULT x''",
    "ALTER TABLE snapshots ADD COLUMN saved_at REAL NOT NULL DEFAULT 0",
    "ALTER TABLE snapshots ADD COLUMN hash BLOB NOT NULL DEFAULT x''",
    """CREATE TABLE streams (
        stream  TEXT    PRIMARY KEY,
        version INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "INSERT INTO streams (stream, version) SELECT stream, max(version) FROM events GROUP BY stream",
)

V2_TRIGGERS = (
    """CREATE TRIGGER events_track_stream AFTER INSERT ON events BEGIN
        INSERT INTO streams (stream, version) VALUES (new.stream, new.version)
        ON CONFLICT (stream) DO UPDATE SET version = excluded.version;
    END""",
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN
        SELECT RAISE(ABORT, 'events are append-only');
    END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN
        SELECT RAISE(ABORT, 'events are append-only');
    END""",
)

SCHEMA_V2 = (
    """CREATE TABLE events (
        seq            INTEGER PRIMARY KEY,
        stream         TEXT    NOT NULL,
        version        INTEGER NOT NULL,
        type           TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        data           BLOB    NOT NULL,
        recorded_at    REAL    NOT NULL,
        hash           BLOB    NOT NULL,
        UNIQUE (stream, version)
    )""",
    """CREATE TABLE streams (
        stream  TEXT    PRIMARY KEY,
        version INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE snapshots (
        name           TEXT    PRIMARY KEY,
        seq            INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        data           BLOB    NOT NULL,
        saved_at       REAL    NOT NULL,
        hash           BLOB    NOT NULL
    )""",
    *V2_TRIGGERS,
)

LEADERSHIP_TABLE = """CREATE TABLE leadership (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    term        INTEGER NOT NULL,
    holder      TEXT    NOT NULL,
    acquired_at REAL    NOT NULL
)"""

FENCE_TRIGGER = f"""CREATE TRIGGER events_fenced BEFORE INSERT ON events
    WHEN new.term <> 0 AND new.term <> (SELECT term FROM leadership WHERE id = 1) BEGIN
        SELECT RAISE(ABORT, '{FENCED_MESSAGE}');
    END"""

V2_TO_V3 = (
    "ALTER TABLE events ADD COLUMN term INTEGER NOT NULL DEFAULT 0",
    LEADERSHIP_TABLE,
    "INSERT INTO leadership (id, term, holder, acquired_at) VALUES (1, 0, '', 0)",
    FENCE_TRIGGER,
)

SCHEMA_V3 = (
    """CREATE TABLE events (
        seq            INTEGER PRIMARY KEY,
        stream         TEXT    NOT NULL,
        version        INTEGER NOT NULL,
        type           TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        data           BLOB    NOT NULL,
        recorded_at    REAL    NOT NULL,
        hash           BLOB    NOT NULL,
        term           INTEGER NOT NULL DEFAULT 0,
        UNIQUE (stream, version)
    )""",
    *SCHEMA_V2[1:],
    *V2_TO_V3[1:],
)
