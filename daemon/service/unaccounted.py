"""Workers an add may have made that no plan accounts for: recorded, looked for, reported.

VPSie accepted an add (or a restart could not tell whether the add reached it), but its
listing did not show the new worker within `worker_visible_s`: the executor records the add
as failed and the plan goes on (or rolls back). A listing that lags may show the worker later,
joined and billed, with nothing in the log claiming it. So before that outcome is recorded the
executor hands the intent to `Unaccounted.note` (the `on_unaccounted` of its context), which
appends `AddUnaccounted` to the `unaccounted-workers` stream of the event log.

Every round of the service's loop (`look`, at most every `LOOK_EVERY_S`), each open entry is
looked for in VPSie's listing, by the executor's own rule for an add: a worker not listed
before the intent (`known_workers`), of the target size's shape, with an identifier, claimed
by no plan (the log's record of the workers our plans added) and by no other entry. One such
worker: `UnaccountedWorkerFound` names it. Several: none is taken (another actor added to the
group too); they are reported as candidates, and looked at again next round. Nothing is ever
deleted here: the worker may run pods by now. An entry no listing matched for `GIVE_UP_S`
(6 h) is resolved as not made. A found worker is reported in `status`
(`unaccounted_workers`) and logged as an error at every round until it is resolved:
`UnaccountedResolved` when a plan claims it, or when it has left the listing (a person deleted
it). An entry whose worker never shows stays open and is looked for at every round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from daemon.ports import Cloud
from daemon.service.records import append_record, read_records
from eventstore import EventStore
from statemachine import events as ev
from statemachine.world import VpsieWorker

log = logging.getLogger(__name__)

STREAM = "unaccounted-workers"
NOTED = "AddUnaccounted"
FOUND = "UnaccountedWorkerFound"
RESOLVED = "UnaccountedResolved"
LOOK_EVERY_S = 60.0
# An entry whose worker no listing showed for this long is taken as not made (VPSie's lag is
# minutes, not hours): resolved, with that said.
GIVE_UP_S = 6 * 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One add whose worker no plan accounts for (its intent's idempotency key)."""

    key: str
    plan_id: str
    replacement_id: str
    cluster: str
    group_id: int
    cpu: int
    ram_mb: int
    known_workers: tuple[str, ...]
    at: str
    reason: str


@dataclass(slots=True)
class Open:
    entry: Entry
    worker: str = ""  # once found
    hostname: str = ""
    candidates: tuple[str, ...] = ()  # when several could be it (not recorded)


@dataclass(slots=True)
class Ledger:
    """The stream, read: open entries by key, and the stream's version."""

    open: dict[str, Open] = field(default_factory=dict)
    version: int = 0

    @classmethod
    async def read(cls, store: EventStore) -> Ledger:
        records, version = await read_records(store, STREAM)
        ledger = cls(version=version)
        for type_name, data in records:
            if type_name == NOTED:
                data["known_workers"] = tuple(data["known_workers"])
                ledger.open.setdefault(data["key"], Open(entry=Entry(**data)))
            elif type_name == FOUND and data["key"] in ledger.open:
                found = ledger.open[data["key"]]
                found.worker, found.hostname = data["worker"], data["hostname"]
            elif type_name == RESOLVED:
                ledger.open.pop(data["key"], None)
        return ledger


