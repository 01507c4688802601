"""The object store of the simulated API server: objects, resourceVersions, watch history.

Every object is kept as a dict plus its serialised JSON (orjson), refreshed on every change, so
a list of 150,000 pods is a join of cached bytes. `metadata.resourceVersion` comes from one
global counter, as in etcd. Each collection keeps a bounded history of change events so a watch
can resume from a resourceVersion; one older than the history gets 410 Gone.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from simulator.clock import SimClock

HISTORY = 20_000

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped


class ApiError(Exception):
    """An error the API answers with a `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": self.message,
                                "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def not_found(kind: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind} "{name}" not found',
                    {"name": name, "kind": kind})


def conflict(kind: str, name: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {kind} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    {"name": name, "kind": kind})


@dataclass(slots=True)
class Entry:
    obj: dict[str, Any]
    raw: bytes


@dataclass(slots=True)
class Change:
    rv: int
    type: str
    obj: dict[str, Any]
    line: bytes


@dataclass(slots=True, eq=False)
class Watcher:
    collection: str
    accept: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)


class Collection:
    def __init__(self) -> None:
        self.items: dict[Key, Entry] = {}
        self._order: list[Key] | None = None
        self.history: deque[Change] = deque(maxlen=HISTORY)
        self.floor = 0  # a watch from a resourceVersion below this is too old
        self.watchers: set[Watcher] = set()

    def order(self) -> list[Key]:
        if self._order is None:
            self._order = sorted(self.items)
        return self._order

    def keys_after(self, start: Key | None) -> list[Key]:
        order = self.order()
        return order if start is None else order[bisect.bisect_right(order, start):]

    def invalidate_order(self) -> None:
        self._order = None


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self, clock: SimClock, rng: random.Random) -> None:
        self.clock = clock
        self.rng = rng
        self.rv = 1000
        self._collections: dict[str, Collection] = {}
        self._now_second, self._now_text = -1, ""

    def collection(self, key: str) -> Collection:
        c = self._collections.get(key)
        if c is None:
            c = self._collections[key] = Collection()
            c.floor = self.rv
        return c

    def uid(self) -> str:
        """A version-4 UUID drawn from the seeded rng (formatted by hand: it is hot)."""
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def now(self) -> str:
        second = int(self.clock.now())
        if second != self._now_second:
            self._now_second, self._now_text = second, rfc3339(second)
        return self._now_text

    def get(self, coll: str, ns: str, name: str) -> dict[str, Any] | None:
        e = self.collection(coll).items.get((ns, name))
        return e.obj if e else None

    def entry(self, coll: str, ns: str, name: str) -> Entry | None:
        return self.collection(coll).items.get((ns, name))

    def entries(self, coll: str, ns: str | None = None) -> Iterator[Entry]:
        items = self.collection(coll).items
        if ns is None:
            yield from items.values()
        else:
            for (ens, _), e in items.items():
                if ens == ns:
                    yield e

    def create(self, coll: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", ""), meta["name"])
        c = self.collection(coll)
        if key in c.items:
            raise ApiError(409, "AlreadyExists", f'{kind} "{key[1]}" already exists',
                           {"name": key[1], "kind": kind})
        meta.setdefault("uid", self.uid())
        meta.setdefault("creationTimestamp", self.now())
        meta["generation"] = 1
        c.invalidate_order()
        self._commit(c, key, obj, "ADDED")
        return obj

    def replace(
        self, coll: str, kind: str, obj: dict[str, Any], *, check_rv: bool
    ) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        c = self.collection(coll)
        old = c.items.get(key)
        if old is None:
            raise not_found(kind, key[1])
        want = meta.get("resourceVersion")
        if check_rv and want and want != old.obj["metadata"]["resourceVersion"]:
            raise conflict(kind, key[1])
        for immutable in ("uid", "creationTimestamp"):
            meta[immutable] = old.obj["metadata"].get(immutable)
        gen = old.obj["metadata"].get("generation", 1)
        if old.obj.get("spec") != obj.get("spec"):
            gen += 1
        meta["generation"] = gen
        if "deletionTimestamp" in old.obj["metadata"]:
            meta["deletionTimestamp"] = old.obj["metadata"]["deletionTimestamp"]
        self._commit(c, key, obj, "MODIFIED")
        return obj

    def touch(self, coll: str, obj: dict[str, Any]) -> None:
        """Record an in-place change made by the world itself (a controller, the kubelet)."""
        meta = obj["metadata"]
        self._commit(self.collection(coll), (meta.get("namespace", ""), meta["name"]), obj,
                     "MODIFIED")

    def delete(self, coll: str, kind: str, ns: str, name: str) -> dict[str, Any]:
        c = self.collection(coll)
        e = c.items.pop((ns, name), None)
        if e is None:
            raise not_found(kind, name)
        c.invalidate_order()
        self.rv += 1
        e.obj["metadata"]["resourceVersion"] = str(self.rv)
        raw = orjson.dumps(e.obj)
        self._publish(c, Change(self.rv, "DELETED", e.obj,
                                b'{"type":"DELETED","object":' + raw + b"}\n"))
        return e.obj

    def _commit(self, c: Collection, key: Key, obj: dict[str, Any], type_: str) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        raw = orjson.dumps(obj)
        c.items[key] = Entry(obj, raw)
        line = b'{"type":"' + type_.encode() + b'","object":' + raw + b"}\n"
        self._publish(c, Change(self.rv, type_, obj, line))

    def _publish(self, c: Collection, change: Change) -> None:
        if len(c.history) == c.history.maxlen:
            c.floor = c.history[0].rv
        c.history.append(change)
        for w in c.watchers:
            if w.accept(change.obj):
                w.queue.put_nowait(change.line)

    def watch(self, coll: str, accept: Callable[[dict[str, Any]], bool],
              since: int | None) -> Watcher:
        """Register a watcher; replay history after `since`; ApiError 410 if too old."""
        c = self.collection(coll)
        w = Watcher(coll, accept)
        if since is not None:
            if since < c.floor:
                raise ApiError(410, "Expired",
                               f"too old resource version: {since} ({c.floor})")
            for ch in c.history:
                if ch.rv > since and accept(ch.obj):
                    w.queue.put_nowait(ch.line)
        c.watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self.collection(w.collection).watchers.discard(w)

    def close_watchers(self) -> None:
        for c in self._collections.values():
            for w in c.watchers:
                w.queue.put_nowait(None)
