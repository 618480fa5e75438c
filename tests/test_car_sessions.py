"""The car as a load the planner moves: sessions from a profile, the plan for them, the wallbox's minutes."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timedelta

import numpy as np
import pytest

from marstek_webasto_addon.optimiser.car_sessions import (
    CarSession,
    PastSession,
    burst_hours,
    expected_session,
    has_slack,
    next_departure,
    wallbox_minutes,
)
from marstek_webasto_addon.optimiser.planner import (
    CAR_PEAK_MARGIN_KW,
    Action,
    BatterySpec,
    CapacityTariff,
    PlanInputs,
    plan,
    setpoint,
)
from marstek_webasto_addon.replay.sessions import Visit, clipped, peak_from_arrival_kw, visits

DAY = datetime(2026, 3, 10)
STEPS = 192  # today and tomorrow


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def steps_of(start: float, end: float) -> slice:
    return slice(int(start * 4), int(end * 4))


def inputs(**changes: object) -> PlanInputs:
    base: dict[str, object] = {
        "start": DAY,
        "import_price": np.full(STEPS, 0.279),
        "export_price": np.full(STEPS, 0.02),
        "load_kw": np.full(STEPS, 0.4),
        "pv_kw": np.zeros(STEPS),
        "batteries": tuple(BatterySpec(f"b{i}", capacity_kwh=5.12, soc=50.0) for i in range(3)),
        "capacity": None,
    }
    base.update(changes)
    return PlanInputs(**base)  # type: ignore[arg-type]


def car_power(result: object) -> np.ndarray:
    return np.array([step.car_kw for step in result.steps])  # type: ignore[attr-defined]


def night_prices() -> np.ndarray:
    """Cheap from 01:00 to 07:00 each day."""
    return np.array([0.208 if 1 <= (k / 4) % 24 < 7 else 0.279 for k in range(STEPS)])


def test_a_session_is_charged_by_its_departure_in_the_cheapest_quarters() -> None:
    session = CarSession(at(18), at(31), energy_kwh=30.0)  # 18:00 until 07:00 tomorrow
    result = plan(inputs(import_price=night_prices(), car=(session,)))
    car = car_power(result)
    assert result.car[0].planned_kwh == pytest.approx(30.0, abs=0.01)
    assert result.car[0].met
    assert result.car[0].missing_kwh == 0
    assert car[steps_of(25, 31)].sum() / 4 == pytest.approx(30.0, abs=0.01)  # all of it at 0.208
    assert car[: steps_of(25, 31).start].max() <= 1e-6
    assert car[steps_of(31, 48)].max() <= 1e-6  # nothing after the departure
    assert car.max() <= 11.0 + 1e-6
    # the car is on the meter: the grid carries it and the wallbox reports it
    step = result.steps[26 * 4]
    assert step.wallbox_kw == pytest.approx(step.car_kw, abs=1e-4)  # (car_kw is rounded to 0.1 W)
    assert step.grid_kw >= step.car_kw - 1e-6


def test_a_session_that_cannot_be_met_says_so_from_the_first_plan() -> None:
    session = CarSession(at(18), at(20), energy_kwh=30.0, max_kw=11.0)  # 22 kWh at most in two hours
    result = plan(inputs(car=(session,)))
    assert result.status == "optimal"
    assert result.car[0].missing_kwh == pytest.approx(8.0, abs=0.01)
    assert not result.car[0].met
    assert all(step.car_kw == pytest.approx(11.0) for step in result.steps[steps_of(18, 20)])
    assert any("misses 8.0 kWh" in note for note in result.notes)


def test_the_batteries_do_not_feed_the_car_unless_allowed() -> None:
    price = np.full(STEPS, 0.20)
    price[steps_of(17, 22)] = 0.35
    full = tuple(BatterySpec(f"b{i}", capacity_kwh=5.12, soc=90.0) for i in range(3))
    session = CarSession(at(18), at(21), energy_kwh=21.0, max_kw=7.0)  # no slack: 7 kW for three hours
    kept = plan(inputs(import_price=price, batteries=full, car=(session,)))
    for step in kept.steps[steps_of(18, 21)]:
        assert step.car_kw == pytest.approx(7.0, abs=1e-4)
        assert step.battery_kw <= step.load_kw + 1e-6  # the batteries cover the house at most
        assert step.grid_kw >= step.car_kw - 1e-6  # the car comes from the grid
    fed = plan(inputs(import_price=price, batteries=full, car=(session,), batteries_cover_wallbox=True))
    assert max(step.battery_kw for step in fed.steps[steps_of(18, 21)]) > 1.0


def test_a_session_with_slack_does_not_raise_the_capacity_peak() -> None:
    session = CarSession(at(18), at(31), energy_kwh=20.0)
    result = plan(inputs(import_price=night_prices(), capacity=CapacityTariff(), car=(session,)))
    assert result.car[0].met
    assert result.month_peaks_kw == {"2026-03": 2.5}  # the floor: 20 kWh over 13 hours fits under it
    assert max(step.grid_kw for step in result.steps) <= 2.5 + 1e-6
    # the cheap hours are used up to the peak, the rest comes in the evening (under the peak too); while
    # the car is plugged in, the plan keeps the car's margin under the peak: the wallbox's own, and room for
    # the house above its forecast
    level = 2.5 - CAR_PEAK_MARGIN_KW
    assert all(step.grid_kw == pytest.approx(level, abs=0.01) for step in result.steps[steps_of(25, 31)])
    assert max(step.grid_kw for step in result.steps[steps_of(18, 31)]) <= level + 1e-6
    assert car_power(result)[steps_of(25, 31)].sum() / 4 > 12.0


def test_a_departure_beyond_the_horizon_may_leave_the_rest_for_later() -> None:
    session = CarSession(at(40), at(60), energy_kwh=30.0)  # tomorrow 16:00 until the day after, noon
    result = plan(inputs(import_price=night_prices(), car=(session,)))
    planned = result.car[0]
    assert planned.met
    assert planned.planned_kwh + planned.after_horizon_kwh == pytest.approx(30.0, abs=0.01)
    assert car_power(result)[steps_of(40, 48)].max() <= 1e-6  # no cheap hours left tomorrow: later


def test_without_sessions_the_plan_is_todays() -> None:
    result = plan(inputs(import_price=night_prices()))
    assert result.car == ()
    assert all(step.car_kw == 0 for step in result.steps)


def test_the_wallbox_carries_out_a_quarter_below_its_minimum_as_minutes_at_the_minimum() -> None:
    session = CarSession(at(0), at(8), energy_kwh=10.0, max_kw=11.0, min_kw=4.14)
    assert wallbox_minutes(6.0, session) == (6.0,) * 15
    assert wallbox_minutes(20.0, session) == (11.0,) * 15
    low = wallbox_minutes(2.0, session)
    assert low[:7] == (4.14,) * 7
    assert 0 < low[7] < 4.14  # the last one in part
    assert set(low[8:]) == {0.0}
    assert sum(low) / 15 == pytest.approx(2.0)  # the quarter's energy exactly
    assert wallbox_minutes(0.0, session) == (0.0,) * 15


def test_a_burst_at_the_minimum_counts_import_only() -> None:
    # 0.5 kWh of the quarter's import left, 0.25 h to go. A house importing 1 kW takes 0.25 kWh of it
    # whether the car runs or not: the car's 4 kW get the other 0.25 kWh, 3.75 minutes.
    assert burst_hours(0.5, 0.25, 1.0, 4.0) == pytest.approx(0.25 / 4.0)
    # A house exporting 2 kW lends the car its export only while the car runs: 0.5 kWh at 2 kW net.
    assert burst_hours(0.5, 0.25, -2.0, 4.0) == pytest.approx(0.25)
    assert burst_hours(0.2, 0.25, -2.0, 4.0) == pytest.approx(0.1)
    # An export that covers the car imports nothing, even with the budget spent; no budget, no burst.
    assert burst_hours(-1.0, 0.25, -5.0, 4.0) == 0.25
    assert burst_hours(0.1, 0.25, 1.0, 4.0) == 0.0
    assert burst_hours(5.0, 0.25, 0.0, 4.0) == 0.25  # never past the quarter's end


def test_sessions_are_taken_from_a_profile() -> None:
    power = [0.0] * 96 * 2
    power[72:80] = [11000.0] * 8  # 18:00-20:00 on day one: 22 kWh
    power[96 + 40 : 96 + 42] = [3000.0, 1000.0]  # 10:00-10:30 on day two: 1 kWh
    # without stays: the next 07:00, or the next run if it comes first
    found = visits(power)
    assert found == (
        Visit(72, 96 + 28, 22.0, 11.0, 4.14),
        Visit(96 + 40, 96 * 2, 1.0, 11.0, 4.14),  # the data ends before the next 07:00
    )
    stays = [0] * len(power)
    stays[70:96] = [5] * 26  # plugged in at 17:30, gone at midnight
    assert visits(power, stays)[0] == Visit(72, 96, 22.0, 11.0, 4.14)
    # a window that cuts a session keeps what was charged within it
    assert clipped(found, power, 76, 96 + 30) == (Visit(76, 96 + 28, 11.0, 11.0, 4.14),)
    # a one-phase car: the minimum is 6 A on one phase
    assert visits([0.0, 3700.0, 0.0])[0].min_kw == pytest.approx(1.38)


def test_the_peak_a_session_allows_from_its_plug_in_is_its_stays_average_need() -> None:
    stay = Visit(4, 12, 8.0, 11.0, 4.14)  # 2 h, 8 kWh for the car
    house = [0.5] * 16  # 1 kWh over the stay
    # car and house over the stay, less what the batteries could give: 8 + 1 - 2 kWh in 2 h
    assert peak_from_arrival_kw(stay, house, 2.0) == pytest.approx(3.5)
    assert peak_from_arrival_kw(stay, house, 0.0) == pytest.approx(4.5)
    # PV above the house's load (a negative net load) counts towards the car; never below zero
    sunny = [0.5] * 4 + [-2.0] * 8 + [0.5] * 4
    assert peak_from_arrival_kw(stay, sunny, 2.0) == pytest.approx((8 - 4 - 2) / 2)
    assert peak_from_arrival_kw(stay, sunny, 20.0) == 0.0


def test_a_scarce_step_never_gives_the_car_the_batteries_energy() -> None:
    # The planned car takes all of the month's peak: the house's ceiling is below zero. The batteries give
    # the house what it needs (0.44 kW) and not the ceiling's shortfall, which would go into the car.
    base = plan(inputs(car=(CarSession(at(18), at(31), energy_kwh=30.0),))).steps[0]
    running = replace(
        base, action=Action.SELF_CONSUMPTION, scarce=True, peak_kw=4.2, wallbox_kw=4.2, car_kw=4.2
    )
    target = setpoint(running, grid_kw=4.2 + 0.44 - 0.51, battery_kw=0.51, wallbox_kw=4.2)
    assert not target.auto
    assert target.battery_kw == pytest.approx(0.44)
    fed = setpoint(
        replace(running, feed_car=True), grid_kw=4.2 + 0.44 - 0.51, battery_kw=0.51, wallbox_kw=4.2
    )
    assert fed.battery_kw > 0.44  # allowed to feed it: the batteries hold the peak


def test_the_live_plan_mode_pulses_a_quarter_planned_below_the_wallbox_minimum() -> None:
    from marstek_webasto_addon.addon.car_control import CarControl
    from marstek_webasto_addon.optimiser.car_sessions import SessionPlan

    session = CarSession(datetime(2026, 1, 4, 18), datetime(2026, 1, 5, 7), 20.0, max_kw=11.0, min_kw=4.14)
    planned = (2.07, SessionPlan(session, 20.0, 0.0, 0.0))  # half the minimum: half of each quarter
    minutes = [CarControl._planned_now(planned, datetime(2026, 1, 4, 22, 15 + m)) for m in range(15)]
    assert sum(minutes) / 15 == pytest.approx(2.07, abs=0.01)  # the quarter's energy is the plan's
    assert minutes[0] == pytest.approx(4.14)  # at the minimum first, then paused
    assert minutes[-1] == 0.0
    partial = [kw for kw in minutes if 0 < kw < 4.14 - 1e-9]
    assert len(partial) <= 1  # one minute at most in part; the others at the minimum or off


def test_a_session_has_slack_while_half_power_would_meet_it_before_its_last_half_hour() -> None:
    assert has_slack(20.0, 13.0, 11.0)  # a night: 20 kWh in 13 h at up to 11 kW
    assert not has_slack(2.3, 0.75, 3.7)  # 45 minutes that need most of the wallbox's power
    # the boundary: 0.5 x 11 kW x (2.5 - 0.5) h = 11 kWh
    assert has_slack(10.9, 2.5, 11.0)
    assert not has_slack(11.1, 2.5, 11.0)
    assert not has_slack(0.1, 0.4, 11.0)  # in its last half hour, never: what waits now cannot come later


def test_a_departure_stays_todays_until_it_comes_once_the_car_is_plugged_in() -> None:
    evening = datetime(2026, 1, 4, 18, 0)
    morning = datetime(2026, 1, 5, 7, 30)
    # plugged in at 18:00 for 07:30: the next morning's, also in its last quarter-hour (the car still
    # charges for it), and the morning after once it has passed
    assert next_departure(time(7, 30), evening, evening) == morning
    assert next_departure(time(7, 30), datetime(2026, 1, 5, 7, 20), evening) == morning
    assert next_departure(time(7, 30), datetime(2026, 1, 5, 7, 30), evening) == morning + timedelta(days=1)
    assert next_departure(time(7, 30), datetime(2026, 1, 7, 9, 0), evening) == morning + timedelta(days=3)
    # plugged in at 07:20 for 07:30: too close, tomorrow's
    early = datetime(2026, 1, 5, 7, 20)
    assert next_departure(time(7, 30), early, early) == morning + timedelta(days=1)
    # a car there before the add-on (no plug-in known): counted from now, as before
    assert next_departure(time(7, 30), datetime(2026, 1, 5, 7, 20)) == morning + timedelta(days=1)
    assert next_departure(time(7, 30), datetime(2026, 1, 5, 6, 0)) == morning
    # a plug-in time in the future (a clock set back) counts as now
    assert next_departure(time(7, 30), datetime(2026, 1, 5, 6, 0), morning) == morning


def stays_at(*days_and_hours: tuple[int, float], hours: float = 12.0, kwh: float = 20.0) -> list[PastSession]:
    """Stays that began `days` before DAY at `hour` o'clock and lasted `hours`."""
    out = []
    for days, hour in days_and_hours:
        arrival = DAY - timedelta(days=days) + timedelta(hours=hour)
        out.append(PastSession(arrival, arrival + timedelta(hours=hours), kwh))
    return out


