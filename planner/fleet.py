"""The cheapest fleet for a group's pods: how many nodes of each allowed size.

Two steps, both deterministic for the same input:

1. A lower bound. With the solver on, a small mixed-integer program (HiGHS through
   `scipy.optimize.milp`): integer `n_s` nodes per size s, continuous `x_js` pods of shape j
   on size s; minimise sum(price_s * n_s) subject to every pod placed, each size's CPU, memory
   and pod slots (`x_js` summed) within `n_s` times one node's free room, at most `fit_js * n_s`
   pods of a shape on a size (what one node takes of it alone; 1 for a pod that repels its own
   replicas), and the node count within [floor, ceiling]. Without the solver, or when it finds
   nothing within its time budget, a fast heuristic gives the bound instead: the cheapest fleet
   of one or two sizes whose summed room covers the summed requests and the per-node limits.
2. A packing. The bound fleet is packed pod shape by pod shape, largest first (by the share of
   the fleet's total room a pod takes in its scarcer resource), each shape spread over every
   node in proportion to how many of it the node can still take (largest remainder rounds):
   nodes stay balanced, so CPU-heavy and memory-heavy pods share nodes instead of each filling
   one dimension. Identical nodes are packed as one class. If the fleet does not pack, the
   search moves to the cheapest untried fleet with one node more or one node a size larger,
   best first (ties: fewer nodes, then the counts), a bounded number of times.

Only resources, pod slots and self anti-affinity are modelled here; the capacity check
(`checks.simulate_batches`) replays the plan batch by batch with every scheduling rule, and the
analysis moves on to the next fleet when that check fails.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

# Imported with the planner, not on first use: scipy's import takes most of a second, which
# would otherwise stall the daemon's event loop (and its lease renewal) at the first analysis.
import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_array

from planner.scheduling import Shape
from statemachine.world import Resources, SizeOffer

# The solver's wall-clock budget per fleet search; beyond it the heuristic bound is used.
SOLVER_TIME_BUDGET_S = 0.5
# Fleets tried (packed) by the best-first search before it gives up.
MAX_PACKINGS = 40
# Fleets up to this many nodes get a best-first search; larger ones go straight to repair.
BEST_FIRST_NODES = 100
# The column program: pricing rounds, branch-and-bound nodes per pattern search, and nodes of
# the final integer program (counted, not timed: the same input gives the same fleet).
COLUMN_ROUNDS = 60
PRICING_NODES = 1500
COLUMN_IP_NODES = 200
# Groups of up to this many candidates are sized by the column program; in larger ones a node
# is a small share of the fleet and the aggregated program's rounding costs little.
COLUMN_MAX_NODES = 200
# Candidates are weighed as nodes that may stay (with what they hold) when there are at most
# this many kinds of pods and candidates: beyond, the integer program gets slow.
KEEP_MAX_DEMANDS = 6
KEEP_MAX_NODES = 100
# The wall clock stops the column program only past this many time budgets (a runaway on a
# starved machine); within it, the work done is counted and the result deterministic.
COLUMN_SAFETY = 10
# Above this share over the linear bound, the rounding of the used patterns is retried over
# every pattern found.
COLUMN_GAP = 0.01


@dataclass(frozen=True, slots=True)
class SizeRoom:
    """An allowed size as the fleet search sees it: one new node's free room and its price."""

    offer: SizeOffer
    free: Resources  # usable allocatable less the group's DaemonSet load


