"""Talking to a running daemon's control API: what `status`, `approve`, `reject`, `pause`,
`resume` and `cancel` on the command line do.

The address is `http://HOST:PORT`, `HOST:PORT` or `unix:/path/to.sock`; the bearer token for
mutating calls comes from a file (never argv, never the environment). Both formats are defined
in daemon/control_protocol.py, once, and the server (`daemon.control`) reads them with the
same functions.

Every failure becomes a `ControlClientError` with a sentence for a person ("cannot reach the
daemon at http://127.0.0.1:8470: connection refused") and an exit code; the commands print it
and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from daemon.control_protocol import (
    ACTIONS,
    MAX_REASON,
    PLAN_ID,
    Address,
    parse_address,
    read_token_file,
)

DEFAULT_ADDRESS = "127.0.0.1:8470"  # daemon.config DEFAULT_LISTEN

EXIT_UNREACHABLE = 3
EXIT_REFUSED = 4  # the daemon answered no (unknown plan, wrong state, auth)
EXIT_USAGE = 2


class ControlClientError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ControlClient:
    """A short-lived client of the control API."""

    def __init__(self, address: Address, *, token: str | None = None, timeout_s: float = 10.0):
        self.address = address
        self._token = token
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"ControlClient({self.address})"  # never the token

    async def status(self) -> dict[str, Any]:
        return await self._request("GET", "/v1/status")

    async def act(
        self, plan_id: str, action: str, *, reason: str | None = None, by: str = "cli"
    ) -> dict[str, Any]:
        if action not in ACTIONS:
            raise ControlClientError(f"unknown action {action!r}", EXIT_USAGE)
        if not PLAN_ID.match(plan_id):
            raise ControlClientError(f"not a plan id: {plan_id!r}", EXIT_USAGE)
        if self._token is None:
            raise ControlClientError(
                f"{action} needs the control token: pass --token-file or --config", EXIT_USAGE
            )
        body: dict[str, str] = {"by": by}
        if reason:
            body["reason"] = reason
        return await self._request("POST", f"/v1/plans/{plan_id}/{action}", body)

    async def _request(
        self, method: str, path: str, body: dict[str, str] | None = None
    ) -> dict[str, Any]:
        import aiohttp

        a = self.address
        connector: aiohttp.BaseConnector
        if a.unix_path:
            connector = aiohttp.UnixConnector(path=a.unix_path)
            url = f"http://localhost{path}"
        else:
            connector = aiohttp.TCPConnector()
            url = f"{a}{path}"
        headers = {"Accept": "application/json"}
        if self._token is not None and (method != "GET" or not self.address.private):
            headers["Authorization"] = f"Bearer {self._token}"
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.request(method, url, json=body, headers=headers) as resp,
            ):
                raw = await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            err = exc.os_error
            why = (os.strerror(err.errno) if err.errno else str(err)).lower()
            raise ControlClientError(
                f"cannot reach the daemon at {a}: {why}", EXIT_UNREACHABLE
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise ControlClientError(
                f"cannot reach the daemon at {a}: {why}", EXIT_UNREACHABLE
            ) from None
        import orjson

        try:
            data = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise ControlClientError(
                f"the daemon at {a} answered HTTP {status} with a body that is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise ControlClientError(f"the daemon at {a} answered HTTP {status}: not an object")
        if status >= 400:
            message = str(data.get("error") or f"HTTP {status}")
            raise ControlClientError(f"the daemon refused: {message} (HTTP {status})", EXIT_REFUSED)
        return data


# --- the command-line side, shared by daemon/commands/{status,approve,...}.py ---


def add_control_arguments(parser: argparse.ArgumentParser, *, mutating: bool) -> None:
    parser.add_argument(
        "--control",
        metavar="ADDRESS",
        help=f"the daemon's control API: host:port, http://host:port or unix:/path "
        f"(default: from --config, else {DEFAULT_ADDRESS})",
    )
    parser.add_argument("--config", metavar="FILE", help="read defaults from this config file")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    if mutating:
        parser.add_argument("plan_id", metavar="PLAN_ID")
        parser.add_argument("--reason", default=None, help="recorded in the event log")
        parser.add_argument(
            "--token-file",
            metavar="PATH",
            help="file holding the control token (default: from --config)",
        )


def _config_defaults(path: str | None) -> tuple[str | None, str | None]:
    """(control address, token file) from the config file's `listen` and `token_file`."""
    if not path:
        return None, None
    import importlib

    try:
        config_module = importlib.import_module("daemon.config")
    except ImportError:
        raise ControlClientError(
            "--config is not supported by this build; pass --control and --token-file",
            EXIT_USAGE,
        ) from None
    try:
        cfg = config_module.load_config(Path(path))
    except Exception as exc:  # ConfigError: names the file, every key and what is wrong
        raise ControlClientError(f"{exc}", EXIT_USAGE) from None
    listen = getattr(cfg, "listen", None)
    token_file = getattr(cfg, "token_file", None)
    return (str(listen) if listen else None, str(token_file) if token_file else None)