def expect(past: list[PastSession], now: datetime, departure: time | None = None) -> CarSession | None:
    return expected_session(past, now, max_kw=11.0, min_kw=4.14, departure=departure)


def test_a_car_that_comes_home_in_the_evening_is_expected_there_with_its_share_of_a_stay() -> None:
    past = stays_at((1, 18.0), (2, 19.0), (4, 17.5), (6, 18.5), (9, 18.25), (40, 8.0))  # the last: too old
    expected = expect(past, at(9))
    assert expected is not None
    assert expected.expected
    assert expected.arrival == at(18.25)  # the median time of day of the five recent ones
    assert expected.departure == at(18.25 + 12)  # their median stay
    assert expected.energy_kwh == pytest.approx(20.0 * 5 / 28)  # a stay on 5 of 28 days
    assert (expected.max_kw, expected.min_kw) == (11.0, 4.14)
    # the user's departure time, when given, ends it (the next one after the arrival)
    with_departure = expect(past, at(9), departure=time(7, 30))
    assert with_departure is not None
    assert with_departure.departure == at(24 + 7.5)


def test_no_car_is_expected_without_a_habit_after_it_came_or_once_it_is_late() -> None:
    past = stays_at((1, 18.0), (2, 18.0), (3, 18.0), (4, 18.0))
    assert expect(past[:3], at(9)) is None  # three stays are no habit yet
    assert expect(past, at(9)) is not None
    came = [*past, *stays_at((0, 15.0), hours=2.0)]  # it came early today, and left again
    assert expect(came, at(17.5)) is None
    morning = [*past, *stays_at((0, 8.0), hours=2.0)]  # a morning's errand is not the evening's stay
    assert expect(morning, at(12)) is not None
    # 19:00, an hour late: from the next quarter-hour on; after 20:00, two hours late: not today, tomorrow
    late = expect(past, at(19.1))
    assert late is not None
    assert late.arrival == at(19.25)
    tomorrow = expect(past, at(20.1))
    assert tomorrow is not None
    assert tomorrow.arrival == at(24 + 18)


