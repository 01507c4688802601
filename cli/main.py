"""The `vpsie-rebalancer` command line.

Each subcommand is a module in `cli.commands` that defines `HELP` (one line),
`add_arguments(parser)` and `main(args) -> int` (the exit code). Modules are found by name, so
adding a command is adding a file; heavy imports belong inside `main`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

import cli.commands


def _command_modules() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(cli.commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        found[info.name.replace("_", "-")] = importlib.import_module(
            f"cli.commands.{info.name}"
        )
    return found


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = argparse.ArgumentParser(
        prog="vpsie-rebalancer",
        description=(
            "Replace Kubernetes worker nodes on VPSie with cheaper sizes, with zero downtime; "
            "every step is recorded in an SQLite event log that survives crashes and serves "
            "as the audit trail."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = _command_modules()
    for name, module in modules.items():
        help_text: str = getattr(module, "HELP", "")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    code: int = modules[args.command].main(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
