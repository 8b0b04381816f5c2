"""A marketer's journey in a real headless browser (Debian's chromium driven by Playwright) against the
service running as its own process: log in, create an experiment through the form, start it, drive traffic
with the simulator, and read the right numbers and a rendered chart on the report page.

The numbers on the page are checked against what the simulator itself posted (impressions and purchases per
variant, as the responses named them) and against the JSON report of the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bench.launcher import run_service
from recsys.simulation import load_members, plan_requests, run_simulation
from tests.serving.conftest import Registry, service_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_KEY = "pages-test-admin-key-0123456789"
KEY = "objective-ab"


@contextlib.contextmanager
def browser_page() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="recsys-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = context.new_page()
                page.set_default_timeout(20_000)
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def cell(page: Any, table: str, row: str, css: str) -> str:
    return str(page.locator(f"{table} tr[data-arm='{row}'] td.{css}").inner_text()).strip()


@pytest.mark.slow
def test_log_in_create_start_simulate_and_read_the_report(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str
) -> None:
    env = service_env(
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        RECSYS_ADMIN_API_KEY=ADMIN_KEY,
        RECSYS_EXPERIMENTS_POLL_S="0.5",
        RECSYS_REQUEST_LOG_FLUSH_INTERVAL_S="0.2",
    )
    members = load_members(serving_world, 600, seed=21)
    plan = plan_requests(members, 30, seed=21, activity=3.0)
    with run_service(env) as svc, browser_page() as page:
        # Not logged in: the pages send us to the login form; a wrong key is refused.
        page.goto(f"{svc.url}/experiments")
        assert "/experiments/login" in page.url
        page.fill("#api_key", "not-the-key-at-all")
        page.click("#login-submit")
        assert page.locator("#login-error").inner_text() == "Wrong API key."
        page.fill("#api_key", ADMIN_KEY)
        page.click("#login-submit")
        assert page.url.rstrip("/").endswith("/experiments")
        cookie = next(c for c in page.context.cookies() if c["name"] == "recsys_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # Create through the form: weights that do not sum to 1 are refused, naming the field.
        page.click("#new-experiment")
        page.fill("#key", KEY)
        for placement in ("post_booking", "check_in", "in_trip", "home"):
            page.check(f"input[name=placements][value={placement}]")
        page.fill("input[name=variant_key_0]", "control")
        page.fill("input[name=variant_weight_0]", "0.5")
        page.fill("input[name=variant_model_0]", registry.first_version)
        page.fill("input[name=variant_key_1]", "acceptance")
        page.fill("input[name=variant_weight_1]", "0.6")
        page.fill("input[name=variant_model_1]", "champion")
        page.select_option("select[name=variant_objective_1]", "acceptance")
        page.click("#create-submit")
        assert "weight" in page.locator("#form-errors").inner_text()
        page.fill("input[name=variant_weight_1]", "0.5")
        page.click("#create-submit")
        assert page.locator("#status").inner_text() == "draft"
        page.click("#start")
        assert page.locator("#status").inner_text() == "running"

        # Traffic from the simulator, over HTTP like the app's.
        # (in a thread: Playwright's sync API keeps an event loop running in this one)
        with ThreadPoolExecutor(1) as pool:
            sim = pool.submit(
                asyncio.run,
                run_simulation(svc.url, members, plan, days=30, seed=21, max_seconds=60),
            ).result()
        assert sim.errors == {}, sim.errors
        arms = {label.split("/", 1)[1]: v for label, v in sim.variants.items() if label.startswith(KEY)}
        assert set(arms) == {"control", "acceptance"}, sim.variants.keys()
        time.sleep(1.0)  # the request log is written in batches

        page.reload()
        with httpx.Client(base_url=svc.url, headers={"X-Api-Key": ADMIN_KEY}) as api:
            report = api.get(f"/v1/experiments/{KEY}/report").json()
        by_arm = {a["variant"]: a for a in report["arms"]}
        for arm, counts in arms.items():
            # what the simulator posted is what the report counts, and what the page shows
            assert by_arm[arm]["impressions"] == counts.impressions
            assert by_arm[arm]["purchases"] == counts.purchases
            assert cell(page, "#arms", arm, "impressions") == str(counts.impressions)
            assert cell(page, "#arms", arm, "purchases") == str(counts.purchases)
            assert cell(page, "#arms", arm, "exposed") == str(by_arm[arm]["exposed_members"])
            conv = by_arm[arm]["rates"]["conversion"]
            assert cell(page, "#arms", arm, "conversion") == f"{conv * 100:.2f}%"
        comp = next(m for m in report["metrics"] if m["metric"] == "conversion")["comparisons"][0]
        shown_p = page.locator("#metric-conversion tr[data-variant='acceptance'] td.p-value").inner_text()
        assert shown_p.strip() == (
            f"{comp['p_value']:.4f}" if comp["p_value"] >= 1e-4 else f"{comp['p_value']:.1e}"
        )
        assert page.locator("#srm").get_attribute("data-verdict") == report["srm"]["verdict"]

        # The charts are drawn: non-zero size, one series per arm, the lift rows of the metrics.
        timeline = page.locator("#timeline-chart")
        box = timeline.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
        series = page.locator("#timeline-chart g.series")
        assert sorted(series.nth(i).get_attribute("data-variant") for i in range(series.count())) == [
            "acceptance",
            "control",
        ]
        lift = page.locator("#lift-chart")
        assert lift.bounding_box()["height"] > 50  # type: ignore[index]
        assert page.locator("#lift-chart g.lift-row[data-metric='conversion']").count() == 1

        # A screenshot: the chart area is really painted in each series' colour.
        shot = Image.open(io.BytesIO(timeline.screenshot())).convert("RGB")
        colours = set(shot.getdata())
        assert (0x1F, 0x6F, 0xEB) in colours and (0xD9, 0x48, 0x0F) in colours
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert (tmp_path / "report.png").stat().st_size > 10_000

        # Stop through the page; a form posted without the CSRF token changes nothing.
        forged = page.context.request.post(f"{svc.url}/experiments/{KEY}/stop", form={"csrf_token": "x"})
        assert forged.status == 403
        assert page.locator("#status").inner_text() == "running"
        page.click("#stop")
        assert page.locator("#status").inner_text() == "stopped"