def test_a_car_that_comes_around_midnight_is_expected_at_midnight_not_at_noon() -> None:
    past = stays_at((1, 23 + 40 / 60), (2, 23 + 50 / 60), (4, 24 + 10 / 60), (5, 24 + 20 / 60), hours=8.0)
    expected = expect(past, at(22))
    assert expected is not None
    assert expected.arrival == at(24)  # tonight's midnight, the day cut where no car ever arrives
    late = expect(past, at(24.5))  # half an hour late, past midnight: still tonight's, from the next quarter
    assert late is not None
    assert late.arrival == at(24.75)


def test_a_day_with_two_stays_counts_once_by_its_biggest() -> None:
    # at noon for 2 kWh and in the evening for 20 kWh, on 4 of 28 days, and today at noon: the evening's stay
    # is expected after it, with the days' median 22 kWh times 5/28 (today is one of the days)
    noon = stays_at((1, 12.0), (2, 12.0), (3, 12.0), (4, 12.0), hours=1.0, kwh=2.0)
    evening = stays_at((1, 18.0), (2, 18.0), (3, 18.0), (4, 18.0), kwh=20.0)
    today_noon = stays_at((0, 12.0), hours=1.0, kwh=2.0)
    expected = expect([*noon, *evening, *today_noon], at(14))
    assert expected is not None
    assert expected.arrival == at(18)
    assert expected.energy_kwh == pytest.approx(22.0 * 5 / 28)


