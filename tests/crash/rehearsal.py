"""A rehearsal: a simulated world, a witness in front of it, and the real daemon run against it.

Shared by the crash suite, the fault suite and the benchmarks (bench/crash.py,
bench/execute.py). `rehearsal(...)` starts the simulator in this process at a high speed, puts
the recording `KubeProxy` between the daemon and the Kubernetes API, writes the daemon's
configuration, and samples the world while the daemon works (`Sampler`): Ready nodes, VPSie
workers ever seen, pods that vanished without an eviction. `Rehearsal.run_daemon()` starts
`vpsie-rebalancer run --once` as a subprocess on the simulator's timeline (`--time-scale`,
`--time-origin`), optionally with `VPSIE_REBALANCER_CRASH_AT` so that it SIGKILLs itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from simulator.scenario import parse_scenario
from simulator.serve import RunningSimulator, start_simulator
from tests.crash.injection import CRASH_ENV
from tests.crash.kubeproxy import KubeProxy

REPO = Path(__file__).resolve().parents[2]
DC = "7d3e5f00-1c2b-4a6d-8e9f-0a1b2c3d4e5f"
CLUSTER = "c0ffee00-1234-4abc-9def-000000000001"


def scenario_text(
    *,
    workers: int = 4,
    size_id: int = 302,
    max_workers: int = 12,
    boot_delay_s: int = 60,
    web_replicas: int = 4,
    web_min_available: int | str | None = None,
    api_replicas: int = 3,
    api_max_unavailable: int | str = 1,
    faults: str = "",
) -> str:
    """A small world: `workers` nodes of 4 vCPU / 8 GB running two Deployments with PDBs."""
    price = {301: "24.00", 302: "48.00", 303: "96.00"}
    sizes = "\n".join(
        f"    - {{id: {sid}, name: {name}, cpu: {cpu}, ramMB: {ram}, diskGB: 80, "
        f'prices: {{{DC}: {{monthly: "{price[sid]}", hourly: "0.05"}}}}}}'
        for sid, name, cpu, ram in (
            (301, "k8s-2c-4g", 2, 4096),
            (302, "k8s-4c-8g", 4, 8192),
            (303, "k8s-8c-16g", 8, 16384),
        )
    )
    return f"""\
apiVersion: sim.vpsie-rebalancer.io/v1
kind: World
metadata:
  name: rehearsal
