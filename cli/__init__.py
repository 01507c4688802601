"""The `vpsie-rebalancer` command line: above the daemon, never imported by it."""
