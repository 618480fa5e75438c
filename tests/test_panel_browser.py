"""The panel in a real browser: Debian's headless Chromium driven by Playwright, behind an ingress-like proxy.

The home is the demo's (three batteries, a NEXT wallbox, a household with PV, a P1 meter on MQTT), on a real
Mosquitto. Screenshots of every run land in build/screenshots/ (the README shows copies of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from marstek_webasto_addon.addon.options import parse_options
from marstek_webasto_addon.addon.quarter_history import QuarterHistory
from marstek_webasto_addon.addon.runtime import Runtime
from marstek_webasto_addon.addon.state import StateStore
from marstek_webasto_addon.bridge.mqtt import BrokerSettings
from marstek_webasto_addon.cli.demo import demo_options
from marstek_webasto_addon.demo.world import DemoWorld
from marstek_webasto_addon.tasks import cancel_all
from marstek_webasto_addon.web.history import Sample
from marstek_webasto_addon.web.server import Panel

from .conftest import bounded, free_port, until
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
    async with demo_home(broker, udp_port, tmp_path) as found:
        yield found


@contextlib.asynccontextmanager
async def demo_home(
    broker: Broker, udp_port: int, tmp_path: Path, extra: dict[str, list[dict[str, Any]]] | None = None
) -> AsyncIterator[Home]:
    """The demo's home; `extra` adds configured batteries or wallboxes (e.g. ones that never answer)."""
    world = DemoWorld(speed=30, start=datetime(2026, 6, 21, 11, 0), sim_port=udp_port)
    stack = contextlib.AsyncExitStack()
    try:
        await stack.enter_async_context(world)
        raw = demo_options(world, broker.host, broker.port)
        for section, items in (extra or {}).items():
            raw[section] = [*raw[section], *items]
        options = parse_options(raw)
        runtime = await stack.enter_async_context(
            Runtime(
                options,
                StateStore(tmp_path / "state.json"),
                BrokerSettings(broker.host, broker.port),
                clock=world.clock,
            )
        )
        panel = Panel(
            runtime, allowed={PROXY_ADDRESS}, clock=world.clock, report_path=tmp_path / "report.json"
        )
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


async def open_panel(
    browser: Browser, url: str, scheme: str = "light", width: int = 1280, **context: Any
) -> Page:
    page = await browser.new_page(
        viewport={"width": width, "height": 900},
        color_scheme=scheme,  # type: ignore[arg-type]
        **context,
    )
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.goto(url)
    await expect(page.locator("#live")).to_have_text("live", timeout=15_000)
    # the demo's three batteries (a configured one that never answers has a greyed card besides)
    await expect(page.locator("section.battery[data-device]")).to_have_count(3, timeout=15_000)
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
        await expect(page.locator("#chart canvas").first).to_be_visible()
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert (background == "rgb(17, 20, 24)") == (scheme == "dark")
        await page.screenshot(path=str(SCREENSHOTS / f"panel-{scheme}.png"), full_page=True)
    phone = await open_panel(browser, home.ingress_url, "light", width=390)
    overflow = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the panel must fit a phone's width"
    await phone.screenshot(path=str(SCREENSHOTS / "panel-phone.png"), full_page=True)
    assert (SCREENSHOTS / "panel-light.png").stat().st_size > 10_000


def axis_label(t: float) -> str:
    """What the chart's time axis should say at `t`: local 24-hour time, the day at midnight."""
    moment = datetime.fromtimestamp(t)
    return f"{moment:%a} {moment.day}" if (moment.hour, moment.minute) == (0, 0) else f"{moment:%H:%M}"


