"""The hash chain that makes the log tamper-evident.

Each row stores sha256(previous row's hash || its own content), the first row chaining from
32 zero bytes. Changing any byte of any row (or deleting a row in the middle) breaks the chain
at that row, which `EventStore.verify` reports by seq, stream and type. Snapshots are bound to
the chain too: their hash covers their content and the chain hash of the event they end at.
"""

from __future__ import annotations

import hashlib
import struct

GENESIS = bytes(32)

# seq, version, schema_version, recorded_at, then the lengths of stream, type and data.
_ROW_HEADER = struct.Struct(">qqqdIII")
_SNAPSHOT_HEADER = struct.Struct(">qqII")
_TERM = struct.Struct(">q")


def row_hash(
    prev: bytes,
    seq: int,
    stream: str,
    version: int,
    type_: str,
    schema_version: int,
    data: bytes,
    recorded_at: float,
    term: int = 0,
) -> bytes:
    """The chain hash of one event row, given the hash of the row before it.

    The leadership term is hashed after the data when it is not 0, so rows of unfenced
    appends (and every row written before terms existed) hash as they always did, and
    changing a row's term either way changes its hash.
    """
    s = stream.encode()
    t = type_.encode()
    header = _ROW_HEADER.pack(seq, version, schema_version, recorded_at, len(s), len(t), len(data))
    parts = (prev, header, s, t, data, _TERM.pack(term)) if term else (prev, header, s, t, data)
    return hashlib.sha256(b"".join(parts)).digest()


def snapshot_hash(
    name: str, seq: int, schema_version: int, data: bytes, chain_at_seq: bytes
) -> bytes:
    """The hash of a snapshot, bound to the chain hash of event `seq` (GENESIS for seq 0)."""
    n = name.encode()
    header = _SNAPSHOT_HEADER.pack(seq, schema_version, len(n), len(data))
    return hashlib.sha256(b"".join((chain_at_seq, header, n, data))).digest()
