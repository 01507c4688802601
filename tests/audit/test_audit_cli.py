"""The `audit` and `verify-log` commands, run as a person would run them."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from cli.main import main as cli
from eventstore import EventStore, NewEvent
from tests.golden.test_golden_logs import load

REPO = Path(__file__).resolve().parents[2]


async def build(
    path: Path, names: tuple[str, ...], *, partial: dict[str, int] | None = None
) -> None:
    store = await EventStore.open(path, synchronous="NORMAL")
    try:
        for name in names:
            lines = load(name)[: (partial or {}).get(name)]
            for line in lines:
                version = await store.stream_version(line["stream"])
                event = NewEvent(
                    type=line["type"],
                    schema_version=line["schema_version"],
                    data=orjson.dumps(line["data"]),
                )
                await store.append(line["stream"], version, [event])
    finally:
        await store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    asyncio.run(
        build(
            path,
            ("completed_rolling", "rolled_back", "recovered_then_completed"),
            partial={"recovered_then_completed": 9},
        )
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_plan_with_its_outcome(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "audit", "--db", str(db))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "PLAN",
        "NODE",
        "GROUP",
        "STRATEGY",
        "PROPOSED",
        "AT",
        "OUTCOME",
        "NODES",
        "SAVING",
    ]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert "completed" in rows["golden-rolling"] and "$32.00/mo" in rows["golden-rolling"]
    assert "rolled_back" in rows["golden-rollback"] and "surge" in rows["golden-rollback"]
    assert "executing" in rows["golden-recovered"] and "planned" in rows["golden-recovered"]


def test_one_plan_by_prefix_shows_decisions_timeline_and_totals(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "audit", "--db", str(db), "--plan", "golden-rollb")
    assert code == 0
    assert "plan golden-rollback: rolled_back" in out
    assert "failed   disruption_budgets: PDB shop/web allows 0 disruptions" in out
    assert "recheck drain: reject (drain timed out)" in out
    assert "prices seen (monthly): size 2 $24.00, size 3 $40.00" in out
    timeline = out[out.index("TIMELINE") : out.index("TOTALS")]
    assert "EvictionBlocked" in timeline and "default/workers-node-1-app-1 attempt 1" in timeline
    assert "rolling_back -> rolled_back" in timeline
    assert "new worker workers-w1-new" in timeline
    assert "replaced 0, rolled back 1, failed 0; realised saving -; duration 154 s" in out


def test_json_has_the_same_content(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "audit", "--db", str(db), "--plan", "golden-rolling", "--json")
    assert code == 0
    report = orjson.loads(out)
    assert report["row"]["outcome"] == "completed"
    assert report["row"]["realised_saving"] == "32.00"
    assert report["replaced"] == 2
    assert report["timeline"][0]["event"] == "PlanProposed"
    code, out, _ = run(capsys, "audit", "--db", str(db), "--json")
    assert [p["plan_id"] for p in orjson.loads(out)["plans"]] == [
        "golden-rolling",
        "golden-rollback",
        "golden-recovered",
    ]


@pytest.mark.parametrize(
    ("prefix", "message"),
    [("golden-roll", "matches 2 plans"), ("nope", "no plan whose id starts with 'nope'")],
)
def test_a_prefix_must_name_one_plan(
    db: Path, capsys: pytest.CaptureFixture[str], prefix: str, message: str
) -> None:
    code, out, err = run(capsys, "audit", "--db", str(db), "--plan", prefix)
    assert code == 2 and out == ""
    assert message in err


def test_missing_foreign_and_newer_databases_are_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    code, _, err = run(capsys, "audit", "--db", str(missing))
    assert code == 2 and "no such event log" in err
    assert not missing.exists()

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.close()
    code, _, err = run(capsys, "audit", "--db", str(foreign))
    assert code == 2 and "not an event log" in err

    newer = tmp_path / "newer.db"
    asyncio.run(build(newer, ("completed_rolling",)))
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    code, _, err = run(capsys, "verify-log", "--db", str(newer))
    assert code == 2 and "newer than this build supports" in err


def test_verify_log_accepts_an_intact_log(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify-log", "--db", str(db))
    assert code == 0
    assert out.strip() == "log verifies: 71 events"


def tamper(path: Path, needle: bytes, replacement: bytes) -> None:
    """Change bytes of a payload in the database file itself, as a disk or a person might."""
    for candidate in (path, Path(f"{path}-wal")):
        if candidate.exists() and needle in (raw := candidate.read_bytes()):
            assert raw.count(needle) == 1
            candidate.write_bytes(raw.replace(needle, replacement))
            return
    raise AssertionError("payload not found in the database files")


def test_verify_log_names_the_first_tampered_event(db: Path) -> None:
    tamper(db, b"allows 0 disruptions", b"allows 9 disruptions")
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "verify-log", "--db", str(db)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "first bad event: event seq 54 " in result.stderr
    assert "plan-golden-rollback" in result.stderr
    assert "SafetyChecksRun" in result.stderr


def test_verify_log_names_an_event_that_no_longer_folds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.db"
    asyncio.run(build(path, ("completed_rolling",), partial={"completed_rolling": 2}))

    async def append_illegal() -> None:
        store = await EventStore.open(path)
        data = b'{"plan_id":"golden-rolling","at":"t","realised_monthly_saving":"1"}'
        await store.append(
            "plan-golden-rolling", 2, [NewEvent(type="PlanCompleted", schema_version=1, data=data)]
        )
        await store.close()

    asyncio.run(append_illegal())
    code, _, err = run(capsys, "verify-log", "--db", str(path))
    assert code == 1
    assert "first bad event seq 3 (stream 'plan-golden-rolling', type 'PlanCompleted')" in err
    assert "in state approved" in err


def test_a_corrupt_file_is_refused_without_a_traceback(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "audit", "--db", str(garbage)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("audit: ") and str(garbage) in result.stderr


def _fingerprint(path: Path) -> tuple[bytes, list[str]]:
    """The file's bytes, and which side files exist beside it."""
    side = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))
    return path.read_bytes(), side


