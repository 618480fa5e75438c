"""The panel in a real browser: Debian's headless Chromium driven by Playwright, behind an ingress-like proxy.

The home is the demo's (three batteries, a NEXT wallbox, a household with PV, a P1 meter on MQTT), on a real
Mosquitto. Screenshots of every run land in build/screenshots/ (the README shows copies of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from marstek_webasto_addon.addon.options import parse_options
from marstek_webasto_addon.addon.runtime import Runtime
from marstek_webasto_addon.addon.state import StateStore
from marstek_webasto_addon.bridge.mqtt import BrokerSettings
from marstek_webasto_addon.cli.demo import demo_options
from marstek_webasto_addon.demo.world import DemoWorld
from marstek_webasto_addon.tasks import cancel_all
from marstek_webasto_addon.web.server import Panel

from .conftest import bounded, until
from .ingress_proxy import PROXY_ADDRESS, ingress_proxy
from .mqtt_fixtures import Broker, broker

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(180)
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def chromium() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        pytest.fail("chromium is not installed (scripts/test installs it with apt-get)")
    return found


@dataclass
class Home:
    world: DemoWorld
    runtime: Runtime
    panel: Panel
    ingress_url: str
    direct_url: str

    def card(self, page: Page, name: str) -> object:
        return page.locator(f'section.battery[aria-label="{name}"]')


@pytest.fixture
async def home(broker: Broker, udp_port: int, tmp_path: Path) -> AsyncIterator[Home]:
    world = DemoWorld(speed=30, start=datetime(2026, 6, 21, 11, 0), sim_port=udp_port)
    stack = contextlib.AsyncExitStack()
    try:
        await stack.enter_async_context(world)
        options = parse_options(demo_options(world, broker.host, broker.port))
        runtime = await stack.enter_async_context(
            Runtime(
                options,
                StateStore(tmp_path / "state.json"),
                BrokerSettings(broker.host, broker.port),
                clock=world.clock,
            )
        )
        panel = Panel(runtime, allowed={PROXY_ADDRESS}, clock=world.clock)
        port = await panel.start("127.0.0.1", 0)
        stack.push_async_callback(panel.stop)
        tasks = [
            asyncio.create_task(runtime.run()),
            asyncio.create_task(world.publish_meters(broker.host, broker.port)),
        ]
        stack.push_async_callback(cancel_all, tasks)
        url = await stack.enter_async_context(ingress_proxy(port))
        yield Home(world, runtime, panel, url, f"http://127.0.0.1:{port}/")
    finally:
        # Bounded, and with every task's stack when it is not: a hang here must say where it is.
        await bounded(stack.aclose(), 60, "stopping the demo home")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            for context in instance.contexts:
                for page in context.pages:
                    await bounded(page.close(), 15, "closing a page")
            await bounded(instance.close(), 30, "closing Chromium")


async def open_panel(browser: Browser, url: str, scheme: str = "light", width: int = 1280) -> Page:
    page = await browser.new_page(
        viewport={"width": width, "height": 900},
        color_scheme=scheme,  # type: ignore[arg-type]
    )
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.goto(url)
    await expect(page.locator("#live")).to_have_text("live", timeout=15_000)
    await expect(page.locator("section.battery")).to_have_count(3, timeout=15_000)
    page.set_default_timeout(15_000)
    setattr(page, "errors", errors)  # noqa: B010 - checked by the tests at the end
    return page


async def test_the_panel_shows_the_simulated_home_and_follows_it_live(home: Home, browser: Browser) -> None:
    page = await open_panel(browser, home.ingress_url)
    sim = home.world.marstek
    sim.frozen = True  # compare with values that stand still
    await asyncio.sleep(3)  # one poll and one push
    for name, battery in zip(("FaseA", "FaseB", "FaseC"), sim.batteries, strict=True):
        card = page.locator(f'section.battery[aria-label="{name}"]')
        await expect(card.locator(".gauge text")).to_have_text(f"{round(battery.physics.soc)}%")
        await expect(card.locator(".badge")).to_have_text("online")
    # every request went through the prefix: the page and its API calls resolved against <base href>
    assert await page.evaluate("document.baseURI") == home.ingress_url
    await expect(page.locator("section.wallbox")).to_have_count(1)
    await expect(page.locator("section.optimiser .badge").first).to_have_text("on")

    sim.batteries[1].physics.soc = 55.0
    fase_b = page.locator('section.battery[aria-label="FaseB"]')
    await expect(fase_b.locator(".gauge text")).to_have_text("55%")  # pushed, not reloaded
    assert getattr(page, "errors") == []  # noqa: B009


async def test_controls_act_on_the_devices_and_bad_input_is_shown(home: Home, browser: Browser) -> None:
    page = await open_panel(browser, home.ingress_url)
    sim = home.world.marstek
    # the optimiser's master switch, from the panel: it lets go of every battery
    await page.locator("section.optimiser").get_by_label("Optimiser", exact=True).uncheck()
    optimiser = home.runtime.optimiser
    assert optimiser is not None
    await until(lambda: not optimiser.settings.enabled)
    await until(lambda: all(b.mode == "Auto" for b in sim.batteries), 30)

    card = page.locator('section.battery[aria-label="FaseB"]')
    await card.get_by_label("Power (W)").fill("700")
    await card.get_by_label("Minutes").fill("5")
    await card.get_by_role("button", name="Discharge").click()
    await until(lambda: sim.batteries[1].mode == "Passive" and sim.batteries[1].passive_power == 700, 30)
    await expect(card.locator(".outcome")).to_contain_text("applied")

    writes = len(sim.batteries[1].setmode_log)
    await card.get_by_label("Power (W)").fill("99999")
    await card.get_by_role("button", name="Discharge").click()
    await expect(card.locator('[data-error="now"]')).to_contain_text("between")
    await expect(page.locator("#toast")).to_contain_text("between")
    assert len(sim.batteries[1].setmode_log) == writes  # nothing reached the battery

    mode = card.get_by_label("Mode")
    await mode.select_option("Auto")
    await until(lambda: sim.batteries[1].mode == "Auto", 30)


async def test_only_the_ingress_proxy_gets_in(home: Home, browser: Browser) -> None:
    page = await browser.new_page()
    response = await page.goto(home.direct_url)
    assert response is not None
    assert response.status == 403
    await expect(page.locator("body")).to_contain_text("ingress")
    response = await page.goto(home.direct_url + "api/state")
    assert response is not None
    assert response.status == 403


async def test_screenshots_light_dark_and_phone(home: Home, browser: Browser) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await asyncio.sleep(12)  # a few minutes of simulated history for the chart
    for scheme in ("light", "dark"):
        page = await open_panel(browser, home.ingress_url, scheme)
        await expect(page.locator("#chart svg").first).to_be_visible()
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert (background == "rgb(17, 20, 24)") == (scheme == "dark")
        await page.screenshot(path=str(SCREENSHOTS / f"panel-{scheme}.png"), full_page=True)
    phone = await open_panel(browser, home.ingress_url, "light", width=390)
    overflow = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the panel must fit a phone's width"
    await phone.screenshot(path=str(SCREENSHOTS / "panel-phone.png"), full_page=True)
    assert (SCREENSHOTS / "panel-light.png").stat().st_size > 10_000
