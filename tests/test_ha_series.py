"""Day-ahead prices and detailed PV forecasts from Home Assistant entities, into the live planner."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.day_ahead import PriceFormula
from marstek_webasto_addon.addon.ha_inputs import HomeAssistantInputs
from marstek_webasto_addon.addon.ha_series import DayAheadPrices, DetailedPvForecast, EnergyPvForecast
from marstek_webasto_addon.addon.homeassistant import EntityState

from .conftest import SimFactory, until
from .ha_fake import FakeHomeAssistant
from .mqtt_fixtures import Broker, broker
from .test_bridge_mqtt import bridge

__all__ = ["broker"]
PRICES = "sensor.nordpool_kwh_be_eur"
SOLCAST_TODAY, SOLCAST_TOMORROW = "sensor.solcast_forecast_today", "sensor.solcast_forecast_tomorrow"
SPOT_ONLY = PriceFormula(import_multiplier=1, import_markup=0, grid_fees=0, vat_percent=0, export_adder=0)


def hourly_prices(day: date, price: Any) -> list[dict[str, Any]]:
    """Nord Pool's raw list for a local day: {start, end, value} per hour, in EUR/kWh."""
    midnight = datetime.combine(day, datetime.min.time()).astimezone()
    return [
        {
            "start": (midnight + timedelta(hours=h)).isoformat(),
            "end": (midnight + timedelta(hours=h + 1)).isoformat(),
            "value": price(h),
        }
        for h in range(24)
    ]


def nordpool(today: list[dict[str, Any]], tomorrow: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "unit": "kWh",
        "currency": "EUR",
        "raw_today": today,
        "raw_tomorrow": tomorrow or [],
        "tomorrow_valid": bool(tomorrow),
    }


def solcast(day: date, peak_kw: float) -> dict[str, Any]:
    """Solcast's half-hourly detailedForecast: a bell from 08:00 to 18:00 local time."""
    midnight = datetime.combine(day, datetime.min.time()).astimezone()
    rows = []
    for half in range(48):
        hour = half / 2
        kw = max(0.0, peak_kw * (1 - abs(hour - 13) / 5)) if 8 <= hour < 18 else 0.0
        rows.append(
            {"period_start": (midnight + timedelta(minutes=30 * half)).isoformat(), "pv_estimate": kw}
        )
    return {"detailedForecast": rows, "unit_of_measurement": "kWh"}


def forecast_solar(day: date, wh: dict[int, float]) -> dict[str, Any]:
    """Forecast.Solar's `wh_hours` as Home Assistant hands it out: keyed by each period's END, sunrise
    included (at 0 Wh, to the second), local time with its offset."""
    midnight = datetime.combine(day, datetime.min.time()).astimezone()
    hours: dict[str, float] = {(midnight + timedelta(hours=7, minutes=48, seconds=12)).isoformat(): 0.0}
    for end, energy in sorted(wh.items()):
        hours[(midnight + timedelta(hours=end)).isoformat()] = energy
    return {"wh_hours": hours}


def planner_options(addresses: list[tuple[str, int]], **sections: Any) -> dict[str, Any]:
    """The live planner on simulated batteries, the grid from Home Assistant's sensor.p1, and `sections`."""
    return {
        "batteries": [{"name": f"B{i}", "host": h, "port": p} for i, (h, p) in enumerate(addresses)],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
        "grid_source": {"type": "entity", "entity_id": "sensor.p1"},
        "control_interval": 1,
        "optimiser": {"enabled": True, "input_stale_after": 30},
        **sections,
    }


def state(entity_id: str, attributes: dict[str, Any]) -> EntityState:
    return EntityState(entity_id, "0.25", attributes, None, 0.0)


# --- the inputs alone ---------------------------------------------------------------------------------


def test_tomorrow_before_its_prices_are_out_repeats_today() -> None:
    today = date(2026, 3, 10)
    prices = DayAheadPrices(PRICES, SPOT_ONLY)
    prices.on_state(PRICES, state(PRICES, nordpool(hourly_prices(today, lambda h: h / 100))))
    assert prices.problem == ""
    start = datetime(2026, 3, 10, 22, 20)
    buy, sell = prices.series(start, 12)  # type: ignore[misc]
    assert buy[:7] == pytest.approx([0.22] * 3 + [0.23] * 4)  # 22:15 to 23:45
    assert buy[7:] == pytest.approx([0.0] * 4 + [0.01])  # tomorrow 00:00 to 01:15, as today's
    assert sell == pytest.approx(buy)
    version = prices.version
    tomorrow = hourly_prices(today + timedelta(days=1), lambda h: 0.5)
    prices.on_state(PRICES, state(PRICES, nordpool(hourly_prices(today, lambda h: h / 100), tomorrow)))
    assert prices.version == version + 1  # new prices: the planner re-plans
    buy, _ = prices.series(start, 12)  # type: ignore[misc]
    assert buy[7:] == pytest.approx([0.5] * 5)


