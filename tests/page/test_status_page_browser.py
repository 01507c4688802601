"""The status page in a real browser: Debian's Chromium, driven by Playwright (never a
downloaded browser), against a real daemon (`vpsie-rebalancer run`) over the simulator loaded
with the demo's world, on the simulator's accelerated clock.

`status` (text) says the daemon waits for that approval. The page loads with no console
error; it shows the plan awaiting approval, its replacements, checks and nodes left out;
Approve without the token is refused (and nothing moves), with the token (typed once, kept in
the tab's session, never in the URL) it is accepted; the page then shows the replacements as
they progress to the end. Screenshots go to the test's tmp_path.

The same daemon's /metrics, after the whole rebalance, passes `promtool check metrics` and
exports every metric the Grafana dashboard queries; its `status --json` has the keys
docs/cli.md promises.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from playwright.async_api import ConsoleMessage, Page, async_playwright

from tests.cli.support import run_cli
from tests.cli.test_json_keys import documented_keys
from tests.crash.rehearsal import CLUSTER, REPO, config_text, rehearsal
from tests.observability.test_promtool_and_dashboard import (
    METRIC,
    check_metrics_text,
    dashboard,
    exported_families,
    family_of,
    queries,
)
from tests.service.daemon_process import TOKEN, DaemonProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
DEMO_SCENARIO = REPO / "simulator" / "scenarios" / "demo.yaml"
DEMO_CLUSTER = "7d2f4a6c-8e0b-4d1f-93a5-c7e9b1d3f5a7"
LISTENING = re.compile(r"control API listening on (http://127\.0\.0\.1:\d+)")
# Chromium's own line for an HTTP error answer to fetch(); expected once, for the refusal.
REFUSED_LINE = "the server responded with a status of 401"


def demo_config() -> str:
    """The demo's node-group policy, with approval required and the API on a TCP port."""
    text = config_text(
        strategy="rolling",
        min_nodes=3,
        min_healthy_percent=75,
        max_concurrent=3,
        batch_size=3,
        drain_timeout="10m",
        provision_timeout="15m",
        soak="60s",
        require_approval=True,
        listen="127.0.0.1:0",
        extra='allowedSizes = ["k8s-4c-8g", "k8s-4c-16g", "k8s-2c-4g"]\n',
    )
    return text.replace(CLUSTER, DEMO_CLUSTER)


