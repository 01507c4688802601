"""The status page's routes on the control API: the page and its files with a strict content
security policy, its JSON from a recorded log, mutations refused across sites and absent from
the read-only server. (The page in a real browser: tests/page/.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from daemon.control import ControlServer, Readiness, Role
from daemon.page import LogPages
from eventstore import EventStore, NewEvent
from tests.audit.test_audit_cli import build
from tests.golden.test_golden_logs import load

from .conftest import FakeTarget


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventStore]:
    path = tmp_path / "events.db"
    await build(path, ("completed_rolling", "rolled_back", "recovered_then_completed"),
                partial={"recovered_then_completed": 9})
    store = await EventStore.open(path)
    try:
        yield store
    finally:
        await store.close()


async def _serve(
    store: EventStore, target: FakeTarget | None, token_file: Path | None
) -> ControlServer:
    readiness = Readiness()
    readiness.set_role(Role.LEADER)
    readiness.mark_recovered()
    server = ControlServer(
        target, listen="127.0.0.1:0", readiness=readiness, token_file=token_file,
        pages=LogPages(store),
    )
    await server.start()
    return server


async def test_page_files_and_headers(log: EventStore) -> None:
    server = await _serve(log, None, None)
    try:
        async with aiohttp.ClientSession(str(server.address)) as http:
            async with http.get("/") as resp:
                html = await resp.text()
                assert resp.status == 200 and resp.content_type == "text/html"
                csp = resp.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert '<script src="/static/page.js"' in html
            async with http.get("/static/page.js") as resp:
                assert resp.status == 200 and resp.content_type == "text/javascript"
                script = await resp.text()
            assert "sessionStorage" in script and "localStorage" not in script
            async with http.get("/static/../control.py") as resp:
                assert resp.status == 404
    finally:
        await server.stop()


async def test_page_json_from_a_recorded_log(log: EventStore) -> None:
    server = await _serve(log, None, None)
    try:
        async with aiohttp.ClientSession(str(server.address)) as http:
            async with http.get("/v1/page") as resp:
                view = await resp.json()
            async with http.get("/v1/page/plans/golden-recovered") as resp:
                plan = await resp.json()
            async with http.get("/v1/page/plans/nothing-like-this") as resp:
                missing = resp.status, await resp.json()
            async with http.post("/v1/plans/golden-recovered/approve") as resp:
                no_route = resp.status
    finally:
        await server.stop()
    assert view["source"] == "log" and view["mutations"] is False and view["daemon"] is None
    [group] = view["groups"]
    assert group["name"] == "workers"
    assert group["current"]["plan_id"] == "golden-recovered"  # the one still in flight
    assert group["current"]["state"] == "executing" and group["current"]["phase"] == "drain"
    assert {p["plan_id"] for p in group["recent"]} == {"golden-rolling", "golden-rollback"}
    assert plan["replacements"][0]["old_node"] == "workers-node-1"
    assert plan["replacements"][0]["state"] == "cordoning"
    assert plan["replacements"][1]["new_size"] is None  # a removal
    assert plan["fleet"]["monthly_cost_before"] == "80.00"
    assert plan["fleet"]["monthly_cost_after"] == "24.00"
    assert [c["name"] for c in plan["checks"]] == ["capacity", "timing"]
    assert plan["timeline"][0]["event"] == "PlanProposed"
    assert plan["timeline_total"] == len(plan["timeline"])
    assert missing[0] == 404 and "nothing-like-this" in missing[1]["error"]
    assert no_route == 404  # the read-only server has no POST route


async def test_a_proposal_closed_at_once_does_not_hide_the_plan_that_ran(tmp_path: Path) -> None:
    """Adversary: time. After a plan completes, the next analysis may postpone a new proposal
    (the cooldown) and close it at once; the page keeps showing the plan that changed the nodes,
    and lists the closed proposal with the earlier plans."""
    path = tmp_path / "events.db"
    await build(path, ("completed_rolling",))
    proposed = load("completed_rolling")[0]["data"]
    later = "2026-01-05T03:00:00Z"
    plan = {**proposed["plan"], "plan_id": "golden-postponed", "created_at": later,
            "recommended_action": "postpone", "action_reasons": ["cooldown"]}
    store = await EventStore.open(path)
    try:
        await store.append("plan-golden-postponed", 0, [
            NewEvent(type="PlanProposed", schema_version=1, data=orjson.dumps(
                {"plan_id": "golden-postponed", "at": later, "plan": plan})),
            NewEvent(type="PlanRejected", schema_version=1, data=orjson.dumps(
                {"plan_id": "golden-postponed", "at": later, "by": "planner",
                 "reason": "cooldown"})),
        ])
        server = await _serve(store, None, None)
        try:
            async with (
                aiohttp.ClientSession(str(server.address)) as http,
                http.get("/v1/page") as resp,
            ):
                view = await resp.json()
        finally:
            await server.stop()
    finally:
        await store.close()
    [group] = view["groups"]
    assert group["current"]["plan_id"] == "golden-rolling"
    assert group["current"]["state"] == "completed"
    assert [(p["plan_id"], p["state"]) for p in group["recent"]] == [
        ("golden-postponed", "rejected")
    ]


async def test_a_cross_site_post_is_refused_even_with_the_token(
    log: EventStore, token_file: tuple[str, Path]
) -> None:
    """The adversary: a page of another site the operator has open, posting to the API."""
    token, path = token_file
    target = FakeTarget(plans={"p-wait": "awaiting_approval"})
    server = await _serve(log, target, path)
    here = str(server.address)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(here) as http:
            async with http.post(
                "/v1/plans/p-wait/approve", headers={**auth, "Origin": "http://evil.example"}
            ) as resp:
                cross = resp.status, await resp.json()
            async with http.post(
                "/v1/plans/p-wait/approve", headers={"Origin": "http://evil.example"}
            ) as resp:
                cross_no_token = resp.status
            async with http.get("/v1/page") as resp:
                mutations = (await resp.json())["mutations"]
            async with http.post(
                "/v1/plans/p-wait/approve", headers={**auth, "Origin": here}
            ) as resp:
                same = resp.status
    finally:
        await server.stop()
    assert cross == (403, {"error": "cross-origin request refused"})
    assert cross_no_token == 403
    assert mutations is True
    assert same == 200 and target.calls == [("approve", "p-wait", "cli", "")]


async def test_a_rebound_name_reads_nothing(log: EventStore) -> None:
    """The adversary: a site whose name was made to resolve to 127.0.0.1 (DNS rebinding); the
    browser sends its name in Host. Requests by address or `localhost` are answered."""
    server = await _serve(log, None, None)
    assert server.address is not None
    port = server.address.port
    try:
        async with aiohttp.ClientSession(str(server.address)) as http:
            async with http.get("/v1/page", headers={"Host": f"evil.example:{port}"}) as resp:
                rebound = resp.status, await resp.json()
            async with http.get("/", headers={"Host": f"localhost:{port}"}) as resp:
                by_name = resp.status
            async with http.get("/v1/page") as resp:
                by_address = resp.status
    finally:
        await server.stop()
    assert rebound[0] == 403 and "Host" in rebound[1]["error"]
    assert by_name == 200 and by_address == 200


async def test_page_json_of_a_plan_that_grows_the_group(tmp_path: Path) -> None:
    """A replacement with no old node (a node added, none removed): the page says so (no old
    node, size or price; `adds_only`) and counts it only in the fleet after."""
    path = tmp_path / "grown.db"
    await build(path, ("grown_then_completed",))
    store = await EventStore.open(path)
    server = await _serve(store, None, None)
    try:
        async with (
            aiohttp.ClientSession(str(server.address)) as http,
            http.get("/v1/page/plans/golden-grown") as resp,
        ):
            assert resp.status == 200
            plan = await resp.json()
    finally:
        await server.stop()
        await store.close()
    added, replaced = plan["replacements"]
    assert added["adds_only"] is True and added["old_node"] is None
    assert added["old_size"] is None and added["old_monthly_price"] is None
    assert added["new_size"] == "1c-2g" and added["state"] == "done" and added["new_node"]
    assert replaced["adds_only"] is False and replaced["old_node"] == "workers-node-1"
    assert plan["fleet"]["before"] == [{"size": "size 3", "monthly_price": "40.00", "count": 1}]
    assert plan["fleet"]["monthly_cost_before"] == "40.00"
    assert plan["fleet"]["monthly_cost_after"] == "36.00"
    nodes = {t["node"] for t in plan["timeline"] if t["replacement_id"] == added["replacement_id"]}
    assert nodes == {"(added)"}
