"""The planner strategy's live side: the quarter-hour history it learns from, the plan it makes from it,
when it re-plans, today's ledger and what the plan entities show."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import pytest

from marstek_webasto_addon.addon.planning import DayLedger, LivePlanner
from marstek_webasto_addon.addon.quarter_history import KEPT, QuarterHistory
from marstek_webasto_addon.optimiser.car_sessions import CarSession
from marstek_webasto_addon.optimiser.model import BatteryView
from marstek_webasto_addon.optimiser.planner import Action
from marstek_webasto_addon.optimiser.settings import Settings
from marstek_webasto_addon.optimiser.tariff import DEFAULT_TARIFF, CapacityTracker

SETTINGS = Settings(enabled=True, method="planner")


def views(*socs: float) -> list[BatteryView]:
    return [
        BatteryView(id=f"b{i}", name=f"B{i}", online=True, soc=soc, capacity_wh=5120, ac_power=0.0)
        for i, soc in enumerate(socs)
    ]


def learned(
    days: int, *, end: datetime, pv_kwp: float = 5.0, wallbox: Callable[[float], float] = lambda hour: 0.0
) -> QuarterHistory:
    """A home watched for `days` days: 300 W at night, 2 kW from 18 to 21 h, PV as a noon bell; the
    wallbox's watts by the hour of day."""
    history = QuarterHistory()
    at = end - timedelta(days=days)
    while at < end:
        at += timedelta(minutes=5)
        hour = at.hour + at.minute / 60
        house = 2000.0 if 18 <= hour < 21 else 300.0
        pv = max(0.0, math.sin(math.pi * (hour - 7) / 12)) * pv_kwp * 700
        history.observe(at, 300, {"house": house, "pv": pv, "wallbox": wallbox(hour)})
    return history


# --- the history ---------------------------------------------------------------------------------


def test_quarter_history_averages_each_quarter_and_leaves_unseen_ones_unknown() -> None:
    history = QuarterHistory()
    t0 = datetime(2026, 3, 2, 10, 0)
    for second in range(0, 900, 10):  # 10:00-10:15 at 1 kW, then silence until 11:00
        history.observe(t0 + timedelta(seconds=second + 10), 10, {"house": 1000.0, "pv": 200.0})
    history.observe(datetime(2026, 3, 2, 11, 0, 10), 10, {"house": 500.0})
    history.observe(datetime(2026, 3, 2, 11, 15, 0), 10, {"house": 500.0})
    house = history.series("house", datetime(2026, 3, 2, 11, 15))
    assert house[-5] == pytest.approx(1.0)  # 10:00-10:15
    assert np.isnan(house[-4:-1]).all()  # 10:15-11:00: nobody saw them
    assert np.isnan(house[-1])  # 11:00-11:15: 20 s of readings is not a quarter
    assert history.series("pv", datetime(2026, 3, 2, 11, 15))[-5] == pytest.approx(0.2)


def test_quarter_history_survives_a_restart_and_a_damaged_file() -> None:
    history = learned(3, end=datetime(2026, 3, 5, 0, 0))
    saved = json.loads(json.dumps(history.snapshot()))  # what the state file holds
    again = QuarterHistory.restored(saved)
    now = datetime(2026, 3, 5, 0, 0)
    np.testing.assert_allclose(again.series("house", now), history.series("house", now), atol=1e-3)
    assert QuarterHistory.restored({"last": 5, "watts": {"house": ["x"]}}).known_quarters("house") == 0
    assert QuarterHistory.restored("garbage").last is None