async def until(what: str, check: Any, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def get(base: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(base + path) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw) if "json" in resp.content_type else raw.decode()


async def replacement_states(page: Page) -> list[str]:
    states: list[str] = await page.eval_on_selector_all(
        "td[data-replacement] .badge", "els => els.map(e => e.dataset.state)"
    )
    return states


async def test_status_page_in_chromium(tmp_path: Path) -> None:
    async with rehearsal(tmp_path, scenario=DEMO_SCENARIO.read_text(), fork=False) as reh:
        reh.write_config(demo_config())
        daemon = DaemonProcess(reh, identity="page")
        await daemon.start()

        async def listening() -> str | None:
            found = LISTENING.search(daemon.log())
            return found.group(1) if found else None

        base = await until("the control API to listen", listening)

        async def awaiting() -> dict[str, Any] | None:
            _, status = await get(base, "/v1/status")
            plans = [p for p in status.get("plans", []) if p["state"] == "awaiting_approval"]
            return plans[0] if plans else None

        plan = await until("a plan awaiting approval", awaiting)
        plan_id = plan["plan_id"]
        # `status` (text) says what the daemon waits for, as the page does.
        said = await run_cli("status", "--control", base)
        assert said.code == 0, said
        assert (
            f"node group general: waits for a person to approve or reject plan {plan_id}"
            in said.stdout
        ), said.stdout

        errors: list[str] = []
        refusals: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                (refusals if REFUSED_LINE in message.text else errors).append(message.text)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            await page.goto(base + "/")
            card = page.locator(f'[data-plan="{plan_id}"]')
            await card.wait_for()
            assert await card.get_attribute("data-state") == "awaiting_approval"
            rows = page.locator("table.replacements tbody tr")
            assert await rows.count() == plan["replacements_total"] > 0
            assert set(await replacement_states(page)) == {"planned"}
            text = await page.inner_text("body")
            for shown in (
                "Safety checks when proposed",
                "cluster health",
                "node group health",
                "disruption budgets",
                "capacity",
                "timing",
                "Nodes left out",
                "Fleet before and after",
                "saving projected",
                "PlanProposed",
                f"Waits for a person to approve or reject plan {plan_id}",
            ):
                assert shown in text, shown
            for garbage in ("[object ", "undefined", "NaN", "null"):
                assert garbage not in text, garbage
            await page.screenshot(path=str(tmp_path / "1-awaiting-approval.png"), full_page=True)

            # Approve without the token: refused, and the plan does not move.
            await page.click(f"#approve-{plan_id}")
            notice = page.locator("#notice")
            await page.wait_for_function(
                "() => document.querySelector('#notice').textContent.includes('refused')"
            )
            assert "missing bearer token" in await notice.inner_text()
            assert (await awaiting() or {}).get("plan_id") == plan_id
            assert len(refusals) == 1

            # The token, typed once: kept in this tab's session, not in the URL or storage.
            await page.fill("#token", TOKEN)
            await page.click("#token-save")
            assert await page.evaluate(
                "() => sessionStorage.getItem('vpsie-rebalancer-control-token')"
            ) == TOKEN
            assert await page.evaluate("() => localStorage.length") == 0
            assert TOKEN not in page.url and await page.input_value("#token") == ""
            await page.click(f"#approve-{plan_id}")
            await page.wait_for_function(
                "() => document.querySelector('#notice').textContent.includes('accepted')"
            )

            # The page follows the replacements as they progress, without a reload.
            seen: set[str] = set()
            shot_mid = False
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                seen |= set(await replacement_states(page))
                if not shot_mid and seen & {"joining", "draining", "drained", "terminating"}:
                    await page.screenshot(
                        path=str(tmp_path / "2-in-progress.png"), full_page=True
                    )
                    shot_mid = True
                if await card.get_attribute("data-state") == "completed":
                    break
                await page.wait_for_timeout(100)
            assert await card.get_attribute("data-state") == "completed", seen
            assert set(await replacement_states(page)) == {"done"}
            assert shot_mid and len(seen - {"planned", "done"}) >= 2, seen
            assert "not yet" not in await page.inner_text(".figures")  # saving realised
            text = await page.inner_text("body")
            for garbage in ("[object ", "undefined", "NaN", "null"):
                assert garbage not in text, garbage
            await page.screenshot(path=str(tmp_path / "3-completed.png"), full_page=True)
            await browser.close()

        _, metrics = await get(base, "/metrics")
        _, status = await get(base, "/v1/status")
        assert await daemon.stop() == 0

    assert errors == [], errors
    assert set(status) == documented_keys("`status --json` (the control API's `GET /v1/status`)")
    check_metrics_text(metrics)
    # The new metrics come from the daemon's own work, not only from its registry.
    for series in (
        r'vpsie_rebalancing_api_requests_total\{api="vpsie",call="list_workers",'
        r'outcome="ok"\} [1-9]',
        r'vpsie_rebalancing_api_requests_total\{api="kubernetes",call="create pods/eviction",'
        r'outcome="ok"\} [1-9]',
        r"vpsie_rebalancing_eventlog_append_duration_seconds_count [1-9]",
        r"vpsie_rebalancing_eventlog_append_group_size_count [1-9]",
        r'vpsie_rebalancing_last_successful_analysis_timestamp_seconds\{node_group="general"\} '
        r"[1-9]",
    ):
        assert re.search(series, metrics), series
    exported = exported_families(metrics)
    used = {family_of(m) for _, expr in queries(dashboard()) for m in METRIC.findall(expr)}
    assert used <= exported, sorted(used - exported)
    for path in ("1-awaiting-approval.png", "2-in-progress.png", "3-completed.png"):
        assert (tmp_path / path).stat().st_size > 10_000