@pytest.mark.parametrize("command", ["audit", "verify-log"])
def test_an_old_layout_is_read_from_a_copy_never_migrated_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Adversary: a person auditing a log an older release wrote (a backup, say); migrating it
    in place would change the evidence and make it unreadable to that release."""
    from eventstore.schema import CURRENT_VERSION
    from tests.eventstore.test_file_integrity import build_v1_file

    path = tmp_path / "old.db"
    build_v1_file(path, extra=3)
    before = _fingerprint(path)
    _code, out, err = run(capsys, command, "--db", str(path))
    assert _fingerprint(path) == before
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1 < CURRENT_VERSION
    assert "Traceback" not in err
    if command == "verify-log":  # it read the events (this file's are not of our types)
        assert "seq 1 (stream 'plan-a', type 'Planned')" in err, (out, err)


@pytest.mark.parametrize("command", ["audit", "verify-log"])
def test_a_foreign_sqlite_file_is_refused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Adversary: a mistyped path naming another program's SQLite database (rollback journal
    mode); switching it to WAL before refusing it would break that program's expectations."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)")
        raw.execute("INSERT INTO things (name) VALUES ('kept')")
    before = _fingerprint(path)
    code, _out, err = run(capsys, command, "--db", str(path))
    assert code != 0
    assert "not an event log" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert _fingerprint(path) == before
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_plan_that_grows_the_group_reads_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replacement with no old node: the audit names it an add, never an empty node."""
    path = tmp_path / "grown.db"
    asyncio.run(build(path, ("grown_then_completed",)))
    code, out, _ = run(capsys, "audit", "--db", str(path), "--plan", "golden-grown")
    assert code == 0, out
    assert "plan golden-grown: completed" in out
    assert "none (add)" in out and "size 1 1c-2g $12.00" in out
    timeline = out[out.index("TIMELINE") : out.index("TOTALS")]
    assert "(added)" in timeline
    assert "replaced 2, rolled back 0, failed 0; realised saving $4.00" in out