def test_prices_that_cannot_be_read_say_why_and_keep_nothing_wrong() -> None:
    prices = DayAheadPrices(PRICES, SPOT_ONLY)
    prices.on_state(PRICES, state(PRICES, {"unit_of_measurement": "EUR/kWh"}))
    assert "no day-ahead prices found" in prices.problem
    assert prices.series(datetime(2026, 3, 10, 12), 4) is None
    prices.on_state(PRICES, None)
    assert prices.problem.startswith(f"{PRICES} does not exist in Home Assistant")


def test_an_entity_that_stopped_updating_is_reported_and_its_last_day_stands_in() -> None:
    prices = DayAheadPrices(PRICES, SPOT_ONLY)
    prices.on_state(PRICES, state(PRICES, nordpool(hourly_prices(date(2026, 3, 10), lambda h: h / 100))))
    buy, _ = prices.series(datetime(2026, 3, 11, 9, 0), 4)  # type: ignore[misc]
    assert buy == pytest.approx([0.09] * 4)
    assert "has no price for 2026-03-11 09:00" in prices.problem
    assert prices.series(datetime(2026, 3, 12, 9, 0), 4) is None  # two days old: the tariff instead
    assert "no prices for today" in prices.problem


def test_the_formula_makes_what_a_household_pays_and_gets() -> None:
    today = date(2026, 3, 10)
    prices = DayAheadPrices(PRICES, PriceFormula())  # the Flemish dynamic contract of the replay
    prices.on_state(PRICES, state(PRICES, nordpool(hourly_prices(today, lambda h: 0.10))))
    buy, sell = prices.series(datetime(2026, 3, 10, 9), 1)  # type: ignore[misc]
    assert buy[0] == pytest.approx((0.10 * 1.05 + 0.0068 + 0.13) * 1.06)
    assert sell[0] == pytest.approx(0.10 - 0.015)


def test_solcast_today_and_tomorrow_are_joined_and_give_tomorrows_kwh() -> None:
    today = date.today()
    pv = DetailedPvForecast([SOLCAST_TODAY, SOLCAST_TOMORROW])
    pv.on_state(SOLCAST_TODAY, state(SOLCAST_TODAY, solcast(today, 4.0)))
    assert pv.kwh() is None  # tomorrow not received yet
    pv.on_state(SOLCAST_TOMORROW, state(SOLCAST_TOMORROW, solcast(today + timedelta(days=1), 2.0)))
    assert pv.problem == ""
    # a triangle of 2 kW peak over 10 h, each half hour at its start's power: 10 kWh
    assert pv.kwh() == pytest.approx(10.0, abs=0.01)
    noon = pv.quarters(datetime.combine(today, datetime.min.time()).replace(hour=13), 2)
    assert noon == pytest.approx([4.0, 4.0])
    pv.on_state(SOLCAST_TOMORROW, state(SOLCAST_TOMORROW, {"detailedForecast": "garbage"}))
    assert SOLCAST_TOMORROW in pv.problem
    assert pv.kwh() is None  # what cannot be read is not used


def test_the_energy_dashboards_forecasts_are_summed_per_quarter_and_an_unknown_one_is_named() -> None:
    tomorrow = date.today() + timedelta(days=1)
    pv = EnergyPvForecast()
    assert pv.problem  # nothing fetched yet
    pv.update(
        {
            "east": forecast_solar(tomorrow, {9: 400, 13: 1000}),  # 08:00-09:00 400 Wh, 12:00-13:00 1 kWh
            "west": forecast_solar(tomorrow, {13: 2000}),
            "other": {"wh_hours": {f"{tomorrow.isoformat()}T12:00:00": 5000}},
        },
        {"east": "forecast_solar", "west": "forecast_solar", "other": "some_new_solar_integration"},
    )
    assert "some_new_solar_integration" in pv.problem  # left out, and said
    noon = datetime.combine(tomorrow, datetime.min.time()).replace(hour=12)
    assert pv.quarters(noon, 5) == pytest.approx([3.0, 3.0, 3.0, 3.0, 0.0])  # the END-keyed hour, both roofs
    assert pv.quarters(noon.replace(hour=8), 4) == pytest.approx([0.4] * 4)
    assert pv.kwh() == pytest.approx(3.4)
    version = pv.version
    pv.failed("the Energy dashboard's solar forecast could not be fetched: no connection")
    assert "no connection" in pv.problem
    assert pv.kwh() == pytest.approx(3.4)  # what was received stays good for the quarters it covers
    pv.update({}, {})
    assert "Energy dashboard names no solar forecast" in pv.problem
    assert pv.version == version


