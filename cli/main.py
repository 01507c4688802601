"""The `vpsie-rebalancer` command line.

Each subcommand is a module in `cli.commands` that defines `HELP` (one line),
`add_arguments(parser)` and `main(args) -> int` (the exit code). Modules are found by name, so
adding a command is adding a file; heavy imports belong inside `main`.

`main` is where every command meets the terminal's three accidents, once: a reader that went
away (`| head`: exit 141, nothing on stderr), Ctrl-C (exit 130, one line on stderr) and no
terminal or no stdout at all (output to a closed descriptor is dropped). The exit codes are
the table in docs/cli.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

import cli.commands

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C stopped
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer whose reader went away


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


def _run(argv: Sequence[str] | None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    code: int = modules[args.command].main(args)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _ensure_streams() -> None:
    """Started with stdout or stderr closed (`cmd >&-`), Python has None there: write nowhere."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - lives as long as we do


def main(argv: Sequence[str] | None = None) -> int:
    _ensure_streams()
    try:
        code = _run(argv)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_CLOSED_PIPE
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            print("vpsie-rebalancer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
