"""Tariff periods and the capacity-tariff tracker."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from marstek_webasto_addon.optimiser.tariff import DEFAULT_TARIFF, CapacityTracker, Tariff, parse_days


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("sat,sun", {5, 6}),
        ("all", set(range(7))),
        ("fri-mon", {4, 5, 6, 0}),
        ("Wednesday", {2}),
    ],
)
def test_days(text: str, days: set[int]) -> None:
    assert parse_days(text) == days


@pytest.mark.parametrize(
    ("when", "period"),
    [
        (datetime(2026, 6, 3, 12, 0), "peak"),  # Wednesday noon
        (datetime(2026, 6, 3, 22, 30), "off_peak"),
        (datetime(2026, 6, 4, 3, 0), "super_off_peak"),
        (datetime(2026, 6, 6, 12, 0), "off_peak"),  # Saturday
        (datetime(2026, 6, 3, 7, 0), "peak"),  # start inclusive
        (datetime(2026, 6, 3, 22, 0), "off_peak"),  # end exclusive
    ],
)
def test_default_periods(when: datetime, period: str) -> None:
    assert DEFAULT_TARIFF.period_at(when) == period
    assert DEFAULT_TARIFF.price_at(when) == DEFAULT_TARIFF.prices[period]


def test_a_window_that_wraps_midnight_belongs_to_the_evening_it_starts() -> None:
    tariff = Tariff.from_rules(
        [{"period": "night", "days": "fri", "start": "22:00", "end": "06:00"}],
        {"night": 0.1, "day": 0.3},
        "day",
    )
    assert tariff.period_at(datetime(2026, 6, 5, 23, 0)) == "night"  # Friday evening
    assert tariff.period_at(datetime(2026, 6, 6, 5, 0)) == "night"  # Saturday early: Friday's window
    assert tariff.period_at(datetime(2026, 6, 7, 5, 0)) == "day"  # Sunday early: Saturday has no window


def test_unknown_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="no price for tariff period"):
        Tariff.from_rules([{"period": "peak", "days": "all", "start": "07:00", "end": "22:00"}], {}, "off")


def test_quarters_and_monthly_peaks() -> None:
    tracker = CapacityTracker()
    at = datetime(2026, 1, 31, 23, 30)
    tracker.add(at, 0, 0)
    for _ in range(60):  # 30 min at 4 kW, then the month changes
        at += timedelta(seconds=30)
        tracker.add(at, 30, 4000)
    assert tracker.peaks[(2026, 1)] == pytest.approx(4.0)
    assert tracker.month == (2026, 2)
    assert tracker.month_peak_kw == 0.0  # a new month starts from nothing
    for _ in range(30):
        at += timedelta(seconds=30)
        tracker.add(at, 30, -3000)  # export does not count
    assert tracker.quarter_import_wh == 0.0


def test_running_average_and_projection() -> None:
    tracker = CapacityTracker()
    start = datetime(2026, 6, 3, 18, 0)
    tracker.add(start, 0, 0)
    tracker.add(start + timedelta(minutes=5), 300, 3000)
    now = start + timedelta(minutes=5)
    assert tracker.average_so_far_kw(now) == pytest.approx(3.0)
    assert tracker.projected_kw(now, 0) == pytest.approx(1.0)  # 250 Wh so far, nothing more
    assert tracker.projected_kw(now, 3000) == pytest.approx(3.0)
    assert tracker.remaining_s(now) == 600
