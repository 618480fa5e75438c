"""The live planner's inputs: the capacity month as the plan sees it at a quarter's and at a
month's first step, and a solver that finds no plan (said in the log, not re-solved at every step)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from marstek_webasto_addon.addon.planning import LivePlanner
from marstek_webasto_addon.optimiser.planner import Plan, PlanInputs, Planner
from marstek_webasto_addon.optimiser.tariff import DEFAULT_TARIFF, CapacityTracker, Tariff

from .test_live_planner import SETTINGS, learned, views

STEP_S = 10  # the add-on's control interval


def metered(tracker: CapacityTracker, start: datetime, last: datetime, watts: float) -> None:
    """The grid's offtake into the tracker as the engine accounts it: a control step every STEP_S seconds
    after `start`, up to `last`, each adding the interval before it."""
    at = start
    while at < last:
        at += timedelta(seconds=STEP_S)
        tracker.add(at, STEP_S, watts)


# --- the capacity month -----------------------------------------------------------------------------------


def test_the_first_plan_of_a_month_takes_no_headroom_from_the_month_before() -> None:
    """The controller plans before the engine accounts its step: at 00:00 on the 1st the tracker still holds
    January, whose 8 kW peak is no headroom in February. A plan that took it as such would buy the cheap
    hour at full charging power and set February's peak at 5 kW for the whole month."""
    cheap_first_hour = Tariff.from_rules(
        [{"period": "night", "days": "all", "start": "00:00", "end": "01:00"}],
        {"night": 0.10, "day": 0.40},
        "day",
    )
    tracker = CapacityTracker()
    metered(
        tracker, datetime(2026, 1, 31, 19, 0, 5), datetime(2026, 1, 31, 19, 15, 5), 8000.0
    )  # January's peak
    metered(tracker, datetime(2026, 1, 31, 19, 15, 5), datetime(2026, 1, 31, 23, 59, 55), 300.0)
    assert tracker.month_peak_kw == pytest.approx(8.0, abs=0.05)
    now = datetime(2026, 2, 1, 0, 0, 5)  # the first step of February
    live = LivePlanner(cheap_first_hour, history=learned(14, end=now), pv_measured=True)
    running = live.step(now, views(12, 12), tracker, SETTINGS, None)
    assert running is not None
    plan = live.plan
    assert plan is not None
    floor = cheap_first_hour.capacity_floor_kw
    assert plan.month_peaks_kw == {"2026-02": pytest.approx(floor)}
    assert running.peak_kw == pytest.approx(floor)
    assert max(s.grid_kw for s in plan.steps) <= floor + 0.01  # the cheap hour bought under the floor
    summary = live.summary(now)
    assert summary is not None
    assert summary.month_peak_target_kw == pytest.approx(floor)


def test_the_plan_at_a_quarters_first_step_counts_the_quarter_the_meter_just_closed() -> None:
    """17:45-18:00 averaged 6 kW: the meter bills it as the month's peak from 18:00 on. The plan made at the
    quarter's first step (before the engine closes that quarter in its tracker) must start from 6 kW, not
    from the 3 kW before it: the batteries would spend the evening's energy on a peak already paid."""
    tracker = CapacityTracker()
    metered(tracker, datetime(2026, 1, 14, 8, 0, 5), datetime(2026, 1, 14, 8, 15, 5), 3000.0)
    metered(tracker, datetime(2026, 1, 14, 8, 15, 5), datetime(2026, 1, 14, 17, 45, 5), 500.0)
    metered(tracker, datetime(2026, 1, 14, 17, 45, 5), datetime(2026, 1, 14, 17, 59, 55), 6000.0)
    assert tracker.month_peak_kw == pytest.approx(3.0, abs=0.05)  # 17:45's quarter is not closed yet
    now = datetime(2026, 1, 14, 18, 0, 5)
    live = LivePlanner(DEFAULT_TARIFF, history=learned(14, end=now), pv_measured=True)
    running = live.step(now, views(50, 50), tracker, SETTINGS, None)
    assert running is not None
    assert live.plan is not None
    assert live.plan.month_peaks_kw["2026-01"] >= 5.9
    assert running.peak_kw >= 5.9
    # and the engine's step that follows closes the quarter at the same 6 kW the plan started from
    tracker.add(now, STEP_S, 6000.0)
    assert tracker.month_peak_kw == pytest.approx(6.0, abs=0.05)


# --- a solver that finds no plan ---------------------------------------------------------------------------


class Counting(Planner):
    def __init__(self, time_limit_s: float | None) -> None:
        super().__init__(time_limit_s=time_limit_s)
        self.calls = 0

    def plan(self, inputs: PlanInputs) -> Plan:
        self.calls += 1
        return super().plan(inputs)


def test_a_solve_that_found_no_plan_is_not_repeated_at_every_control_step() -> None:
    """A solve that runs into its time limit blocks the event loop for that long (2 s live): repeated at
    every 10 s control step it would stall the links and MQTT a fifth of the time. The rules run meanwhile;
    the planner tries again at the next quarter or when its inputs change."""
    now = datetime(2026, 6, 3, 12, 0, 5)
    planner = Counting(time_limit_s=0.0)
    live = LivePlanner(DEFAULT_TARIFF, history=learned(7, end=now), planner=planner)
    for second in range(0, 120, STEP_S):
        assert (
            live.step(now + timedelta(seconds=second), views(40, 40), CapacityTracker(), SETTINGS, None)
            is None
        )
    assert planner.calls == 1
    assert live.problem.startswith("the planner found no plan: ")
    assert live.as_json()["status"] == live.problem
    # another battery comes online: other inputs, tried again at once
    live.step(now + timedelta(seconds=130), views(40, 40, 40), CapacityTracker(), SETTINGS, None)
    assert planner.calls == 2
    planner.time_limit_s = None
    later = datetime(2026, 6, 3, 12, 15, 5)  # the next quarter: tried again, and it works
    assert live.step(later, views(40, 40, 40), CapacityTracker(), SETTINGS, None) is not None
    assert (planner.calls, live.problem) == (3, "")


def test_a_solver_that_finds_no_plan_says_so_in_the_log_once_and_when_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="marstek_webasto_addon.addon.planning")
    now = datetime(2026, 6, 3, 12, 0, 5)
    planner = Planner(time_limit_s=0.0)
    live = LivePlanner(DEFAULT_TARIFF, history=learned(7, end=now), planner=planner)
    for quarter in range(3):  # three quarters without a plan: said once
        live.step(now + timedelta(minutes=15 * quarter), views(40, 40), CapacityTracker(), SETTINGS, None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "the planner found no plan" in warnings[0].getMessage()
    assert "time limit" in warnings[0].getMessage().lower()
    planner.time_limit_s = None
    live.step(now + timedelta(minutes=45), views(40, 40), CapacityTracker(), SETTINGS, None)
    assert live.plan is not None
    assert "the planner has a plan again" in caplog.text
