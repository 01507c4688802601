"""Driving one plan to its end: the plan runner and the steps it runs (see docs/executor.md)."""
