"""What does not add up between VPSie's listing, the Nodes and our log is found and said."""

from __future__ import annotations

from daemon.service.accounting import account
from statemachine.world import ClusterSnapshot, NodeInfo, VpsieWorker


def test_leftover_nodes_vanished_workers_and_unknown_workers_are_found() -> None:
    """Adversaries: VPSie deleting no Node objects; an operator deleting our worker in the VPSie
    console; another actor adding a worker nobody here knows."""
    snapshot = ClusterSnapshot(
        taken_at="2026-12-02T12:00:00Z",
        nodes=(
            NodeInfo(name="w-live", ready=True),
            NodeInfo(name="w-dead", ready=False),  # its worker was deleted
            NodeInfo(name="ours-1", ready=True, addresses=("10.0.0.7",)),
            NodeInfo(name="master-1", ready=True),  # no worker row, but Ready: not a leftover
        ),
        workers=(
            VpsieWorker(identifier="a", hostname="W-Live"),
            VpsieWorker(identifier="b", hostname="Something-Else", ip="10.0.0.7"),
            VpsieWorker(identifier="c", hostname="Booting-Or-Foreign"),
        ),
        logged_sizes={"b": 201, "gone": 201},
    )
    found = account(snapshot)
    assert found.nodes_without_worker == ("w-dead",)
    assert found.ours_not_listed == ("gone",)
    assert found.listed_unknown == ("c",)
    lines = found.lines()
    assert len(lines) == 3 and "w-dead" in lines[0] and "gone" in lines[1] and "c" in lines[2]


def test_a_cluster_that_adds_up_says_nothing() -> None:
    snapshot = ClusterSnapshot(
        taken_at="2026-12-02T12:00:00Z",
        nodes=(NodeInfo(name="w1", ready=True),),
        workers=(VpsieWorker(identifier="a", hostname="W1"),),
        logged_sizes={"a": 201},
    )
    assert account(snapshot).lines() == []


def test_workers_without_identifier_are_said_to_be_read_only() -> None:
    snapshot = ClusterSnapshot(
        taken_at="2026-12-02T12:00:00Z",
        nodes=(NodeInfo(name="w1", ready=True),),
        workers=(VpsieWorker(identifier="", node_id=7, hostname="W1"),),
    )
    (line,) = account(snapshot).lines()
    assert "1 workers without an identifier" in line and "cannot be deleted" in line