@dataclass(frozen=True, slots=True)
class Fleet:
    counts: tuple[int, ...]  # nodes per size, in the order of the search's sizes
    cost: Decimal
    # The packing found: per node, its size index and pods per (CPU, memory) request.
    layout: tuple[tuple[int, tuple[tuple[tuple[int, int], int], ...]], ...] = ()
    # With `keepable` candidates: which of them the fleet keeps (counted in `counts`), by
    # index, and what each receives on top of what it holds.
    kept: tuple[tuple[int, tuple[tuple[tuple[int, int], int], ...]], ...] = ()
    keeps_chosen: bool = False

    @property
    def nodes(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class _Kind:
    """A kind of node in the column program."""

    room: Resources  # free room for what the pattern adds
    price: Decimal
    limit: int  # at most this many nodes of the kind; -1: no limit
    index: int = -1  # size index (new or kept nodes); -1 for staying nodes
    members: Sequence[int] = ()  # staying nodes: their indices
    keep: int = -1  # a keepable candidate: its index
    held: tuple[int, ...] = ()  # a kept candidate: pods per demand it holds

    @property
    def counts_as_node(self) -> bool:
        """New and kept nodes are the fleet (floor, ceiling); staying nodes are not."""
        return self.index >= 0


@dataclass(frozen=True, slots=True)
class _Demand:
    cpu: int
    mem: int
    count: int
    # At most this many per node (0: no limit). Replicas that repel each other on hostname
    # (or spread over hostnames) are merged with others of the same requests and replica
    # count: k such workloads allow k pods per node (each its maxSkew under a spread), and
    # their replicas need as many nodes.
    cap: int


def _per_node(shape: Shape) -> int:
    """At most this many of the shape on one node (0: no limit): 1 for replicas that repel
    each other on hostname; the smallest maxSkew of a hostname spread (exact while some node
    of the group holds none of them, as when the fleet has more nodes than replicas)."""
    if shape.exclusive:
        return 1
    return shape.spread_per_node


def _fit(d: _Demand, room: Resources) -> int:
    """How many pods of `d` one empty node with `room` takes."""
    n = room.pods
    if d.cpu > 0:
        n = min(n, room.cpu_millis // d.cpu)
    elif room.cpu_millis < 0:
        return 0
    if d.mem > 0:
        n = min(n, room.memory_bytes // d.mem)
    elif room.memory_bytes < 0:
        return 0
    n = max(n, 0)
    return min(n, d.cap) if d.cap else n


class FleetSearch:
    """Cheapest fleets of `sizes` that carry `buckets`, between `floor` and `ceiling` nodes.

    `buckets` hold (shape, count); every shape must be allowed on a new node (labels, taints):
    the caller checks that, since all new nodes carry the group's template.
    """

    def __init__(
        self,
        buckets: Sequence[tuple[Shape, int]],
        sizes: Sequence[SizeRoom],
        *,
        floor: int,
        ceiling: int,
        solver: bool = True,
        time_budget_s: float = SOLVER_TIME_BUDGET_S,
        existing: Sequence[Resources] = (),
        keepable: Sequence[tuple[int, Resources, Sequence[tuple[Shape, int]]]] = (),
    ) -> None:
        # Nodes that stay whatever the fleet (their free room given) are one more "size" at
        # the end, of price 0 and exactly one node in the programs, whose packing keeps each
        # of them apart (size index n_real + i for existing node i).
        self.n_real = len(sizes)
        self.existing = list(existing)
        self.sizes = list(sizes)
        if self.existing:
            total = Resources(
                cpu_millis=sum(max(e.cpu_millis, 0) for e in self.existing),
                memory_bytes=sum(max(e.memory_bytes, 0) for e in self.existing),
                pods=sum(max(e.pods, 0) for e in self.existing),
            )
            pseudo = SizeOffer(
                id=0, name="(staying nodes)", cpu=0, ram_mb=0, disk_gb=0, monthly_price=Decimal(0)
            )
            self.sizes.append(SizeRoom(offer=pseudo, free=total))
        self.floor = max(floor, 0)
        self.ceiling = ceiling
        self.solver = solver
        self.time_budget_s = time_budget_s
        # (cpu, memory, replicas of an exclusive shape or 0) -> [pods, exclusive shapes]
        merged: dict[tuple[int, int, int], list[int]] = {}
        for shape, count in buckets:
            limit = _per_node(shape)
            key = (shape.cpu, shape.memory, count if limit else 0)
            entry = merged.setdefault(key, [0, 0])
            entry[0] += count
            entry[1] += limit
        ordered = sorted(merged.items(), key=lambda kv: (-kv[0][0], -kv[0][1], kv[0][2]))
        self.demands = [
            _Demand(cpu=c, mem=m, count=n, cap=k if r else 0) for (c, m, r), (n, k) in ordered
        ]
        index = {key: j for j, (key, _) in enumerate(ordered)}
        self.fits = [[_fit(d, s.free) for s in self.sizes[: self.n_real]] for d in self.demands]
        # Candidates that may stay as they are: (size index, free room, pods held per demand).
        bucket_count = {shape: count for shape, count in buckets}
        self.keepable: list[tuple[int, Resources, tuple[int, ...]]] = []
        if len(self.demands) > KEEP_MAX_DEMANDS or len(keepable) > KEEP_MAX_NODES:
            keepable = ()  # too hard a program: sized as if empty, refitted by the caller
        for size, room, held in keepable:
            per = [0] * len(self.demands)
            for shape, count in held:
                key = (shape.cpu, shape.memory, bucket_count[shape] if _per_node(shape) else 0)
                per[index[key]] += count
            self.keepable.append((size, room, tuple(per)))
        if self.existing:
            for j, d in enumerate(self.demands):
                self.fits[j].append(sum(_fit(d, e) for e in self.existing))
        self.used_solver = False
        self.solver_seconds = 0.0
        self.layouts: dict[
            tuple[int, ...], tuple[tuple[int, tuple[tuple[tuple[int, int], int], ...]], ...]
        ] = {}
        self._packed: dict[
            tuple[int, ...],
            tuple[bool, tuple[int, int] | None, tuple[tuple[int, int], ...]],
        ] = {}
        self.last_short: tuple[tuple[int, int], ...] = ()  # (demand, pods left), all of them
        self.last_failure: tuple[int, int] | None = None  # (demand, pods left) of the last packing
        self._assignments: dict[tuple[int, ...], dict[tuple[int, int], float] | None] = {}
        self.packings = 0
        self.column_bound = 0.0  # the column program's last linear bound (monthly price)
        self._lp_x: list[float] = []
        self._lp_rc: list[float] = []  # reduced cost per column at the last linear program
        self._initial_columns = 0
        # Whether the column program's fleet is within COLUMN_GAP of its bound (then the
        # search's further fleets are only alternatives for a failed capacity check).
        self.column_tight = False

    @property
    def uses_columns(self) -> bool:
        """Whether `fleets` starts with the column program's fleet."""
        return self.solver and self.ceiling <= COLUMN_MAX_NODES and bool(self.demands)

    def cost(self, counts: Sequence[int]) -> Decimal:
        return sum(
            (s.offer.monthly_price * n for s, n in zip(self.sizes, counts, strict=True)),
            Decimal(0),
        )

    # -- step 1: a lower bound -----------------------------------------------------------------

    def lower_bound(self) -> tuple[int, ...] | None:
        """The bound fleet, or None when no fleet within the ceiling can carry the pods."""
        if any(not any(f) for f in self.fits):
            return None  # a pod no allowed size takes even alone
        if not self.demands:
            return self._cheapest_floor()
        if self.solver:
            found = self._milp()
            if found is not None:
                return found
        return self._heuristic_bound()

    def _with_existing(self, real: Sequence[int]) -> tuple[int, ...]:
        return (*real, 1) if self.existing else tuple(real)

    def nodes_of(self, counts: Sequence[int]) -> int:
        """New nodes in `counts` (staying nodes not counted)."""
        return sum(counts[: self.n_real])

    def _cheapest_floor(self) -> tuple[int, ...] | None:
        if not self.n_real or self.floor > self.ceiling:
            return None
        best = min(range(self.n_real), key=lambda i: (self.sizes[i].offer.monthly_price, i))
        return self._with_existing([self.floor if i == best else 0 for i in range(self.n_real)])

    def _milp(self) -> tuple[int, ...] | None:
        found = self._solve(None)
        if found is None:
            return None
        # Rounding only removes solver tolerance; the packing step judges the fleet anyway.
        counts = tuple(round(v) for v in found[0])
        self._assignments[counts] = found[1]
        return counts

    def _assignment(self, counts: tuple[int, ...]) -> dict[tuple[int, int], float] | None:
        """How many pods of each demand each size takes in a fleet of `counts` (a linear
        program); None when even that relaxation has no room: the fleet cannot pack."""
        if counts not in self._assignments:
            found = self._solve(counts)
            self._assignments[counts] = None if found is None else found[1]
        return self._assignments[counts]

    def _solve(
        self, fixed: tuple[int, ...] | None
    ) -> tuple[list[float], dict[tuple[int, int], float]] | None:
        """The relaxation: with `fixed` None the mixed-integer program for the cheapest
        fleet, else the linear program placing pods on a fleet of `fixed`, which maximises
        the share `u` of every size's room left free (so the rounding of the packing step
        finds slack everywhere instead of at one tight vertex)."""
        n_s = len(self.sizes)
        pairs = [(j, s) for j in range(len(self.demands)) for s in range(n_s) if self.fits[j][s]]
        n_var = n_s + len(pairs) + 1
        u = n_var - 1
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        lo: list[float] = []
        hi: list[float] = []

        def row(entries: list[tuple[int, float]], low: float, high: float) -> None:
            r = len(lo)
            for c, v in entries:
                rows.append(r)
                cols.append(c)
                vals.append(v)
            lo.append(low)
            hi.append(high)

        by_demand: dict[int, list[tuple[int, float]]] = {}
        by_size: dict[int, list[tuple[int, int]]] = {}
        for k, (j, s) in enumerate(pairs):
            by_demand.setdefault(j, []).append((n_s + k, 1.0))
            by_size.setdefault(s, []).append((n_s + k, j))
            # x_js <= fit_js * n_s
            row([(n_s + k, 1.0), (s, -float(self.fits[j][s]))], -np.inf, 0.0)
        for j, d in enumerate(self.demands):
            row(by_demand[j], float(d.count), float(d.count))
        for s, size in enumerate(self.sizes):
            members = by_size.get(s, [])
            free = size.free
            # Memory in MiB keeps the coefficients within a few orders of the others.
            for attr, cap, unit in (
                ("cpu", free.cpu_millis, 1.0),
                ("mem", free.memory_bytes, float(1 << 20)),
            ):
                entries = [(c, getattr(self.demands[j], attr) / unit) for c, j in members]
                spare = [(u, fixed[s] * max(cap, 0) / unit)] if fixed else []
                row([*entries, *spare, (s, -max(cap, 0) / unit)], -np.inf, 0.0)
            spare = [(u, float(fixed[s] * max(free.pods, 0)))] if fixed else []
            row(
                [*((c, 1.0) for c, _ in members), *spare, (s, -float(max(free.pods, 0)))],
                -np.inf,
                0.0,
            )
        row([(s, 1.0) for s in range(self.n_real)], float(self.floor), float(self.ceiling))
        # Price first; among equal prices fewer nodes (a thousandth of a cent per node).
        cost = np.zeros(n_var)
        for s, size in enumerate(self.sizes):
            cost[s] = float(size.offer.monthly_price) + 1e-5
        integrality = np.zeros(n_var, dtype=np.int64)
        lower = np.zeros(n_var)
        upper = np.full(n_var, np.inf)
        upper[u] = 0.0
        if fixed is None:
            integrality[:n_s] = 1
            upper[:n_s] = float(self.ceiling)
            if self.existing:
                lower[self.n_real] = upper[self.n_real] = 1.0
        else:
            lower[:n_s] = upper[:n_s] = np.array(fixed, dtype=float)
            cost[:] = 0.0
            cost[u] = -1.0
            upper[u] = 1.0
        matrix = coo_array((vals, (rows, cols)), shape=(len(lo), n_var)).tocsr()
        started = time.perf_counter()
        result = milp(
            c=cost,
            integrality=integrality,
            bounds=Bounds(lower, upper),
            constraints=[LinearConstraint(matrix, np.array(lo), np.array(hi))],
            options={"time_limit": self.time_budget_s, "presolve": True, "disp": False},
        )
        self.solver_seconds += time.perf_counter() - started
        self.used_solver = True
        if result.x is None:
            return None
        x = [float(v) for v in result.x]
        return x[:n_s], {pair: x[n_s + k] for k, pair in enumerate(pairs)}

    def _heuristic_bound(self) -> tuple[int, ...] | None:
        """Cheapest fleet of one or two sizes whose summed room covers the summed requests,
        each pod's own limits (exclusive pods need as many nodes) and the floor."""
        staying = self.sizes[self.n_real].free if self.existing else Resources()
        need_cpu = sum(d.cpu * d.count for d in self.demands) - staying.cpu_millis
        need_mem = sum(d.mem * d.count for d in self.demands) - staying.memory_bytes
        need_pods = sum(d.count for d in self.demands) - staying.pods
        need_nodes = max(
            [self.floor]
            + [-(-d.count // d.cap) - len(self.existing) for d in self.demands if d.cap]
        )
        best: tuple[Decimal, int, tuple[int, ...]] | None = None
        n = self.n_real
        for a in range(n):
            for b in range(a, n):
                if not all(f[a] or f[b] for f in self.fits):
                    continue
                found = self._pair(a, b, need_cpu, need_mem, need_pods, need_nodes)
                if found is None:
                    continue
                counts = self._with_existing([found.get(i, 0) for i in range(n)])
                key = (self.cost(counts), self.nodes_of(counts), counts)
                if best is None or key < best:
                    best = key
        return best[2] if best is not None else None

    def _pair(
        self, a: int, b: int, cpu: int, mem: int, pods: int, nodes: int
    ) -> dict[int, int] | None:
        ra, rb = self.sizes[a].free, self.sizes[b].free
        # Pods that only the other size takes alone push all of them there.
        best: tuple[Decimal, int, int] | None = None
        limit = self.ceiling
        for na in range(limit + 1):
            rest = (
                cpu - na * ra.cpu_millis,
                mem - na * ra.memory_bytes,
                pods - na * ra.pods,
                nodes - na,
            )
            caps = (rb.cpu_millis, rb.memory_bytes, rb.pods, 1)
            nb = 0
            ok = True
            for r, c in zip(rest, caps, strict=True):
                if r > 0:
                    if c <= 0:
                        ok = False
                        break
                    nb = max(nb, -(-r // c))
            if not ok or na + nb > limit:
                if a == b:
                    break
                continue
            if a == b:
                na, nb = na + nb, 0
            price = self.sizes[a].offer.monthly_price * na + self.sizes[b].offer.monthly_price * nb
            if best is None or (price, na + nb, -na) < (best[0], best[1] + best[2], -best[1]):
                best = (price, na, nb)
            if a == b or nb == 0:
                break
        if best is None:
            return None
        out: dict[int, int] = {}
        out[a] = out.get(a, 0) + best[1]
        out[b] = out.get(b, 0) + best[2]
        return out

    # -- the column program: fleets as packing patterns ----------------------------------------

    def _kinds(self) -> list[_Kind]:
        """What a node can be in the column program: each allowed size (its price, no limit
        on its count); each class of identical staying nodes (price 0, at most as many as
        there are); each candidate that may be kept as it is (its size's price, at most one,
        the pods it holds in every pattern of it)."""
        kinds = [
            _Kind(room=s.free, price=s.offer.monthly_price, limit=-1, index=i)
            for i, s in enumerate(self.sizes[: self.n_real])
        ]
        classes: dict[tuple[int, int, int], list[int]] = {}
        for i, e in enumerate(self.existing):
            classes.setdefault((e.cpu_millis, e.memory_bytes, e.pods), []).append(i)
        for (cpu, mem, pods), members in sorted(classes.items()):
            room = Resources(cpu_millis=cpu, memory_bytes=mem, pods=pods)
            kinds.append(_Kind(room=room, price=Decimal(0), limit=len(members), members=members))
        zero = (0,) * len(self.demands)
        for i, (size, room, held) in enumerate(self.keepable):
            kinds.append(
                _Kind(
                    room=room,
                    price=self.sizes[size].offer.monthly_price,
                    limit=1,
                    index=size,
                    keep=i,
                    held=held or zero,
                )
            )
        return kinds

    def column_fleet(self) -> Fleet | None:
        """The cheapest fleet as whole nodes: which pods each node carries (a pattern) and
        how many nodes of each pattern, by column generation. A linear program over the
        patterns found so far gives prices (duals) for each kind of pod; for every size a
        small branch and bound finds the pattern worth most at those prices, and a pattern
        worth more than its node's price joins the program. When none does (or after
        COLUMN_ROUNDS rounds), HiGHS solves the same program in integers over the patterns
        found. Deterministic: rounds and the integer program's nodes are counted, not timed
        (the time budget only stops a runaway)."""
        if not self.demands or not self.n_real:
            return None
        started = time.perf_counter()
        kinds = self._kinds()
        n_d = len(self.demands)
        fits = [[_fit(d, kind.room) for kind in kinds] for d in self.demands]
        if any(not any(f[: self.n_real]) for f in fits):
            return None
        columns: list[tuple[int, tuple[int, ...]]] = []
        seen: set[tuple[int, tuple[int, ...]]] = set()

        def add(k: int, extra: tuple[int, ...]) -> bool:
            held = kinds[k].held
            pattern = tuple(a + h for a, h in zip(extra, held, strict=True)) if held else extra
            if (k, pattern) in seen:
                return False
            seen.add((k, pattern))
            columns.append((k, pattern))
            return True

        zero = (0,) * n_d
        cheapest = min(range(self.n_real), key=lambda i: (kinds[i].price, i))
        add(cheapest, zero)  # an empty node: what the floor may need
        for k, kind in enumerate(kinds):
            if kind.keep >= 0:
                add(k, zero)  # kept with what it holds
        for j in range(n_d):
            for k in range(len(kinds)):
                most = self._most(j, kinds[k], fits[j][k])
                if most:
                    add(k, tuple(most if i == j else 0 for i in range(n_d)))
        big = float(max(kind.price for kind in kinds)) * 1000 + 1000.0
        self._initial_columns = len(columns)
        for _ in range(COLUMN_ROUNDS):
            duals = self._master_lp(kinds, columns, big)
            if duals is None:
                return None
            pi, node_dual, kind_duals = duals
            added = False
            for k, kind in enumerate(kinds):
                threshold = float(kind.price) - kind_duals[k]
                if kind.counts_as_node:
                    threshold -= node_dual
                threshold -= sum(p * h for p, h in zip(pi, kind.held, strict=False))
                items = [
                    (pi[j], j, most)
                    for j in range(n_d)
                    if pi[j] > 1e-9 and (most := self._most(j, kind, fits[j][k])) > 0
                ]
                enough = threshold + 1e-6 * (1.0 + abs(threshold))
                value, extra = _best_pattern(items, self.demands, kind.room, n_d, enough)
                if value > enough and add(k, extra):
                    added = True
            if not added or time.perf_counter() - started > COLUMN_SAFETY * self.time_budget_s:
                break  # rounds are counted; the clock only stops a runaway
        if len(self._lp_x) != len(columns) + n_d and self._master_lp(kinds, columns, big) is None:
            return None  # the last round added patterns: the rounding needs their values
        found = self._master_ip(kinds, columns, big)
        self.solver_seconds += time.perf_counter() - started
        self.used_solver = True
        if found is None:
            return None
        return self._fleet_of(kinds, found)

    def _most(self, j: int, kind: _Kind, fit: int) -> int:
        """The most pods of demand `j` a pattern of `kind` adds."""
        d = self.demands[j]
        most = min(fit, d.count)
        if kind.held:
            most = min(most, d.count - kind.held[j])
            if d.cap:
                most = min(most, d.cap - kind.held[j])
        return max(most, 0)

    def _master_rows(
        self, kinds: Sequence[_Kind], columns: Sequence[tuple[int, tuple[int, ...]]], big: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """The program as `A x <= b` over the columns and one artificial pod per demand
        (price `big`): rows cover (per demand), the ceiling, the floor, each limited kind."""
        n_d = len(self.demands)
        n_c = len(columns)
        limited = [k for k, kind in enumerate(kinds) if kind.limit >= 0]
        row_of = {k: n_d + 2 + r for r, k in enumerate(limited)}
        n_rows = n_d + 2 + len(limited)
        a = np.zeros((n_rows, n_c + n_d))
        b = np.zeros(n_rows)
        cost = np.zeros(n_c + n_d)
        for c, (k, pattern) in enumerate(columns):
            kind = kinds[k]
            for j, n in enumerate(pattern):
                a[j, c] = -n
            if kind.counts_as_node:
                a[n_d, c] = 1.0
                a[n_d + 1, c] = -1.0
            if kind.limit >= 0:
                a[row_of[k], c] = 1.0
            # Among equal prices fewer nodes, and a node kept rather than a new one.
            cost[c] = float(kind.price) + (2e-5 if kind.keep < 0 and kind.index >= 0 else 0.0)
            if kind.keep >= 0:
                cost[c] += 1e-5
        for j, d in enumerate(self.demands):
            a[j, n_c + j] = -1.0
            b[j] = -float(d.count)
            cost[n_c + j] = big
        b[n_d] = float(self.ceiling)
        b[n_d + 1] = -float(self.floor)
        for k in limited:
            b[row_of[k]] = float(kinds[k].limit)
        return a, b, cost, limited

    def _master_lp(
        self, kinds: Sequence[_Kind], columns: Sequence[tuple[int, tuple[int, ...]]], big: float
    ) -> tuple[list[float], float, list[float]] | None:
        """The linear program's duals: per demand (>= 0), per node of the fleet (what the
        ceiling and the floor add to its price), per limited kind (<= 0)."""
        a, b, cost, limited = self._master_rows(kinds, columns, big)
        result = linprog(cost, A_ub=a, b_ub=b, bounds=(0, None), method="highs")
        if result.status != 0:
            return None
        marg = [float(v) for v in result.ineqlin.marginals]
        n_d = len(self.demands)
        pi = [-v for v in marg[:n_d]]
        node_dual = marg[n_d] - marg[n_d + 1]
        kind_duals = [0.0] * len(kinds)
        for r, k in enumerate(limited):
            kind_duals[k] = marg[n_d + 2 + r]
        self.column_bound = float(result.fun or 0.0)
        self._lp_x = [float(v) for v in result.x] if result.x is not None else []
        self._lp_rc = [float(v) for v in cost - a.T @ np.array(marg)]
        return pi, node_dual, kind_duals

    def _master_ip(
        self, kinds: Sequence[_Kind], columns: Sequence[tuple[int, tuple[int, ...]]], big: float
    ) -> list[tuple[int, tuple[int, ...], int]] | None:
        """Whole nodes: the linear program's node counts rounded down are taken as they are,
        and HiGHS places what they leave over in integers over the same patterns (a small
        program: the rest is a few nodes' worth), within COLUMN_IP_NODES branch-and-bound
        nodes. Should that find nothing, the whole program is solved in integers."""
        n_c = len(columns)
        base = [math.floor(v + 1e-9) for v in self._lp_x[:n_c]]
        found = self._integer_rest(kinds, columns, big, base, restricted=True)
        bound = self.column_bound
        # No fleet costs less than the bound rounded up to a multiple of the prices' greatest
        # common divisor (in cents).
        step = 0
        for kind in kinds:
            step = math.gcd(step, int(kind.price * 100))
        if step:
            cents = math.ceil(round(bound * 100, 4) / step) * step
            bound = max(bound, cents / 100)
        if found is None or self._price(kinds, found) > bound * (1 + COLUMN_GAP) + 1e-6:
            # Rounding the used patterns alone leaves too much on the table: every pattern
            # that could be in a cheaper fleet (its reduced cost below the gap left).
            gap = (self._price(kinds, found) if found is not None else big) - self.column_bound
            wider = self._integer_rest(kinds, columns, big, base, restricted=False, gap=gap)
            if wider is not None and (
                found is None or self._price(kinds, wider) < self._price(kinds, found)
            ):
                found = wider
        if found is None and any(base):
            found = self._integer_rest(kinds, columns, big, [0] * n_c, restricted=False)
        self.column_tight = (
            found is not None and self._price(kinds, found) <= bound * (1 + COLUMN_GAP) + 1e-6
        )
        return found

    @staticmethod
    def _price(kinds: Sequence[_Kind], used: Sequence[tuple[int, tuple[int, ...], int]]) -> float:
        return sum(float(kinds[k].price) * n for k, _, n in used)

    def _integer_rest(
        self,
        kinds: Sequence[_Kind],
        columns: Sequence[tuple[int, tuple[int, ...]]],
        big: float,
        base: Sequence[int],
        *,
        restricted: bool,
        gap: float = float("inf"),
    ) -> list[tuple[int, tuple[int, ...], int]] | None:
        a, b, cost, _ = self._master_rows(kinds, columns, big)
        n_c = len(columns)
        fixed = np.zeros(len(cost))
        fixed[:n_c] = base
        rest = b - a @ fixed
        integrality = np.zeros(len(cost), dtype=np.int64)
        integrality[:n_c] = 1
        # The patterns the linear program uses, and the simple ones it started from.
        upper = np.full(len(cost), np.inf)
        for c in range(n_c):
            if self._lp_x[c] > 1e-9:
                continue
            if (restricted and c >= self._initial_columns) or self._lp_rc[c] > gap + 1e-6:
                upper[c] = 0.0
        result = milp(
            c=cost,
            integrality=integrality,
            bounds=Bounds(np.zeros(len(cost)), upper),
            constraints=[LinearConstraint(a, -np.inf, rest)],
            options={
                "time_limit": max(self.time_budget_s, 0.05) * COLUMN_SAFETY,
                "node_limit": COLUMN_IP_NODES,
                "mip_rel_gap": 0.01,
                "presolve": True,
                "disp": False,
            },
        )
        if result.x is None:
            return None
        x = [float(v) for v in result.x]
        if any(v > 1e-6 for v in x[n_c:]):
            return None  # some pod could not be placed within the ceiling
        total = [base[c] + round(x[c]) for c in range(n_c)]
        return [(k, p, total[c]) for c, (k, p) in enumerate(columns) if total[c] > 0]

    def _fleet_of(
        self, kinds: Sequence[_Kind], used: Sequence[tuple[int, tuple[int, ...], int]]
    ) -> Fleet:
        """The integer program's nodes as a fleet with its layout. Pods the patterns hold
        beyond the demand are taken off new nodes (the last first), then off what staying
        and kept nodes were to receive; never off what a kept node already holds."""
        nodes: list[tuple[int, list[int]]] = []
        for k, pattern, n in sorted(
            used, key=lambda u: (kinds[u[0]].keep >= 0, u[0], tuple(-v for v in u[1]))
        ):
            nodes.extend((k, list(pattern)) for _ in range(n))
        for j, d in enumerate(self.demands):
            excess = sum(p[j] for _, p in nodes) - d.count
            for k, p in reversed(nodes):
                if excess <= 0:
                    break
                held = kinds[k].held[j] if kinds[k].held else 0
                take = min(excess, p[j] - held)
                p[j] -= take
                excess -= take
        counts = [0] * self.n_real
        layout: list[tuple[int, tuple[tuple[tuple[int, int], int], ...]]] = []
        placed: dict[int, tuple[tuple[tuple[int, int], int], ...]] = {}
        kept: list[tuple[int, tuple[tuple[tuple[int, int], int], ...]]] = []
        members: dict[int, list[int]] = {k: list(kind.members) for k, kind in enumerate(kinds)}
        for k, vec in nodes:
            kind = kinds[k]
            slots: dict[tuple[int, int], int] = {}
            for j, total in enumerate(vec):
                adds = total - (kind.held[j] if kind.held else 0)
                if adds:
                    key = (self.demands[j].cpu, self.demands[j].mem)
                    slots[key] = slots.get(key, 0) + adds
            content = tuple(sorted(slots.items()))
            if kind.keep >= 0:
                counts[kind.index] += 1
                kept.append((kind.keep, content))
            elif kind.index >= 0:
                counts[kind.index] += 1
                layout.append((kind.index, content))
            else:
                placed[members[k].pop(0)] = content
        for i in range(len(self.existing)):
            layout.append((self.n_real + i, placed.get(i, ())))
        real = tuple(counts)
        return Fleet(
            counts=real,
            cost=self.cost(self._with_existing(real)),
            layout=tuple(layout),
            kept=tuple(sorted(kept)),
            keeps_chosen=bool(self.keepable),
        )

    # -- step 2: packing -------------------------------------------------------------------------

    def packs(self, counts: tuple[int, ...]) -> bool:
        """Whether the balanced spread places every pod on a fleet of `counts`.

        With the solver, each demand first goes to the sizes the linear program put it on
        (rounded by largest remainder), spread over that size's nodes; what does not fit there
        is then spread over every node. A fleet the linear program finds no room in is refused
        without packing."""
        if counts in self._packed:
            ok, self.last_failure, self.last_short = self._packed[counts]
            return ok
        ok = self._pack(counts)
        self._packed[counts] = (ok, self.last_failure, self.last_short)
        return ok

    def _pack(self, counts: tuple[int, ...]) -> bool:
        self.packings += 1
        self.last_failure, self.last_short = None, ()
        short: list[tuple[int, int]] = []
        plan: dict[tuple[int, int], float] | None = None
        if self.solver:
            # None (no room even in the relaxation, or a numerically tight call): spread alone.
            plan = self._assignment(counts)
        empty = (0,) * len(self.demands)
        classes: Classes = {}
        for s, n in enumerate(counts[: self.n_real]):
            if n > 0:
                f = self.sizes[s].free
                key = (f.cpu_millis, f.memory_bytes, f.pods, s, empty)
                classes[key] = classes.get(key, 0) + n
        for i, e in enumerate(self.existing):
            classes[(e.cpu_millis, e.memory_bytes, e.pods, self.n_real + i, empty)] = 1
        pseudo = self.n_real if self.existing else -1
        if not classes:
            self.last_failure = (0, self.demands[0].count) if self.demands else None
            return not self.demands
        total_cpu = sum(k[0] * m for k, m in classes.items()) or 1
        total_mem = sum(k[1] * m for k, m in classes.items()) or 1
        total_pods = sum(k[2] * m for k, m in classes.items()) or 1
        order = sorted(
            range(len(self.demands)),
            key=lambda j: (
                -max(
                    self.demands[j].cpu / total_cpu,
                    self.demands[j].mem / total_mem,
                    1 / total_pods,
                ),
                -self.demands[j].cpu,
                -self.demands[j].mem,
                j,
            ),
        )
        for j in order:
            d = self.demands[j]
            left = d.count
            if plan is not None:
                shares = [plan.get((j, s), 0.0) for s in range(len(self.sizes))]
                for s, want in enumerate(_round_shares(shares, d.count)):
                    if want > 0:
                        classes, unplaced = _spread(classes, d, j, want, s, pseudo)
                        left -= want - unplaced
            if left > 0:
                classes, left = _spread(classes, d, j, left, None, pseudo)
            if left > 0:
                short.append((j, left))  # go on: the repair sees everything left over
        if short:
            self.last_failure = short[0]
            self.last_short = tuple(short)
            return False
        self.layouts[counts] = self._layout(classes)
        return True

    def _layout(
        self, classes: Classes
    ) -> tuple[tuple[int, tuple[tuple[tuple[int, int], int], ...]], ...]:
        nodes: list[tuple[int, tuple[tuple[tuple[int, int], int], ...]]] = []
        for key in sorted(classes, key=lambda k: (k[3], k[4])):
            slots: dict[tuple[int, int], int] = {}
            for j, n in enumerate(key[4]):
                if n:
                    d = self.demands[j]
                    slots[(d.cpu, d.mem)] = slots.get((d.cpu, d.mem), 0) + n
            nodes.extend([(key[3], tuple(sorted(slots.items())))] * classes[key])
        return tuple(nodes)

    # -- the search ----------------------------------------------------------------------------

    def fleets(self) -> Iterator[Fleet]:
        """Fleets that pack, cheapest first as the search meets them (ties: fewer nodes, then
        the counts).

        Best first from the bound over "one node more" and "one node a size larger" for up to
        MAX_PACKINGS // 2 packings; then, from the cheapest fleet tried, a repair: add the
        cheapest size that takes what the last packing left over (or the most of it per
        dollar) until the fleet packs or the ceiling or MAX_PACKINGS is reached.

        With the solver, the column program's fleet (whole-node patterns) comes first; the
        search's fleets follow as alternatives for when a batch order rules it out."""
        first: tuple[int, ...] | None = None
        if self.uses_columns:
            columns = self.column_fleet()
            if columns is not None:
                first = self._with_existing(columns.counts)
                self.layouts[first] = columns.layout
                self._packed[first] = (True, None, ())
                yield columns
        for fleet in self._searched():
            if self._with_existing(fleet.counts) != first:
                yield fleet

    def _searched(self) -> Iterator[Fleet]:
        start = self.lower_bound()
        if start is None:
            return
        seen = {start}
        heap: list[tuple[Decimal, int, tuple[int, ...]]] = [
            (self.cost(start), self.nodes_of(start), start)
        ]
        by_price = sorted(range(self.n_real), key=lambda i: (self.sizes[i].offer.monthly_price, i))
        tries = 0
        found = False
        # One node is a large share of a small fleet: search there; a large one is repaired.
        budget = MAX_PACKINGS // 2 if self.nodes_of(start) <= BEST_FIRST_NODES else 1
        while heap and tries < budget:
            cost, nodes, counts = heapq.heappop(heap)
            tries += 1
            if nodes >= self.floor and self.packs(counts):
                found = True
                yield Fleet(
                    counts=counts[: self.n_real],
                    cost=cost,
                    layout=self.layouts.get(counts, ()),
                )
                continue
            for s in by_price:
                if nodes < self.ceiling:
                    grown = tuple(c + (1 if i == s else 0) for i, c in enumerate(counts))
                    if grown not in seen:
                        seen.add(grown)
                        heapq.heappush(heap, (self.cost(grown), nodes + 1, grown))
                if counts[s] == 0:
                    continue
                for t in by_price:
                    if self.sizes[t].offer.monthly_price <= self.sizes[s].offer.monthly_price:
                        continue
                    swapped = tuple(
                        c - (1 if i == s else 0) + (1 if i == t else 0)
                        for i, c in enumerate(counts)
                    )
                    if swapped not in seen:
                        seen.add(swapped)
                        heapq.heappush(heap, (self.cost(swapped), nodes, swapped))
        if found:
            return
        counts = start
        while tries < MAX_PACKINGS and self.nodes_of(counts) < self.ceiling:
            tries += 1
            if self.nodes_of(counts) >= self.floor and self.packs(counts):
                yield Fleet(
                    counts=counts[: self.n_real],
                    cost=self.cost(counts),
                    layout=self.layouts.get(counts, ()),
                )
                return
            s, n = self._repair_size(counts)
            n = max(1, min(n, self.ceiling - self.nodes_of(counts)))
            counts = tuple(c + (n if i == s else 0) for i, c in enumerate(counts))

    def _repair_size(self, counts: tuple[int, ...]) -> tuple[int, int]:
        """What to add after a failed packing, as (size, nodes): the cheapest size one node of
        which takes what was left over, else enough nodes of the size taking most of it per
        dollar; the cheapest size below the floor; the largest when the relaxation found no
        room at all."""
        n_sizes = self.n_real
        failure = self.last_failure
        if self.nodes_of(counts) < self.floor:
            return min(range(n_sizes), key=lambda i: (self.sizes[i].offer.monthly_price, i)), 1
        if failure is None:
            largest = max(
                range(n_sizes),
                key=lambda i: (self.sizes[i].free.cpu_millis, self.sizes[i].free.memory_bytes, -i),
            )
            return largest, 1
        if len(self.last_short) > 1:
            # Several kinds of pods left over: the cheapest nodes of one size covering their
            # summed requests.
            need = (
                sum(self.demands[j].cpu * n for j, n in self.last_short),
                sum(self.demands[j].mem * n for j, n in self.last_short),
                sum(n for _, n in self.last_short),
            )
            options: list[tuple[Decimal, int, int]] = []
            for i in range(n_sizes):
                if not all(self.fits[j][i] for j, _ in self.last_short):
                    continue
                f = self.sizes[i].free
                rooms = (f.cpu_millis, f.memory_bytes, f.pods)
                if any(r <= 0 for r in rooms):
                    continue
                k = max(-(-q // r) for q, r in zip(need, rooms, strict=True))
                options.append((self.sizes[i].offer.monthly_price * k, k, i))
            if options:
                _, k, i = min(options)
                return i, k
        j, left = failure
        fits = self.fits[j]
        whole = [i for i in range(n_sizes) if fits[i] >= left]
        if whole:
            return min(whole, key=lambda i: (self.sizes[i].offer.monthly_price, i)), 1
        best = max(
            (i for i in range(n_sizes) if fits[i] > 0),
            key=lambda i: (
                Decimal(fits[i]) / max(self.sizes[i].offer.monthly_price, Decimal("0.01")),
                -i,
            ),
        )
        return best, -(-left // fits[best])


def _best_pattern(
    items: Sequence[tuple[float, int, int]],
    demands: Sequence[_Demand],
    room: Resources,
    n_d: int,
    enough: float = float("inf"),
) -> tuple[float, tuple[int, ...]]:
    """The pods one node of `room` takes that are worth most: `items` are (value per pod,
    demand index, most pods of it). A depth-first branch and bound over the demands, densest
    (value per share of the node's scarcer resource) first, the largest count first; the bound
    is the best density per resource times the room left. At most PRICING_NODES nodes are
    visited (counted, so the answer is deterministic); the best pattern met is returned."""
    cap_c, cap_m, cap_p = max(room.cpu_millis, 1), max(room.memory_bytes, 1), max(room.pods, 1)

    def density(it: tuple[float, int, int]) -> float:
        d = demands[it[1]]
        return it[0] / max(d.cpu / cap_c, d.mem / cap_m, 1 / cap_p)

    order = sorted(items, key=lambda it: (-density(it), it[1]))
    n = len(order)
    vals = [it[0] for it in order]
    cpu = [demands[it[1]].cpu for it in order]
    mem = [demands[it[1]].mem for it in order]
    ub = [it[2] for it in order]
    inf = float("inf")
    suf_c = [0.0] * (n + 1)
    suf_m = [0.0] * (n + 1)
    suf_p = [0.0] * (n + 1)
    suf_sum = [0.0] * (n + 1)
    for t in range(n - 1, -1, -1):
        suf_c[t] = max(suf_c[t + 1], vals[t] / cpu[t] if cpu[t] else inf)
        suf_m[t] = max(suf_m[t + 1], vals[t] / mem[t] if mem[t] else inf)
        suf_p[t] = max(suf_p[t + 1], vals[t])
        suf_sum[t] = suf_sum[t + 1] + vals[t] * ub[t]

    def rest(t: int, c: int, m: int, p: int) -> float:
        bound = suf_sum[t]
        if suf_c[t] < inf:
            bound = min(bound, c * suf_c[t])
        if suf_m[t] < inf:
            bound = min(bound, m * suf_m[t])
        return min(bound, p * suf_p[t])

    best_val = 0.0
    best: list[int] = [0] * n
    cur = [0] * n
    visited = 0

    def dfs(t: int, c: int, m: int, p: int, v: float) -> None:
        nonlocal best_val, best, visited
        visited += 1
        if v > best_val + 1e-12:
            best_val, best = v, list(cur)
        if t == n or visited >= PRICING_NODES:
            return
        if v + rest(t, c, m, p) <= best_val + 1e-12:
            return
        most = min(ub[t], p, c // cpu[t] if cpu[t] else ub[t], m // mem[t] if mem[t] else ub[t])
        tail = rest(t + 1, c, m, p)
        for a in range(max(most, 0), -1, -1):
            if v + a * vals[t] + tail <= best_val + 1e-12:
                break  # fewer of this kind cannot do better either
            cur[t] = a
            dfs(t + 1, c - a * cpu[t], m - a * mem[t], p - a, v + a * vals[t])
        cur[t] = 0

    # Greedy first (densest kind first, as many as fit): a good incumbent prunes the search,
    # and when it is already worth more than `enough` the search is skipped.
    c, m, p, v = room.cpu_millis, room.memory_bytes, room.pods, 0.0
    for t in range(n):
        a = min(ub[t], p, c // cpu[t] if cpu[t] else ub[t], m // mem[t] if mem[t] else ub[t])
        a = max(a, 0)
        cur[t] = a
        c, m, p, v = c - a * cpu[t], m - a * mem[t], p - a, v + a * vals[t]
    best_val, best = v, list(cur)
    cur = [0] * n
    if best_val <= enough:
        dfs(0, room.cpu_millis, room.memory_bytes, room.pods, 0.0)
    pattern = [0] * n_d
    for t, it in enumerate(order):
        pattern[it[1]] = best[t]
    return best_val, tuple(pattern)


def _round_shares(shares: Sequence[float], total: int) -> list[int]:
    """Non-negative integers summing to `total`, proportional to `shares` (largest
    remainder; ties to the first)."""
    weight = sum(max(v, 0.0) for v in shares)
    if weight <= 0:
        return [0] * len(shares)
    exact = [max(v, 0.0) * total / weight for v in shares]
    out = [math.floor(v) for v in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


# A class of identical nodes: (cpu, memory, pods free, size index, pods per demand) -> count.
Classes = dict[tuple[int, int, int, int, tuple[int, ...]], int]


def _spread(
    classes: Classes, d: _Demand, j: int, count: int, only: int | None, pseudo: int
) -> tuple[Classes, int]:
    """Place up to `count` pods of `d` over the node classes (of size `only`, or all), each
    class in proportion to the room it has for them, largest remainders rounding; within a
    class as evenly as possible. Returns the new classes and how many pods did not fit."""
    keys = sorted(classes, reverse=True)  # roomiest first: rounding ties favour them
    rooms: list[int] = []
    for cpu, mem, pods, s, _ in keys:
        if only is not None and s != only and not (only == pseudo and s >= pseudo):
            rooms.append(0)
            continue
        r = pods
        if d.cpu > 0:
            r = min(r, cpu // d.cpu)
        if d.mem > 0:
            r = min(r, mem // d.mem)
        rooms.append(max(min(r, d.cap) if d.cap else r, 0))
    total = sum(r * classes[k] for r, k in zip(rooms, keys, strict=True))
    if total <= 0:
        return classes, count
    place = min(count, total)
    gives: list[int] = []
    fracs: list[tuple[int, int]] = []
    for i, (r, k) in enumerate(zip(rooms, keys, strict=True)):
        share = r * classes[k] * place
        gives.append(share // total)
        fracs.append((-(share % total), i))
    extra = place - sum(gives)
    for _, i in sorted(fracs):
        if extra <= 0:
            break
        if gives[i] < rooms[i] * classes[keys[i]]:
            gives[i] += 1
            extra -= 1
    updated: Classes = {}
    for k, g in zip(keys, gives, strict=True):
        m = classes[k]
        q, rem = divmod(g, m)
        for per, mult in ((q + 1, rem), (q, m - rem)):
            if mult > 0:
                cpu, mem, pods, s, held = k
                if per:
                    held = (*held[:j], held[j] + per, *held[j + 1 :])
                nk = (cpu - d.cpu * per, mem - d.mem * per, pods - per, s, held)
                updated[nk] = updated.get(nk, 0) + mult
    return updated, count - place


def describe(fleet: Sequence[tuple[str, int]]) -> str:
    """'3 x k8s-8c-16g + 1 x k8s-4c-8g': largest count first, then name."""
    parts = sorted(((n, name) for name, n in fleet if n > 0), key=lambda p: (-p[0], p[1]))
    return " + ".join(f"{n} x {name}" for n, name in parts) or "no nodes"
