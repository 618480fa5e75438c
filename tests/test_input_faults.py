"""Faulty inputs from Home Assistant: day-ahead prices and PV forecasts that are out of range, in a wrong
unit, implausible, partly unreadable or far apart, the repeated hour of the autumn's DST change, several
arrays with a sensor per day, and a bad state that must not end the Home Assistant inputs (nor the grid meter
they carry).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from marstek_webasto_addon.addon.day_ahead import PriceFormula, parse_day_ahead
from marstek_webasto_addon.addon.ha_inputs import EntityPowerInput, HomeAssistantInputs
from marstek_webasto_addon.addon.ha_series import DayAheadPrices, DetailedPvForecast, EnergyPvForecast
from marstek_webasto_addon.addon.homeassistant import EntityState
from marstek_webasto_addon.addon.pv_detail import parse_pv_forecast, quarter_kw
from marstek_webasto_addon.optimiser.tariff import Tariff

from .conftest import until
from .ha_fake import FakeHomeAssistant

pytestmark = pytest.mark.timeout(60)
BRUSSELS = ZoneInfo("Europe/Brussels")
PRICES = "sensor.day_ahead_prices"
SPOT_ONLY = PriceFormula(import_multiplier=1, import_markup=0, grid_fees=0, vat_percent=0, export_adder=0)


def state(entity_id: str, attributes: dict[str, Any], value: str = "0.25") -> EntityState:
    return EntityState(entity_id, value, attributes, None, 0.0)


@pytest.fixture
def brussels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process in Home Assistant's zone, as the Supervisor sets TZ for an add-on."""
    monkeypatch.setenv("TZ", "Europe/Brussels")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def real_hours(day: date, price: Any) -> list[dict[str, Any]]:
    """Nord Pool's raw list for a local Brussels day, one entry per REAL hour (23, 24 or 25)."""
    first = datetime.combine(day, datetime.min.time(), BRUSSELS).astimezone(UTC)
    last = datetime.combine(day + timedelta(days=1), datetime.min.time(), BRUSSELS).astimezone(UTC)
    rows = []
    moment, i = first, 0
    while moment < last:
        rows.append(
            {
                "start": moment.astimezone(BRUSSELS).isoformat(),
                "end": (moment + timedelta(hours=1)).astimezone(BRUSSELS).isoformat(),
                "value": price(i),
            }
        )
        moment, i = moment + timedelta(hours=1), i + 1
    return rows


def nordpool(today: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "unit": "kWh",
        "currency": "EUR",
        "unit_of_measurement": "EUR/kWh",
        "raw_today": today,
        "raw_tomorrow": [],
        "tomorrow_valid": False,
        **extra,
    }


# --- DST: the repeated hour of the 25-hour day ----------------------------------------------------------


def test_the_price_in_the_repeated_hour_is_that_of_the_second_0200(brussels: None) -> None:
    """In the second 02:00-03:00 of 25 Oct 2026 (CET), the running quarter has the price of that hour, not
    of the first 02:00-03:00 (CEST) an hour earlier: the series keeps the `fold` of `datetime.now()`. The
    ledger (`LivePlanner.prices_at`) and the plan's first steps use it."""
    day = date(2026, 10, 25)
    prices = DayAheadPrices(PRICES, SPOT_ONLY)
    # real hour i of the day costs i/100: the first 02:00 is hour 2, the second 02:00 is hour 3
    prices.on_state(PRICES, state(PRICES, nordpool(real_hours(day, lambda i: i / 100))))
    assert prices.problem == ""
    # datetime.now() in the second 02:15 (CET): naive, with fold=1
    now = datetime.fromtimestamp(datetime(2026, 10, 25, 1, 15, tzinfo=UTC).timestamp())
    assert (now.hour, now.minute, now.fold) == (2, 15, 1)
    buy, _ = prices.series(now, 4)  # type: ignore[misc]
    assert buy[0] == pytest.approx(0.03)  # the second 02:00, not the first (0.02)
    assert buy[2:4] == pytest.approx([0.03, 0.04])  # 02:45 (CET), then 03:00: real hour 4
    first_pass = now.replace(fold=0)
    assert prices.series(first_pass, 1)[0] == pytest.approx([0.02])  # type: ignore[index]