async def test_the_energy_dashboards_forecast_is_fetched_from_home_assistant() -> None:
    tomorrow = date.today() + timedelta(days=1)
    fake = FakeHomeAssistant()
    fake.config_entries = {"01JFORECAST": "forecast_solar", "01JMQTT": "mqtt"}
    await fake.start()
    pv = EnergyPvForecast()
    inputs = HomeAssistantInputs([], None, url=fake.url, token=fake.token, refresh=600, series=[pv])
    task = asyncio.create_task(inputs.run())
    try:
        await until(lambda: "names no solar forecast" in pv.problem, 5)
        fake.solar_forecasts = {"01JFORECAST": forecast_solar(tomorrow, {13: 1500})}
        await fake.drop_connections()  # the next fetch: after a reconnection (the refresh is half an hour)
        await until(lambda: pv.problem == "", 15)
        noon = datetime.combine(tomorrow, datetime.min.time()).replace(hour=12)
        assert pv.quarters(noon, 4) == pytest.approx([1.5] * 4)
        assert pv.detail()["integrations"] == ["forecast_solar"]
        assert fake.commands("energy/solar_forecast")
        assert fake.commands("config_entries/get")
        await fake.stop()  # Home Assistant goes away: said, and the forecast stays
        await until(lambda: "not refreshed" in pv.problem, 10)
        assert pv.quarters(noon, 4) == pytest.approx([1.5] * 4)
        fetched = len(fake.commands("energy/solar_forecast"))
        await fake.start()  # back: fetched again at once, not at the next half hour
        await until(lambda: pv.problem == "", 15)
        assert len(fake.commands("energy/solar_forecast")) > fetched
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fake.stop()


def test_one_unreadable_price_is_bridged_and_said_and_the_plan_goes_on_past_it() -> None:
    # A Nord Pool entry of "value": null at 14:00 ended the series there: a plan made at 10:00 had 16 steps
    # instead of the day's, and could not see the evening's prices.
    today = date(2026, 3, 10)
    prices = DayAheadPrices(PRICES, SPOT_ONLY)
    hours = hourly_prices(today, lambda h: None if h == 14 else h / 100)
    prices.on_state(PRICES, state(PRICES, nordpool(hours)))
    buy, _ = prices.series(datetime(2026, 3, 10, 10, 0), 56)  # type: ignore[misc]
    assert len(buy) == 56  # to 24:00, the end of the prices known
    assert buy[16:20] == pytest.approx([0.13] * 4)  # 14:00 to 15:00: the quarter before's price
    assert buy[20:24] == pytest.approx([0.15] * 4)
    assert "14:00" in prices.problem
    assert "the price before" in prices.problem
    # the ledger's price of a quarter in the hole, at every control step: bridged, and the hole still said
    assert prices.series(datetime(2026, 3, 10, 14, 20), 1) == ([0.13], [0.13])
    assert prices.series(datetime(2026, 3, 10, 16, 0), 1) == ([0.16], [0.16])
    assert "14:00" in prices.problem
    prices.on_state(PRICES, state(PRICES, nordpool(hourly_prices(today, lambda h: h / 100))))
    buy, _ = prices.series(datetime(2026, 3, 10, 10, 0), 56)  # type: ignore[misc]
    assert buy[16:20] == pytest.approx([0.14] * 4)
    assert prices.problem == ""


# --- live: the planner on Home Assistant's prices ----------------------------------------------------