def test_a_damaged_quarter_costs_that_quarter_not_six_weeks(caplog: pytest.LogCaptureFixture) -> None:
    history = learned(3, end=datetime(2026, 3, 5, 0, 0))
    saved = json.loads(json.dumps(history.snapshot()))
    saved["watts"]["house"][-10] = "x"
    saved["watts"]["house"][-20] = True
    saved["watts"]["pv"] = "not a list"
    again = QuarterHistory.restored(saved)
    assert again.last == history.last
    assert again.known_quarters("house") == history.known_quarters("house") - 2
    now = datetime(2026, 3, 5, 0, 0)
    house, before = again.series("house", now), history.series("house", now)
    assert np.isnan(house[-10])
    assert np.isnan(house[-20])
    np.testing.assert_allclose(house[-9:], before[-9:], atol=1e-3)  # the quarters around it are kept
    assert again.known_quarters("pv") == 0
    assert again.known_quarters("wallbox") == history.known_quarters("wallbox")
    assert "the pv series is not a list" in caplog.text
    assert "dropped quarter-hour values that are not numbers (house: 2)" in caplog.text


def test_quarter_history_keeps_six_weeks() -> None:
    history = learned(50, end=datetime(2026, 3, 5, 0, 0), pv_kwp=0)
    assert len(history.values["house"]) == KEPT
    assert history.known_quarters("house") == KEPT


# --- the plan ----------------------------------------------------------------------------------------


def test_a_learned_evening_is_covered_from_the_batteries_and_a_sunny_day_leaves_the_night_alone() -> None:
    now = datetime(2026, 6, 3, 12, 0)
    live = LivePlanner(DEFAULT_TARIFF, history=learned(14, end=now), pv_measured=True)
    running = live.step(now, views(40, 40, 40), CapacityTracker(), SETTINGS, pv_tomorrow_kwh=None)
    assert running is not None
    assert live.problem == ""
    plan = live.plan
    assert plan is not None
    evening = [s for s in plan.steps if s.start.date() == now.date() and 18 <= s.start.hour < 21]
    assert all(s.battery_kw > 1.0 for s in evening)  # the batteries cover the learned 2 kW evening
    noon = [s for s in plan.steps if s.start.hour == 13]
    assert all(s.pv_kw > 2.0 for s in noon)  # the PV shape of the last days
    # tomorrow's sun refills them: no grid charging at night before a sunny day
    night = [s for s in plan.steps if s.start.date() > now.date() and s.start.hour < 7]
    assert all(s.action is not Action.CHARGE for s in night)


def test_a_car_in_plan_mode_is_planned_by_its_sessions_never_as_a_fixed_forecast() -> None:
    # Two weeks of a car charged at 4 kW from 01:00 to 05:00: in `manual` (or any mode the planner does not
    # plan) that is tomorrow's forecast; in `plan` mode the car is the session it brings, or the one it is
    # expected to bring, and without either none is assumed.
    now = datetime(2026, 6, 3, 12, 0)
    history = learned(14, end=now, wallbox=lambda hour: 4000.0 if 1 <= hour < 5 else 0.0)

    def night_wallbox(**car: object) -> float:
        live = LivePlanner(DEFAULT_TARIFF, history=history, pv_measured=True)
        live.step(now, views(40), CapacityTracker(), SETTINGS, None, **car)  # type: ignore[arg-type]
        assert live.plan is not None
        return sum(s.wallbox_kw * s.hours for s in live.plan.steps if s.start.hour < 5 and s.start > now)

    assert night_wallbox() == pytest.approx(16.0, rel=0.05)  # tonight's 01:00-05:00, as learned
    assert night_wallbox(car_planned=True) == 0.0
    expected = CarSession(now + timedelta(hours=12), now + timedelta(hours=19), 6.0, expected=True)
    assert night_wallbox(car=(expected,), car_planned=True) == pytest.approx(6.0, abs=0.01)