def test_the_pv_in_the_repeated_hour_is_that_of_the_second_0200(brussels: None) -> None:
    """The detailed PV forecast, too, gives the second 02:00-03:00 its own quarters."""
    first = datetime(2026, 10, 24, 22, tzinfo=UTC)  # midnight in Brussels (CEST)
    rows = [
        {"period_start": (first + timedelta(minutes=30 * i)).isoformat(), "pv_estimate": i / 10}
        for i in range(50)
    ]
    entity = "sensor.pv_today"
    pv = DetailedPvForecast([entity])
    pv.on_state(entity, state(entity, {"detailedForecast": rows}))
    now = datetime.fromtimestamp(datetime(2026, 10, 25, 1, 15, tzinfo=UTC).timestamp())
    assert pv.quarters(now, 1) == pytest.approx([0.6])  # the 7th real half hour: 01:00 UTC
    assert pv.quarters(now.replace(fold=0), 1) == pytest.approx([0.4])  # the 5th: 00:00 UTC


def test_the_spring_day_gives_each_wall_clock_quarter_its_own_price(brussels: None) -> None:
    """On the 23-hour day each existing wall-clock quarter has the price of its real hour (the plan's steps
    are wall-clock quarters)."""
    day = date(2026, 3, 29)
    prices = DayAheadPrices(PRICES, SPOT_ONLY)
    prices.on_state(PRICES, state(PRICES, nordpool(real_hours(day, lambda i: i / 100))))
    buy, _ = prices.series(datetime(2026, 3, 29, 0, 0), 96)  # type: ignore[misc]
    assert buy[4 * 1] == pytest.approx(0.01)  # 01:00 CET, real hour 1
    assert buy[4 * 3] == pytest.approx(0.02)  # 03:00 CEST, real hour 2
    assert buy[4 * 23] == pytest.approx(0.22)  # 23:00 CEST, real hour 22


# --- units ---------------------------------------------------------------------------------------------


def test_a_tibber_like_list_in_cents_is_not_read_as_euro() -> None:
    """A today/tomorrow list the entity says is in ct/kWh is converted to EUR/kWh, as every other format's
    unit is."""
    start = datetime(2026, 6, 15, 12, tzinfo=BRUSSELS)
    found = parse_day_ahead(
        {
            "unit_of_measurement": "ct/kWh",
            "today": [{"startsAt": start.isoformat(), "total": 25.0}],
            "tomorrow": [],
        }
    )
    assert found.intervals[0].price == pytest.approx(0.25)


def test_a_tibber_like_list_in_euro_per_mwh_is_not_read_as_euro_per_kwh() -> None:
    """The same for EUR/MWh, a factor 1000; another currency is refused."""
    start = datetime(2026, 6, 15, 12, tzinfo=BRUSSELS)
    found = parse_day_ahead(
        {"unit_of_measurement": "EUR/MWh", "today": [{"startsAt": start.isoformat(), "total": 85.0}]}
    )
    assert found.intervals[0].price == pytest.approx(0.085)
    with pytest.raises(ValueError, match="euro"):
        parse_day_ahead(
            {"unit_of_measurement": "SEK/kWh", "today": [{"startsAt": start.isoformat(), "total": 1.0}]}
        )


# --- plausibility --------------------------------------------------------------------------------------


def test_an_implausible_spot_price_is_not_planned_on() -> None:
    """Euro per MWh in a sensor that says EUR/kWh (a template sensor, a wrong option) give spot prices of
    85 EUR/kWh, beyond the day-ahead market's limits (-0.5 and +4 EUR/kWh): the state is refused with a
    problem that says why, and the prices received before stay in use."""
    day = date(2026, 6, 15)
    noon = datetime(2026, 6, 15, 12, tzinfo=BRUSSELS).astimezone().replace(tzinfo=None)
    prices = DayAheadPrices(PRICES, SPOT_ONLY)
    prices.on_state(PRICES, state(PRICES, nordpool(real_hours(day, lambda i: 85.0 + i))))
    assert "24 of 24 prices outside" in prices.problem
    assert prices.series(noon, 4) is None
    prices.on_state(PRICES, state(PRICES, nordpool(real_hours(day, lambda i: i / 100))))
    assert prices.problem == ""
    prices.on_state(PRICES, state(PRICES, nordpool(real_hours(day, lambda i: 1000 * i / 100))))
    assert "check the entity's unit; prices received before stay" in prices.problem
    buy, _ = prices.series(noon, 1)  # type: ignore[misc]
    assert buy == pytest.approx([0.12])


