"""The ingress panel: the page's live updates through an add-on restart and through a stream that
goes silent. Real parts: the demo's home, a real Mosquitto, the panel behind an ingress stand-in, headless
Chromium."""

from __future__ import annotations

import socket

import pytest
from playwright.async_api import Browser, Page, Request, Response, expect

from marstek_webasto_addon.web import server
from marstek_webasto_addon.web.server import Panel

from .conftest import free_port, until
from .ingress_proxy import PROXY_ADDRESS, Line, ingress_proxy
from .mqtt_fixtures import broker
from .test_panel_browser import Home, browser, home, open_panel

__all__ = ["broker", "browser", "home"]
pytestmark = pytest.mark.timeout(180)


async def follows_the_battery(home: Home, page: Page, soc: float) -> None:
    """The page shows a change of FaseB's charge made now: its values are live."""
    home.world.marstek.frozen = True
    home.world.marstek.batteries[1].physics.soc = soc
    card = page.locator('section.battery[aria-label="FaseB"]')
    await expect(card.locator(".gauge text")).to_have_text(f"{round(soc)}%", timeout=20_000)
    await expect(page.locator("#live")).to_have_text("live")


async def test_the_page_is_live_again_after_the_addon_restarts(home: Home, browser: Browser) -> None:
    # While the add-on restarts, Home Assistant's ingress answers the page's event stream with an error
    # (502; the stand-in 500): a browser's EventSource then gives up for good, unlike on a dropped stream.
    port = free_port(socket.SOCK_STREAM)
    panel = Panel(home.runtime, allowed={PROXY_ADDRESS}, clock=home.world.clock)
    await panel.start("127.0.0.1", port)
    async with ingress_proxy(port) as url:
        page = await open_panel(browser, url)
        refused: list[int] = []

        def answered(response: Response) -> None:
            if response.url.endswith("api/events") and response.status != 200:
                refused.append(response.status)

        page.on("response", answered)
        await panel.stop()
        await expect(page.locator("#live")).not_to_have_text("live")
        await until(lambda: bool(refused), 20)  # the page asked while the add-on was away
        panel = Panel(home.runtime, allowed={PROXY_ADDRESS}, clock=home.world.clock)
        await panel.start("127.0.0.1", port)
        try:
            await follows_the_battery(home, page, 47.0)
        finally:
            await panel.stop()


async def test_a_stream_that_goes_silent_is_not_shown_as_live(
    home: Home, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connection lost without a close (a proxy, a phone's network, a laptop's sleep) raises no error in
    # the page: without a heartbeat it could see, it would say "live" over frozen values forever.
    monkeypatch.setattr(server, "HEARTBEAT_S", 0.5)
    line = Line()
    async with ingress_proxy(home.panel.port, line) as url:
        page = await open_panel(browser, url)
        streams: list[str] = []

        def asked(request: Request) -> None:
            if request.url.endswith("api/events"):
                streams.append(request.url)

        page.on("request", asked)
        line.cut()
        await expect(page.locator("#live")).not_to_have_text("live", timeout=10_000)
        assert await page.evaluate("document.body.classList.contains('stale')")  # the values are dimmed
        await until(lambda: bool(streams), 20)  # opened again
        await follows_the_battery(home, page, 61.0)
        assert not await page.evaluate("document.body.classList.contains('stale')")
