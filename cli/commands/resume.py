"""`vpsie-rebalancer resume PLAN_ID`: resume a paused plan."""

from __future__ import annotations

import argparse

HELP = "resume a paused plan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cli.control_client import add_control_arguments

    add_control_arguments(parser, mutating=True)


def main(args: argparse.Namespace) -> int:
    from cli.control_client import run_action

    return run_action(args, "resume")