def test_negative_and_crisis_prices_are_plausible() -> None:
    """The market's own extremes, VAT included, are prices, not unit mistakes."""
    day = date(2026, 6, 15)
    prices = DayAheadPrices(PRICES, SPOT_ONLY)
    prices.on_state(PRICES, state(PRICES, nordpool(real_hours(day, lambda i: -0.6 if i < 12 else 4.8))))
    assert prices.problem == ""


def test_an_implausible_detailed_pv_forecast_is_not_used() -> None:
    """A Solcast-shaped list in W where kW is meant (4000 "kW" at noon) is beyond a home's power (60 kW,
    inputs.PLAUSIBLE_POWER_W): the forecast is refused, and the problem says so."""
    entity = "sensor.pv_today"
    day = date(2026, 6, 15)
    midnight = datetime.combine(day, datetime.min.time()).astimezone()
    rows = [
        {"period_start": (midnight + timedelta(minutes=30 * h)).isoformat(), "pv_estimate": 4000.0}
        for h in range(24, 26)
    ]
    pv = DetailedPvForecast([entity])
    pv.on_state(entity, state(entity, {"detailedForecast": rows}))
    noon = pv.quarters(datetime.combine(day, datetime.min.time()).replace(hour=12), 1)
    assert noon is None
    assert "beyond 60 kW" in pv.problem


# --- detailed PV: several roofs over several days ----------------------------------------------------


def solcast(day: date, kw: float) -> dict[str, Any]:
    midnight = datetime.combine(day, datetime.min.time()).astimezone()
    rows = [
        {
            "period_start": (midnight + timedelta(minutes=30 * h)).isoformat(),
            "pv_estimate": kw if 16 <= h < 36 else 0.0,
        }
        for h in range(48)
    ]
    return {"detailedForecast": rows}


def test_two_roofs_with_a_today_and_a_tomorrow_sensor_each_are_summed_per_day() -> None:
    """Entities of the same days are roofs, summed; the sums of different days are joined."""
    today = date(2026, 6, 15)
    tomorrow = today + timedelta(days=1)
    entities = ["sensor.east_today", "sensor.east_tomorrow", "sensor.west_today", "sensor.west_tomorrow"]
    pv = DetailedPvForecast(entities)
    pv.on_state(entities[0], state(entities[0], solcast(today, 2.0)))
    pv.on_state(entities[1], state(entities[1], solcast(tomorrow, 2.0)))
    pv.on_state(entities[2], state(entities[2], solcast(today, 1.0)))
    pv.on_state(entities[3], state(entities[3], solcast(tomorrow, 1.5)))
    noon = datetime.combine(today, datetime.min.time()).replace(hour=12)
    assert pv.quarters(noon, 1) == pytest.approx([3.0])
    assert pv.quarters(noon + timedelta(days=1), 1) == pytest.approx([3.5])
    assert pv.problem == ""


def test_a_day_that_lacks_a_roofs_sensor_is_left_out_and_named() -> None:
    """Without west's tomorrow, tomorrow would have east's PV alone: it is left out (unknown), and said."""
    today = date(2026, 6, 15)
    entities = ["sensor.east_today", "sensor.east_tomorrow", "sensor.west_today", "sensor.west_tomorrow"]
    pv = DetailedPvForecast(entities)
    pv.on_state(entities[0], state(entities[0], solcast(today, 2.0)))
    pv.on_state(entities[1], state(entities[1], solcast(today + timedelta(days=1), 2.0)))
    pv.on_state(entities[2], state(entities[2], solcast(today, 1.0)))
    pv.on_state(entities[3], None)
    noon = datetime.combine(today, datetime.min.time()).replace(hour=12)
    assert pv.quarters(noon, 1) == pytest.approx([3.0])
    assert pv.quarters(noon + timedelta(days=1), 1) is None
    assert "sensor.west_tomorrow does not exist" in pv.problem
    assert "the days of sensor.east_tomorrow are left out: 1 of the 2 arrays" in pv.problem


