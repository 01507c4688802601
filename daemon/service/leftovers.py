"""Node objects our plans leave behind: recorded, deleted once the world agrees, reported.

VPSie deletes no Kubernetes Node (its cloud controller manager implements no Instances), so
every replacement deletes the Node of each worker it deleted itself (removal.py). When it
cannot right then (the Node is still Ready `call_retry_s` after its worker was deleted, or the
delete failed) the plan goes on and finishes; before its outcome is recorded the executor hands
the Node to `Leftovers.note` (its context's `on_leftover`), which appends `LeftoverNodeNoted`
to the `leftover-nodes` stream of the event log. That record is what makes such a Node ours to
delete after the plan has ended, after a restart, or on another host.

Every round of the service's loop (`clean`, with the look for unaccounted workers), each open
entry is compared with the world:

- the Node is gone: resolved (someone deleted it);
- a Node of that name with another uid: resolved, never touched (a new Node took the name);
- VPSie lists a worker for it (hostname compared lower-cased, then address), or it is still
  Ready: left alone and reported, looked at again next round;
- NotReady and no worker listed: `LeftoverNodeDeleteRequested` (the intent) is appended, the
  Node deleted with its uid as a precondition, and `LeftoverNodeResolved` records the outcome.
  An intent without outcome (a crash between) is simply tried again: a delete by uid is
  idempotent. A failed delete is logged and tried again next round.

A NotReady Node without a worker that no record of ours names (someone else's) is only
reported (accounting.py), never deleted here. Each open entry shows in `status`
(`leftover_nodes`); a deleted one puts a Kubernetes Event on the Node.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from adapters.errors import AdapterError, Conflict
from daemon.executor.execution import LeftoverNode
from daemon.ports import Cloud, Cluster
from daemon.service.records import append_record, read_records
from eventstore import EventStore
from statemachine.world import HOSTNAME_LABEL, NodeInfo, VpsieWorker

log = logging.getLogger(__name__)

STREAM = "leftover-nodes"
NOTED = "LeftoverNodeNoted"
REQUESTED = "LeftoverNodeDeleteRequested"
RESOLVED = "LeftoverNodeResolved"


@dataclass(slots=True)
class Ledger:
    """The stream, read: open entries by Node name, and the stream's version."""

    open: dict[str, LeftoverNode] = field(default_factory=dict)
    version: int = 0

    @classmethod
    async def read(cls, store: EventStore) -> Ledger:
        records, version = await read_records(store, STREAM)
        ledger = cls(version=version)
        for type_name, data in records:
            if type_name == NOTED:
                ledger.open.setdefault(data["node"], LeftoverNode(**data))
            elif type_name == RESOLVED:
                ledger.open.pop(data["node"], None)
        return ledger


def _worker_for(node: NodeInfo, workers: list[VpsieWorker]) -> VpsieWorker | None:
    names = {node.name.lower(), node.labels.get(HOSTNAME_LABEL, "").lower()} - {""}
    for worker in workers:
        if worker.hostname and worker.hostname.lower() in names:
            return worker
    addresses = set(node.addresses)
    for worker in workers:
        if {worker.ip, worker.private_ip} & addresses - {""}:
            return worker
    return None


class Leftovers:
    """Notes, deletes and reports the Node objects our plans left behind."""

    def __init__(self, store: EventStore, term: int | None) -> None:
        self._store = store
        self._term = term
        self.last: list[dict[str, Any]] = []  # what `status` shows (after the last round)
        self._failed: dict[str, str] = {}  # the last delete error logged, per Node

    async def _append(self, version: int, type_name: str, data: dict[str, Any]) -> int:
        return await append_record(self._store, STREAM, version, type_name, data, term=self._term)

    async def note(self, left: LeftoverNode) -> None:
        """Record a Node a plan leaves behind (before the plan records its outcome)."""
        ledger = await Ledger.read(self._store)
        if left.node in ledger.open:
            return
        await self._append(ledger.version, NOTED, asdict(left))
        log.warning(
            "plan %s leaves the Node object %s behind (%s); it is deleted once it is NotReady "
            "and VPSie lists no worker for it",
            left.plan_id,
            left.node,
            left.reason,
            extra={"plan_id": left.plan_id},
        )

    async def clean(
        self, cloud: Cloud, cluster: Cluster, cluster_identifier: str, at: str
    ) -> list[str]:
        """One round over the open entries (see the module's docstring). `cluster` must be the
        fenced port: its delete waits for, or refuses without, the lead. The names deleted."""
        ledger = await Ledger.read(self._store)
        if not ledger.open:
            self.last = []
            return []
        nodes = {n.name: n for n in await cluster.list_nodes()}
        workers = await cloud.list_workers(cluster_identifier)
        version = ledger.version
        deleted: list[str] = []
        waiting: dict[str, str] = {}
        for name, left in sorted(ledger.open.items()):
            node = nodes.get(name)
            how = ""
            if node is None:
                how = "gone (deleted by someone else)"
            elif left.uid and node.uid != left.uid:
                how = "another Node of that name now; not touched"
            if how:
                resolved = {"node": name, "how": how, "at": at}
                version = await self._append(version, RESOLVED, resolved)
                continue
            assert node is not None
            worker = _worker_for(node, workers)
            if worker is not None:
                waiting[name] = f"VPSie lists worker {worker.key} for it: left alone"
                continue
            if node.ready:
                waiting[name] = "still Ready: its VM has not stopped yet"
                continue
            version = await self._append(
                version, REQUESTED, {"node": name, "uid": node.uid, "at": at}
            )
            try:
                gone = await cluster.delete_node(name, uid=node.uid)
            except Conflict:
                how = "another Node of that name now; not touched"
            except AdapterError as exc:
                waiting[name] = f"its delete failed: {exc}; tried again next round"
                if self._failed.get(name) != str(exc):  # once per node and reason
                    log.warning("could not delete the leftover Node %s now: %s", name, exc)
                self._failed[name] = str(exc)
                continue
            else:
                how = "deleted" if gone else "already gone"
                deleted.append(name)
                log.info(
                    "deleted the Node object %s that plan %s left behind (its worker %s is gone)",
                    name,
                    left.plan_id,
                    left.worker,
                    extra={"plan_id": left.plan_id},
                )
            self._failed.pop(name, None)
            version = await self._append(version, RESOLVED, {"node": name, "how": how, "at": at})
        self.last = [
            {
                "node": name,
                "plan_id": left.plan_id,
                "worker": left.worker,
                "since": left.at,
                "reason": left.reason,
                "state": waiting[name],
            }
            for name, left in sorted(ledger.open.items())
            if name in waiting
        ]
        return deleted