def test_a_dark_day_ahead_scales_tomorrows_pv_down() -> None:
    now = datetime(2026, 6, 3, 12, 0)
    sunny = LivePlanner(DEFAULT_TARIFF, history=learned(14, end=now), pv_measured=True)
    sunny.step(now, views(40), CapacityTracker(), SETTINGS, pv_tomorrow_kwh=None)
    dark = LivePlanner(DEFAULT_TARIFF, history=learned(14, end=now), pv_measured=True)
    dark.step(now, views(40), CapacityTracker(), SETTINGS, pv_tomorrow_kwh=2.0)
    assert sunny.plan is not None
    assert dark.plan is not None

    def tomorrow_pv(live: LivePlanner) -> float:
        assert live.plan is not None
        return sum(s.pv_kw * s.hours for s in live.plan.steps if s.start.date() > now.date())

    assert tomorrow_pv(dark) == pytest.approx(2.0, rel=0.02)
    assert tomorrow_pv(sunny) > 10


def test_without_a_pv_meter_the_net_flow_is_learned_and_split() -> None:
    now = datetime(2026, 6, 3, 12, 0)
    history = QuarterHistory()
    at = now - timedelta(days=7)
    while at < now:  # the net flow only: -2 kW around noon, +0.4 kW otherwise
        at += timedelta(minutes=5)
        history.observe(at, 300, {"house": -2000.0 if 10 <= at.hour < 15 else 400.0, "wallbox": 0.0})
    live = LivePlanner(DEFAULT_TARIFF, history=history, pv_measured=False)
    live.step(now, views(50), CapacityTracker(), SETTINGS, pv_tomorrow_kwh=30.0)
    assert live.plan is not None
    noon = [s for s in live.plan.steps if 10 <= s.start.hour < 15]
    assert all(s.pv_kw == pytest.approx(2.0, abs=0.01) and s.load_kw == 0 for s in noon)
    evening = [s for s in live.plan.steps if s.start.hour == 20]
    assert all(s.load_kw == pytest.approx(0.4, abs=0.01) and s.pv_kw == 0 for s in evening)


def test_it_re_plans_each_quarter_and_when_the_batteries_change_not_every_step() -> None:
    now = datetime(2026, 6, 3, 12, 1)
    live = LivePlanner(DEFAULT_TARIFF, history=learned(7, end=now), pv_measured=True)
    live.step(now, views(40, 60), CapacityTracker(), SETTINGS, None)
    first = live.plan
    live.step(now + timedelta(minutes=5), views(41, 60), CapacityTracker(), SETTINGS, None)
    assert live.plan is first  # same quarter, same batteries: the plan stands
    live.step(now + timedelta(minutes=6), views(41), CapacityTracker(), SETTINGS, None)
    assert live.plan is not first  # a battery went offline
    second = live.plan
    live.step(now + timedelta(minutes=15), views(41), CapacityTracker(), SETTINGS, None)
    assert live.plan is not second  # a new quarter-hour


def test_no_battery_online_means_no_plan_and_says_so() -> None:
    live = LivePlanner(DEFAULT_TARIFF)
    offline = [BatteryView(id="x", name="X", online=False, soc=None, capacity_wh=5120)]
    assert live.step(datetime(2026, 6, 3, 12), offline, CapacityTracker(), SETTINGS, None) is None
    assert live.problem == "no battery online"
    assert live.as_json() == {"status": "no battery online", "steps": []}


def test_the_capacity_month_so_far_is_what_the_plan_starts_from() -> None:
    now = datetime(2026, 1, 14, 17, 0)
    capacity = CapacityTracker()
    capacity.add(datetime(2026, 1, 3, 8, 0), 0, 0)
    capacity.month_peak_kw = 4.0
    capacity.month = (2026, 1)
    live = LivePlanner(DEFAULT_TARIFF, history=learned(14, end=now, pv_kwp=0.5), pv_measured=True)
    live.step(now, views(60, 60), capacity, SETTINGS, None)
    assert live.plan is not None
    assert live.plan.month_peaks_kw["2026-01"] >= 4.0


# --- the ledger and the summary ----------------------------------------------------------------------


