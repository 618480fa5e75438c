"""The panel says why the optimiser leaves a battery alone: a command given here (the panel, Home Assistant)
or a mode switched in the Marstek app (the optimiser's app-change hold, `ManualHolds.hold_outside`).

The state API carries the app's mode next to the hold's end (`manual_hold_outside_mode`, None for a command
given here), and the battery's card words the hold after it. The API against simulated batteries and a real
broker; the card in headless Chromium on the demo's home (as tests/test_panel_browser.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from .conftest import SimFactory, until
from .mqtt_fixtures import Broker, broker
from .test_panel_api import panel_setup
from .test_panel_browser import Home, browser, home, open_panel
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["broker", "browser", "home", "make_box"]
pytestmark = pytest.mark.timeout(180)

# the hold's end as the card shows it (toLocaleTimeString, 2-digit hour and minute, in the browser's locale)
END = r"\d\d:\d\d(\s?[AP]M)?"


async def test_the_state_names_the_apps_mode_for_an_app_change_hold_and_none_for_a_command_given_here(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        app_held, commanded = s.battery_id(0), s.battery_id(1)
        state = await s.get("api/state")
        for battery in state["batteries"]:  # no hold: no origin either
            assert battery["manual_hold"] is None
            assert battery["manual_hold_outside_mode"] is None

        # FaseA switched to AI in the Marstek app, held for it as the optimiser holds it; FaseB set to AI
        # here, by a person on the panel: the same mode, a hold of another kind.
        holds = s.runtime.holds
        holds.hold_outside(app_held, "AI", holds.now() + 30 * 60)
        status, body = await s.command({"device": commanded, "key": "mode", "value": "AI"})
        assert (status, body["ok"]) == (200, True), body
        await until(lambda: holds.get(commanded) is not None, 15)

        state = await s.get("api/state")
        by_id = {b["id"]: b for b in state["batteries"]}
        assert by_id[app_held]["manual_hold"] is not None
        assert by_id[app_held]["manual_hold_outside_mode"] == "AI"
        assert by_id[commanded]["manual_hold"] is not None
        assert by_id[commanded]["manual_hold_outside_mode"] is None

        # Return to optimiser ends the app-change hold: no end, and no origin left behind.
        status, body = await s.command({"device": app_held, "key": "resume_optimiser", "value": "PRESS"})
        assert (status, body["ok"]) == (200, True), body
        state = await s.get("api/state")
        by_id = {b["id"]: b for b in state["batteries"]}
        assert by_id[app_held]["manual_hold"] is None
        assert by_id[app_held]["manual_hold_outside_mode"] is None


async def test_the_card_says_a_mode_switched_in_the_app_holds_the_battery_not_your_command(
    home: Home, browser: Browser
) -> None:
    page = await open_panel(browser, home.ingress_url)
    sim = home.world.marstek
    runtime = home.runtime
    app_held, commanded = runtime.batteries[0], runtime.batteries[1]
    assert app_held.device_id is not None
    assert commanded.device_id is not None

    # FaseA switched to UPS in the Marstek app, and held for it (two hours of the demo's clock).
    sim.batteries[0].mode = "UPS"
    runtime.holds.hold_outside(app_held.device_id, "UPS", runtime.holds.now() + 120 * 60)
    # FaseB: Discharge pressed on its card, for four hours of the demo's clock.
    card = page.locator('section.battery[aria-label="FaseB"]')
    await card.get_by_label("Minutes").fill("240")
    await card.get_by_role("button", name="Discharge").click()
    await until(lambda: runtime.holds.get(commanded.device_id) is not None, 30)

    app_text = page.locator('section.battery[aria-label="FaseA"] [data-bind="manual_hold"]')
    await expect(app_text).to_have_text(
        re.compile(
            rf"^Switched to UPS \(backup\) in the Marstek app: the optimiser leaves this battery alone until "
            rf"{END}\. Return to optimiser hands it back now\.$"
        ),
        timeout=15_000,  # (the hold reaches the page with the demo's next poll)
    )
    await expect(card.locator('[data-bind="manual_hold"]')).to_have_text(
        re.compile(rf"^Your command holds this battery until {END}: the optimiser leaves it alone\.$"),
        timeout=15_000,
    )
    assert getattr(page, "errors") == []  # noqa: B009
