"""The `--db` arguments the log tools share: an SQLite file or a PostgreSQL DSN."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_log_arguments(parser: argparse.ArgumentParser, *, flag: str = "--db") -> None:
    parser.add_argument(
        flag,
        required=True,
        metavar="PATH|DSN",
        dest=flag.lstrip("-").replace("-", "_"),
        help="the event log: an SQLite file, or a postgresql:// DSN (without its password)",
    )
    parser.add_argument(
        f"{flag}-password-file",
        metavar="FILE",
        type=Path,
        dest=f"{flag.lstrip('-').replace('-', '_')}_password_file",
        help="for PostgreSQL: a credentials file holding the password (never on the command line)",
    )