def test_an_expected_car_keeps_the_batteries_for_the_house_and_is_only_a_note() -> None:
    # 10 kWh expected 18:00-22:00 under a 3 kW peak target: the car's 2.5 kW and the house's 1.2 kW are more
    # than the peak, so the plan fills the batteries before the car comes (without it, they just hold).
    prices = np.array([0.35 if 12 <= (k / 4) % 24 < 18 else 0.279 for k in range(STEPS)])
    capacity = CapacityTariff(month_peak_kw=3.0)
    load = np.full(STEPS, 1.2)
    batteries = (BatterySpec("b0", capacity_kwh=5.12, soc=60.0),)
    expected = CarSession(at(18), at(22), energy_kwh=10.0, expected=True)
    without = plan(
        inputs(start=at(12), import_price=prices, load_kw=load, batteries=batteries, capacity=capacity)
    )
    with_car = plan(
        inputs(
            start=at(12),
            import_price=prices,
            load_kw=load,
            batteries=batteries,
            capacity=capacity,
            car=(expected,),
        )
    )
    evening = slice(24, 40)  # 18:00-22:00 from a 12:00 start
    soc_at_six = [step.batteries[0].soc for step in with_car.steps][24]
    assert soc_at_six > [step.batteries[0].soc for step in without.steps][24] + 10
    assert max(step.grid_kw for step in with_car.steps[evening]) <= 3.0 + 1e-6
    assert any("expected 18:00-22:00" in note for note in with_car.notes)


