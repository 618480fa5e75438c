"""The link to Home Assistant and the live inputs on it, when that link misbehaves (fake Home Assistant on
127.0.0.1; the live test runs the whole add-on against the battery simulators and a real Mosquitto)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from marstek_webasto_addon.addon import homeassistant
from marstek_webasto_addon.addon.ha_inputs import (
    EntityPowerInput,
    EntityPvForecast,
    HomeAssistantInputs,
    WeatherPvForecast,
)
from marstek_webasto_addon.addon.homeassistant import HomeAssistantClient
from marstek_webasto_addon.addon.supervisor import SupervisorError, mqtt_service

from .conftest import SimFactory, until
from .ha_fake import FakeHomeAssistant
from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import bridge
from .test_ha_inputs import P1, WEATHER, fake, running

__all__ = ["broker", "fake"]
pytestmark = pytest.mark.timeout(60)
LOGGER = homeassistant.__name__


@contextlib.asynccontextmanager
async def client_running(client: HomeAssistantClient) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# the grid meter while Home Assistant is away ----------------------------------------------------------------


async def test_the_meter_is_no_reading_while_home_assistant_is_down(fake: FakeHomeAssistant) -> None:
    grid = EntityPowerInput(P1)
    async with running(HomeAssistantInputs([grid], None, url=fake.url, token=fake.token)):
        await until(lambda: grid.current().value is not None, 5)
        fake.core_down = True  # a restart: the Supervisor's proxy answers 502 until Core is back
        await fake.drop_connections()
        await until(lambda: "not connected" in grid.current().problem, 5)
        assert grid.current().value is None  # not the number from before the restart, as if live
        fake.core_down = False
        await until(lambda: grid.current().value == pytest.approx(800), 10)
        assert grid.current().problem == ""


async def test_the_optimiser_holds_safe_while_home_assistant_restarts(
    fake: FakeHomeAssistant,
    broker: Broker,
    make_sim: SimFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A meter that may be minutes apart (input_stale_after 600) is still no meter once the link is gone."""
    monkeypatch.setenv("MWA_HA_URL", fake.url)
    monkeypatch.setenv("MWA_HA_TOKEN", fake.token)
    sim = await make_sim(1, socs=[60.0])
    options = {
        "batteries": [{"name": f"B{i}", "host": h, "port": p} for i, (h, p) in enumerate(sim.addresses)],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
        "grid_source": {"type": "entity", "entity_id": P1},
        "control_interval": 1,
        "optimiser": {"enabled": True, "night_charging": False, "input_stale_after": 600},
    }
    status = "marstek_webasto/optimiser/state"

    def state() -> dict[str, object]:
        value: dict[str, object] = json.loads(recorder.latest[status])
        return value

    async with recording(broker) as recorder, bridge(broker, options, tmp_path):
        await recorder.wait_for(
            lambda: (
                status in recorder.latest and state()["grid_power"] == 800 and state()["input_stale"] == "OFF"
            ),
            15,
            "the grid power from Home Assistant",
        )
        fake.core_down = True
        await fake.drop_connections()
        await recorder.wait_for(lambda: state()["input_stale"] == "ON", 10, "the meter stale with its link")
        fake.core_down = False
        await recorder.wait_for(lambda: state()["input_stale"] == "OFF", 15, "the meter back")


# an entity that is not there --------------------------------------------------------------------------------


async def test_an_entity_that_does_not_exist_is_named_so_and_not_said_to_be_unconnected(
    fake: FakeHomeAssistant,
) -> None:
    grid, pv = EntityPowerInput("sensor.p1_powr"), EntityPvForecast("sensor.energy_tomorow")
    async with running(HomeAssistantInputs([grid], pv, url=fake.url, token=fake.token)) as inputs:
        await until(lambda: "does not exist" in grid.current().problem, 5)
        assert "sensor.p1_powr" in grid.current().problem
        await until(lambda: "does not exist" in pv.problem, 5)
        fake.core_down = True
        await fake.drop_connections()
        await until(lambda: "not connected" in grid.current().problem, 5)
        fake.core_down = False
        await until(lambda: inputs.client is not None and inputs.client.connected and not inputs.problem, 10)
        # connected again: the problem says what is wrong now, not the outage that is over
        await until(lambda: "does not exist" in grid.current().problem, 5)


# the Supervisor's proxy closing at once ---------------------------------------------------------------------


