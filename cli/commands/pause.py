"""`vpsie-rebalancer pause PLAN_ID`: pause an executing plan after the step in progress."""

from __future__ import annotations

import argparse

HELP = "pause an executing plan after the step in progress"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cli.control_client import add_control_arguments

    add_control_arguments(parser, mutating=True)


def main(args: argparse.Namespace) -> int:
    from cli.control_client import run_action

    return run_action(args, "pause")
