"""`vpsie-rebalancer run` with crash injection: the daemon the crash suite starts.

    python -m tests.crash.crashing_daemon run --config FILE ...

The same argv and the same code as `vpsie-rebalancer run` (`cli.commands.run.main`), given the
crash injector of tests/crash/injection.py as hooks when `VPSIE_REBALANCER_CRASH_AT` is set: an
observer of every journal and a wrapper around the Cloud and Cluster ports. A malformed value is
refused with one line and exit code 2 before anything starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from cli.commands import run
from cli.main import build_parser
from tests.crash.injection import CrashInjector, crash_point_from_env, watch_world


def main(argv: Sequence[str] | None = None) -> int:
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        parser.error("only `run` can be started with crash injection")
    try:
        point = crash_point_from_env(os.environ)
    except ValueError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 2
    if point is None:
        return run.main(args)
    injector = CrashInjector(point)
    return run.main(args, wrap_world=watch_world(injector), observers=(injector.on_event,))


if __name__ == "__main__":
    sys.exit(main())
