"""The PostgreSQL layout: the same tables as SQLite's layout 3, plus the head row and two functions.

The layout version lives in `eventlog_layout` (one row: application id and version), as
`PRAGMA user_version` does in an SQLite file; a newer version is refused, a database whose
`events` table is not ours is never written into.

Writers serialize on the `log_head` row (`FOR UPDATE`), which holds the last seq and its chain
hash: seq is assigned under that lock, so it has no gaps (a rolled-back append gives its
numbers back) and transactions commit in seq order (PostgreSQL makes a transaction visible
before it releases its row locks), so a reader never sees seq N+1 without seq N. The chain
hash is computed in SQL, byte for byte as `eventstore.chain.row_hash` does, so any number of
processes can append without a cached head. `eventlog_append` takes the leadership row
`FOR SHARE` first: a taker of a newer term (`UPDATE leadership`) waits for the appends in
flight and every append after it sees the new term, in the same transaction as its insert.
"""

from __future__ import annotations

from eventstore.schema import LEADERSHIP_EVENT, LEADERSHIP_STREAM

PG_LAYOUT_VERSION = 3  # the same contents as SQLite's layout 3

# Appends whose term is not the current one, or whose expected version is stale, get a status
# instead of an exception, so they fail alone and the rest of the group commits.
STATUS_OK, STATUS_CONFLICT, STATUS_FENCED = 0, 1, 2

_ROW_HASH = """sha256(
        h_hash || int8send(h_seq) || int8send(v) || int8send(e_sv[j]::bigint)
        || float8send(p_at) || int4send(length(s)) || int4send(length(t))
        || int4send(length(e_data[j])) || s || t || e_data[j]
        || CASE WHEN a_term[i] <> 0 THEN int8send(a_term[i]) ELSE ''::bytea END)"""

APPEND_FUNCTION = f"""
CREATE FUNCTION eventlog_append(
    a_stream text[], a_expected bigint[], a_term bigint[], a_count int[],
    e_type text[], e_sv int[], e_data bytea[], p_at double precision
) RETURNS TABLE (status int, value bigint, last_seq bigint) LANGUAGE plpgsql AS $fn$
DECLARE
    cur_term bigint; h_seq bigint; h_hash bytea; v bigint; s bytea; t bytea;
    i int; k int; j int := 1; wrote boolean := false;
BEGIN
    SELECT l.term INTO cur_term FROM leadership l WHERE l.id = 1 FOR SHARE;
    SELECT h.seq, h.hash INTO h_seq, h_hash FROM log_head h WHERE h.id = 1 FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(a_stream, 1), 0) LOOP
        IF a_term[i] <> 0 AND a_term[i] <> cur_term THEN
            status := {STATUS_FENCED}; value := cur_term; last_seq := h_seq; RETURN NEXT;
            j := j + a_count[i]; CONTINUE;
        END IF;
        SELECT st.version INTO v FROM streams st WHERE st.stream = a_stream[i];
        v := coalesce(v, 0);
        IF v <> a_expected[i] THEN
            status := {STATUS_CONFLICT}; value := v; last_seq := h_seq; RETURN NEXT;
            j := j + a_count[i]; CONTINUE;
        END IF;
        s := convert_to(a_stream[i], 'UTF8');
        FOR k IN 1 .. a_count[i] LOOP
            h_seq := h_seq + 1; v := v + 1;
            t := convert_to(e_type[j], 'UTF8');
            h_hash := {_ROW_HASH};
            INSERT INTO events (seq, stream, version, type, schema_version, data,
                                recorded_at, hash, term)
            VALUES (h_seq, a_stream[i], v, e_type[j], e_sv[j], e_data[j], p_at, h_hash,
                    a_term[i]);
            j := j + 1;
        END LOOP;
        INSERT INTO streams (stream, version) VALUES (a_stream[i], v)
            ON CONFLICT (stream) DO UPDATE SET version = excluded.version;
        wrote := true;
        status := {STATUS_OK}; value := v; last_seq := h_seq; RETURN NEXT;
    END LOOP;
    IF wrote THEN
        UPDATE log_head SET seq = h_seq, hash = h_hash WHERE id = 1;
    END IF;
END
$fn$"""

ACQUIRE_FUNCTION = f"""
CREATE FUNCTION eventlog_acquire_term(p_holder text, p_at double precision)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    new_term bigint; r record;
BEGIN
    UPDATE leadership SET term = term + 1, holder = p_holder, acquired_at = p_at
        WHERE id = 1 RETURNING term INTO new_term;
    SELECT * INTO r FROM eventlog_append(
        ARRAY['{LEADERSHIP_STREAM}'], ARRAY[new_term - 1], ARRAY[new_term], ARRAY[1],
        ARRAY['{LEADERSHIP_EVENT}'], ARRAY[1],
        ARRAY[convert_to(jsonb_build_object('term', new_term, 'holder', p_holder)::text,
                         'UTF8')],
        p_at);
    IF r.status <> {STATUS_OK} THEN
        RAISE EXCEPTION 'the {LEADERSHIP_STREAM} stream is at version %, term is %',
            r.value, new_term;
    END IF;
    RETURN new_term;
END
$fn$"""

APPEND_ONLY_FUNCTION = """
CREATE FUNCTION eventlog_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END
$fn$"""

SCHEMA = (
    """CREATE TABLE eventlog_layout (
        id             int     PRIMARY KEY CHECK (id = 1),
        application_id bigint  NOT NULL,
        version        int     NOT NULL
    )""",
    """CREATE TABLE events (
        seq            bigint           PRIMARY KEY,
        stream         text             NOT NULL,
        version        bigint           NOT NULL,
        type           text             NOT NULL,
        schema_version int              NOT NULL,
        data           bytea            NOT NULL,
        recorded_at    double precision NOT NULL,
        hash           bytea            NOT NULL,
        term           bigint           NOT NULL DEFAULT 0,
        UNIQUE (stream, version)
    )""",
    """CREATE TABLE streams (
        stream  text   PRIMARY KEY,
        version bigint NOT NULL
    )""",
    """CREATE TABLE snapshots (
        name           text             PRIMARY KEY,
        seq            bigint           NOT NULL,
        schema_version int              NOT NULL,
        data           bytea            NOT NULL,
        saved_at       double precision NOT NULL,
        hash           bytea            NOT NULL
    )""",
    """CREATE TABLE leadership (
        id          int              PRIMARY KEY CHECK (id = 1),
        term        bigint           NOT NULL,
        holder      text             NOT NULL,
        acquired_at double precision NOT NULL
    )""",
    """CREATE TABLE log_head (
        id   int    PRIMARY KEY CHECK (id = 1),
        seq  bigint NOT NULL,
        hash bytea  NOT NULL
    )""",
    "INSERT INTO leadership (id, term, holder, acquired_at) VALUES (1, 0, '', 0)",
    "INSERT INTO log_head (id, seq, hash) VALUES (1, 0, '\\x" + "00" * 32 + "'::bytea)",
    APPEND_ONLY_FUNCTION,
    APPEND_FUNCTION,
    ACQUIRE_FUNCTION,
    """CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION eventlog_append_only()""",
    """CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION eventlog_append_only()""",
)
