"""The facts the store hands out and takes in.

The store is generic: an event is an opaque payload (bytes, orjson-encoded by the caller) with
a type name and a schema version. Meaning lives in `statemachine`, never here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event a caller appends; the store assigns its position and time."""

    type: str
    schema_version: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedEvent:
    """An event as stored: global `seq` (1-based, gap-free) and `version` within its stream."""

    seq: int
    stream: str
    version: int
    type: str
    schema_version: int
    data: bytes
    recorded_at: float
    term: int = 0  # the leadership term it was appended under; 0 for an unfenced append


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A fold of the log up to and including `seq`, saved under `name` by the recovery layer."""

    name: str
    seq: int
    schema_version: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """Outcome of walking the hash chain; `problem` names the first bad row and what is wrong."""

    ok: bool
    checked: int
    first_bad_seq: int | None
    problem: str