async def test_a_proxy_that_accepts_and_closes_at_once_is_retried_with_backoff(
    fake: FakeHomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    """The notifications' client subscribes to nothing: auth_ok alone does not show Core is there."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake.close_after_auth = True
    client = HomeAssistantClient([], url=fake.url, token=fake.token, backoff=(0.05, 0.4))
    async with client_running(client):
        await fake.wait_for(lambda: len(fake.auth_attempts) >= 6, 10)
        gaps = [later - earlier for earlier, later in itertools.pairwise(fake.auth_attempts[:6])]
        for gap, delay in zip(gaps, [0.05, 0.1, 0.2, 0.4, 0.4], strict=True):
            assert gap >= delay - 0.01
        assert not client.connected
        fake.close_after_auth = False
        await fake.wait_for(lambda: len(fake.connections) == 1, 5)
        await client.wait_connected(5)
        await client.call_service("persistent_notification", "create", {"message": "hello"})
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("reconnecting" in m for m in messages) == 1  # one warning for the outage
    assert sum("connected to Home Assistant" in m for m in messages) == 1  # and only the real connection


# a message no one foresaw -----------------------------------------------------------------------------------


async def test_a_time_out_of_range_does_not_end_the_connection_or_the_add_on(fake: FakeHomeAssistant) -> None:
    grid = EntityPowerInput(P1)
    async with running(HomeAssistantInputs([grid], None, url=fake.url, token=fake.token)) as inputs:
        await until(lambda: grid.current().value is not None, 5)
        assert inputs.client is not None
        [subscription] = fake.commands("subscribe_entities")
        # last_changed in milliseconds, as a JavaScript clock gives it: the year 58000
        update = {"c": {P1: {"+": {"s": "1.5", "lc": 1.8e12}}}}
        await fake.push_raw({"id": subscription["id"], "type": "event", "event": update})
        await fake.set_state(P1, "0.9")
        await until(lambda: grid.current().value == pytest.approx(900), 5)
        assert len(fake.auth_attempts) == 1


async def test_a_no_date_sentinel_in_the_weather_forecast_costs_one_hour_not_the_add_on(
    fake: FakeHomeAssistant,
) -> None:
    """0001-01-01 and 9999-12-31 with an offset: one of them leaves the calendar in any local zone."""
    evening = datetime.now().replace(hour=21, minute=0, second=0, microsecond=0)
    tomorrow = evening.date() + timedelta(days=1)
    start = datetime.combine(tomorrow, datetime.min.time()).astimezone()
    sunny = [
        {"datetime": (start + timedelta(hours=h)).isoformat(), "condition": "sunny"} for h in range(10, 14)
    ]
    sentinels = [
        {"datetime": "0001-01-01T00:00:00+14:00", "condition": "sunny"},
        {"datetime": "9999-12-31T23:00:00-12:00", "condition": "sunny"},
    ]
    fake.forecasts[WEATHER] = sentinels + sunny
    grid, pv = EntityPowerInput(P1), WeatherPvForecast(WEATHER)
    inputs = HomeAssistantInputs([grid], pv, url=fake.url, token=fake.token, now=lambda: evening)
    async with running(inputs):
        await until(lambda: pv.hours is not None or pv.problem != "not fetched yet", 5)
        assert pv.hours == 4
        assert pv.problem == ""
        await fake.set_state(P1, "1.1")
        await until(lambda: grid.current().value == pytest.approx(1100), 5)


# the Supervisor's API ---------------------------------------------------------------------------------------


async def test_the_supervisors_error_page_and_silence_are_said_plainly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 502 page while the Supervisor restarts and an API that does not answer: the panel's "waiting for an
    MQTT broker" must say that, not "Extra data: line 1 column 4" or nothing at all."""
    release = asyncio.Event()

    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, text="502: Bad Gateway")

    async def silent(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"result": "ok", "data": {"host": "core-mosquitto"}})

    app = web.Application()
    app.router.add_get("/bad/services/mqtt", bad_gateway)
    app.router.add_get("/silent/services/mqtt", silent)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    monkeypatch.setenv("SUPERVISOR_TOKEN", "a-token")
    try:
        with pytest.raises(SupervisorError, match=r"HTTP 502 502: Bad Gateway"):
            await mqtt_service(f"http://127.0.0.1:{port}/bad")
        with pytest.raises(SupervisorError, match=r"no answer within 0\.3 s"):
            await mqtt_service(f"http://127.0.0.1:{port}/silent", timeout=0.3)
    finally:
        release.set()
        await runner.cleanup()