def test_the_ledger_counts_today_against_the_same_day_without_batteries() -> None:
    ledger = DayLedger()
    noon = datetime(2026, 6, 3, 12, 0)
    # an hour: the grid at 0 while the batteries deliver 1 kW at 0.30 EUR/kWh
    ledger.add(noon, 3600, grid_w=0.0, battery_w=1000.0, buy=0.30, sell=0.02)
    # an hour storing 2 kW of surplus that would have been exported at 0.02
    ledger.add(noon, 3600, grid_w=0.0, battery_w=-2000.0, buy=0.30, sell=0.02)
    assert ledger.cost_eur == 0.0
    assert ledger.without_batteries_eur == pytest.approx(0.30 - 0.04)
    ledger.add(noon + timedelta(days=1), 3600, grid_w=500.0, battery_w=0.0, buy=0.30, sell=0.02)
    assert ledger.cost_eur == pytest.approx(0.15)  # a new day starts from zero
    assert DayLedger.restored(json.loads(json.dumps(ledger.snapshot()))) == ledger


def test_the_summary_names_the_next_change_and_the_days_costs() -> None:
    now = datetime(2026, 6, 3, 18, 0)  # the evening from the batteries, a cheap quarter's charge at night
    live = LivePlanner(DEFAULT_TARIFF, history=learned(14, end=now), pv_measured=True)
    live.step(now, views(40, 40), CapacityTracker(), SETTINGS, None)
    summary = live.summary(now)
    assert summary is not None
    assert live.plan is not None
    assert summary.action == live.plan.steps[0].action.value
    later = next(s for s in live.plan.steps if s.action is not live.plan.steps[0].action)
    assert summary.next_change_at == later.start
    assert summary.next_change.endswith(f"at {later.start:%H:%M}")
    tomorrow = [s for s in live.plan.steps if s.start.date() > now.date()]
    assert summary.cost_tomorrow_eur == pytest.approx(sum(s.cost_eur for s in tomorrow), abs=0.01)
    assert summary.saving_today_eur > 0  # the evening from the batteries instead of the grid
    steps = live.as_json()["steps"]
    assert len(steps) == len(live.plan.steps)
    assert set(steps[0]["soc"]) == {"b0", "b1"}


def test_the_first_day_takes_a_clear_sky_shape_scaled_to_the_forecast() -> None:
    now = datetime(2026, 6, 3, 6, 0)
    live = LivePlanner(DEFAULT_TARIFF, pv_measured=True)  # nothing seen yet
    live.step(now, views(50), CapacityTracker(), SETTINGS, pv_tomorrow_kwh=20.0)
    assert live.plan is not None
    tomorrow = [s for s in live.plan.steps if s.start.date() > now.date()]
    assert sum(s.pv_kw * s.hours for s in tomorrow) == pytest.approx(20.0, rel=0.01)
    by_hour = {s.start.hour: s.pv_kw for s in tomorrow if s.start.minute == 0}
    assert by_hour[12] > by_hour[9] > by_hour[6] > by_hour[3] == 0  # the sun's course, noon highest
    without = LivePlanner(DEFAULT_TARIFF, pv_measured=True)
    without.step(now, views(50), CapacityTracker(), SETTINGS, pv_tomorrow_kwh=None)
    assert without.plan is not None
    assert all(s.pv_kw == 0 for s in without.plan.steps)  # no forecast, nothing seen: no PV assumed


def test_the_load_learner_leaves_out_quarters_nobody_saw() -> None:
    from marstek_webasto_addon.optimiser.forecast import load_forecast

    history = np.full(14 * 96, 0.5)
    history[3 * 96 : 5 * 96] = math.nan  # the add-on was stopped for two days
    history[-96:] = 0.9  # yesterday was higher
    forecast = load_forecast(history, 96, quarter_of_day=0)
    assert np.isfinite(forecast).all()
    # the weekly mean (two weeks back, one of them unseen) blended with the last 14 days' mean
    daily = (11 * 0.5 + 0.9) / 12  # 14 days back, 2 unseen: not counted as zeros
    assert forecast[1] == pytest.approx(0.4 * 0.5 + 0.6 * daily)  # (the first also keeps the last's jump)