async def test_the_live_planner_plans_on_the_price_entity_and_re_plans_when_tomorrow_arrives(
    broker: Broker, make_sim: SimFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = date.today()
    fake = FakeHomeAssistant()

    # a cheap night and an evening spike: 0.05 EUR/kWh from 02:00 to 05:00, 0.60 from 17:00 to 21:00
    def spot(hour: int) -> float:
        return 0.05 if 2 <= hour < 5 else 0.60 if 17 <= hour < 21 else 0.20

    fake.preset(PRICES, "0.2", nordpool(hourly_prices(today, spot)))
    fake.preset("sensor.p1", "300", {"unit_of_measurement": "W", "device_class": "power"})
    await fake.start()
    monkeypatch.setenv("MWA_HA_URL", fake.url)
    monkeypatch.setenv("MWA_HA_TOKEN", fake.token)
    sim = await make_sim(2, socs=[60.0, 30.0])
    options = planner_options(
        sim.addresses,
        prices={
            "type": "entity",
            "entity_id": PRICES,
            "import_multiplier": 1,
            "import_markup": 0,
            "grid_fees": 0,
            "vat_percent": 0,
            "export_adder": 0,
        },
    )
    try:
        async with bridge(broker, options, tmp_path) as runtime:
            controller = runtime.optimiser
            assert controller is not None
            await until(lambda: controller.plan_json()["status"] == "optimal", 15)
            plan = controller.plan_json()
            by_hour = {s["start"][:13]: s["import_price"] for s in plan["steps"]}
            assert by_hour[f"{today.isoformat()}T23"] == pytest.approx(0.20)
            if f"{today.isoformat()}T18" in by_hour:
                assert by_hour[f"{today.isoformat()}T18"] == pytest.approx(0.60)
            tomorrow = today + timedelta(days=1)
            assert by_hour[f"{tomorrow.isoformat()}T18"] == pytest.approx(0.60)  # today's, repeated
            await fake.set_state(
                PRICES, "0.2", nordpool(hourly_prices(today, spot), hourly_prices(tomorrow, lambda h: 0.33))
            )
            await until(
                lambda: (
                    {
                        s["import_price"]
                        for s in controller.plan_json()["steps"]
                        if s["start"][:10] == str(tomorrow)
                    }
                    == {0.33}
                ),
                15,  # a new plan on tomorrow's prices
            )
            await fake.set_state(PRICES, "unavailable", {}, keep=False)
            await until(
                lambda: PRICES in (controller.live.day_ahead.problem if controller.live.day_ahead else ""),
                10,
            )
            state = json.dumps(controller.plan_json())
            assert "optimal" in state  # the prices already received still hold for the hours they cover
    finally:
        await fake.stop()


async def test_the_live_planner_plans_on_the_energy_dashboards_forecast(
    broker: Broker, make_sim: SimFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tomorrow = date.today() + timedelta(days=1)
    fake = FakeHomeAssistant()
    fake.config_entries = {"01JFORECAST": "forecast_solar"}
    hours = forecast_solar(tomorrow - timedelta(days=1), {12: 500})["wh_hours"]  # today and tomorrow
    hours |= forecast_solar(tomorrow, {12: 800, 13: 2400})["wh_hours"]
    fake.solar_forecasts = {"01JFORECAST": {"wh_hours": hours}}
    fake.preset("sensor.p1", "300", {"unit_of_measurement": "W", "device_class": "power"})
    fake.preset("sensor.pv", "0", {"unit_of_measurement": "W", "device_class": "power"})
    await fake.start()
    monkeypatch.setenv("MWA_HA_URL", fake.url)
    monkeypatch.setenv("MWA_HA_TOKEN", fake.token)
    sim = await make_sim(1, socs=[50.0])
    options = planner_options(
        sim.addresses,
        pv_power={"type": "entity", "entity_id": "sensor.pv"},
        pv_forecast={"type": "energy"},
    )
    try:
        async with bridge(broker, options, tmp_path) as runtime:
            controller = runtime.optimiser
            assert controller is not None

            def tomorrow_pv() -> dict[str, float]:
                steps = controller.plan_json()["steps"]
                return {s["start"][11:16]: s["pv_kw"] for s in steps if s["start"][:10] == str(tomorrow)}

            await until(lambda: tomorrow_pv().get("12:15") == pytest.approx(2.4), 20)
            pv = tomorrow_pv()
            assert pv["11:00"] == pytest.approx(0.8)
            assert pv["13:00"] == pytest.approx(0.0)  # Forecast.Solar's hours end at their key: not shifted
            assert controller.pv.problem == ""
    finally:
        await fake.stop()
