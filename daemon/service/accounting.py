"""Where VPSie's listing, the Kubernetes Nodes and our log disagree, said plainly.

Pure: `account(snapshot)` compares the snapshot's workers, Nodes and `logged_sizes` (the
workers our log says we added and did not delete) and returns what does not add up:

- Node objects that are not Ready and match no listed worker (by hostname, compared
  lower-cased, then address): a deleted worker's Node that nobody deleted (VPSie's cloud
  controller manager deletes none); the executor deletes the ones of its own replacements;
- workers our log says we added that VPSie no longer lists;
- workers VPSie lists that no Node matches and our log does not know (someone else's, or one
  still booting);
- workers listed without an identifier (govpsie's node shape): read-only, never replaced.

The service logs each finding once, shows them in `status` and puts a Kubernetes Event on a
leftover Node. It never acts on a worker it cannot account for: the planner only replaces
nodes whose worker it can map and whose size it can tell.
"""

from __future__ import annotations

from dataclasses import dataclass

from statemachine.world import HOSTNAME_LABEL, ClusterSnapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class Accounting:
    nodes_without_worker: tuple[str, ...] = ()
    ours_not_listed: tuple[str, ...] = ()
    listed_unknown: tuple[str, ...] = ()
    read_only: int = 0  # workers listed without an identifier (govpsie's shape)

    def lines(self) -> list[str]:
        out = []
        if self.nodes_without_worker:
            out.append(
                "Node objects without a VPSie worker (NotReady, left behind): "
                + ", ".join(self.nodes_without_worker)
            )
        if self.ours_not_listed:
            out.append(
                "workers our log says we added that VPSie no longer lists: "
                + ", ".join(self.ours_not_listed)
            )
        if self.listed_unknown:
            out.append(
                "workers VPSie lists that no Node and no record of ours accounts for: "
                + ", ".join(self.listed_unknown)
            )
        if self.read_only:
            out.append(
                f"VPSie lists {self.read_only} workers without an identifier (govpsie's node "
                "shape): they cannot be deleted safely, so no node of theirs is replaced"
            )
        return out


def account(snapshot: ClusterSnapshot) -> Accounting:
    hosts = {w.hostname.lower(): w for w in snapshot.workers if w.hostname}
    ips = {ip: w for w in snapshot.workers for ip in (w.ip, w.private_ip) if ip}
    matched: set[str] = set()
    orphans: list[str] = []
    for node in snapshot.nodes:
        worker = hosts.get(node.name.lower()) or hosts.get(
            node.labels.get(HOSTNAME_LABEL, "").lower()
        )
        if worker is None:
            worker = next((ips[a] for a in node.addresses if a in ips), None)
        if worker is not None:
            matched.add(worker.key)
        elif not node.ready:
            orphans.append(node.name)
    listed = {w.identifier for w in snapshot.workers if w.identifier}
    gone = sorted(i for i in snapshot.logged_sizes if i not in listed)
    unknown = sorted(
        w.key
        for w in snapshot.workers
        if w.key not in matched and w.identifier not in snapshot.logged_sizes
    )
    return Accounting(
        nodes_without_worker=tuple(sorted(orphans)),
        ours_not_listed=tuple(gone),
        listed_unknown=tuple(unknown),
        read_only=sum(1 for w in snapshot.workers if not w.identifier),
    )
