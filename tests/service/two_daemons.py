"""Two daemons on one event log, each seen separately: the fencing tests' (and bench's) setup.

`witnessed_daemon(reh, identity)` writes a configuration of its own for one more daemon (its
own control socket) whose Kubernetes and VPSie requests go through recording proxies of its
own, so that a test can say exactly what *that* daemon asked of the world, and when.
`effects(witness, since)` lists the calls that change the world (lease renewals and Events
are not effects on anything a plan owns).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import yaml

from eventstore import EventStore
from statemachine.fold import FoldState, apply
from tests.crash.kubeproxy import KubeProxy, Witness
from tests.crash.rehearsal import Rehearsal
from tests.service.daemon_process import DaemonProcess


async def leads(daemon: DaemonProcess) -> bool:
    """Whether the daemon says it holds the Lease."""
    return bool((await daemon.status())["leader"])


@dataclass(slots=True)
class Witnessed:
    daemon: DaemonProcess
    config: Path
    socket: Path
    kube: Witness
    vpsie: Witness
    vpsie_proxy: KubeProxy
    kube_proxy: KubeProxy

    def again(self, identity: str) -> DaemonProcess:
        """Another process with the same configuration (a restart after a SIGKILL)."""
        return DaemonProcess(
            self.daemon.reh, identity=identity, config=self.config, socket_path=self.socket
        )

    def mark(self) -> tuple[int, int]:
        return len(self.kube.calls), len(self.vpsie.calls)

    def effects_since(self, mark: tuple[int, int]) -> list[str]:
        return effects(self.kube, mark[0]) + effects(self.vpsie, mark[1])


def effects(witness: Witness, since: int = 0) -> list[str]:
    """The calls after the `since`-th that change nodes, pods or workers."""
    found = []
    for method, path in witness.calls[since:]:
        if "/leases" in path or "/events" in path:
            continue
        if method in ("DELETE", "PUT", "PATCH") or (
            method == "POST" and ("/add/" in path or path.endswith("/eviction"))
        ):
            found.append(f"{method} {path}")
    return found


@asynccontextmanager
async def witnessed_daemon(
    reh: Rehearsal, identity: str, *, home: Path | None = None
) -> AsyncIterator[Witnessed]:
    """`home`: a directory of the daemon's own for its configuration, credentials and control
    socket (a second host: nothing shared with the other daemon but the database and the
    cluster); by default they sit next to the rehearsal's."""
    assert reh.socket is not None
    settings = json.loads((reh.dir / "sim" / "vpsie.json").read_text())
    kube = KubeProxy(reh.sim.kube_url)
    vpsie = KubeProxy(settings["base_url"])
    where = reh.dir if home is None else home
    where.mkdir(exist_ok=True)
    async with kube.serving() as kube_url, vpsie.serving() as vpsie_url:
        kubeconfig = yaml.safe_load(reh.sim.kubeconfig_path.read_text())
        kubeconfig["clusters"][0]["cluster"]["server"] = kube_url
        kubeconfig_path = where / f"kubeconfig.{identity}"
        kubeconfig_path.write_text(yaml.safe_dump(kubeconfig))
        kubeconfig_path.chmod(0o600)
        settings["base_url"] = vpsie_url
        settings_path = where / f"vpsie.{identity}.json"
        settings_path.write_text(json.dumps(settings))
        settings_path.chmod(0o600)
        socket = (
            reh.socket.with_name(f"control-{identity}.sock")
            if home is None
            else home / "control.sock"
        )
        text = (
            reh.config_path.read_text()
            .replace(str(reh.socket), str(socket))
            .replace('kubeconfig = "kubeconfig.proxy"', f'kubeconfig = "{kubeconfig_path.name}"')
            .replace(
                'vpsie_credentials = "sim/vpsie.json"',
                f'vpsie_credentials = "{settings_path.name}"',
            )
        )
        if home is not None:
            token = home / "control.token"
            token.write_bytes((reh.dir / "control.token").read_bytes())
            token.chmod(0o600)
        assert kubeconfig_path.name in text and settings_path.name in text
        config = where / f"config-{identity}.toml"
        config.write_text(text)
        daemon = DaemonProcess(reh, identity=identity, config=config, socket_path=socket)
        yield Witnessed(daemon, config, socket, kube.witness, vpsie.witness, vpsie, kube)


async def killed_in_its_first_add(wa: Witnessed) -> None:
    """Start `wa`'s daemon and SIGKILL it while its first add-worker call is in flight (the
    call reaches VPSie, the answer is lost with the process); return once it has exited."""
    first = wa.daemon
    killed = asyncio.Event()

    def kill_in_add(method: str, path: str) -> None:
        if method == "POST" and "/add/slave" in path and not killed.is_set():
            killed.set()
            first.signal(signal.SIGKILL)

    wa.vpsie_proxy.on_request = kill_in_add
    await first.start()
    await asyncio.wait_for(killed.wait(), 60)
    assert first.proc is not None
    await first.proc.wait()
    wa.vpsie_proxy.on_request = None


async def terms_in_order(db: str | Path) -> list[str]:
    """Events of a leadership term appended after a newer term was taken, named (none is good)."""
    store = await EventStore.open(db)
    problems: list[str] = []
    newest = 0
    try:
        async for recorded in store.read_all():
            if recorded.stream == "$leadership":
                newest = max(newest, recorded.term)
            elif recorded.term and recorded.term < newest:
                problems.append(
                    f"seq {recorded.seq} {recorded.type} of term {recorded.term} after term "
                    f"{newest} was taken"
                )
    finally:
        await store.close()
    return problems