class Unaccounted:
    """Notes, looks for and reports the workers of adds no plan accounts for."""

    def __init__(self, store: EventStore, term: int | None) -> None:
        self._store = store
        self._term = term
        self.last: list[dict[str, Any]] = []  # what `status` shows (after the last look)

    async def _append(self, version: int, type_name: str, data: dict[str, Any]) -> None:
        await append_record(self._store, STREAM, version, type_name, data, term=self._term)

    async def note(
        self, intent: ev.WorkerAddRequested, shape: tuple[int, int], reason: str
    ) -> None:
        """Record an add whose worker did not show (before its outcome is recorded)."""
        ledger = await Ledger.read(self._store)
        if intent.idempotency_key in ledger.open:
            return
        entry = Entry(
            key=intent.idempotency_key,
            plan_id=intent.plan_id,
            replacement_id=intent.replacement_id,
            cluster=intent.cluster,
            group_id=intent.group_id,
            cpu=shape[0],
            ram_mb=shape[1],
            known_workers=intent.known_workers,
            at=intent.at,
            reason=reason,
        )
        data = asdict(entry) | {"known_workers": list(entry.known_workers)}
        await self._append(ledger.version, NOTED, data)
        log.warning(
            "plan %s: the worker of add %s was not listed in time (%s); it is looked for at "
            "every round until found or known not made",
            intent.plan_id,
            intent.idempotency_key,
            reason,
            extra={"plan_id": intent.plan_id},
        )

    async def look(self, cloud: Cloud, claimed: Iterable[str], at: str) -> None:
        """Look for every open entry's worker in the listing; record what is found or gone."""
        ledger = await Ledger.read(self._store)
        if not ledger.open:
            self.last = []
            return
        by_cluster: dict[str, list[VpsieWorker]] = {}
        for item in ledger.open.values():
            cluster = item.entry.cluster
            if cluster not in by_cluster:
                by_cluster[cluster] = await cloud.list_workers(cluster)
        ours = set(claimed)
        taken = {o.worker for o in ledger.open.values() if o.worker}
        version = ledger.version
        resolved: set[str] = set()
        for key, item in sorted(ledger.open.items()):
            listed = {w.identifier: w for w in by_cluster[item.entry.cluster] if w.identifier}
            if item.worker:
                how = ""
                if item.worker in ours:
                    how = "claimed by a plan"
                elif item.worker not in listed:
                    how = "no longer listed (deleted)"
                if how:
                    await self._append(version, RESOLVED, {"key": key, "how": how, "at": at})
                    version += 1
                    resolved.add(key)
                continue
            e = item.entry
            if not item.worker and _age_s(e.at, at) > GIVE_UP_S:
                how = f"never listed in {GIVE_UP_S / 3600:g} h: taken as not made"
                await self._append(version, RESOLVED, {"key": key, "how": how, "at": at})
                version += 1
                resolved.add(key)
                continue
            candidates = [
                w
                for w in listed.values()
                if w.identifier not in e.known_workers
                and w.identifier not in ours
                and w.identifier not in taken
                and w.role in ("worker", "")
                and not (e.cpu and w.cpu and (w.cpu, w.ram_mb) != (e.cpu, e.ram_mb))
            ]
            if len(candidates) == 1:
                worker = candidates[0]
                data = {
                    "key": key,
                    "worker": worker.identifier,
                    "hostname": worker.hostname,
                    "at": at,
                }
                await self._append(version, FOUND, data)
                version += 1
                item.worker, item.hostname = worker.identifier, worker.hostname
                taken.add(worker.identifier)
            else:
                item.candidates = tuple(sorted(w.identifier for w in candidates))
        self.last = []
        for key, item in sorted(ledger.open.items()):
            if key in resolved:
                continue
            self.last.append(_report(key, item))
            if item.worker:
                log.error(
                    "VPSie worker %s (%s) was added by plan %s (add %s) and no plan uses it: it "
                    "is billed; drain and delete it, or let a plan claim it",
                    item.worker,
                    item.hostname,
                    item.entry.plan_id,
                    key,
                    extra={"plan_id": item.entry.plan_id},
                )


def _age_s(since: str, now: str) -> float:
    try:
        return (datetime.fromisoformat(now) - datetime.fromisoformat(since)).total_seconds()
    except ValueError:
        return 0.0


def _report(key: str, item: Open) -> dict[str, Any]:
    e = item.entry
    if item.worker:
        state = "found"
    elif item.candidates:
        state = "ambiguous"
    else:
        state = "looking"
    return {
        "key": key,
        "plan_id": e.plan_id,
        "replacement_id": e.replacement_id,
        "group_id": e.group_id,
        "since": e.at,
        "state": state,
        "worker": item.worker,
        "hostname": item.hostname,
        "candidates": list(item.candidates),
        "reason": e.reason,
    }
