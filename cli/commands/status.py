"""`vpsie-rebalancer status`: ask the running daemon what it is doing."""

from __future__ import annotations

import argparse

HELP = "show the running daemon's role and the plans in flight (via its control API)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cli.control_client import add_control_arguments

    add_control_arguments(parser, mutating=False)
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")


def main(args: argparse.Namespace) -> int:
    from cli.control_client import run_status

    return run_status(args)