def test_forecasts_that_cannot_be_added_up_give_a_problem() -> None:
    """One roof's sensor for two days, the other's per day: no quarter is known for all three, and the
    problem says so instead of being empty."""
    today = date(2026, 6, 15)
    both = solcast(today, 2.0)
    both["detailedForecast"] += solcast(today + timedelta(days=1), 2.0)["detailedForecast"]
    entities = ["sensor.east", "sensor.west_today", "sensor.west_tomorrow"]
    pv = DetailedPvForecast(entities)
    pv.on_state(entities[0], state(entities[0], both))
    pv.on_state(entities[1], state(entities[1], solcast(today, 1.0)))
    pv.on_state(entities[2], state(entities[2], solcast(today + timedelta(days=1), 1.0)))
    assert pv.quarters(datetime.combine(today, datetime.min.time()).replace(hour=12), 1) is None
    assert "have no quarter in common" in pv.problem


def test_one_roof_today_and_tomorrow_are_joined() -> None:
    """The common case: one roof, a sensor for today and one for tomorrow."""
    today = date(2026, 6, 15)
    pv = DetailedPvForecast(["sensor.a", "sensor.b"])
    pv.on_state("sensor.a", state("sensor.a", solcast(today, 2.0)))
    pv.on_state("sensor.b", state("sensor.b", solcast(today + timedelta(days=1), 1.0)))
    assert pv.quarters(datetime.combine(today, datetime.min.time()).replace(hour=12), 1) == [2.0]
    assert pv.problem == ""


# --- gaps ----------------------------------------------------------------------------------------------


def test_unreadable_daytime_pv_rows_are_unknown_and_counted() -> None:
    """A Solcast row whose estimate cannot be read (None) leaves its half hour unknown, not a sunless
    0 kW: the series stops before it, and the problem counts the unreadable rows."""
    entity = "sensor.pv_today"
    day = date(2026, 6, 15)
    attributes = solcast(day, 3.0)
    for row in attributes["detailedForecast"][20:30]:  # 10:00-15:00 unreadable
        row["pv_estimate"] = None
    pv = DetailedPvForecast([entity])
    pv.on_state(entity, state(entity, attributes))
    morning = datetime.combine(day, datetime.min.time()).replace(hour=9)
    assert pv.quarters(morning, 8) == [3.0] * 4  # 09:00-10:00, then unknown
    assert pv.quarters(morning.replace(hour=12), 1) is None
    assert pv.quarters(morning.replace(hour=15), 1) == [3.0]
    assert "10 of 48 entries unreadable" in pv.problem


def test_power_samples_far_apart_do_not_invent_pv_in_between() -> None:
    """Only `watts` samples at most an hour apart are joined: one stray sample a month old leaves the month
    between unknown (no made-up PV at night), and the work does not grow with the gap."""
    watts = {
        "2026-05-15T12:00:00+00:00": 1000.0,  # a stray old sample
        **{f"2026-06-15T{h:02d}:00:00+00:00": (1000.0 if 8 <= h <= 16 else 0.0) for h in range(24)},
    }
    forecast = parse_pv_forecast({"watts": watts}, tz=UTC)
    midnight = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)  # a night between the two
    assert forecast.kwh.get(midnight) is None
    assert len(forecast.kwh) == 96  # 15 June only
    assert quarter_kw(forecast, datetime(2026, 6, 15, 12, tzinfo=UTC), 1)[0] == [1.0]