def seed_history(home: Home, hours: float) -> list[float]:
    """Past minutes for the chart, as the panel's sampler would have kept them: the axis then has hours."""
    now = home.world.clock.now().timestamp()
    ids = [b.device_id for b in home.runtime.batteries if b.device_id]
    first = (now // 60 - hours * 60) * 60
    times = [first + 60 * i for i in range(int(hours * 60) - 1)]
    for i, t in enumerate(times):
        powers: dict[str, float | None] = {"grid": 300.0 - i, "pv": 1000.0, "load": 900.0, "battery": 0.0}
        powers["wallbox"] = 0.0
        home.panel.history.samples.append(
            Sample(t, powers, dict.fromkeys(ids, 50.0), dict.fromkeys(ids, 0.0))
        )
    return times


def euro(value: float | None) -> str:
    return "—" if value is None else f"€ {(0.0 if abs(value) < 0.005 else value):.2f}"


PLAN_AS_DRAWN = """async () => {
  await window.mwaLoadPlan();
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  const tl = window.mwaTimeline;
  const api = await (await fetch("api/plan")).json();
  const ids = api.batteries || [];
  const rows = tl.steps.map((s) => ({ start: s.start, grid: tl.columns["plan:grid"][s.index],
    battery: tl.columns["plan:battery"][s.index], price: tl.columns["plan:price"][s.index],
    soc: Object.fromEntries(ids.map((id) => [id, tl.columns[`plan:soc:${id}`][s.end]])) }));
  return { made_at: tl.made_at, now: tl.now, rows, api };
}"""


async def test_the_timeline_has_local_times_and_the_plan_as_the_api_gives_it(
    home: Home, browser: Browser
) -> None:
    times = seed_history(home, 7)
    optimiser = home.runtime.optimiser
    assert optimiser is not None
    await until(lambda: bool(optimiser.plan_json().get("steps")), 60)
    page = await open_panel(browser, home.ingress_url)
    await expect(page.locator("#chart canvas").first).to_be_visible()
    await expect(page.locator("#chart [data-axis=x] li").first).to_be_attached()

    # the time axis: local times, at whole hours, from the history's first minute on
    ticks: list[dict[str, Any]] = await page.evaluate(
        "[...document.querySelectorAll('#chart [data-axis=x] li')]"
        ".map((li) => ({t: +li.dataset.t, text: li.textContent}))"
    )
    history = await page.evaluate("fetch('api/history').then((r) => r.json())")
    assert history["t"][0] == times[0]
    x: list[float] = await page.evaluate("window.mwaTimeline.x")
    assert x[0] == history["t"][0]  # the chart starts with the history
    assert history["t"][-1] in x
    assert len(ticks) >= 4
    for tick in ticks:
        assert tick["text"] == axis_label(tick["t"]), tick
        assert datetime.fromtimestamp(tick["t"]).minute == 0
    inside = [tick["t"] for tick in ticks if tick["t"] <= history["t"][-1]]
    assert inside  # the history's hours are labelled, from its first ones on
    assert history["t"][0] <= min(inside) < history["t"][0] + 3 * 3600

    # the plan's series are api/plan's steps from now on (SOC at each step's end)
    for _ in range(5):
        drawn = await page.evaluate(PLAN_AS_DRAWN)
        if drawn["made_at"] == drawn["api"]["made_at"]:
            break
    assert drawn["made_at"] == drawn["api"]["made_at"], "the plan kept changing"
    ahead = [
        s
        for s in drawn["api"]["steps"]
        if datetime.fromisoformat(s["start"]).timestamp() + s["hours"] * 3600 > drawn["now"] + 1
    ]
    assert len(ahead) >= 8
    assert [r["start"] for r in drawn["rows"]] == [s["start"] for s in ahead]
    for row, step in zip(drawn["rows"], ahead, strict=True):
        assert row["battery"] == step["battery_kw"], step["start"]
        assert row["grid"] == step["grid_kw"], step["start"]
        assert row["price"] == step["import_price"]
        assert row["soc"] == step["soc"]

    # the plan as a list a person reads: runs of one action, the first from now
    items = page.locator("section.optimiser [data-bind=plan-list] li")
    await expect(items.first).to_be_visible()
    runs = 1 + sum(1 for a, b in itertools.pairwise(ahead) if a["action"] != b["action"])
    assert await items.count() == min(runs, 8)
    assert getattr(page, "errors") == []  # noqa: B009


async def test_the_money_and_the_plan_now_are_what_the_api_reports(home: Home, browser: Browser) -> None:
    optimiser = home.runtime.optimiser
    assert optimiser is not None
    await until(lambda: bool(optimiser.plan_json().get("steps")), 60)
    page = await open_panel(browser, home.ingress_url)
    card = page.locator("section.optimiser")
    await expect(card.locator("[data-bind=plan_cost_today]")).not_to_have_text("—")
    keys = ("plan_cost_today", "plan_saving_today", "plan_cost_tomorrow")
    shown: dict[str, str] = {}
    wanted: dict[str, str] = {}
    for _ in range(10):  # the plan is made anew every (demo) quarter-hour: compare one moment's figures
        state = await page.evaluate("fetch('api/state').then((r) => r.json())")
        shown = {key: await card.locator(f"[data-bind={key}]").inner_text() for key in keys}
        values = state["optimiser"]
        wanted = {key: euro(values[key]) for key in keys}
        if shown == wanted:
            break
        await asyncio.sleep(0.3)
    assert shown == wanted
    assert all(text.startswith("€ ") for text in shown.values())
    now = card.locator("[data-bind=plan-now]")
    await expect(now).to_contain_text("Now:")
    await expect(card.locator(".peak .meter-text")).to_contain_text("target")


async def test_the_savings_report_runs_from_the_panel_and_shows_what_the_api_reports(
    home: Home, browser: Browser
) -> None:
    optimiser = home.runtime.optimiser
    assert optimiser is not None
    optimiser.live.history = QuarterHistory.restored(home.world.past_weeks(days=1))  # the demo's seeded past
    page = await open_panel(browser, home.ingress_url)
    section = page.locator("section#report")
    await expect(section.locator("[data-bind=report-status]")).to_have_text("not run yet")
    await section.locator("[data-bind=report-run]").click()
    await expect(section.locator("[data-bind=report-run]")).to_be_disabled()
    rows = section.locator("tr[data-scenario]")
    await expect(rows).to_have_count(5, timeout=60_000)
    status = await page.evaluate("fetch('api/report').then((r) => r.json())")
    assert status["state"] == "done"
    scenarios = status["report"]["scenarios"]
    for name, figures in scenarios.items():
        row = section.locator(f'tr[data-scenario="{name}"]')
        assert await row.locator("[data-key=bill]").inner_text() == euro(figures["bill_eur"])
        assert await row.locator("[data-key=saving]").inner_text() == euro(figures["saving_eur"])
        share = "—" if figures["share"] is None else f"{round(figures['share'] * 100)} %"
        assert await row.locator("[data-key=share]").inner_text() == share
    await expect(section.locator('tr[data-scenario="auto_all"] th')).to_have_text("Batteries in Auto")
    await expect(section.locator("[data-bind=report-status]")).to_contain_text("made ")
    await expect(section.locator("[data-bind=report-run]")).to_be_enabled()
    await expect(section.locator(".report-chart canvas").first).to_be_visible()  # the month's bars
    assert await page.evaluate("window.mwaReport.months") == status["report"]["months"]
    await section.screenshot(path=str(SCREENSHOTS / "panel-report.png"))


async def test_a_running_report_is_cancelled_from_the_panel_and_the_last_one_stays(
    home: Home, browser: Browser
) -> None:
    optimiser = home.runtime.optimiser
    assert optimiser is not None
    page = await open_panel(browser, home.ingress_url)
    section = page.locator("section#report")
    before = await page.evaluate("fetch('api/report').then((r) => r.json())")
    optimiser.live.history = QuarterHistory.restored(home.world.past_weeks(days=21))  # a longer run
    cancel = section.locator("[data-bind=report-cancel]")
    await expect(cancel).to_be_hidden()
    await section.locator("[data-bind=report-run]").click()
    await expect(cancel).to_be_visible()
    await cancel.click()
    await expect(section.locator("[data-bind=report-status]")).to_contain_text("cancelled")
    await expect(cancel).to_be_hidden()
    await expect(section.locator("[data-bind=report-run]")).to_be_enabled()
    status = await page.evaluate("fetch('api/report').then((r) => r.json())")
    assert status["state"] == "cancelled"
    assert status["report"] == before["report"]  # the last finished report, if any, is kept
    assert await section.locator("[data-bind=report-error]").inner_text() == ""


async def test_the_phone_layout_fits_and_the_chart_follows_the_width(home: Home, browser: Browser) -> None:
    seed_history(home, 3)
    page = await open_panel(browser, home.ingress_url, width=390)
    await expect(page.locator("#chart canvas").first).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    width = await page.evaluate("document.querySelector('#chart .uplot').getBoundingClientRect().width")
    assert 240 <= width <= 390
    await page.set_viewport_size({"width": 1000, "height": 900})  # turned, or a tablet: the chart grows
    # Polled from here: the panel's CSP forbids eval, which wait_for_function's polling inside the page needs.
    for _ in range(100):
        if await page.evaluate("document.querySelector('#chart .uplot').getBoundingClientRect().width") > 800:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the chart did not grow with the viewport")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


async def test_without_the_chart_library_the_panel_works_and_says_so(
    home: Home, browser: Browser, tmp_path: Path
) -> None:
    panel = Panel(home.runtime, allowed={PROXY_ADDRESS}, clock=home.world.clock, vendor=tmp_path / "none")
    port = await panel.start("127.0.0.1", 0)
    try:
        async with ingress_proxy(port) as url:
            page = await open_panel(browser, url)
            await expect(page.locator("[data-bind=chart-missing]")).to_contain_text("chart library")
            await expect(page.locator("section.optimiser .badge").first).to_have_text("on")
            assert await page.locator("#chart canvas").count() == 0
            assert await page.evaluate("typeof uPlot") == "undefined"
            assert getattr(page, "errors") == []  # noqa: B009 - no failed request for the missing files
            await page.close()
    finally:
        await panel.stop()


async def test_enum_values_read_in_the_browsers_language_and_controls_send_the_raw_value(
    home: Home, browser: Browser
) -> None:
    assert home.runtime.mqtt is not None
    router = home.runtime.mqtt.router
    sent: list[tuple[str, str, bytes | str]] = []
    original = router.run

    async def recording(device_id: str, key: str, payload: bytes | str, source: str, timeout: float) -> Any:
        sent.append((device_id, key, payload))
        return await original(device_id, key, payload, source, timeout)

    router.run = recording  # type: ignore[method-assign]
    # Dutch as the browser speaks it (navigator.language and Accept-Language alike)
    page = await open_panel(browser, home.ingress_url, locale="nl-NL")
    assert await page.evaluate("navigator.language") == "nl-NL"
    await expect(page.locator("html")).to_have_attribute("lang", "nl")
    card = page.locator('section.battery[aria-label="FaseB"]')
    mode = card.locator("select[data-key=mode]")
    labels = await mode.locator("option").evaluate_all("(options) => options.map((o) => [o.value, o.text])")
    assert ["Auto", "Automatisch"] in labels
    assert ["Passive", "Passief"] in labels
    await expect(card.locator("[data-bind=mode]")).to_have_text(re.compile("^(Automatisch|Passief)$"))
    await expect(card.locator(".badge")).to_have_text("online")

    wallbox = page.locator("section.wallbox")
    charge_mode = wallbox.locator("select[data-key=charge_mode]")
    await expect(charge_mode.locator('option[value="off"]')).to_have_text("Uit")
    await charge_mode.select_option(label="Uit")
    device = home.runtime.wallboxes[0]
    await until(lambda: device.charge is not None and device.charge.mode == "off", 30)
    assert (device.device_id, "charge_mode", "off") in sent  # the raw value, never the label
    await expect(wallbox.locator(".outcome")).to_contain_text("applied")

    await mode.select_option(label="Automatisch")
    battery = home.runtime.batteries[1]
    await until(lambda: (battery.device_id, "mode", "Auto") in sent)
    assert not any(payload in ("Automatisch", "Uit") for _, _, payload in sent)
    assert getattr(page, "errors") == []  # noqa: B009


async def test_accept_language_picks_the_labels_when_it_names_one_of_ours(
    home: Home, browser: Browser
) -> None:
    # the ingress request asks for German while the browser itself says English: the request wins
    page = await open_panel(
        browser, home.ingress_url, locale="en-US", extra_http_headers={"Accept-Language": "fr, de;q=0.8"}
    )
    await expect(page.locator("html")).to_have_attribute("lang", "de")
    mode = page.locator('section.battery[aria-label="FaseA"] select[data-key=mode]')
    await expect(mode.locator('option[value="Manual"]')).to_have_text("Manuell")
    # and with nothing of ours asked for: English
    english = await open_panel(browser, home.ingress_url, locale="fr-FR")
    await expect(english.locator("html")).to_have_attribute("lang", "en")
    mode = english.locator('section.battery[aria-label="FaseA"] select[data-key=mode]')
    await expect(mode.locator('option[value="Auto"]')).to_have_text("Auto")


async def test_a_configured_device_that_never_answers_has_a_greyed_card_with_the_reason(
    broker: Broker, udp_port: int, tmp_path: Path, browser: Browser
) -> None:
    battery_port = free_port()  # nothing listens on either
    wallbox_port = free_port(socket.SOCK_STREAM)
    extra = {
        "batteries": [{"name": "Garage", "host": "127.0.0.1", "port": battery_port}],
        "wallboxes": [{"name": "Shed", "host": "127.0.0.1", "port": wallbox_port, "model": "next"}],
    }
    async with demo_home(broker, udp_port, tmp_path, extra) as home:
        page = await open_panel(browser, home.ingress_url)
        for kind, name, port in (("battery", "Garage", battery_port), ("wallbox", "Shed", wallbox_port)):
            card = page.locator(f'section.{kind}.unreachable[aria-label="{name}"]')
            await expect(card).to_be_visible()
            await expect(card.locator("h2 .name")).to_have_text(name)
            await expect(card.locator(".badge")).to_have_text("offline")
            await expect(card.locator("[data-bind=address]")).to_have_text(f"127.0.0.1:{port}")
            # the reason is the runtime's problem for the device (a NEXT has its id from the options, so
            # it is "offline"; a battery that never answered "has not answered yet")
            problem = next(p["text"] for p in home.runtime.problems() if p["source"] == name)
            assert f"127.0.0.1:{port}" in problem
            shown = card.locator("[data-bind=reason]")
            await expect(shown).to_contain_text(problem.split(":")[0])
            await expect(shown).to_contain_text(f"127.0.0.1:{port}")
            # greyed: dashed and on the muted background, unlike the cards of devices that answer
            style = await card.evaluate("(el) => getComputedStyle(el).borderTopStyle")
            assert style == "dashed"
        # The demo's own devices answer, though on a busy machine not always before the page opens: until
        # their first reply they are greyed too, so wait for it.
        online = page.locator('section.battery[aria-label="FaseA"]')
        await expect(online.locator(".badge")).to_have_text("online", timeout=30_000)
        assert await online.evaluate("(el) => getComputedStyle(el).borderTopStyle") == "solid"
        await expect(page.locator("section.unreachable")).to_have_count(2, timeout=30_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "panel-unreachable.png"), full_page=True)
        assert getattr(page, "errors") == []  # noqa: B009
