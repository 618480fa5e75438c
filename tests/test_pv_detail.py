"""Detailed PV forecasts from Home Assistant: Solcast, Open-Meteo, Forecast.Solar, quarter-hours, merging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from marstek_webasto_addon.addon.pv_detail import (
    PERIOD_KEYS_BY_DOMAIN,
    PvForecast,
    add_roofs,
    join_days,
    parse_energy_solar_forecast,
    parse_pv_forecast,
    quarter_kw,
)

pytestmark = pytest.mark.timeout(60)
BRUSSELS = ZoneInfo("Europe/Brussels")


def at(hour: int, minute: int = 0, second: int = 0, day: int = 15) -> str:
    """An ISO time on a June day in Brussels (+02:00), as the integrations write them."""
    return datetime(2025, 6, day, hour, minute, second, tzinfo=BRUSSELS).isoformat()


def local(hour: int, minute: int = 0, day: int = 15) -> datetime:
    return datetime(2025, 6, day, hour, minute)  # naive: wall-clock time in BRUSSELS


def kw(forecast: PvForecast, start: datetime, steps: int) -> tuple[list[float | None], int]:
    return quarter_kw(forecast, start, steps, tz=BRUSSELS)


def solcast_day(day: int, kw_by_half_hour: dict[tuple[int, int], float]) -> dict[str, Any]:
    """A Solcast daily sensor's state: 48 half hours, zero unless given; p10/p90 at half and 1.5 times."""
    rows = []
    for half in range(48):
        hour, minute = divmod(half * 30, 60)
        value = kw_by_half_hour.get((hour, minute), 0.0)
        rows.append(
            {
                "period_start": at(hour, minute, day=day),
                "pv_estimate": value,
                "pv_estimate10": value / 2,
                "pv_estimate90": value * 1.5,
            }
        )
    return {
        "entity_id": f"sensor.solcast_pv_forecast_day_{day}",
        "state": "1.5",
        "attributes": {"detailedForecast": rows},
    }


# -------------------------------------------------------------------------------------------- Solcast


def test_solcast_half_hours_give_their_kw_to_both_quarters() -> None:
    forecast = parse_pv_forecast(solcast_day(15, {(12, 0): 2.0, (12, 30): 4.0}), tz=BRUSSELS)
    assert forecast.source == "detailedForecast"
    assert (forecast.entries, forecast.unreadable) == (48, 0)
    assert len(forecast.kwh) == 96
    assert sum(forecast.kwh.values()) == pytest.approx(3.0)  # 2 kW and 4 kW for half an hour each
    assert kw(forecast, local(11), 8) == ([0.0] * 4 + [2.0, 2.0, 4.0, 4.0], 8)
    assert kw(forecast, local(23, 50), 2) == ([0.0, None], 1)  # the day ends, nothing after it


def test_solcast_estimates_and_hourly_detail() -> None:
    state = solcast_day(15, {(12, 0): 2.0})
    assert kw(parse_pv_forecast(state, tz=BRUSSELS, estimate="pv_estimate10"), local(12), 2)[0] == [1.0, 1.0]
    assert kw(parse_pv_forecast(state, tz=BRUSSELS, estimate="pv_estimate90"), local(12), 2)[0] == [3.0, 3.0]
    hourly = {"detailedHourly": [{"period_start": at(13), "pv_estimate": 3.0}]}
    forecast = parse_pv_forecast(hourly, tz=BRUSSELS)
    assert forecast.source == "detailedHourly"
    assert kw(forecast, local(13), 5)[0] == [3.0, 3.0, 3.0, 3.0, 0.0]


def test_solcast_site_attribute_and_unreadable_rows() -> None:
    rows = [
        {"period_start": at(10), "pv_estimate": 1.0},
        {"period_start": "later", "pv_estimate": 1.0},
        {"period_start": at(11)},  # no estimate
        {"period_start": at(11, 30), "pv_estimate": -0.2},
        {"period_start": at(12), "pv_estimate": None},
    ]
    forecast = parse_pv_forecast(
        {"detailedForecast_1234_5678": rows}, tz=BRUSSELS, attribute="detailedForecast_1234_5678"
    )
    assert (forecast.entries, forecast.unreadable) == (5, 4)
    assert kw(forecast, local(10), 3)[0] == [1.0, 1.0, 0.0]


# ----------------------------------------------------------------------------------------- Open-Meteo


