"""`vpsie-rebalancer reject PLAN_ID`: reject a plan awaiting approval; nothing is touched."""

from __future__ import annotations

import argparse

HELP = "reject a plan that is awaiting approval; it ends without touching the cluster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cli.control_client import add_control_arguments

    add_control_arguments(parser, mutating=True)


def main(args: argparse.Namespace) -> int:
    from cli.control_client import run_action

    return run_action(args, "reject")
