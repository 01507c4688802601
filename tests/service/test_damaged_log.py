"""A log file with a damaged page in the middle is refused by `run` and `plan` before they act
or append; the file is left as it was.

Adversary: the disk (or a careless copy) damaging one page of the event log's file, far from
the snapshot and the tail that a restart reads, so that only a check of the whole file sees it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.crash.rehearsal import rehearsal
from tests.service.test_plan_command import MUTATING, plan


def damage_a_middle_page(path: Path) -> int:
    """Zero the middle leaf page of the events table (neither its first nor its last, which
    holds the head); returns its number."""
    with sqlite3.connect(path) as raw:
        size = int(raw.execute("PRAGMA page_size").fetchone()[0])
        leaves = [
            int(r[0])
            for r in raw.execute(
                "SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' "
                "ORDER BY pageno"
            )
        ]
    assert len(leaves) >= 3, f"the log is too small to have a middle page: {leaves}"
    page = leaves[len(leaves) // 2]
    with path.open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\0" * size)
    return page


def mutations(requests: dict[str, int]) -> int:
    return sum(n for r, n in requests.items() if r.startswith(MUTATING))


async def test_run_and_plan_refuse_a_log_damaged_in_the_middle(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, seed=3) as reh:
        reh.configure(strategy="rolling", max_concurrent=2, batch_size=2)
        first = await reh.run_daemon()  # a whole plan, then a snapshot at the clean stop
        assert first.returncode == 0, first.log_path.read_text()[-2000:]
        damage_a_middle_page(reh.db_path)
        before = reh.db_path.read_bytes()
        requests = mutations(dict(reh.proxy.witness.requests))
        second = await reh.run_daemon()
        code, _out, err = await plan(reh)
        after = mutations(dict(reh.proxy.witness.requests))
        stderr = second.log_path.read_text()

    assert second.returncode != 0, stderr[-2000:]
    assert "damaged" in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert code == 4 and "damaged" in err and len(err.strip().splitlines()) == 1, err
    assert reh.db_path.read_bytes() == before  # nothing appended, nothing rewritten
    assert after == requests  # nothing acted on