def client_from_args(args: argparse.Namespace, *, mutating: bool) -> ControlClient:
    cfg_listen, cfg_token_file = _config_defaults(getattr(args, "config", None))
    try:
        address = parse_address(args.control or cfg_listen or DEFAULT_ADDRESS)
    except ValueError as exc:
        raise ControlClientError(str(exc), EXIT_USAGE) from None
    token = None
    # Off loopback the daemon answers even reads only with the token.
    if mutating or not address.private:
        token_file = args.token_file or cfg_token_file
        if token_file is None:
            where = "" if mutating else f" ({address} is not a loopback address)"
            raise ControlClientError(
                f"this command needs the control token{where}: pass --token-file PATH or "
                "--config FILE",
                EXIT_USAGE,
            )
        try:
            token = read_token_file(os.path.expanduser(token_file))
        except ValueError as exc:
            raise ControlClientError(str(exc), EXIT_USAGE) from None
    return ControlClient(address, token=token, timeout_s=args.timeout)


def run_action(args: argparse.Namespace, action: str) -> int:
    """What `vpsie-rebalancer <action> PLAN_ID` does; returns the exit code."""
    try:
        client = client_from_args(args, mutating=True)
        reason = args.reason
        if reason is not None and len(reason) > MAX_REASON:
            raise ControlClientError(f"--reason is longer than {MAX_REASON} characters", EXIT_USAGE)
        result = asyncio.run(client.act(args.plan_id, action, reason=reason))
    except ControlClientError as exc:
        print(f"vpsie-rebalancer {action}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    state = result.get("state", "?")
    print(f"plan {args.plan_id}: {action} accepted; state is now {state}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """What `vpsie-rebalancer status` does; returns the exit code."""
    try:
        client = client_from_args(args, mutating=False)
        result = asyncio.run(client.status())
    except ControlClientError as exc:
        print(f"vpsie-rebalancer status: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from cli.style import use_colour

        sys.stdout.write(format_status(result, colour=use_colour(sys.stdout)))
    return 0


def waiting_line(name: str, group: dict[str, Any]) -> str:
    """One line on what a node group waits for (`waiting` of the status), else its last word."""
    waiting = group.get("waiting") or {}
    last = group.get("last_analysis_at") or ""
    decision = group.get("last_decision") or "not analysed yet"
    if waiting.get("message"):
        line = f"node group {name}: waits for {waiting['message']}"  # the time is in it
        return line + (f"; last analysis {last}: {decision}" if last else "")
    return f"node group {name}: " + (f"last analysis {last}: {decision}" if last else decision)


def repair_lines(repair: dict[str, Any]) -> list[str]:
    """Node repair in `status`: each unhealthy node (since when, the signal, what will happen
    and when), each block with its numbers, or why health could not be looked at."""
    lines: list[str] = []
    if repair.get("problem"):
        lines.append(f"repair: {repair['problem']}")
    for name, group in sorted((repair.get("node_groups") or {}).items()):
        if group.get("blocked") and group.get("unhealthy"):
            lines.append(f"repair blocked in node group {name}: {group['blocked']}")
        for u in group.get("unhealthy") or []:
            lines.append(
                f"unhealthy: node {u.get('node')} ({name}) {u.get('signal')} since "
                f"{u.get('since')}: {u.get('detail')}; {u.get('outlook')}"
            )
    return lines


def format_status(status: dict[str, Any], *, colour: bool = False) -> str:
    """What `status` prints: the daemon's role, what each node group waits for (the next
    analysis, a maintenance window, an approval, a cooldown), then one line per plan in flight.
    """
    from cli.style import paint, state

    daemon = status.get("daemon") or {}
    role = daemon.get("role", "unknown")
    ready = "ready" if daemon.get("ready") else f"not ready ({daemon.get('reason', '?')})"
    lines = [f"daemon: {role}, {ready}"]
    groups = status.get("node_groups") or {}
    for name in sorted(groups):
        lines.append(waiting_line(name, groups[name] or {}))
    plans = status.get("plans") or []
    if not plans:
        lines.append("no plans in flight")
    else:
        rows = [("PLAN", "STATE", "NODE GROUP", "STRATEGY", "DONE")]
        for p in plans:
            done = f"{p.get('replacements_done', '?')}/{p.get('replacements_total', '?')}"
            rows.append(
                (
                    str(p.get("plan_id", "?")),
                    str(p.get("state", "?")),
                    str(p.get("node_group", "")),
                    str(p.get("strategy", "")),
                    done,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for n, r in enumerate(rows):
            cells = [c.ljust(w) for c, w in zip(r, widths, strict=True)]
            if n == 0:
                cells = [paint(c, "bold", enabled=colour) for c in cells]
            else:  # colour after padding, so escape codes do not upset the columns
                cells[1] = state(r[1], enabled=colour) + " " * (widths[1] - len(r[1]))
            lines.append("  ".join(cells).rstrip())
    for q in status.get("quarantined") or []:
        lines.append(
            f"quarantined: plan {q.get('plan_id')} (node group {q.get('node_group') or 'unknown'}"
            f", every group waits) at seq {q.get('seq')}: {q.get('problem')}; after looking: "
            f"vpsie-rebalancer clear-quarantine --config FILE {q.get('plan_id')}"
            if not q.get("node_group")
            else f"quarantined: plan {q.get('plan_id')} (node group {q.get('node_group')}, no "
            f"new plan there) at seq {q.get('seq')}: {q.get('problem')}; after looking: "
            f"vpsie-rebalancer clear-quarantine --config FILE {q.get('plan_id')}"
        )
    for u in status.get("unaccounted_workers") or []:
        if u.get("state") == "found":
            lines.append(
                f"unaccounted worker: {u.get('worker')} ({u.get('hostname')}), added by plan "
                f"{u.get('plan_id')} and used by none: billed; drain and delete it"
            )
        else:
            lines.append(
                f"unaccounted add: plan {u.get('plan_id')} asked VPSie group {u.get('group_id')} "
                f"for a worker at {u.get('since')}; not listed yet ({u.get('state')}"
                + (f": one of {', '.join(u['candidates'])}" if u.get("candidates") else "")
                + "); looked for every minute"
            )
    for n in status.get("leftover_nodes") or []:
        lines.append(
            f"leftover node: {n.get('node')}, whose worker {n.get('worker')} plan "
            f"{n.get('plan_id')} deleted ({n.get('reason')}); not deleted yet: {n.get('state')}"
        )
    lines.extend(repair_lines(status.get("repair") or {}))
    waiting = [p.get("plan_id") for p in plans if p.get("state") == "awaiting_approval"]
    if waiting:
        lines.append(
            paint("awaiting approval: ", "yellow", enabled=colour)
            + ", ".join(str(w) for w in waiting)
            + " (vpsie-rebalancer approve PLAN_ID)"
        )
    return "\n".join(lines) + "\n"
