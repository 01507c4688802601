"""The `--json` outputs have exactly the keys docs/cli.md promises, no fewer and no more.

The tables are read from the document itself, so the document and the code cannot drift apart
without a test failing. `status --json` is held to its table by the status-page browser test,
which runs a real daemon (tests/page/test_status_page_browser.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from tests.audit.test_audit_cli import build
from tests.cli.support import REPO, run_cli
from tests.crash.rehearsal import rehearsal

DOC = REPO / "docs" / "cli.md"


def documented_keys(heading: str) -> set[str]:
    """The keys in the first column of the table under `### {heading}` in docs/cli.md."""
    text = DOC.read_text()
    start = text.index(f"### {heading}\n") + len(f"### {heading}\n")
    section = re.split(r"\n#{2,3} ", text[start:], maxsplit=1)[0]
    keys: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        keys |= set(re.findall(r"`([a-z_]+)`", first))
    assert keys, f"no table under {heading!r} in {DOC}"
    return keys


def keys_of(out: str) -> tuple[set[str], dict[str, Any]]:
    data = orjson.loads(out)
    assert isinstance(data, dict)
    return set(data), data


def test_the_tables_are_read() -> None:
    assert documented_keys("`audit --json`") == {"plans", "problems"}


async def test_audit_json(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    await build(db, ("completed_rolling", "rolled_back"))
    listing = await run_cli("audit", "--db", str(db), "--json")
    assert listing.code == 0, listing
    keys, data = keys_of(listing.stdout)
    assert keys == documented_keys("`audit --json`")
    one = await run_cli("audit", "--db", str(db), "--plan", "golden-rolling", "--json")
    assert one.code == 0, one
    keys, report = keys_of(one.stdout)
    assert keys == documented_keys("`audit --plan ID --json`")
    assert set(report["row"]) == set(data["plans"][0])  # "the plan's line of audit --json"


async def test_plan_json(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, fork=False) as reh:
        ran = await run_cli("plan", "--config", str(reh.config_path), "--json", "--no-record")
    assert ran.code == 0, ran
    keys, data = keys_of(ran.stdout)
    assert keys == documented_keys("`plan --json`")
    group_keys = set(data["node_groups"][0])
    described = DOC.read_text().split("### `plan --json`")[1].split("\n###")[0]
    for key in group_keys:
        assert f"`{key}`" in described, f"plan --json node_groups[].{key} is not documented"
