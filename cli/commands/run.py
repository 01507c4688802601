"""`vpsie-rebalancer run --config FILE`: the daemon (what the systemd unit starts).

Logs are JSON lines on stderr (journald keeps them). Exit codes: 0 after a clean stop
(SIGTERM/SIGINT, or `--once` done), 2 for an unusable configuration, 1 when something the
daemon needs cannot be opened (event log, credentials, kubeconfig, control address); the
message names what and where, never a traceback.

Hidden options for rehearsals and tests (docs/running.md): `--time-scale X` runs the daemon's
clock X times faster (match the simulator's `--speed`), `--time-origin T` anchors it so that
restarted daemons share one timeline, `--once` does one analysis round per node group, runs
what results to an end, prints a JSON report of the plans on stdout and exits; `--progress`
prints one line per state change on stdout.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.executor.journal import Subscriber
    from daemon.service.lifecycle import Service
    from daemon.service.state import WorldWrapper

HELP = "run the rebalancer daemon (recover, take the lease, analyse, plan, execute)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="the configuration file (TOML)"
    )
    parser.add_argument(
        "--progress", action="store_true", help="print one line per state change on stdout"
    )
    parser.add_argument("--log-level", default="INFO", help="log level (default INFO)")
    hidden = argparse.SUPPRESS
    parser.add_argument("--once", action="store_true", help=hidden)
    parser.add_argument("--time-scale", type=float, default=None, help=hidden)
    parser.add_argument("--time-origin", type=float, default=None, help=hidden)
    parser.add_argument("--lease-duration", type=int, default=15, help=hidden)
    parser.add_argument("--poll-interval", type=float, default=5.0, help=hidden)
    # A fixed lease identity lets a restarted daemon take its own lease back at once; only
    # for rehearsals where a single daemon runs (two daemons sharing it would both lead).
    parser.add_argument("--identity", default=None, help=hidden)


def main(
    args: argparse.Namespace,
    *,
    wrap_world: WorldWrapper | None = None,
    observers: Sequence[Subscriber] = (),
) -> int:
    """`run`; `wrap_world` and `observers` are hooks for rehearsals (the crash suite's)."""
    import signal

    # SIGTERM at any moment means "stop cleanly": before the service's own handlers are in
    # place (start-up) and after they are gone (writing the report), it is caught here and
    # handed to the service, so the process ends by returning, never by the signal (exit 0).
    services: list[Service] = []
    early: list[int] = []

    def stop_requested(signum: int, frame: object) -> None:
        if services:
            services[0].request_stop()
        else:
            early.append(signum)

    signal.signal(signal.SIGTERM, stop_requested)

    import asyncio
    import logging
    import sys
    import time

    import orjson

    from adapters.errors import AdapterError
    from adapters.kubernetes import kubeconfig_secrets
    from adapters.systemd_notify import Notifier
    from adapters.vpsie.settings import SettingsError, VpsieSettings
    from cli.progress import ProgressPrinter
    from daemon.clock import ScaledClock, SystemClock
    from daemon.config import ConfigError, load_config
    from daemon.control_protocol import read_token_file
    from daemon.jsonlog import MIN_SECRET_LEN, configure_logging
    from daemon.ports import Clock
    from daemon.service.lifecycle import Service
    from daemon.service.recovery import RecoveryError
    from eventstore import EventStoreError

    log = logging.getLogger("daemon.run")

    def fail(message: str, code: int) -> int:
        log.error(message)
        print(f"run: {message}", file=sys.stderr)
        return code

    try:
        level = logging.getLevelName(args.log_level.upper())
        if not isinstance(level, int):
            raise ValueError(f"unknown log level {args.log_level!r}")
        redaction = configure_logging(level)
    except ValueError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        notifier = Notifier()
        if args.time_scale is not None and args.time_scale <= 0:
            raise ValueError(f"--time-scale must be positive, got {args.time_scale}")
    except ConfigError as exc:
        return fail(str(exc), 2)
    except ValueError as exc:
        return fail(str(exc), 2)
    try:
        for secret in VpsieSettings.from_file(config.vpsie_credentials).secrets():
            redaction.register(secret)
        if config.token_file is not None:
            redaction.register(read_token_file(config.token_file))
        for secret in kubeconfig_secrets(str(config.kubeconfig)):
            if len(secret) >= MIN_SECRET_LEN:
                redaction.register(secret)
    except (SettingsError, ValueError, OSError, AdapterError) as exc:
        return fail(str(exc), 1)

    clock: Clock
    if args.time_scale is None or args.time_scale == 1:
        clock = SystemClock()
    else:
        speed = args.time_scale
        origin = args.time_origin if args.time_origin is not None else time.time()
        clock = ScaledClock(speed, start=origin + (time.time() - origin) * speed)
    if args.progress:
        observers = (*observers, ProgressPrinter(clock).on_event)
    service = Service(
        config,
        config_path=config.source,
        clock=clock,
        once=args.once,
        wrap_world=wrap_world,
        observers=observers,
        notifier=notifier,
        identity=args.identity,
        lease_duration_s=args.lease_duration,
        poll_interval_s=args.poll_interval,
    )
    services.append(service)
    if early:
        service.request_stop()
    try:
        code = asyncio.run(service.run())
    except BrokenPipeError:
        raise  # the reader of stdout went away: cli.main ends quietly
    except (EventStoreError, RecoveryError) as exc:
        return fail(f"event log {config.database}: {exc}", 1)
    except (AdapterError, SettingsError, OSError, ValueError) as exc:
        # ValueError: the control token file is readable by others (refused at start).
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    if args.once:
        sys.stdout.write(orjson.dumps(service.report()).decode() + "\n")
        sys.stdout.flush()
    # Ignored, not handled, from here on: the interpreter resets Python-level handlers to the
    # default action while it shuts down, and a SIGTERM then would end the process by signal.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code
