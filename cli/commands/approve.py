"""`vpsie-rebalancer approve PLAN_ID`: approve a plan that is awaiting approval, so it starts."""

from __future__ import annotations

import argparse

HELP = "approve a plan that is awaiting approval, so it starts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cli.control_client import add_control_arguments

    add_control_arguments(parser, mutating=True)


def main(args: argparse.Namespace) -> int:
    from cli.control_client import run_action

    return run_action(args, "approve")
