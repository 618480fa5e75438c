"""The pure helpers that turn Home Assistant states and forecasts into the optimiser's numbers."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from marstek_webasto_addon.addon.forecast_inputs import numeric_state, sunny_hours

pytestmark = pytest.mark.timeout(60)
BRUSSELS = ZoneInfo("Europe/Brussels")


@pytest.mark.parametrize(
    ("state", "unit", "want", "expected"),
    [
        ("1234", "W", "W", 1234.0),
        ("1.2", "kW", "W", 1200.0),
        ("1500", "W", "kW", 1.5),
        ("-250", "W", "W", -250.0),  # a P1 meter exporting
        ("12.3", "kWh", "Wh", 12300.0),
        ("800", "Wh", "kWh", 0.8),
        ("0.002", "MWh", "kWh", 2.0),
        ("1.5", None, "kW", 1.5),  # no unit: taken as the wanted one
        ("1.5", "", "kW", 1.5),
        ("1.2", "kwh", "Wh", 1200.0),  # a template sensor's lower-case unit
        ("3", "KW", "W", 3000.0),
    ],
)
def test_numeric_state_converts_units(state: str, unit: str | None, want: str, expected: float) -> None:
    assert numeric_state(state, unit, want_unit=want) == pytest.approx(expected)


@pytest.mark.parametrize("state", ["unknown", "unavailable", "", "on", "nan", "inf", "-inf", "1,2", "12 W"])
def test_numeric_state_has_no_number_for_states_without_one(state: str) -> None:
    assert numeric_state(state, "W", want_unit="W") is None


@pytest.mark.parametrize(
    ("unit", "want", "message"),
    [
        ("kWh", "W", "'kWh' cannot be converted to 'W'"),
        ("W", "kWh", "'W' cannot be converted to 'kWh'"),
        ("A", "W", "'A' cannot be converted to 'W'"),
        ("W", "A", "cannot convert to 'A'"),
    ],
)
def test_numeric_state_refuses_units_of_another_kind(unit: str, want: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        numeric_state("1", unit, want_unit=want)


def hourly(first: datetime, hours: int, condition: str = "sunny") -> list[dict[str, Any]]:
    """An hourly forecast as met.no gives it: UTC datetimes."""
    return [
        {"datetime": (first + timedelta(hours=h)).isoformat(), "condition": condition, "temperature": 8.0}
        for h in range(hours)
    ]


def test_sunny_hours_counts_07_to_20_local_time_from_utc_entries() -> None:
    # Brussels in November is UTC+1: 06:00Z is 07:00 local (in), 19:00Z is 20:00 local (out).
    forecast = hourly(datetime(2025, 11, 24, 20, tzinfo=UTC), 48)
    assert sunny_hours(forecast, date(2025, 11, 25), tz=BRUSSELS) == 13
    edges = {e["datetime"][11:16]: e for e in forecast if e["datetime"].startswith("2025-11-25")}
    edges["05:00"]["condition"] = edges["18:00"]["condition"] = "cloudy"  # 06:00 and 19:00 local
    assert sunny_hours(forecast, date(2025, 11, 25), tz=BRUSSELS) == 12
    edges["06:00"]["condition"] = "rainy"  # 07:00 local, the first hour in the window
    assert sunny_hours(forecast, date(2025, 11, 25), tz=BRUSSELS) == 11


def test_sunny_hours_in_summer_time_and_on_the_day_it_starts() -> None:
    # 29 March 2026 has 23 hours in Brussels; 07:00 local is 05:00Z, 19:00 local is 17:00Z.
    forecast = hourly(datetime(2026, 3, 28, 22, tzinfo=UTC), 30)
    assert sunny_hours(forecast, date(2026, 3, 29), tz=BRUSSELS) == 13
    in_window = [e for e in forecast if "2026-03-29T05:00" <= e["datetime"] < "2026-03-29T18:00"]
    assert len(in_window) == 13
    for entry in in_window:
        entry["condition"] = "partlycloudy"
    assert sunny_hours(forecast, date(2026, 3, 29), tz=BRUSSELS) == 0


def test_sunny_hours_converts_an_offset_that_is_not_the_local_one() -> None:
    plus_two = timezone(timedelta(hours=2))
    forecast = [
        {"datetime": "2025-06-02T08:00:00+02:00", "condition": "sunny"},  # 06:00Z: in a UTC window
        {"datetime": "2025-06-02T09:00:00+02:00", "condition": "sunny"},  # 07:00Z
        {"datetime": "2025-06-02T22:00:00+02:00", "condition": "sunny"},  # 20:00Z: out
        {"datetime": "2025-06-03T01:00:00+02:00", "condition": "sunny"},  # 23:00Z on the 2nd
    ]
    assert sunny_hours(forecast, date(2025, 6, 2), time(6), time(20), tz=UTC) == 2
    assert sunny_hours(forecast, date(2025, 6, 2), time(0), time(23, 59), tz=UTC) == 4
    assert sunny_hours(forecast, date(2025, 6, 2), time(0), time(23, 59), tz=plus_two) == 3
    assert sunny_hours(forecast, date(2025, 6, 3), time(0), time(23, 59), tz=plus_two) == 1


def test_sunny_hours_ignores_other_days_conditions_and_unreadable_entries() -> None:
    forecast: list[dict[str, Any]] = [
        {"datetime": "2025-11-25T10:00:00", "condition": "sunny"},  # naive: already local
        {"datetime": "2025-11-25T11:00:00", "condition": "clear-night"},
        {"datetime": "2025-11-25T12:00:00", "condition": "partlycloudy"},
        {"datetime": "2025-11-26T10:00:00", "condition": "sunny"},
        {"datetime": "2025-11-25T13:00:00"},
        {"condition": "sunny"},
        {"datetime": "tomorrow at noon", "condition": "sunny"},
        {"datetime": "2025-11-25T14:00:00", "condition": "sunny"},
    ]
    assert sunny_hours(forecast, date(2025, 11, 25), tz=BRUSSELS) == 2
    assert sunny_hours(forecast, date(2025, 11, 25)) == 2
    assert sunny_hours([], date(2025, 11, 25)) == 0
