"""`vpsie-rebalancer verify-log --db PATH`: check the event log's hash chain and meaning."""

from __future__ import annotations

import argparse

HELP = "check that the event log is intact (hash chain) and that every event still folds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, metavar="PATH", help="the event log (SQLite)")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from cli.audit import AuditError, open_existing, verify_log
    from eventstore import EventStoreError

    async def run() -> int:
        store = await open_existing(args.db)
        try:
            result = await verify_log(store)
        finally:
            await store.close()
        if result.ok:
            print(result.message)
            return 0
        print(f"verify-log: {args.db}: {result.message}", file=sys.stderr)
        return 1

    try:
        return asyncio.run(run())
    except (AuditError, EventStoreError) as exc:
        print(f"verify-log: {exc}", file=sys.stderr)
        return 2