async def leadership_holders(db: str | Path) -> list[str]:
    """Who took each leadership term, in order."""
    store = await EventStore.open(db)
    try:
        holders = [json.loads(r.data)["holder"] for r in await store.read_stream("$leadership")]
    finally:
        await store.close()
    return holders


@dataclass(slots=True)
class TakeoverReport:
    """What `take_over_until_done` did and saw."""

    kills: int = 0
    stalls: int = 0
    cuts: int = 0  # PostgreSQL: times every session of the daemons was ended by the server
    exits: list[str] = field(default_factory=list)  # daemons that did not exit 0 on SIGTERM
    acted_after_losing: list[str] = field(default_factory=list)
    witnesses: list[Witness] = field(default_factory=list)


async def take_over_until_done(
    reh: Rehearsal, rng: random.Random, *, max_rounds: int = 40
) -> TakeoverReport:
    """Two daemons on one log, each behind its own recording proxies. Again and again, after a
    random while, the leader is SIGKILLed (and started again as a standby once the other daemon
    leads) or SIGSTOPped until
    the other daemon leads, then SIGCONTed a random while later; until every plan has ended.
    A continued leader must make no call that changes the world before it leads again.
    With the log on PostgreSQL, a quarter of the rounds first end every session the daemons
    have with the database (a restart or failover of the database, seen from the daemons):
    they must park, connect again and fold the log anew, never die of it."""
    report = TakeoverReport()
    async with witnessed_daemon(reh, "a") as wa, witnessed_daemon(reh, "b") as wb:
        report.witnesses = [wa.kube, wb.kube]
        pair = {"a": wa, "b": wb}
        live = {"a": wa.daemon, "b": wb.daemon}
        starts = {"a": 0, "b": 0}
        continued: dict[str, tuple[int, int]] = {}  # daemon -> witness mark at its SIGCONT
        # Both start together (either may lead first), so that the standby is ready before
        # the leader's plan is far along.
        await live["a"].start()
        await live["b"].start()

        async def one_leads_one_waits() -> bool:
            leading = [await _safe_leads(d) for d in live.values()]
            waiting = [await _standby(d) for d in live.values()]
            return sorted(leading) == [False, True] and sorted(waiting) == [False, True]

        await live["a"].until("one daemon to lead, the other to wait", one_leads_one_waits, 60)
        for _ in range(max_rounds):
            await reh.sim.clock.sleep(rng.uniform(2, 45))
            if await _all_ended(reh.log_target):
                break
            if reh.database is not None and rng.random() < 0.25:
                await _end_sessions(reh.database)
                report.cuts += 1
            leaders = [n for n, d in live.items() if await _safe_leads(d)]
            if len(leaders) != 1:
                continue
            leader = leaders[0]
            other = "b" if leader == "a" else "a"
            successor = live[other]
            for name, mark in continued.items():
                report.acted_after_losing += [
                    f"{name}: {e}" for e in pair[name].effects_since(mark)
                ]
            continued.pop(other, None)
            if rng.random() < 0.4:
                live[leader].signal(signal.SIGKILL)
                proc = live[leader].proc
                assert proc is not None
                await proc.wait()
                report.kills += 1
                starts[leader] += 1
                # The successor takes over first; the dead host comes back afterwards, as a
                # standby (started at once, it could win the Lease back before the successor
                # saw it expire, and no failover would have happened).
                await successor.until(f"{other} to lead", functools.partial(_leads, successor), 60)
                live[leader] = pair[leader].again(f"{leader}{starts[leader]}")
                await live[leader].start()
                # Up (ready, as a standby or leading again) before anything else happens to it:
                # a SIGTERM while Python is still importing is not the daemon's to handle.
                await live[leader].until(
                    f"{leader} to be ready", functools.partial(_ready, live[leader])
                )
            else:
                live[leader].signal(signal.SIGSTOP)
                report.stalls += 1
                await successor.until(f"{other} to lead", functools.partial(_leads, successor), 60)
                await reh.sim.clock.sleep(rng.uniform(0, 30))
                continued[leader] = pair[leader].mark()
                live[leader].signal(signal.SIGCONT)
        for name, mark in continued.items():
            report.acted_after_losing += [f"{name}: {e}" for e in pair[name].effects_since(mark)]
        for daemon in live.values():
            code = await daemon.stop(timeout_s=60)
            if code != 0:
                report.exits.append(f"{daemon.identity} exited {code}: {daemon.log_path}")
    return report


async def _leads(daemon: DaemonProcess) -> bool:
    return bool((await daemon.status())["leader"])


async def _end_sessions(dsn: str) -> None:
    """End every session of the daemons with the database (server side)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'vpsie-rebalancer' AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()


async def _ready(daemon: DaemonProcess) -> bool:
    code, _ = await daemon.call("GET", "/readyz")
    return code == 200


async def _standby(daemon: DaemonProcess) -> bool:
    code, ready = await daemon.call("GET", "/readyz")
    return code == 200 and ready["reason"] == "standby"


async def _safe_leads(daemon: DaemonProcess) -> bool:
    try:
        return await _leads(daemon)
    except (AssertionError, OSError, aiohttp.ClientError, TimeoutError):
        return False


async def _all_ended(db: str | Path) -> bool:
    """Some plan was proposed and every plan has ended."""
    store = await EventStore.open(db)
    try:
        state = FoldState(keep_finished=True)
        async for recorded in store.read_all():
            apply(state, recorded)
    finally:
        await store.close()
    return bool(state.plans) and all(p.terminal for p in state.plans.values())
