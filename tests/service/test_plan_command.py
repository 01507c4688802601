"""`vpsie-rebalancer plan`: a dry run against the simulator that shows everything and changes
nothing, and clear one-line errors for a bad configuration, an unreachable VPSie and a corrupt
event log. The command runs as a subprocess, as a person would run it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from eventstore import EventStore
from statemachine import events as ev
from tests.crash.rehearsal import REPO, Rehearsal, rehearsal


async def plan(reh: Rehearsal, *args: str, config: Path | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "plan",
        "--config",
        str(config or reh.config_path),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


MUTATING = ("POST eviction", "PATCH nodes", "PUT nodes", "DELETE pods")


async def test_plan_shows_the_decision_and_records_a_dry_run_changing_nothing(
    tmp_path: Path,
) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(strategy="surge")
        code, out, err = await plan(reh)
        after = await reh.reader.picture()
        requests = dict(reh.proxy.witness.requests)
        async with await EventStore.open(reh.db_path) as store:
            streams = await store.streams()
            recorded = [
                ev.decode(r.type, r.schema_version, r.data)
                for stream, _ in streams
                for r in await store.read_stream(stream)
            ]
    assert code == 0, err
    for heading in ("Recommendation:", "Safety checks", "Candidates", "Left out", "Saving:"):
        assert heading in out
    for check in ("cluster_health", "node_group_health", "disruption_budgets", "capacity"):
        assert check in out
    assert "rh-general-0001" in out
    assert "Recorded as plan-" in out and "vpsie-rebalancer audit --db" in out
    assert [type(e).__name__ for e in recorded] == ["PlanProposed", "PlanCancelled"]
    cancelled = recorded[1]
    assert isinstance(cancelled, ev.PlanCancelled) and cancelled.by == "plan"
    assert after.workers.keys() == reh.before.workers.keys()
    assert not any(n.unschedulable for n in after.nodes.values())
    assert not [r for r in requests if r.startswith(MUTATING)], requests


async def test_plan_json_carries_the_plan_and_its_five_checks(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        reh.configure(strategy="rolling")
        code, out, err = await plan(reh, "--json", "--no-record")
        db_exists = reh.db_path.exists()
    assert code == 0, err
    body = json.loads(out)
    group = body["node_groups"][0]
    assert group["node_group"] == "general"
    assert len(group["checks"]) == 5
    assert group["plan"]["plan_id"].startswith("plan-")
    assert group["plan"]["strategy"] == "rolling"
    assert body["api_reachable"] is True
    assert body["recorded"] is False
    if db_exists:
        async with await EventStore.open(reh.db_path) as store:
            assert await store.head() == 0


async def test_plan_errors_are_one_clear_line(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        bad = tmp_path / "bad.toml"
        bad.write_text(reh.config_path.read_text().replace("minNodes", "minNode"))
        bad_code, _, bad_err = await plan(reh, config=bad)

        creds = tmp_path / "nowhere.json"
        creds.write_text('{"base_url": "http://127.0.0.1:1", "auth": "token", "token": "t0ken-x"}')
        creds.chmod(0o600)
        unreachable = tmp_path / "unreachable.toml"
        unreachable.write_text(
            reh.config_path.read_text().replace('"sim/vpsie.json"', f'"{creds}"')
        )
        down_code, _, down_err = await plan(reh, config=unreachable)

        reh.db_path.write_bytes(b"this is not an event log" * 100)
        corrupt_code, _, corrupt_err = await plan(reh)

    assert bad_code == 2
    assert "minNode" in bad_err and str(bad) in bad_err and "minNodes" in bad_err
    assert down_code == 3
    assert "VPSie" in down_err
    assert corrupt_code == 4
    assert str(reh.db_path) in corrupt_err
    for err in (bad_err, down_err, corrupt_err):
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        assert "t0ken-x" not in err


async def _cli(command: str, config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", command, "--config", str(config),
        *(("--once",) if command == "run" else ()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO),
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_a_kubeconfig_that_is_not_yaml_or_is_binary_is_one_line(tmp_path: Path) -> None:
    """As a new user would get it wrong: `plan` and `run` with a kubeconfig that is not YAML,
    or is a binary file. One line naming the file, a non-zero exit, no traceback."""
    async with rehearsal(tmp_path, fork=False) as reh:
        found = []
        for name, content in (("kc.yaml", b"a: [unclosed\n"), ("kc.bin", b"\x00\x01\xff\xfe")):
            kubeconfig = tmp_path / name
            kubeconfig.write_bytes(content)
            kubeconfig.chmod(0o600)
            config = tmp_path / f"{name}.toml"
            config.write_text(
                reh.config_path.read_text().replace('"kubeconfig.proxy"', f'"{kubeconfig}"')
            )
            for command in ("plan", "run"):
                found.append((name, command, *await _cli(command, config)))
    for name, command, code, err in found:
        assert code != 0, (name, command)
        assert "Traceback" not in err, (name, command, err)
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"{command}: ") and name in last, (name, command, err)
        assert ("not YAML" if name == "kc.yaml" else "not UTF-8") in last
