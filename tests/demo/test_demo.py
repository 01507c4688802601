"""`vpsie-rebalancer demo` end to end, as a person runs it: a whole rebalance of the simulated
cluster, no pod lost, and the audit command it prints works."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def test_demo_rebalances_loses_no_pod_and_points_at_its_audit(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    demo = cli("demo", "--speed", "200", "--state-dir", str(state))
    out = demo.stdout
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert re.search(r"^\d\d:\d\d \S+\s+draining -> drained \(\d+ pods evicted\)$", out, re.M)
    assert re.search(r"executing -> completed \(saving \$[\d,]+\.\d\d/month\)", out)
    replaced = re.search(r"nodes replaced:\s+(\d+)", out)
    assert replaced is not None and int(replaced.group(1)) > 0
    saving = re.search(r"saving:\s+\$([\d,]+\.\d\d)/month", out)
    assert saving is not None and float(saving.group(1).replace(",", "")) > 0
    assert re.search(r"pods lost:\s+0 ", out)
    assert re.search(r"^  Node objects without a worker: 0$", out, re.M)
    assert "simulated" in out and "s real" in out

    audit_line = next(line for line in out.splitlines() if "vpsie-rebalancer audit" in line)
    argv = shlex.split(audit_line.strip())
    assert argv[:2] == ["vpsie-rebalancer", "audit"]
    audit = cli(*argv[1:])
    assert audit.returncode == 0, audit.stderr
    assert "completed" in audit.stdout
    assert Path(argv[argv.index("--db") + 1]).parent == state.resolve()
