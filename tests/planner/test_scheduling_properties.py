"""Properties of the scheduling simulation and of the batches it leads to (hypothesis)."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner import NodeGroupPolicy, analyze, make_plan, validate_plan
from planner.scheduling import (
    DEFAULT_MAX_PODS,
    Bin,
    Packer,
    ShapeBook,
    effective_allocatable,
    system_reserve,
)
from statemachine.plan import CheckStatus, Strategy
from statemachine.world import (
    LabelSelector,
    PdbInfo,
    PodInfo,
    Resources,
    Taint,
    Toleration,
)
from tests.planner.cluster_builder import LARGE, MEDIUM, NOW, SMALL, cluster, node, pod

APPS = ("a", "b", "c")
TAINT = Taint(key="dedicated", value="x", effect="NoSchedule")


@st.composite
def pods_and_bins(draw: st.DrawFn) -> tuple[list[PodInfo], list[tuple[Resources, bool, str]]]:
    bins = draw(
        st.lists(
            st.tuples(
                st.builds(
                    lambda c, m, p: Resources(cpu_millis=c, memory_bytes=m, pods=p),
                    st.integers(0, 4000),
                    st.integers(0, 8000),
                    st.integers(0, 12),
                ),
                st.booleans(),  # tainted
                st.sampled_from(("east", "west")),  # zone label
            ),
            min_size=1,
            max_size=8,
        )
    )
    pods = []
    for i in range(draw(st.integers(0, 40))):
        app = draw(st.sampled_from(APPS))
        anti = draw(st.booleans())
        pods.append(
            PodInfo(
                namespace=draw(st.sampled_from(("n1", "n2"))),
                name=f"p{i}",
                labels={"app": app},
                requests=Resources(
                    cpu_millis=draw(st.integers(0, 1500)),
                    memory_bytes=draw(st.integers(0, 3000)),
                    pods=1,
                ),
                tolerations=(Toleration(key="dedicated", operator="Exists"),)
                if draw(st.booleans())
                else (),
                node_selector={"zone": draw(st.sampled_from(("east", "west")))}
                if draw(st.integers(0, 3)) == 0
                else {},
                anti_affinity_hostname=(LabelSelector(match_labels={"app": app}),) if anti else (),
            )
        )
    return pods, bins


def tolerated(p: PodInfo) -> bool:
    return any(t.key == "dedicated" for t in p.tolerations)


@settings(max_examples=300, deadline=None)
@given(pods_and_bins())
def test_packing_never_overfills_and_respects_constraints(
    case: tuple[list[PodInfo], list[tuple[Resources, bool, str]]],
) -> None:
    pods, specs = case
    book = ShapeBook(pods)
    bins: list[Bin] = [
        book.bin(f"b{i}", {"zone": zone}, (TAINT,) if tainted else (), free)
        for i, (free, tainted, zone) in enumerate(specs)
    ]
    shapes = Counter(book.shape(p) for p in pods)
    left = Packer(bins=bins).place_all(list(shapes.items()))
    placed = sum(sum(b.content.values()) for b in bins)
    assert placed + sum(n for _, n in left) == len(pods)
    by_shape: dict[object, list[PodInfo]] = {}
    for p in pods:
        by_shape.setdefault(book.shape(p), []).append(p)
    for b, (free, tainted, zone) in zip(bins, specs, strict=True):
        members = [p for s, n in b.content.items() for p in by_shape[s][:n]]
        assert sum(p.requests.cpu_millis for p in members) <= free.cpu_millis
        assert sum(p.requests.memory_bytes for p in members) <= free.memory_bytes
        assert len(members) <= free.pods
        for p in members:
            assert not tainted or tolerated(p)
            assert p.node_selector.get("zone", zone) == zone
        # Required anti-affinity on hostname: no pod shares the node with one it repels.
        for p in members:
            for q in members:
                if p is q or p.namespace != q.namespace:
                    continue
                for sel in p.anti_affinity_hostname:
                    assert not all(q.labels.get(k) == v for k, v in sel.match_labels.items())


@given(
    st.integers(0, 64_000),
    st.integers(0, 512 * 1024**3),
    st.integers(0, 64_000),
    st.integers(0, 512 * 1024**3),
)
def test_allocatable_never_exceeds_capacity_minus_reserve(
    cpu: int, mem: int, rep_cpu: int, rep_mem: int
) -> None:
    cap = Resources(cpu_millis=cpu, memory_bytes=mem, pods=DEFAULT_MAX_PODS)
    reported = Resources(cpu_millis=rep_cpu, memory_bytes=rep_mem, pods=DEFAULT_MAX_PODS)
    alloc = effective_allocatable(cap, reported)
    reserve = system_reserve(cap)
    assert 0 <= alloc.cpu_millis <= max(cpu - reserve.cpu_millis, 0)
    assert 0 <= alloc.memory_bytes <= max(mem - reserve.memory_bytes, 0)
    assert rep_cpu == 0 or alloc.cpu_millis <= rep_cpu
    assert rep_mem == 0 or alloc.memory_bytes <= rep_mem
    bigger = system_reserve(Resources(cpu_millis=cpu + 1000, memory_bytes=mem + 1024**3))
    assert bigger.cpu_millis >= reserve.cpu_millis
    assert bigger.memory_bytes >= reserve.memory_bytes


@st.composite
def small_clusters(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    count = draw(st.integers(2, 7))
    sizes = {f"n{i}": draw(st.sampled_from((MEDIUM, LARGE))) for i in range(count)}
    nodes = [node(name, offer) for name, offer in sizes.items()]
    pods = []
    for name in sizes:
        for j in range(draw(st.integers(0, 5))):
            pods.append(
                pod(
                    f"{name}-{j}",
                    name,
                    cpu=draw(st.sampled_from((100, 300, 700))),
                    labels={"app": draw(st.sampled_from(APPS))},
                )
            )
    budgets = tuple(
        PdbInfo(
            namespace="default",
            name=f"pdb-{app}",
            selector=LabelSelector(match_labels={"app": app}),
            disruptions_allowed=draw(st.integers(0, 3)),
        )
        for app in APPS
        if draw(st.booleans())
    )
    policy = NodeGroupPolicy(
        name="pool",
        min_nodes=draw(st.integers(0, 3)),
        batch_size=draw(st.integers(1, 3)),
        max_concurrent=draw(st.integers(1, 3)),
        strategy=draw(st.sampled_from(list(Strategy))),
    )
    return cluster(nodes, pods, sizes=sizes, pdbs=budgets, offers=(SMALL, MEDIUM, LARGE)), policy


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_clusters())
def test_a_passed_budget_check_means_no_batch_breaks_a_pdb(case) -> None:  # type: ignore[no-untyped-def]
    snap, policy = case
    a = analyze(snap, policy, now=NOW)
    result = next(c for c in a.checks if c.name == "disruption_budgets")
    pods_on: dict[str, list[PodInfo]] = {}
    for p in snap.pods:
        pods_on.setdefault(p.node_name, []).append(p)
    violations = [
        (b, pdb.name)
        for b, batch in enumerate(a.batches)
        for name in batch
        for pdb in snap.pdbs
        if sum(
            all(p.labels.get(k) == v for k, v in pdb.selector.match_labels.items())
            for p in pods_on.get(name, [])
        )
        > pdb.disruptions_allowed
    ]
    assert (result.status is CheckStatus.FAILED) == bool(violations)
    spec = make_plan(a, policy)
    if spec is not None:
        assert validate_plan(spec, policy) == []
        assert sum(r.monthly_saving for r in spec.replacements) == spec.monthly_saving
        lowest = next(c for c in spec.checks if c.name == "node_group_health").details
        assert isinstance(lowest["lowest_during_plan"], int)
        # Never below minNodes, nor (a group already below it, which a fleet of more nodes
        # may now bring up to it; the check rejects such a plan) below where it is.
        assert lowest["lowest_during_plan"] >= min(spec.min_nodes, lowest["nodes"])
