"""`vpsie-rebalancer cancel PLAN_ID`: cancel a plan; what it already changed is rolled back."""

from __future__ import annotations

import argparse

HELP = "cancel a plan; what it already changed is rolled back"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cli.control_client import add_control_arguments

    add_control_arguments(parser, mutating=True)


def main(args: argparse.Namespace) -> int:
    from cli.control_client import run_action

    return run_action(args, "cancel")
