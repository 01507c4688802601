"""`vpsie-rebalancer simulate` as a user runs it: a subprocess, kubectl, our client, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.vpsie import VpsieClient
from tests.adapters_vpsie.conftest import InstantClock

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "simulator" / "scenarios" / "small.yaml"
KUBECTL = "/usr/bin/kubectl"


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", "simulate", *args]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    state = tmp_path / "state"
    with subprocess.Popen(
        _command("--scenario", str(SMALL), "--state-dir", str(state), "--speed", "100"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            printed: dict[str, str] = {}
            for line in proc.stdout:
                key, _, value = line.rstrip("\n").partition(": ")
                printed[key] = value
                if key == "ready":
                    break
            assert "ready" in printed, proc.stderr.read() if proc.stderr else ""
            yield proc, printed
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_serves_kubectl_and_the_vpsie_client_then_stops_on_sigterm(
    running: tuple[subprocess.Popen[str], dict[str, str]], tmp_path: Path
) -> None:
    proc, printed = running
    assert printed["kubernetes"].startswith("http://127.0.0.1:")
    assert printed["vpsie"].startswith("http://127.0.0.1:") and printed["vpsie"].endswith(
        "/apps/v2"
    )
    kubeconfig, credentials = Path(printed["kubeconfig"]), Path(printed["vpsie-credentials"])
    assert kubeconfig == tmp_path / "state" / "kubeconfig"
    assert credentials.stat().st_mode & 0o777 == 0o600

    nodes = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert nodes.returncode == 0, nodes.stderr
    assert sorted(nodes.stdout.split()) == [f"node/small-general-000{i}" for i in (1, 2, 3)]

    async def workers() -> list[str]:
        async with VpsieClient.from_file(
            credentials, clock=InstantClock(), rng=random.Random(0)
        ) as client:
            return sorted(w.hostname for w in await client.list_workers(printed["cluster"]))

    # VPSie lists the hostnames in another case than the Node names.

    assert asyncio.run(workers()) == [f"Small-General-000{i}" for i in (1, 2, 3)]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert proc.stdout is not None and "stopped" in proc.stdout.read()


def test_sigint_also_stops_cleanly(running: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    proc, _ = running
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize(
    ("scenario_text", "message"),
    [
        ("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n", "no document with apiVersion"),
        ("a: [\n", "not valid YAML"),
        (
            SMALL.read_text().replace("maxWorkers: 6", "maxWorkers: zero"),
            "document 0 (World): spec.cluster.maxWorkers: expected a whole number",
        ),
        (
            SMALL.read_text().replace("kind: Deployment", "kind: Deploymnet"),
            "Kubernetes manifests: manifest 1 (Deploymnet web): unknown kind",
        ),
        (
            SMALL.read_text().replace("replicas: 3", "replicas: many"),
            "manifest 1 (Deployment web): Deployment: spec.replicas: Invalid value: 'many'",
        ),
    ],
)
def test_a_malformed_scenario_is_one_line_and_exit_2(
    tmp_path: Path, scenario_text: str, message: str
) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(scenario_text)
    done = subprocess.run(
        _command("--scenario", str(scenario), "--state-dir", str(tmp_path / "s")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"vpsie-rebalancer simulate: {scenario}: ")
    assert message in lines[0]


def test_bad_speed_is_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        _command("--scenario", str(SMALL), "--state-dir", str(tmp_path), "--speed", "0"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "vpsie-rebalancer simulate: --speed must be positive, got 0.0",
    )


def test_a_scenario_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_bytes(b"kind: World\n\xff\xfe\n")
    done = subprocess.run(
        _command("--scenario", str(scenario), "--state-dir", str(tmp_path / "s")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"vpsie-rebalancer simulate: {scenario}: not a text file (not UTF-8 at byte 12)"
    ]