def test_an_expected_car_that_cannot_be_met_raises_no_peak_and_no_alarm() -> None:
    # 30 kWh in one hour is more than the wallbox gives: for a car that is there, the plan says so and
    # raises the month's peak for all it can charge; for a car that may not come, neither.
    capacity = CapacityTariff(month_peak_kw=3.0)
    load = np.full(STEPS, 1.2)
    there = CarSession(at(18), at(19), energy_kwh=30.0)
    expected = replace(there, expected=True)
    real = plan(inputs(start=at(12), load_kw=load, capacity=capacity, car=(there,)))
    assert any("misses" in note for note in real.notes)
    assert max(step.grid_kw for step in real.steps) > 10.0
    maybe = plan(inputs(start=at(12), load_kw=load, capacity=capacity, car=(expected,)))
    assert not any("misses" in note for note in maybe.notes)
    assert max(step.grid_kw for step in maybe.steps) <= 3.0 + 1e-6
    assert max(step.peak_kw for step in maybe.steps) <= 3.0 + 1e-6


@pytest.mark.parametrize(
    ("prices", "planned_kwh"),
    [
        # flat, with one dear quarter before the stay: what fits under the peak is planned
        (np.array([1.0 if k == 16 else 0.25 for k in range(STEPS)]), 20.0),
        # free at night, dear by day: the free night's room under the peak is worth more in the batteries
        (np.array([0.0 if 0 <= (k / 4 + 12) % 24 < 7 else 0.40 for k in range(STEPS)]), 0.0),
    ],
)
def test_a_long_expected_stay_never_pays_for_a_higher_peak(prices: np.ndarray, planned_kwh: float) -> None:
    # 40 kWh expected 18:00-07:30: under a 3 kW peak with the house's 1.2 kW, not all of it fits. A car that
    # is there raises the peak for the rest; an expected one takes at most what fits and misses the rest.
    capacity = CapacityTariff(month_peak_kw=3.0)
    stay = CarSession(at(18), at(31.5), energy_kwh=40.0, expected=True)
    result = plan(
        inputs(start=at(12), import_price=prices, load_kw=np.full(STEPS, 1.2), capacity=capacity, car=(stay,))
    )
    assert max(step.peak_kw for step in result.steps) <= 3.0 + 1e-6
    assert result.car[0].planned_kwh >= planned_kwh
    there = plan(
        inputs(
            start=at(12),
            import_price=prices,
            load_kw=np.full(STEPS, 1.2),
            capacity=capacity,
            car=(replace(stay, expected=False),),
        )
    )
    assert max(step.peak_kw for step in there.steps) > 3.2