def test_a_solve_that_runs_too_long_gives_no_plan_and_says_so() -> None:
    from marstek_webasto_addon.optimiser.planner import Planner

    now = datetime(2026, 6, 3, 12, 0)
    live = LivePlanner(DEFAULT_TARIFF, history=learned(7, end=now), planner=Planner(time_limit_s=0.0))
    assert live.step(now, views(40, 40), CapacityTracker(), SETTINGS, None) is None
    assert live.plan is None
    assert live.problem.startswith("the planner found no plan: ")
    assert "time limit" in live.problem.lower()


def test_a_plan_that_raises_leaves_no_plan_and_is_tried_again_at_the_next_step() -> None:
    from marstek_webasto_addon.optimiser.planner import Plan, PlanInputs, Planner

    class Flaky(Planner):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self.fail = False

        def plan(self, inputs: PlanInputs) -> Plan:
            self.calls += 1
            if self.fail:
                raise ValueError("a bad forecast")
            return super().plan(inputs)

    now = datetime(2026, 6, 3, 12, 1)
    planner = Flaky()
    live = LivePlanner(DEFAULT_TARIFF, history=learned(7, end=now), pv_measured=True, planner=planner)
    assert live.step(now, views(40, 60), CapacityTracker(), SETTINGS, None) is not None
    planner.fail = True
    later = now + timedelta(minutes=15)  # a new quarter: a re-plan, which fails
    with pytest.raises(ValueError, match="a bad forecast"):
        live.step(later, views(40, 60), CapacityTracker(), SETTINGS, None)
    assert live.plan is None  # not the last quarter's plan, which would go on steering the car
    assert live.problem == "the planner failed: a bad forecast"
    assert live.as_json()["status"] == "the planner failed: a bad forecast"
    with pytest.raises(ValueError, match="a bad forecast"):  # the same quarter: tried again
        live.step(later + timedelta(seconds=10), views(40, 60), CapacityTracker(), SETTINGS, None)
    assert planner.calls == 3
    planner.fail = False
    again = live.step(later + timedelta(seconds=20), views(40, 60), CapacityTracker(), SETTINGS, None)
    assert again is not None
    assert (live.plan is not None, live.problem, planner.calls) == (True, "", 4)


def test_the_month_counts_its_capacity_peak_and_the_saving_against_no_batteries() -> None:
    live = LivePlanner(DEFAULT_TARIFF)
    at = datetime(2026, 1, 14, 18, 0)
    # a quarter-hour in which the batteries gave 2 kW of a 6 kW evening: the meter saw 4 kW
    for second in range(10, 910, 10):  # each reading held for the 10 s before it
        live.observe(
            at + timedelta(seconds=second), 10, grid_w=4000.0, battery_w=2000.0, pv_w=None, wallbox_w=0
        )
    live.observe(at + timedelta(minutes=15, seconds=1), 1, grid_w=0.0, battery_w=0.0, pv_w=None, wallbox_w=0)
    money = live.month_money(at + timedelta(minutes=16), peak_kw=4.0)
    assert money is not None
    assert money.peak_without_kw == pytest.approx(6.0, abs=0.01)
    per_kw_month = DEFAULT_TARIFF.capacity_price / 12
    assert money.capacity_eur == pytest.approx(round(4.0 * per_kw_month, 2))
    energy = 0.25 * 2.0 * DEFAULT_TARIFF.price_at(at)  # 0.5 kWh not bought at the evening's price
    assert money.saving_eur == pytest.approx(energy + 2.0 * per_kw_month, abs=0.01)
    assert live.month_money(datetime(2026, 2, 1, 0, 5), peak_kw=0.0) is None  # a new month: nothing yet
