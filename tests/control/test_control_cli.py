"""The status/approve/... commands against a running control API; exit codes and messages."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest

from cli.main import main

from .conftest import Running


async def _cli(*argv: str) -> int:
    # The commands run their own event loop (asyncio.run), so they go to a thread.
    return await asyncio.to_thread(main, list(argv))


async def test_status_table_and_json(running: Running, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _cli("status", "--control", str(running.address)) == 0
    out = capsys.readouterr().out
    assert "daemon: leader, ready" in out
    assert "p-wait  awaiting_approval" in out
    assert "awaiting approval: p-wait" in out
    assert await _cli("status", "--control", str(running.address), "--json") == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["leader"] is True and len(data["plans"]) == 2


async def test_approve_then_approve_again(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--control", str(running.address), "--token-file", str(running.token_file))
    assert await _cli("approve", "p-wait", "--reason", "ok by ops", *common) == 0
    assert "state is now approved" in capsys.readouterr().out
    assert running.target.calls == [("approve", "p-wait", "cli", "ok by ops")]
    assert await _cli("approve", "p-wait", *common) == 4
    err = capsys.readouterr().err
    assert "p-wait is approved; cannot approve it (HTTP 409)" in err


async def test_each_action_reaches_the_target(running: Running) -> None:
    common = ("--control", str(running.address), "--token-file", str(running.token_file))
    for action in ("pause", "resume", "cancel"):
        assert await _cli(action, "p-run", *common) == 0
    assert await _cli("reject", "p-wait", *common) == 0
    assert [c[0] for c in running.target.calls] == ["pause", "resume", "cancel", "reject"]


async def test_wrong_token_file(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("w" * 40)
    code = await _cli(
        "cancel", "p-run", "--control", str(running.address), "--token-file", str(wrong)
    )
    assert code == 4
    assert "wrong token (HTTP 403)" in capsys.readouterr().err
    assert running.target.calls == []


async def test_usage_errors(running: Running, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _cli("approve", "p-wait", "--control", str(running.address)) == 2
    assert "--token-file" in capsys.readouterr().err
    assert await _cli("status", "--control", "nowhere") == 2
    assert "control address 'nowhere'" in capsys.readouterr().err


async def test_daemon_not_running_in_a_subprocess(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "status",
        "--control",
        f"unix:{tmp_path}/none.sock",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 3
    assert out == b""
    assert err.decode().strip() == (
        f"vpsie-rebalancer status: cannot reach the daemon at unix:{tmp_path}/none.sock: "
        "no such file or directory"
    )


async def test_defaults_come_from_the_config_file(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'cluster = "k8s-1"\n'
        f'kubeconfig = "kubeconfig"\n'
        f'vpsie_credentials = "vpsie.json"\n'
        f'listen = "{running.address.host}:{running.address.port}"\n'
        f'token_file = "{running.token_file}"\n'
        f'[[node_groups]]\nname = "web"\n'
    )
    assert await _cli("approve", "p-wait", "--config", str(config)) == 0
    assert running.target.calls == [("approve", "p-wait", "cli", "")]
    assert await _cli("status", "--config", str(tmp_path / "absent.toml")) == 2
    assert "absent.toml: file not found" in capsys.readouterr().err
