"""Day-ahead prices from Home Assistant states: the formats, units, unreadable entries, formula, quarters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from marstek_webasto_addon.addon.day_ahead import (
    PriceFormula,
    PriceInterval,
    parse_day_ahead,
    plan_prices,
    price_scale,
    quarter_series,
)
from marstek_webasto_addon.replay.prices import EXPORT_MARGIN, IMPORT_ADDER, IMPORT_FACTOR

pytestmark = pytest.mark.timeout(60)
BRUSSELS = ZoneInfo("Europe/Brussels")


def at(hour: int, minute: int = 0, day: int = 15) -> str:
    """An ISO time on a June day in Brussels (+02:00), as the integrations write them."""
    return datetime(2025, 6, day, hour, minute, tzinfo=BRUSSELS).isoformat()


def hourly(day: datetime, hours: int) -> list[tuple[str, str]]:
    """(start, end) of each real hour from local midnight `day`, as local ISO strings."""
    first = day.astimezone(UTC)
    return [
        (
            (first + timedelta(hours=i)).astimezone(BRUSSELS).isoformat(),
            (first + timedelta(hours=i + 1)).astimezone(BRUSSELS).isoformat(),
        )
        for i in range(hours)
    ]


def nordpool(raw_today: list[Any], **attributes: Any) -> dict[str, Any]:
    return {
        "entity_id": "sensor.nordpool_kwh_be_eur_3_10_0",
        "state": "0.1",
        "attributes": {"unit": "kWh", "currency": "EUR", "raw_today": raw_today, **attributes},
    }


# ------------------------------------------------------------------------------------------ formats


def test_nordpool_hourly_in_euro_per_kwh_and_tomorrow_only_when_valid() -> None:
    state = nordpool(
        [
            {"start": at(1), "end": at(2), "value": 0.12},
            {"start": at(0), "end": at(1), "value": 0.1},
        ],
        unit_of_measurement="EUR/kWh",
        price_in_cents=False,
        tomorrow_valid=False,
        raw_tomorrow=[{"start": at(0, day=16), "end": at(1, day=16), "value": None}],
    )
    prices = parse_day_ahead(state)
    assert prices.source == "nordpool"
    assert (prices.entries, prices.unreadable) == (2, 0)
    assert [p.price for p in prices.intervals] == [0.1, 0.12]  # sorted by start
    first = prices.intervals[0]
    assert first.start == datetime(2025, 6, 15, 0, tzinfo=BRUSSELS)
    assert first.end - first.start == timedelta(hours=1)


@pytest.mark.parametrize(
    ("attributes", "value", "expected"),
    [
        ({"unit_of_measurement": "c/kWh", "price_in_cents": True}, 12.5, 0.125),
        ({"unit_of_measurement": "EUR/MWh", "unit": "MWh"}, 125.0, 0.125),
        ({"unit": "MWh", "price_in_cents": False}, -30.0, -0.03),  # no combined unit: from unit and cents
        ({"unit": "kWh", "price_in_cents": True}, 12.5, 0.125),
        ({"unit_of_measurement": "€/kWh"}, -0.004, -0.004),
    ],
)
def test_nordpool_units(attributes: dict[str, Any], value: float, expected: float) -> None:
    state = nordpool([{"start": at(0), "end": at(1), "value": value}], **attributes)
    assert parse_day_ahead(state).intervals[0].price == pytest.approx(expected)


def test_nordpool_tomorrow_read_while_valid_and_quarter_hours_kept() -> None:
    quarters = [0.05, -0.01, 0.0, 0.02]
    raw = [
        {"start": at(12, 15 * i, day=16), "end": at(12 + (i + 1) // 4, 15 * (i + 1) % 60, day=16), "value": p}
        for i, p in enumerate(quarters)
    ]
    state = nordpool([], raw_tomorrow=raw, tomorrow_valid=True, unit_of_measurement="EUR/kWh")
    prices = parse_day_ahead(state)
    assert len(prices.intervals) == 4
    assert {p.end - p.start for p in prices.intervals} == {timedelta(minutes=15)}
    values, known = quarter_series(prices.intervals, datetime(2025, 6, 16, 12, 0), 5, tz=BRUSSELS)
    assert values == [0.05, -0.01, 0.0, 0.02, None]
    assert known == 4


def test_nordpool_in_another_currency_is_refused() -> None:
    state = nordpool(
        [{"start": at(0), "end": at(1), "value": 1.2}], currency="SEK", unit_of_measurement="SEK/kWh"
    )
    with pytest.raises(ValueError, match="SEK"):
        parse_day_ahead(state)


def test_entsoe_hourly_eur_per_mwh_negative_and_deduplicated() -> None:
    today = [
        {"time": "2025-06-15 12:00:00+02:00", "price": 20.0},
        {"time": "2025-06-15 13:00:00+02:00", "price": -5.0},
        {"time": "2025-06-15 15:00:00+02:00", "price": 40.0},  # 14:00 missing
    ]
    attributes = {
        "unit_of_measurement": "EUR/MWh",
        "prices_today": today,
        "prices_tomorrow": [],
        "prices": today,  # today and tomorrow again: read once
    }
    prices = parse_day_ahead(attributes)
    assert prices.source == "entsoe"
    assert (prices.entries, prices.unreadable) == (3, 0)
    assert [p.price for p in prices.intervals] == pytest.approx([0.02, -0.005, 0.04])
    # Each lasts until the next start, but no longer than the list's step: 13:00 ends at 14:00.
    assert [p.end.hour for p in prices.intervals] == [13, 14, 16]
    values, known = quarter_series(prices.intervals, datetime(2025, 6, 15, 12, 0), 16, tz=BRUSSELS)
    assert values[4:8] == pytest.approx([-0.005] * 4)
    assert values[8:12] == [None] * 4
    assert known == 8


def test_entsoe_quarter_hours_end_after_a_quarter() -> None:
    prices = parse_day_ahead(
        {
            "unit_of_measurement": "EUR/kWh",
            "prices_today": [{"time": at(8, 0), "price": 0.1}, {"time": at(8, 15), "price": 0.11}],
        }
    )
    assert prices.intervals[-1].end == datetime(2025, 6, 15, 8, 30, tzinfo=BRUSSELS)


@pytest.mark.parametrize(
    ("entry", "unit", "expected"),
    [
        ({"price_per_kwh": 0.0852}, "€/kWh", 0.0852),  # 3.x Market Price sensor
        ({"price_eur_per_mwh": 85.2, "price_ct_per_kwh": 8.52}, "EUR/MWh", 0.0852),  # before 3.0
        ({"price_ct_per_kwh": -1.5}, None, -0.015),
    ],
)
def test_epex_spot_units(entry: dict[str, Any], unit: str | None, expected: float) -> None:
    attributes: dict[str, Any] = {"data": [{"start_time": at(10), "end_time": at(11), **entry}]}
    if unit:
        attributes["unit_of_measurement"] = unit
    prices = parse_day_ahead(attributes)
    assert prices.source == "epex_spot"
    assert prices.intervals[0].price == pytest.approx(expected)


def test_epex_spot_sensor_without_prices_says_which_sensor_to_use() -> None:
    with pytest.raises(ValueError, match="Market Price"):
        parse_day_ahead({"data": [{"start_time": at(10), "end_time": at(11), "rank": 3}]})


def test_tibber_like_lists() -> None:
    prices = parse_day_ahead(
        {
            "today": [{"startsAt": at(0), "total": 0.25, "energy": 0.1}, {"startsAt": at(1), "total": 0.2}],
            "tomorrow": [],
        }
    )
    assert prices.source == "tibber"
    assert [p.price for p in prices.intervals] == [0.25, 0.2]
    with pytest.raises(ValueError, match="NOK"):
        parse_day_ahead({"today": [{"startsAt": at(0), "total": 1.5}], "currency": "NOK"})


def test_core_nordpool_action_response_in_eur_per_mwh() -> None:
    rows = [
        {"start": "2025-06-14T22:00:00+00:00", "end": "2025-06-14T23:00:00+00:00", "price": 85.2},
        {"start": "2025-06-14T23:00:00+00:00", "end": "2025-06-15T00:00:00+00:00", "price": -12.0},
    ]
    prices = parse_day_ahead({"BE": rows})
    assert prices.source == "nordpool_action"
    assert [p.price for p in prices.intervals] == pytest.approx([0.0852, -0.012])
    # As call_service answers it, and with several areas.
    wrapped = {"context": {"id": "x"}, "response": {"BE": rows, "NL": rows[:1]}}
    assert len(parse_day_ahead(wrapped, area="nl").intervals) == 1
    with pytest.raises(ValueError, match="BE, NL"):
        parse_day_ahead(wrapped)
    with pytest.raises(ValueError, match="no area 'FR'"):
        parse_day_ahead(wrapped, area="FR")


def test_unreadable_entries_are_skipped_and_counted() -> None:
    state = nordpool(
        [
            {"start": at(0), "end": at(1), "value": 0.1},
            {"start": at(1), "end": at(2), "value": None},  # nordpool's missing price
            {"start": "soon", "end": at(3), "value": 0.1},
            {"start": "2025-06-15T03:00:00", "end": "2025-06-15T04:00:00", "value": 0.1},  # naive
            {"start": at(5), "end": at(4), "value": 0.1},  # ends before it starts
            {"start": at(5), "end": at(6), "value": "nan"},
            {"start": at(6), "end": at(7), "value": True},
            "not an entry",
            {"start": at(7), "end": at(8), "value": "0.3"},  # a number as text is still a number
        ],
        unit_of_measurement="EUR/kWh",
    )
    prices = parse_day_ahead(state)
    assert (prices.entries, prices.unreadable) == (9, 7)
    assert [p.price for p in prices.intervals] == [0.1, 0.3]


@pytest.mark.parametrize("data", [{}, {"friendly_name": "Prices"}, {"attributes": {"raw": []}}])
def test_unknown_format_names_what_was_expected(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"raw_today/raw_tomorrow.*prices_today.*start_time.*startsAt.*area"):
        parse_day_ahead(data)


def test_empty_lists_are_no_prices_yet_not_an_error() -> None:
    prices = parse_day_ahead(nordpool([], raw_tomorrow=[], tomorrow_valid=False))
    assert (prices.intervals, prices.entries, prices.unreadable) == ((), 0, 0)


@pytest.mark.parametrize(
    ("unit", "factor"),
    [
        ("EUR/kWh", 1.0),
        ("€/MWh", 0.001),
        ("c/kWh", 0.01),
        ("ct/kWh", 0.01),
        ("EUR/Wh", 1000.0),
        (" eur/mwh ", 0.001),
    ],
)
def test_price_scale(unit: str, factor: float) -> None:
    assert price_scale(unit) == pytest.approx(factor)


@pytest.mark.parametrize(
    ("unit", "message"), [("SEK/kWh", "euro"), ("EUR", "money per energy"), ("kWh", "money")]
)
def test_price_scale_refuses(unit: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        price_scale(unit)


# ------------------------------------------------------------------------------------------ formula


def test_default_formula_matches_the_replay_contract() -> None:
    formula = PriceFormula()
    # (1.05 spot + 0.0068 + 0.13) x 1.06 = 1.113 spot + 0.145008
    assert formula.import_price(1.0) - formula.import_price(0.0) == pytest.approx(IMPORT_FACTOR)
    assert formula.import_price(0.0) == pytest.approx(IMPORT_ADDER, abs=1e-4)
    assert formula.import_price(0.1) == pytest.approx(0.256308)
    assert formula.export_price(0.1) == pytest.approx(0.1 - EXPORT_MARGIN)
    assert formula.export_price(-0.02) == pytest.approx(-0.035)  # negative spot: exporting costs


def test_custom_formula_and_bounds() -> None:
    formula = PriceFormula(
        import_multiplier=1.0, import_markup=0.01, grid_fees=0.1, vat_percent=21, export_adder=0.005
    )
    assert formula.import_price(0.05) == pytest.approx((0.05 + 0.01 + 0.1) * 1.21)  # 0.1936
    assert formula.import_price(-0.05) == pytest.approx(0.0726)
    assert formula.export_price(-0.01) == pytest.approx(-0.005)
    with pytest.raises(ValidationError):
        PriceFormula(vat_percent=50)
    with pytest.raises(ValidationError):
        PriceFormula(grid_fees=-0.1)
    with pytest.raises(ValidationError):
        PriceFormula.model_validate({"vat": 6})
    assert all(field.description for field in PriceFormula.model_fields.values())


# ----------------------------------------------------------------------------------- quarter series

TWO_HOURS = (
    PriceInterval(
        datetime(2025, 6, 15, 10, tzinfo=BRUSSELS), datetime(2025, 6, 15, 11, tzinfo=BRUSSELS), 0.1
    ),
    PriceInterval(
        datetime(2025, 6, 15, 11, tzinfo=BRUSSELS), datetime(2025, 6, 15, 12, tzinfo=BRUSSELS), 0.2
    ),
)


def test_quarter_series_starts_with_the_running_quarter() -> None:
    values, known = quarter_series(TWO_HOURS, datetime(2025, 6, 15, 10, 20), 10, tz=BRUSSELS)
    assert values == [0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2, None, None, None]
    assert known == 7
    # The same moment given as an aware time in UTC.
    assert quarter_series(TWO_HOURS, datetime(2025, 6, 15, 8, 29, 59, tzinfo=UTC), 10) == (values, known)
    assert quarter_series(TWO_HOURS, datetime(2025, 6, 15, 9, 0), 2, tz=BRUSSELS) == ([None, None], 0)


def test_plan_prices_applies_the_formula_to_the_known_quarters() -> None:
    imports, exports = plan_prices(TWO_HOURS, PriceFormula(), datetime(2025, 6, 15, 11, 30), 8, tz=BRUSSELS)
    assert imports == pytest.approx([1.113 * 0.2 + 0.145008] * 2)
    assert exports == pytest.approx([0.185, 0.185])


def test_short_day_in_brussels_has_92_quarters() -> None:
    # 30 March 2025: 02:00 CET jumps to 03:00 CEST; 23 hourly prices, the i-th at i/100.
    hours = hourly(datetime(2025, 3, 30, tzinfo=BRUSSELS), 23)
    raw = [{"start": start, "end": end, "value": i / 100} for i, (start, end) in enumerate(hours)]
    prices = parse_day_ahead(nordpool(raw, unit_of_measurement="EUR/kWh"))
    assert hours[2][0] == "2025-03-30T03:00:00+02:00"
    values, known = quarter_series(prices.intervals, datetime(2025, 3, 30, 0, 0), 96, tz=BRUSSELS)
    assert known == 92
    assert values[7] == 0.01  # 01:45 CET
    assert values[8] == 0.02  # the next quarter is 03:00 CEST
    assert values[91] == 0.22  # 23:45 CEST
    assert values[92:] == [None] * 4


def test_long_day_in_brussels_has_100_quarters() -> None:
    # 26 October 2025: 03:00 CEST falls back to 02:00 CET; 25 hourly prices, the i-th at i/100.
    hours = hourly(datetime(2025, 10, 26, tzinfo=BRUSSELS), 25)
    raw = [{"start": start, "end": end, "value": i / 100} for i, (start, end) in enumerate(hours)]
    prices = parse_day_ahead(nordpool(raw, unit_of_measurement="EUR/kWh"))
    assert (hours[2][0], hours[3][0]) == ("2025-10-26T02:00:00+02:00", "2025-10-26T02:00:00+01:00")
    values, known = quarter_series(prices.intervals, datetime(2025, 10, 26, 0, 0), 100, tz=BRUSSELS)
    assert known == 100
    assert values[8:16] == [0.02] * 4 + [0.03] * 4  # 02:00-03:00 twice, each its own price
    assert values[99] == 0.24
    # Starting in the second 02:15 (fold=1: CET) picks the second price.
    second = datetime(2025, 10, 26, 2, 15, fold=1, tzinfo=BRUSSELS)
    assert quarter_series(prices.intervals, second, 1)[0] == [0.03]