def test_a_daytime_gap_between_samples_is_unknown_and_a_night_is_not() -> None:
    """Three hours without a sample at noon are unknown; the night between two 0 W samples (Forecast.Solar
    style, sunset to sunrise) produces nothing."""
    watts = {
        "2026-06-15T04:00:00+00:00": 0.0,
        "2026-06-15T05:00:00+00:00": 500.0,
        "2026-06-15T09:00:00+00:00": 2000.0,  # 05:00-09:00 missing
        "2026-06-15T10:00:00+00:00": 0.0,
        "2026-06-16T04:00:00+00:00": 0.0,  # the night
        "2026-06-16T05:00:00+00:00": 1000.0,
    }
    forecast = parse_pv_forecast({"watts": watts}, tz=UTC)
    values, known = quarter_kw(forecast, datetime(2026, 6, 15, 4, tzinfo=UTC), 6)
    assert (values, known) == ([0.25, 0.25, 0.25, 0.25, None, None], 4)  # the hour's mean, then unknown
    assert quarter_kw(forecast, datetime(2026, 6, 15, 8, 45, tzinfo=UTC), 2)[0] == [None, 1.0]
    assert quarter_kw(forecast, datetime(2026, 6, 15, 22, tzinfo=UTC), 1)[0] == [0.0]
    assert quarter_kw(forecast, datetime(2026, 6, 16, 3, tzinfo=UTC), 1)[0] == [0.0]


# --- entries as they come -----------------------------------------------------------------------------


def test_nordpool_unsorted_duplicated_string_numbers_and_none_entries() -> None:
    """Unsorted, duplicated, string numbers and None inside the list: only the None is unreadable."""
    day = date(2026, 6, 15)
    hours = real_hours(day, lambda i: i / 100)
    rows: list[Any] = [
        *reversed(hours),
        hours[5],
        None,
        {"start": hours[6]["start"], "end": hours[6]["end"], "value": "0.06"},
    ]
    found = parse_day_ahead(nordpool(rows))
    assert found.unreadable == 1
    starts = [p.start for p in found.intervals]
    assert starts == sorted(starts)


def test_an_unavailable_price_entity_keeps_its_prices_and_says_so() -> None:
    """`unavailable` (no attributes) is a problem; the prices received before stay."""
    day = date(2026, 6, 15)
    prices = DayAheadPrices(PRICES, SPOT_ONLY)
    prices.on_state(PRICES, state(PRICES, nordpool(real_hours(day, lambda i: i / 100))))
    prices.on_state(PRICES, state(PRICES, {"friendly_name": "Prices"}, value="unavailable"))
    assert prices.problem
    start = datetime(2026, 6, 15, 12, tzinfo=BRUSSELS).astimezone().replace(tzinfo=None)
    assert prices.series(start, 1) is not None


# --- a bad timestamp ----------------------------------------------------------------------------------


def test_a_price_entry_at_the_end_of_time_is_unreadable_not_an_exception() -> None:
    """An ENTSO-E entry at 9999-12-31 (a "no date" sentinel) is one unreadable entry; the others are used."""
    prices = DayAheadPrices(PRICES, SPOT_ONLY)
    good = datetime(2026, 6, 15, 12, tzinfo=BRUSSELS).isoformat()
    prices.on_state(
        PRICES,
        state(
            PRICES,
            {
                "prices_today": [
                    {"time": good, "price": 0.1},
                    {"time": "9999-12-31T23:00:00+00:00", "price": 0.1},
                ]
            },
        ),
    )
    assert prices.problem == ""
    assert len(prices.intervals) == 1
    found = parse_day_ahead({"today": [{"startsAt": "0001-01-01T00:00:00+00:00", "total": 0.1}]})
    assert (found.entries, found.unreadable, found.intervals) == (1, 1, ())


