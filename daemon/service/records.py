"""Streams of plain JSON records in the event log, beside the plans' events.

Quarantines (recovery.py), adds no plan accounts for (unaccounted.py) and Node objects our
plans left behind (leftovers.py) are each a stream of small JSON records, not events of the
plan catalogue: a type name, schema version 1, and a JSON object. Appends carry the leader's
term like every other, so a fenced daemon cannot write them either.
"""

from __future__ import annotations

import json
from typing import Any

from eventstore import EventStore, NewEvent


def new_record(type_name: str, data: dict[str, Any]) -> NewEvent:
    return NewEvent(type=type_name, schema_version=1, data=json.dumps(data).encode())


async def read_records(store: EventStore, stream: str) -> tuple[list[tuple[str, Any]], int]:
    """The stream's records, (type, decoded data) in order, and the stream's version."""
    records = await store.read_stream(stream)
    version = records[-1].version if records else 0
    return [(r.type, json.loads(r.data)) for r in records], version


async def append_record(
    store: EventStore,
    stream: str,
    version: int,
    type_name: str,
    data: dict[str, Any],
    *,
    term: int | None,
) -> int:
    """Append one record after `version`; the stream's new version."""
    await store.append(stream, version, [new_record(type_name, data)], term=term)
    return version + 1
