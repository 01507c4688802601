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
) -> float:
    """`batches` holds, per replacement, whether it adds a new node."""
    c = max(max_concurrent, 1)
    if strategy is Strategy.ROLLING:
        return float(sum(_ceil_div(sum(b), c) * provision_s + len(b) * drain_s for b in batches))
    new = sum(sum(b) for b in batches)
    old = sum(len(b) for b in batches)
    extra = soak_s if strategy is Strategy.BLUE_GREEN else 0.0
    return float(_ceil_div(new, c) * provision_s + extra + old * drain_s)


def rollback_steps(strategy: Strategy) -> tuple[str, ...]:
    """What undoing the plan means, for a person reading it before approving."""
    common_tail = (
        "Uncordon every old node this plan cordoned (annotation "
        "rebalancer.vpsie.com/cordoned-by-plan) and no other.",
        "Delete the VPSie workers this plan added that are not yet serving, and only those.",
        "Old nodes already deleted are not recreated: their pods run on the new nodes, which "
        "stay; the plan ends rolled back with the savings of what actually changed.",
    )
    if strategy is Strategy.ROLLING:
        head: tuple[str, ...] = (
            "Stop before the next batch; finish or abandon the drain of the current one.",
        )
    elif strategy is Strategy.SURGE:
        head = ("Stop provisioning; do not drain any old node whose replacement is not Ready.",)
    else:
        head = (
            "Before the first drain: uncordon all old nodes, then delete all new workers.",
            "After drains began: stop draining, uncordon the old nodes still present.",
        )
    return head + common_tail