async def test_a_bad_time_in_the_energy_dashboards_forecast_does_not_end_the_home_assistant_inputs() -> None:
    """A `wh_hours` key at 0001-01-01 (a "no date" sentinel) is an unreadable entry the problem counts;
    the rest of the forecast is used, and the grid meter from Home Assistant keeps updating."""
    fake = FakeHomeAssistant()
    fake.preset("sensor.p1", "500", {"unit_of_measurement": "W", "device_class": "power"})
    fake.config_entries = {"01JFORECAST": "forecast_solar"}
    fake.solar_forecasts = {
        "01JFORECAST": {"wh_hours": {"0001-01-01T00:00:00+00:00": 0, "2026-06-15T13:00:00+00:00": 1500}}
    }
    await fake.start()
    grid = EntityPowerInput("sensor.p1")
    pv = EnergyPvForecast()
    inputs = HomeAssistantInputs([grid], None, url=fake.url, token=fake.token, refresh=600, series=[pv])
    task = asyncio.create_task(inputs.run())
    try:
        await until(lambda: grid.reading.value == 500.0, 10)
        await until(lambda: bool(fake.commands("energy/solar_forecast")), 10)
        await until(lambda: pv.combined is not None, 5)
        assert not task.done(), f"the Home Assistant inputs ended: {task.exception()!r}"
        await fake.set_state("sensor.p1", "700")
        await until(lambda: grid.reading.value == 700.0, 5)
        assert "1 of 2 entries unreadable" in pv.problem
        noon = datetime(2026, 6, 15, 12, 30, tzinfo=UTC).astimezone().replace(tzinfo=None)
        assert pv.quarters(noon, 1) == pytest.approx([1.5])
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await fake.stop()


class _Unforeseen(EnergyPvForecast):
    def update(self, *args: Any, **kwargs: Any) -> None:
        raise OverflowError("date value out of range")


async def test_a_forecast_that_cannot_be_read_is_a_problem_not_the_end_of_the_inputs() -> None:
    """Whatever a forecast's reading raises is shown as its problem; the connection, and the grid meter
    on it, go on."""
    fake = FakeHomeAssistant()
    fake.preset("sensor.p1", "500", {"unit_of_measurement": "W", "device_class": "power"})
    fake.config_entries = {"01JFORECAST": "forecast_solar"}
    fake.solar_forecasts = {"01JFORECAST": {"wh_hours": {"2026-06-15T13:00:00+00:00": 1500}}}
    await fake.start()
    grid = EntityPowerInput("sensor.p1")
    pv = _Unforeseen()
    inputs = HomeAssistantInputs([grid], None, url=fake.url, token=fake.token, refresh=600, series=[pv])
    task = asyncio.create_task(inputs.run())
    try:
        await until(lambda: "could not be read" in pv.problem, 10)
        assert "OverflowError" in pv.problem
        await fake.set_state("sensor.p1", "700")
        await until(lambda: grid.reading.value == 700.0, 5)
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await fake.stop()


def test_a_state_that_cannot_be_read_is_that_inputs_problem() -> None:
    """A series whose reading of a state raises gets the problem; the inputs after it still get theirs."""

    class Broken(DetailedPvForecast):
        def on_state(self, entity_id: str, state: EntityState | None) -> None:
            raise OverflowError("date value out of range")

    broken = Broken(["sensor.pv"])
    prices = DayAheadPrices("sensor.pv", SPOT_ONLY)
    inputs = HomeAssistantInputs([], None, token="t", series=[broken, prices])
    inputs._on_change("sensor.pv", state("sensor.pv", nordpool(real_hours(date(2026, 6, 15), lambda i: 0.1))))
    assert broken.problem == "sensor.pv could not be read: OverflowError('date value out of range')"
    assert prices.problem == ""


# --- tariff periods around midnight --------------------------------------------------------------------


def test_periods_that_meet_at_midnight_leave_no_gap_and_do_not_overlap() -> None:
    """22:00-00:00 and 00:00-07:00 (00:00 as an end is midnight) cover the night exactly, on the wall clock
    of the 23-hour and the 25-hour day too."""
    tariff = Tariff.from_rules(
        [
            {"period": "evening", "days": "all", "start": "22:00", "end": "00:00"},
            {"period": "night", "days": "all", "start": "00:00", "end": "07:00"},
        ],
        {"evening": 0.2, "night": 0.1, "day": 0.3},
        "day",
    )
    for day in (date(2026, 3, 28), date(2026, 10, 24), date(2026, 6, 14)):
        evening = datetime.combine(day, datetime.min.time()).replace(hour=21, minute=45)
        got = [tariff.period_at(evening + timedelta(minutes=15 * i)) for i in range(38)]
        assert got == ["day"] + ["evening"] * 8 + ["night"] * 28 + ["day"]