def test_a_short_stay_spreads_its_import_over_the_stay_when_the_quarters_cost_the_same() -> None:
    # 45 minutes at noon, full batteries: the PV surplus of the later quarters covers part of the car, the
    # rest is imported at the same price whenever it comes. Taken in the first quarter, the wallbox's full
    # power there left no room for a house above its forecast (the replay's August, a VW e-up).
    load = np.full(STEPS, 0.5)
    load[0] = 1.13
    pv = np.full(STEPS, 2.6)
    pv[0] = 2.5
    session = CarSession(at(13.25), at(14.0), energy_kwh=2.29, max_kw=3.7, min_kw=1.38)
    result = plan(
        inputs(
            start=at(13.25),
            load_kw=load,
            pv_kw=pv,
            batteries=tuple(BatterySpec(f"b{i}", capacity_kwh=5.12, soc=100.0) for i in range(3)),
            capacity=CapacityTariff(),
            car=(session,),
        )
    )
    assert result.car[0].met
    grid = np.array([step.grid_kw for step in result.steps[:3]])
    assert grid.max() - grid.min() <= 0.01, f"the stay's import per quarter: {grid.round(2)}"
    surplus_kwh = ((2.5 - 1.13) + 2 * (2.6 - 0.5)) / 4  # the PV the car takes in the three quarters
    assert grid.max() == pytest.approx((2.29 - surplus_kwh) / 0.75, abs=0.05)  # no more than it must


def test_batteries_that_may_not_feed_the_car_still_sell_while_it_is_not_plugged_in() -> None:
    # The car is there from 18:00; at noon the export pays more than any import: the batteries sell then.
    # The rule that keeps them from feeding the car held for the whole horizon once a car was in it.
    export, price = np.full(STEPS, 0.02), np.full(STEPS, 0.279)
    export[steps_of(1, 2)], price[steps_of(1, 2)] = 0.6, 0.7  # plan from 11:00: noon is its second hour
    session = CarSession(at(18), at(31), energy_kwh=10.0)
    full = tuple(BatterySpec(f"b{i}", capacity_kwh=5.12, soc=90.0) for i in range(3))
    result = plan(
        inputs(start=at(11), import_price=price, export_price=export, batteries=full, car=(session,))
    )
    noon = result.steps[steps_of(1, 2).start]
    assert noon.battery_kw > noon.load_kw + 1.0, "the batteries sell at noon"
    assert noon.grid_kw < -1.0
    evening = [step for step in result.steps[steps_of(7, 20)] if step.car_kw > 0]
    assert evening
    assert all(step.battery_kw <= step.load_kw - step.pv_kw + 1e-6 for step in evening)


def test_a_night_stay_is_not_spread_below_the_wallboxs_minimum() -> None:
    # 10 kWh over a night whose cheap hours cost the same: spread over them (as a short stay's import is),
    # every quarter would be below the wallbox's minimum, a start every quarter-hour where one run does.
    session = CarSession(at(18), at(31), energy_kwh=10.0)
    result = plan(inputs(import_price=night_prices(), capacity=CapacityTariff(floor_kw=15.0), car=(session,)))
    car = car_power(result)
    assert car.sum() / 4 == pytest.approx(10.0, abs=0.01)
    assert np.count_nonzero(car > 1e-6) <= 5, f"the car in {np.count_nonzero(car > 1e-6)} quarter-hours"
