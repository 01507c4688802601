"""The long-running daemon around the executor: `vpsie-rebalancer run` (see docs/running.md)."""