def test_open_meteo_hourly_energy_keyed_by_hour_start() -> None:
    attributes = {
        "watts": {at(12): 9999},  # ignored: energy is preferred
        "wh_period": {at(12): 1000, at(13): 2000},
    }
    forecast = parse_pv_forecast(attributes, tz=BRUSSELS)
    assert forecast.source == "wh_period"
    # 1000 Wh over 12:00-13:00 is 250 Wh a quarter: 1 kW.
    assert kw(forecast, local(11, 45), 10) == ([0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 0.0], 10)


def test_open_meteo_quarter_energy_and_power_samples() -> None:
    quarters = parse_pv_forecast({"wh_period_15m": {at(12): 250, at(12, 15): 500}}, tz=BRUSSELS)
    assert kw(quarters, local(12), 3)[0] == [1.0, 2.0, 0.0]
    samples = parse_pv_forecast({"watts": {at(12): 1000, at(12, 15): 2000, at(12, 30): 2000}}, tz=BRUSSELS)
    assert samples.source == "watts"
    # Straight lines between samples: 1 -> 2 kW averages 1.5 kW; after the last sample nothing is known.
    assert kw(samples, local(12), 3)[0] == [1.5, 2.0, 0.0]


def test_unreadable_energy_entries_are_skipped_and_counted() -> None:
    wh = {at(12): 1000, "noon": 5, at(13): None, at(14): -5, at(15): "nan", at(16): True}
    forecast = parse_pv_forecast({"wh_period": wh}, tz=BRUSSELS)
    assert (forecast.entries, forecast.unreadable) == (6, 5)
    # The hours whose energy cannot be read are unknown, not 0 kWh; the quarters no entry reaches produce 0.
    assert kw(forecast, local(11, 45), 6) == ([0.0, 1.0, 1.0, 1.0, 1.0, None], 5)
    assert kw(forecast, local(16, 45), 2)[0] == [None, 0.0]


def test_naive_times_are_local() -> None:
    forecast = parse_pv_forecast({"wh_period": {"2025-06-15T12:00:00": 1000}}, tz=BRUSSELS)
    assert kw(forecast, datetime(2025, 6, 15, 10, 0, tzinfo=UTC), 1)[0] == [1.0]


# --------------------------------------------------------------------- Forecast.Solar, energy platform

# Forecast.Solar keys each period by its end, sunrise (06:30, 0 Wh) and sunset (20:45) included.
FORECAST_SOLAR = {at(6, 30): 0, at(7): 100, at(8): 400, at(9): 800, at(20, 45): 30}


def test_energy_solar_forecast_with_period_ends() -> None:
    message = {"id": 7, "type": "result", "success": True, "result": {"01JFS": {"wh_hours": FORECAST_SOLAR}}}
    forecasts = parse_energy_solar_forecast(
        message, period_keys={"01JFS": PERIOD_KEYS_BY_DOMAIN["forecast_solar"]}, tz=BRUSSELS
    )
    forecast = forecasts["01JFS"]
    assert (forecast.source, forecast.entries, forecast.unreadable) == ("01JFS", 5, 0)
    # 06:30-07:00: 100 Wh, 50 a quarter (0.2 kW); 07:00-08:00: 400 Wh, 100 a quarter (0.4 kW); the night is 0.
    assert kw(forecast, local(6), 8) == ([0.0, 0.0, 0.2, 0.2, 0.4, 0.4, 0.4, 0.4], 8)
    # The last key ends a period of the usual hour: 19:45-20:45, 7.5 Wh a quarter.
    assert kw(forecast, local(19, 30), 6)[0] == pytest.approx([0.0, 0.03, 0.03, 0.03, 0.03, 0.0])
    assert sum(forecast.kwh.values()) == pytest.approx(1.33)
    assert kw(forecast, local(23, 45, day=14), 2) == ([None, 0.0], 0)  # the day before is not covered


def test_the_same_keys_read_as_period_starts_shift_an_hour() -> None:
    forecast = parse_energy_solar_forecast(
        {"om": {"wh_hours": FORECAST_SOLAR}}, period_keys="start", tz=BRUSSELS
    )["om"]
    # 07:00 now starts its hour: 100 Wh over 07:00-08:00, 25 Wh a quarter.
    assert kw(forecast, local(7), 5)[0] == [0.1, 0.1, 0.1, 0.1, 0.4]


