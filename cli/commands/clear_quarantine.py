"""`vpsie-rebalancer clear-quarantine --config FILE PLAN_ID`: a person has looked at a
quarantined plan (its log could not be folded); its node group may get plans again.

The plan's events stay in the log and stay skipped by recovery; nothing is done to its nodes.
The clearing, with who and why, is recorded on the log's `quarantine` stream; a running
daemon sees it at its next analysis round.
"""

from __future__ import annotations

import argparse

HELP = "clear the quarantine of a plan whose log could not be folded (after looking at it)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="the configuration file (TOML)"
    )
    parser.add_argument("plan_id", metavar="PLAN_ID", help="the quarantined plan (full id)")
    parser.add_argument("--by", default="", help="who looked (default: the user name)")
    parser.add_argument("--reason", default="", help="what was found, kept in the log")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import getpass
    import sys

    from daemon.config import ConfigError, load_config
    from daemon.eventlog import open_configured_log
    from daemon.service.recovery import clear_quarantine
    from eventstore import EventStoreError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"clear-quarantine: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        store = await open_configured_log(config)
        try:
            await clear_quarantine(
                store, args.plan_id, by=args.by or getpass.getuser(), reason=args.reason
            )
        finally:
            await store.close()

    try:
        asyncio.run(run())
    except LookupError as exc:
        print(f"clear-quarantine: {config.database}: {exc.args[0]}", file=sys.stderr)
        return 1
    except EventStoreError as exc:
        print(f"clear-quarantine: event log {config.database}: {exc}", file=sys.stderr)
        return 1
    print(f"plan {args.plan_id}: quarantine cleared")
    return 0
