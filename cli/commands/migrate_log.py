"""`vpsie-rebalancer migrate-log --from PATH --to postgresql://...`: move the log to PostgreSQL.

Copies every event with its chain into an empty PostgreSQL database, in one transaction,
checking the source as it reads it and the copy's chain against the source's at the end; a
target that already holds events is refused. The source file is opened without creating
anything. Stop the daemon first: events appended to the file during the copy would not be in
it. Exit 0 with the count; 1 when the source is damaged or the copy does not match; 2 when
either log cannot be opened.
"""

from __future__ import annotations

import argparse

from cli.logargs import add_log_arguments

HELP = "copy an SQLite event log, with its hash chain, into an empty PostgreSQL database"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="source", required=True, metavar="PATH", help="the SQLite event log"
    )
    add_log_arguments(parser, flag="--to")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from daemon.audit import AuditError, open_existing
    from daemon.eventlog import open_event_log
    from eventstore import CorruptLogError, EventStoreError, is_postgres
    from eventstore.postgres import PostgresEventStore

    if not is_postgres(args.to):
        print(f"migrate-log: --to must be a postgresql:// DSN, got {args.to!r}", file=sys.stderr)
        return 2
    if is_postgres(args.source):
        print("migrate-log: --from must be an SQLite event log file", file=sys.stderr)
        return 2

    async def run() -> int:
        source = await open_existing(args.source)
        try:
            target = await open_event_log(args.to, args.to_password_file)
            try:
                assert isinstance(target, PostgresEventStore)
                copied = await target.copy_from(
                    source,
                    progress=lambda n: print(f"copied {n} events", file=sys.stderr),
                )
                report = await target.verify()
            finally:
                await target.close()
        finally:
            await source.close()
        if not report.ok:
            print(f"migrate-log: {target.path}: the copy does not verify: {report.problem}")
            return 1
        print(f"copied {copied} events from {args.source} to {target.path}; the copy verifies")
        print(
            "snapshots are not copied (caches of the fold): the first daemon on the new log "
            "folds it from the start once and saves its own"
        )
        return 0

    try:
        return asyncio.run(run())
    except CorruptLogError as exc:
        print(f"migrate-log: nothing copied: {exc}", file=sys.stderr)
        return 1
    except (AuditError, EventStoreError) as exc:
        print(f"migrate-log: nothing copied: {exc}", file=sys.stderr)
        return 2
