"""The three strategies: how replacements are grouped into batches, how long that takes, and
how to undo it.

- rolling: batches of `batch_size`; within a batch at most `max_concurrent` new nodes are
  provisioned at once; each old node is drained only once its replacement is Ready.
- surge: every new node is provisioned first (`max_concurrent` at a time); then the old nodes
  are drained in batches of `batch_size`. No old node is drained before its replacement is Ready.
- blue-green: one batch: all new nodes, cordon every old node, serve for `soak_s`, then drain
  and delete the old; until the first drain, completing or rolling back are both one step.

Estimated duration (seconds), with P = provision estimate, D = drain estimate, c = max
concurrent, n_b = new nodes in batch b, m_b = old nodes in batch b. Drains are counted one
node after another, an upper bound: the executor runs up to c of them at once.
  rolling:    sum over batches of ceil(n_b / c) * P + m_b * D
  surge:      ceil(N / c) * P + M * D
  blue-green: ceil(N / c) * P + soak + M * D
"""

from __future__ import annotations

from collections.abc import Sequence

from statemachine.plan import Strategy


def make_batches(count: int, strategy: Strategy, batch_size: int) -> list[list[int]]:
    """Indices 0..count-1 (already in priority order) grouped into batches."""
    if count == 0:
        return []
    if strategy is Strategy.BLUE_GREEN:
        return [list(range(count))]
    size = max(batch_size, 1)
    return [list(range(i, min(i + size, count))) for i in range(0, count, size)]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def estimate_duration(
    batches: Sequence[Sequence[bool]],
    strategy: Strategy,
    *,
    max_concurrent: int,
    provision_s: float,
    drain_s: float,
    soak_s: float,
    olds: Sequence[int] | None = None,
) -> float:
    """`batches` holds, per replacement, whether it adds a new node; `olds`, per batch, how
    many old nodes it drains (default: one per replacement; an add-only one drains none)."""
    c = max(max_concurrent, 1)
    drains = list(olds) if olds is not None else [len(b) for b in batches]
    if strategy is Strategy.ROLLING:
        return float(
            sum(
                _ceil_div(sum(b), c) * provision_s + m * drain_s
                for b, m in zip(batches, drains, strict=True)
            )
        )
    new = sum(sum(b) for b in batches)
    old = sum(drains)
    extra = soak_s if strategy is Strategy.BLUE_GREEN else 0.0
    return float(_ceil_div(new, c) * provision_s + extra + old * drain_s)


def rollback_steps(strategy: Strategy) -> tuple[str, ...]:
    """What undoing the plan means, for a person reading it before approving: the steps the
    executor's rollback (daemon/executor/rollback.py) really takes, in its order."""
    if strategy is Strategy.ROLLING:
        head: tuple[str, ...] = (
            "Stop every replacement in flight at its next safe point; later batches never "
            "start; replacements already done stay done.",
        )
    elif strategy is Strategy.SURGE:
        head = (
            "Stop at the next safe point: no old node is drained once a new node failed to "
            "become Ready; replacements already done stay done.",
        )
    else:
        head = (
            "Stop at the next safe point; the old nodes cordoned for the soak are uncordoned "
            "below; replacements already done stay done.",
        )
    steps = (
        "First settle every call left in flight by asking the live world what happened.",
        "A replacement whose old node is drained and whose pods were confirmed running on "
        "its new node is not undone: its old worker is deleted (retried; left to a person if "
        "VPSie keeps refusing) and its new node stays.",
        "For each other replacement, in plan order: uncordon its old node if it carries this "
        "plan's mark (annotation rebalancer.vpsie.com/cordoned-by-plan), compare-and-set, and "
        "no other node;",
        "then, if it added a VPSie worker: cordon that worker's node, evict its pods through "
        "the Eviction API (PodDisruptionBudgets honoured), and delete that worker, and only "
        "workers this plan added.",
        "A step that cannot finish within the rollback timeout ends the plan failed, naming "
        "what is left (node still cordoned, worker still there) for a person.",
    )
    return head + steps