spec:
  datacenters:
    - identifier: {DC}
      name: Rehearsal 1
      country: CA
  sizes:
{sizes}
  cluster:
    identifier: {CLUSTER}
    name: rh
    datacenter: {DC}
    maxWorkers: {max_workers}
  nodeGroups:
    - {{name: general, sizeId: {size_id}, workers: {workers}}}
  bootDelaySeconds: {boot_delay_s}
  podStartDelaySeconds: 5
  pageSize: 3
  auth:
    clientId: rehearsal-client
    clientSecret: rehearsal-secret-5c1d7e
{faults}
---
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  replicas: {web_replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          resources: {{requests: {{cpu: 250m, memory: 256Mi}}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web, namespace: shop}}
spec:
  minAvailable: {web_min_available if web_min_available is not None else max(1, web_replicas - 1)}
  selector: {{matchLabels: {{app: web}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api, namespace: shop}}
spec:
  replicas: {api_replicas}
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers:
        - name: api
          image: api:1
          resources: {{requests: {{cpu: 300m, memory: 384Mi}}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: api, namespace: shop}}
spec:
  maxUnavailable: {api_max_unavailable}
  selector: {{matchLabels: {{app: api}}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: node-agent, namespace: kube-system}}
spec:
  selector: {{matchLabels: {{app: node-agent}}}}
  template:
    metadata: {{labels: {{app: node-agent}}}}
    spec:
      tolerations: [{{operator: Exists}}]
      containers:
        - name: agent
          image: agent:1
          resources: {{requests: {{cpu: 50m, memory: 64Mi}}}}
"""


def config_text(
    *,
    strategy: str = "rolling",
    min_nodes: int = 2,
    min_healthy_percent: int = 50,
    max_concurrent: int = 1,
    batch_size: int = 1,
    drain_timeout: str = "180s",
    provision_timeout: str = "400s",
    soak: str = "30s",
    require_approval: bool = False,
    listen: str = "unix:control.sock",
    snapshot_interval: str = "10m",
    extra: str = "",
) -> str:
    return f"""\
cluster = "{CLUSTER}"
kubeconfig = "kubeconfig.proxy"
vpsie_credentials = "sim/vpsie.json"
database = "events.db"
listen = "{listen}"
token_file = "control.token"
snapshot_interval = "{snapshot_interval}"
analysis_interval = "10m"

[[node_groups]]
name = "general"
strategy = "{strategy}"
maxConcurrent = {max_concurrent}
batchSize = {batch_size}
drainTimeout = "{drain_timeout}"
provisionTimeout = "{provision_timeout}"
cooldownPeriod = "24h"
requireApproval = {"true" if require_approval else "false"}
minHealthyPercent = {min_healthy_percent}
minNodes = {min_nodes}
soakTime = "{soak}"
{extra}
"""


# --- the world as seen from outside ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Worker:
    identifier: str
    hostname: str
    group_id: int
    size_id: int
    monthly: Decimal
    status: str


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str
    ready: bool
    unschedulable: bool
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True)
class Picture:
    """The world at one instant, read through the public APIs (and the VPSie account)."""

    workers: dict[str, Worker]
    nodes: dict[str, NodeView]
    deployments: dict[str, tuple[int, int]]  # "ns/name" -> (ready replicas, replicas)

    def monthly_cost(self) -> Decimal:
        return sum((w.monthly for w in self.workers.values()), Decimal(0))


@dataclass(slots=True)
class Sampler:
    """Samples the world every `interval_s` real seconds while the daemon works."""

    reader: WorldReader
    interval_s: float = 0.02
    samples: int = 0
    min_ready: int | None = None
    min_ready_percent: float | None = None
    lowest_at: str = ""
    workers_seen: set[str] = field(default_factory=set)
    lost_pods: list[str] = field(default_factory=list)
    _pods: dict[str, tuple[str, str, bool]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)

    async def sample(self) -> None:
        nodes, pods = await asyncio.gather(self.reader.nodes(), self.reader.pods())
        self.workers_seen |= set(self.reader.workers())
        self.samples += 1
        ready = sum(1 for n in nodes.values() if n.ready)
        percent = 100.0 * ready / len(nodes) if nodes else 100.0
        if self.min_ready is None or ready < self.min_ready:
            self.min_ready = ready
            self.lowest_at = f"{ready}/{len(nodes)} Ready"
        if self.min_ready_percent is None or percent < self.min_ready_percent:
            self.min_ready_percent = percent
        current: dict[str, tuple[str, str, bool]] = {}
        for pod in pods:
            meta = pod["metadata"]
            owners = meta.get("ownerReferences") or []
            if any(o.get("kind") == "DaemonSet" for o in owners):
                continue
            node = pod.get("spec", {}).get("nodeName", "")
            if not node:
                continue
            current[meta["uid"]] = (
                f"{meta['namespace']}/{meta['name']}",
                node,
                "deletionTimestamp" in meta,
            )
        for uid, (name, node, deleting) in self._pods.items():
            if uid not in current and not deleting and node not in nodes:
                self.lost_pods.append(f"{name} vanished with node {node} without an eviction")
        self._pods = current

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class WorldReader:
    """Reads the simulated world: Kubernetes over its HTTP API, VPSie from its account."""

    def __init__(self, sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self._session = session
        kubeconfig = yaml.safe_load(sim.kubeconfig_path.read_text())
        self._token = kubeconfig["users"][0]["user"]["token"]

    async def get(self, path: str) -> Any:
        """GET a Kubernetes API path, the decoded JSON."""
        async with self._session.get(
            self.sim.kube_url + path, headers={"Authorization": f"Bearer {self._token}"}
        ) as resp:
            return orjson.loads(await resp.read())

    async def nodes(self) -> dict[str, NodeView]:
        body = await self.get("/api/v1/nodes")
        out: dict[str, NodeView] = {}
        for node in body.get("items", []):
            conds = node.get("status", {}).get("conditions") or []
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
            meta = node["metadata"]
            out[meta["name"]] = NodeView(
                name=meta["name"],
                ready=ready,
                unschedulable=bool(node.get("spec", {}).get("unschedulable")),
                annotations=dict(meta.get("annotations") or {}),
            )
        return out

    async def pods(self) -> list[dict[str, Any]]:
        body = await self.get("/api/v1/pods")
        items: list[dict[str, Any]] = body.get("items", [])
        return items

    async def deployments(self) -> dict[str, tuple[int, int]]:
        body = await self.get("/apis/apps/v1/deployments")
        out: dict[str, tuple[int, int]] = {}
        for dep in body.get("items", []):
            meta = dep["metadata"]
            out[f"{meta['namespace']}/{meta['name']}"] = (
                int(dep.get("status", {}).get("readyReplicas", 0)),
                int(dep.get("spec", {}).get("replicas", 1)),
            )
        return out

    def workers(self) -> dict[str, Worker]:
        vpsie = self.sim.vpsie
        dc = vpsie.cluster.datacenter
        out: dict[str, Worker] = {}
        for w in vpsie.workers:
            size = vpsie.size(vpsie.group(w.group_id).size_id)
            out[w.identifier] = Worker(
                identifier=w.identifier,
                hostname=w.hostname,
                group_id=w.group_id,
                size_id=size.id,
                monthly=size.prices[dc].monthly,
                status=w.status,
            )
        return out

    async def picture(self) -> Picture:
        nodes, deployments = await asyncio.gather(self.nodes(), self.deployments())
        return Picture(workers=self.workers(), nodes=nodes, deployments=deployments)


# --- the daemon ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonRun:
    crash_at: str | None
    returncode: int
    stdout: str
    log_path: Path
    real_s: float

    @property
    def killed(self) -> bool:
        return self.returncode == -9

    def report(self) -> dict[str, Any] | None:
        """The JSON report a `--once` run prints last on stdout, if it got that far."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                value: dict[str, Any] = orjson.loads(line)
                return value
        return None


@dataclass(slots=True)
class Rehearsal:
    sim: RunningSimulator
    proxy: KubeProxy
    reader: WorldReader
    sampler: Sampler
    dir: Path
    speed: float
    origin: float
    before: Picture
    runs: list[DaemonRun] = field(default_factory=list)
    socket: Path | None = None
    zygote: Zygote | None = None
    lease_s: int = 60  # at 100x, 0.6 s real: a renewal survives a busy moment
    # A PostgreSQL DSN (its own schema) when the log lives there; None: events.db (SQLite).
    database: str | None = None

    @property
    def config_path(self) -> Path:
        return self.dir / "config.toml"

    @property
    def db_path(self) -> Path:
        return self.dir / "events.db"

    @property
    def log_target(self) -> str | Path:
        """Where the daemons' event log is: the PostgreSQL DSN, or the SQLite file."""
        return self.database if self.database is not None else self.db_path

    def write_config(self, text: str) -> None:
        if self.database is not None:
            plain = 'database = "events.db"'
            assert plain in text, "a configuration naming its own database"
            text = text.replace(plain, f'database = "{self.database}"')
        self.config_path.write_text(text)

    def configure(self, **policy: Any) -> None:
        """Write the daemon's configuration with `config_text(**policy)`."""
        self.write_config(config_text(listen=f"unix:{self.socket}", **policy))

    def daemon_argv(self, *extra: str) -> list[str]:
        return [
            "run",
            "--config",
            str(self.config_path),
            "--once",
            "--time-scale",
            f"{self.speed:g}",
            "--time-origin",
            f"{self.origin:.6f}",
            "--lease-duration",
            str(self.lease_s),
            "--poll-interval",
            "2",
            "--identity",
            "rehearsal-daemon",
            *extra,
        ]

    async def run_daemon(
        self,
        *,
        crash_at: str | None = None,
        timeout_s: float = 90.0,
        extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> DaemonRun:
        """One `run --once` to its end (or its self-inflicted SIGKILL)."""
        index = len(self.runs)
        log_path = self.dir / f"daemon-{index:03d}.log"
        out_path = self.dir / f"daemon-{index:03d}.out"
        environ = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        environ.pop("NOTIFY_SOCKET", None)
        if crash_at is not None:
            environ[CRASH_ENV] = crash_at
        if env:
            environ.update(env)
        argv = self.daemon_argv(*extra_args)
        started = time.perf_counter()
        if self.zygote is not None:
            code = await self.zygote.run(argv, environ, out_path, log_path, timeout_s)
        else:
            code = await _subprocess(argv, environ, out_path, log_path, timeout_s)
        run = DaemonRun(
            crash_at=crash_at,
            returncode=code,
            stdout=out_path.read_text(),
            log_path=log_path,
            real_s=time.perf_counter() - started,
        )
        self.runs.append(run)
        return run

    async def settle(self, sim_seconds: float = 30.0) -> None:
        """Let the world's controllers catch up (pods start, PDB status refreshes)."""
        await self.sim.clock.sleep(sim_seconds)


async def _subprocess(
    argv: list[str], env: Mapping[str, str], out: Path, err: Path, timeout_s: float
) -> int:
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.crash.crashing_daemon",
            *argv,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=str(REPO),
        )
        try:
            return await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"the daemon did not finish within {timeout_s} s: {err}") from None


class Zygote:
    """Client of tests/crash/zygote.py: forks daemons from a pre-loaded interpreter."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._child: int | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.crash.zygote",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(REPO),
        )
        await self._line(60.0)

    async def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        raw = await asyncio.wait_for(self._proc.stdout.readline(), timeout_s)
        if not raw:
            raise AssertionError("the zygote died")
        value: dict[str, Any] = orjson.loads(raw)
        return value

    async def run(
        self, argv: list[str], env: Mapping[str, str], out: Path, err: Path, timeout_s: float
    ) -> int:
        assert self._proc is not None and self._proc.stdin is not None
        request = {"argv": argv, "env": dict(env), "stdout": str(out), "stderr": str(err)}
        self._proc.stdin.write(orjson.dumps(request) + b"\n")
        await self._proc.stdin.drain()
        pid = int((await self._line(30.0))["pid"])
        self._child = pid
        try:
            done = await self._line(timeout_s)
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            await self._line(30.0)
            raise AssertionError(f"the daemon did not finish within {timeout_s} s: {err}") from None
        finally:
            self._child = None
        return int(done["returncode"])

    async def close(self) -> None:
        if self._child is not None:  # a test ended while a daemon ran: it must not outlive it
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._child, signal.SIGKILL)
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        self._proc = None


def time_origin(sim: RunningSimulator) -> float:
    """The real Unix time at which the simulator's clock equals real time (its anchor)."""
    speed = sim.clock.speed
    if speed == 1:
        return time.time()
    real, simulated = time.time(), sim.clock.now()
    return (real * speed - simulated) / (speed - 1)


def _mkdir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)