def test_solcast_energy_data_leaves_the_night_and_zeros_out() -> None:
    wh_hours = {at(12): 500, at(12, 30): 1000, at(14): 200}  # half-hour starts; 13:00-14:00 left out
    forecast = parse_energy_solar_forecast({"sc": {"wh_hours": wh_hours}}, period_keys="start", tz=BRUSSELS)[
        "sc"
    ]
    assert kw(forecast, local(12), 10)[0] == [1.0, 1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.4, 0.4]


def test_energy_solar_forecast_refuses_to_guess() -> None:
    response = {"fs": {"wh_hours": FORECAST_SOLAR}, "om": {"wh_hours": {}}}
    with pytest.raises(ValueError, match="config entry om: say whether"):
        parse_energy_solar_forecast(response, period_keys={"fs": "end"})
    with pytest.raises(ValueError, match="wh_hours"):
        parse_energy_solar_forecast({"fs": {"watts": {}}}, period_keys="end")
    assert parse_energy_solar_forecast({}, period_keys="end") == {}


# ---------------------------------------------------------------------------------------- combining


def test_join_days_puts_today_and_tomorrow_one_after_the_other() -> None:
    today = parse_pv_forecast(solcast_day(15, {(23, 30): 0.4}), tz=BRUSSELS)
    tomorrow = parse_pv_forecast(solcast_day(16, {(0, 0): 0.8}), tz=BRUSSELS)
    both = join_days(today, tomorrow)
    assert (len(both.kwh), both.entries, both.source) == (192, 96, "detailedForecast+detailedForecast")
    assert kw(both, local(23, 45), 3) == ([0.4, 0.8, 0.8], 3)
    assert kw(today, local(23, 45), 3) == ([0.4, None, None], 1)
    with pytest.raises(ValueError, match="both cover"):
        join_days(today, tomorrow, today)


def test_add_roofs_sums_where_every_roof_is_known() -> None:
    east = parse_energy_solar_forecast({"e": {"wh_hours": {at(9): 1000}}}, period_keys="start", tz=BRUSSELS)[
        "e"
    ]
    west_days = {at(9): 500, at(15, day=16): 2000}
    west = parse_energy_solar_forecast({"w": {"wh_hours": west_days}}, period_keys="start", tz=BRUSSELS)["w"]
    roofs = add_roofs(east, west)
    assert len(roofs.kwh) == 96  # west's second day is not known for the east roof
    assert kw(roofs, local(9), 5) == ([1.5, 1.5, 1.5, 1.5, 0.0], 5)
    assert kw(roofs, local(0, day=16), 1) == ([None], 0)
    assert add_roofs(east) == PvForecast(east.kwh, 1, 0, "e")
    assert add_roofs().kwh == {}


# ----------------------------------------------------------------------------------------------- DST


@pytest.mark.parametrize(("day", "quarters"), [(datetime(2025, 3, 30), 92), (datetime(2025, 10, 26), 100)])
def test_dst_days_have_their_real_number_of_quarters(day: datetime, quarters: int) -> None:
    first = day.replace(tzinfo=BRUSSELS).astimezone(UTC)
    rows = [
        {
            "period_start": (first + timedelta(minutes=30 * i)).astimezone(BRUSSELS).isoformat(),
            "pv_estimate": i,
        }
        for i in range(quarters // 2)
    ]
    forecast = parse_pv_forecast({"detailedForecast": rows}, tz=BRUSSELS)
    assert len(forecast.kwh) == quarters
    values, known = kw(forecast, day, 104)
    assert known == quarters
    assert values[quarters - 2 : quarters] == [quarters // 2 - 1] * 2  # the last half hour's kW
    assert values[8] == 4.0  # 2 hours of real time after midnight, whatever the clock says


# ---------------------------------------------------------------------------------------- not found


@pytest.mark.parametrize("data", [{}, {"friendly_name": "PV"}, {"attributes": {"forecast": []}}])
def test_unknown_format_names_what_was_expected(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"detailedForecast or detailedHourly.*wh_period_15m.*watts"):
        parse_pv_forecast(data, tz=BRUSSELS)


def test_wrong_shapes_are_reported() -> None:
    with pytest.raises(ValueError, match="attribute 'detailedForecast_x'"):
        parse_pv_forecast({"detailedForecast": []}, attribute="detailedForecast_x", tz=BRUSSELS)
    with pytest.raises(ValueError, match="detailedForecast should be a list"):
        parse_pv_forecast({"detailedForecast": "unavailable"}, tz=BRUSSELS)
    with pytest.raises(ValueError, match="wh_period should map times"):
        parse_pv_forecast({"wh_period": [1, 2]}, tz=BRUSSELS)
