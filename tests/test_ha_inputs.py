"""The optimiser's Home Assistant inputs (grid sensor, PV forecast) against a fake Home Assistant."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.ha_inputs import (
    FORECAST_MAX_AGE_S,
    EntityPowerInput,
    EntityPvForecast,
    HomeAssistantInputs,
    WeatherPvForecast,
)
from marstek_webasto_addon.addon.inputs import coming_day

from .conftest import SimFactory, until
from .ha_fake import FakeHomeAssistant
from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import bridge

__all__ = ["broker"]
P1 = "sensor.p1_power"
PV = "sensor.energy_production_tomorrow"
WEATHER = "weather.forecast_home"


@pytest.fixture
async def fake() -> AsyncIterator[FakeHomeAssistant]:
    ha = FakeHomeAssistant()
    ha.preset(P1, "0.8", {"unit_of_measurement": "kW", "device_class": "power"})
    ha.preset(PV, "9.6", {"unit_of_measurement": "kWh", "device_class": "energy"})
    await ha.start()
    yield ha
    await ha.stop()


@contextlib.asynccontextmanager
async def running(inputs: HomeAssistantInputs) -> AsyncIterator[HomeAssistantInputs]:
    task = asyncio.create_task(inputs.run())
    try:
        yield inputs
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.cancelled(), f"the Home Assistant inputs ended by themselves: {task.exception()!r}"


def hourly(day: date, sunny: range, other: str = "cloudy") -> list[dict[str, Any]]:
    """A local-time hourly forecast for `day` with the hours in `sunny` sunny."""
    start = datetime.combine(day, datetime.min.time()).astimezone()
    return [
        {"datetime": (start + timedelta(hours=h)).isoformat(), "condition": "sunny" if h in sunny else other}
        for h in range(24)
    ]


async def test_a_grid_sensor_in_kw_becomes_watts_and_follows_every_change(fake: FakeHomeAssistant) -> None:
    grid = EntityPowerInput(P1)
    async with running(HomeAssistantInputs([grid], None, url=fake.url, token=fake.token)):
        await until(lambda: grid.current().value is not None)
        assert grid.current().value == pytest.approx(800)
        assert grid.current().problem == ""
        await fake.set_state(P1, "-1.25")
        await until(lambda: grid.current().value == pytest.approx(-1250))
        age = grid.current().age()
        assert age is not None
        assert age < 1


async def test_an_unavailable_or_removed_meter_leaves_no_number_and_says_why(fake: FakeHomeAssistant) -> None:
    grid = EntityPowerInput(P1)
    async with running(HomeAssistantInputs([grid], None, url=fake.url, token=fake.token)):
        await until(lambda: grid.current().value is not None)
        await fake.set_state(P1, "unavailable")
        await until(lambda: grid.current().value is None)
        assert "unavailable" in grid.current().problem
        await fake.set_state(P1, "0.5")
        await until(lambda: grid.current().value == pytest.approx(500))
        await fake.remove_state(P1)
        await until(lambda: grid.current().value is None)
        assert "does not exist" in grid.current().problem


async def test_an_implausible_meter_reading_is_no_reading(fake: FakeHomeAssistant) -> None:
    grid = EntityPowerInput(P1)
    async with running(HomeAssistantInputs([grid], None, url=fake.url, token=fake.token)):
        await until(lambda: grid.current().value is not None)
        await fake.set_state(P1, "4200")  # kW: a glitch, as the month's capacity peak it would stay
        await until(lambda: grid.current().value is None)
        assert "beyond 60 kW" in grid.current().problem
        await fake.set_state(P1, "-59.5")  # a large export is still a reading
        await until(lambda: grid.current().value == pytest.approx(-59500))
        assert grid.current().problem == ""


async def test_an_energy_sensor_as_grid_source_is_a_configuration_error(fake: FakeHomeAssistant) -> None:
    grid = EntityPowerInput(PV)
    async with running(HomeAssistantInputs([grid], None, url=fake.url, token=fake.token)):
        await until(lambda: grid.current().problem != "" and "not received" not in grid.current().problem)
        assert grid.current().value is None
        assert "power sensor" in grid.current().problem


async def test_invert_and_the_unit_of_a_sensor_without_one(fake: FakeHomeAssistant) -> None:
    fake.preset("sensor.export_positive", "3")  # a template sensor without unit_of_measurement
    grid = EntityPowerInput("sensor.export_positive", unit="kW", invert=True)
    async with running(HomeAssistantInputs([grid], None, url=fake.url, token=fake.token)):
        await until(lambda: grid.current().value is not None)
        assert grid.current().value == pytest.approx(-3000)


async def test_a_lost_connection_is_reported_and_the_reading_ages(fake: FakeHomeAssistant) -> None:
    grid = EntityPowerInput(P1)
    async with running(HomeAssistantInputs([grid], None, url=fake.url, token=fake.token)) as inputs:
        await until(lambda: grid.current().value is not None)
        fake.core_down = True
        await fake.drop_connections()
        await until(lambda: "not connected" in grid.current().problem, 5)
        assert "not connected" in inputs.problem
        at = grid.current().at
        fake.core_down = False
        await until(lambda: grid.current().at != at, 10)  # fresh states after the reconnect
        assert grid.current().problem == ""


async def test_without_a_token_the_inputs_say_so_and_the_task_keeps_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SUPERVISOR_TOKEN", raising=False)
    grid, pv = EntityPowerInput(P1), EntityPvForecast(PV)
    inputs = HomeAssistantInputs([grid], pv, url="ws://127.0.0.1:9/core/websocket")
    async with running(inputs):
        await until(lambda: "SUPERVISOR_TOKEN" in grid.current().problem)
        assert "SUPERVISOR_TOKEN" in pv.problem
        assert pv.kwh() is None
        await asyncio.sleep(0.1)


async def test_an_energy_forecast_entity_in_wh_or_kwh(fake: FakeHomeAssistant) -> None:
    pv = EntityPvForecast(PV)
    async with running(HomeAssistantInputs([], pv, url=fake.url, token=fake.token)):
        await until(lambda: pv.kwh() is not None)
        assert pv.kwh() == pytest.approx(9.6)
        await fake.set_state(PV, "12500", {"unit_of_measurement": "Wh"})
        await until(lambda: pv.kwh() == pytest.approx(12.5))
        await fake.set_state(PV, "unknown")
        await until(lambda: pv.kwh() is None)
        assert "unknown" in pv.problem


async def test_sunny_hours_of_the_coming_day_times_the_yield_per_hour(fake: FakeHomeAssistant) -> None:
    evening = datetime.now().replace(hour=21, minute=0, second=0, microsecond=0)
    tomorrow = evening.date() + timedelta(days=1)
    # 05-22 sunny: only 07:00-19:59 count, 13 hours; today's sun must not count for tomorrow
    fake.forecasts[WEATHER] = hourly(evening.date(), range(24)) + hourly(tomorrow, range(5, 22))
    per_hour = [600.0]
    pv = WeatherPvForecast(WEATHER, lambda: per_hour[0])
    inputs = HomeAssistantInputs([], pv, url=fake.url, token=fake.token, now=lambda: evening)
    async with running(inputs):
        await until(lambda: pv.kwh() is not None)
        assert pv.hours == 13
        assert pv.day == tomorrow
        assert pv.kwh() == pytest.approx(13 * 0.6)
        per_hour[0] = 1000.0  # the parameter changed in Home Assistant
        assert pv.kwh() == pytest.approx(13.0)
        assert pv.problem == ""
        assert pv.detail()["sunny_hours"] == 13


async def test_a_weather_entity_without_a_forecast_is_a_visible_problem(fake: FakeHomeAssistant) -> None:
    pv = WeatherPvForecast("weather.nowhere")
    async with running(HomeAssistantInputs([], pv, url=fake.url, token=fake.token)):
        await until(lambda: "get_forecasts" in pv.problem)
        assert pv.kwh() is None


def test_an_old_weather_forecast_is_no_forecast() -> None:
    now = datetime(2026, 6, 3, 22, 0, tzinfo=UTC).astimezone()
    pv = WeatherPvForecast(WEATHER)
    pv.update(hourly(coming_day(now), range(8, 12)), now)
    assert pv.kwh() == pytest.approx(4 * 0.6)
    assert pv.fetched_at is not None
    assert pv.kwh(now=pv.fetched_at + FORECAST_MAX_AGE_S + 1) is None
    short = WeatherPvForecast(WEATHER)
    short.update(hourly(now.date(), range(24)), now)  # ends before the coming day
    assert short.hours == 0
    assert "does not reach" in short.problem


def test_the_coming_day_is_today_after_midnight_and_tomorrow_in_the_evening() -> None:
    assert coming_day(datetime(2026, 3, 1, 2, 30)) == date(2026, 3, 1)
    assert coming_day(datetime(2026, 3, 1, 11, 59)) == date(2026, 3, 1)
    assert coming_day(datetime(2026, 3, 1, 12, 0)) == date(2026, 3, 2)
    assert coming_day(datetime(2026, 3, 1, 23, 0)) == date(2026, 3, 2)


async def test_the_live_optimiser_reads_its_meter_and_forecast_from_home_assistant(
    fake: FakeHomeAssistant,
    broker: Broker,
    make_sim: SimFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MWA_HA_URL", fake.url)
    monkeypatch.setenv("MWA_HA_TOKEN", fake.token)
    sim = await make_sim(2, socs=[60.0, 30.0])
    options = {
        "batteries": [{"name": f"B{i}", "host": h, "port": p} for i, (h, p) in enumerate(sim.addresses)],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
        "grid_source": {"type": "entity", "entity_id": P1},
        "pv_forecast": {"type": "entity", "entity_id": PV},
        "control_interval": 1,
        "optimiser": {"enabled": True, "night_charging": False, "input_stale_after": 30},
    }
    status = "marstek_webasto/optimiser/state"
    async with recording(broker) as recorder, bridge(broker, options, tmp_path) as runtime:
        await recorder.wait_for(
            lambda: (
                status in recorder.latest
                and json.loads(recorder.latest[status])["grid_power"] == 800
                and json.loads(recorder.latest[status]).get("input_stale") == "OFF"
            ),
            15,
            "the grid power from Home Assistant",
        )
        state = json.loads(recorder.latest[status])
        assert state["pv_forecast_tomorrow"] == pytest.approx(9.6)
        assert runtime.ha_inputs is not None
        await fake.set_state(P1, "unavailable")
        await recorder.wait_for(
            lambda: json.loads(recorder.latest[status])["input_stale"] == "ON", 10, "the meter is gone"
        )
        stale_attributes = "marstek_webasto/optimiser/input_stale/attributes"  # a topic of its own
        await recorder.wait_for(lambda: stale_attributes in recorder.latest, 10, "its attributes")
        attributes = json.loads(recorder.latest[stale_attributes])
        assert attributes["source"] == f"Home Assistant {P1}"