@asynccontextmanager
async def rehearsal(
    directory: Path,
    *,
    scenario: str | None = None,
    config: str | None = None,
    speed: float = 100.0,
    seed: int = 0,
    sample_interval_s: float = 0.02,
    fork: bool = True,
    database: str | None = None,
) -> AsyncIterator[Rehearsal]:
    """A world to rehearse in; `fork` starts daemons from a pre-loaded zygote (fast);
    `database`: a PostgreSQL DSN for the daemons' event log instead of events.db."""
    _mkdir(directory)
    loaded = parse_scenario(scenario or scenario_text(), source="rehearsal.yaml")
    async with (
        start_simulator(loaded, speed=speed, state_dir=directory / "sim", seed=seed) as sim,
        aiohttp.ClientSession() as session,
    ):
        proxy = KubeProxy(sim.kube_url)
        async with proxy.serving() as proxy_url:
            kubeconfig = yaml.safe_load(sim.kubeconfig_path.read_text())
            kubeconfig["clusters"][0]["cluster"]["server"] = proxy_url
            proxied = directory / "kubeconfig.proxy"
            proxied.write_text(yaml.safe_dump(kubeconfig))
            proxied.chmod(0o600)
            token = directory / "control.token"
            token.write_text("rehearsal-control-token-7f3a9\n")
            token.chmod(0o600)
            reader = WorldReader(sim, session)
            await sim.clock.sleep(15)  # pods start, PDBs report what they allow
            before = await reader.picture()
            sampler = Sampler(reader, interval_s=sample_interval_s)
            reh = Rehearsal(
                sim=sim,
                proxy=proxy,
                reader=reader,
                sampler=sampler,
                dir=directory,
                speed=speed,
                origin=time_origin(sim),
                before=before,
                database=database,
            )
            socket_dir = Path(tempfile.mkdtemp(prefix="vr-"))
            reh.socket = socket_dir / "control.sock"
            reh.write_config(config or config_text(listen=f"unix:{reh.socket}"))
            if fork:
                reh.zygote = Zygote()
                await reh.zygote.start()
            sampler.start()
            try:
                yield reh
            finally:
                await sampler.stop()
                if reh.zygote is not None:
                    await reh.zygote.close()
                shutil.rmtree(socket_dir, ignore_errors=True)
