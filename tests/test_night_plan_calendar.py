"""The rules' night plan against the calendar: which day's PV it counts when it is made after midnight, and
the nights whose clock jumps (last Sunday of March: 02:00 -> 03:00; of October: 02:00-03:00 twice).

On the pure optimiser, fed as the add-on feeds it: `now` is the naive local wall-clock time of
`datetime.now()` in Home Assistant's zone (the Supervisor sets TZ), which marks the autumn's second pass of
the repeated hour with fold=1."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo

import pytest

from marstek_webasto_addon.addon.day_ahead import quarter_grid
from marstek_webasto_addon.addon.ha_inputs import EntityPvForecast, WeatherPvForecast
from marstek_webasto_addon.addon.ha_series import DetailedPvForecast
from marstek_webasto_addon.addon.pv_detail import PvForecast as QuarterEnergy
from marstek_webasto_addon.optimiser.model import Inputs, Role
from marstek_webasto_addon.optimiser.night import plan_night
from marstek_webasto_addon.optimiser.settings import Settings
from marstek_webasto_addon.optimiser.tariff import DEFAULT_TARIFF

from .optimiser_world import World, battery
from .test_ha_inputs import hourly
from .test_input_faults import brussels

__all__ = ["brussels"]


def rules(**values: object) -> Settings:
    return Settings(enabled=True, method="rules").with_values(values)


# --- which day's PV: after midnight "tomorrow" is the day after --------------------------------------------


def test_a_night_plan_made_after_midnight_does_not_count_the_day_afters_pv() -> None:
    # The add-on restarts at 01:00. Forecast.Solar's "energy production tomorrow" now forecasts the day
    # after (30 kWh, sunny); the coming day's PV is not known. The batteries hold 7.2 of the 15 kWh wanted
    # at dawn: tonight must charge, not rely on the day after's sun.
    world = World(
        [battery("A", 50), battery("B", 20), battery("C", 70)],
        now=datetime(2026, 6, 4, 0, 59, 50),
        pv_forecast_kwh=30.0,
        settings=rules(desired_total_capacity=15.0),
    )
    world.grid = 300.0
    world.run(600)
    plan = world.engine.plan
    assert plan is not None
    stored = (50 + 20 + 70) / 100 * 5120
    assert sum(plan.energy_wh.values()) == pytest.approx(15_000 - stored)
    assert any(c.role is Role.CHARGE and c.battery_id == "b" for c in world.log)
    # and the decision says why the forecast was not counted
    assert any("for another day than the coming one" in d.text for d in world.engine.decisions)


def test_a_forecast_arriving_after_midnight_does_not_undo_a_needed_night_charge() -> None:
    # Home Assistant is down from 22:00 (the plan is made without a forecast: no PV, a full deficit) and back
    # at 00:30, when the "tomorrow" entity already forecasts the day after (30 kWh). That is no forecast
    # for the coming day: the night charge goes on.
    world = World(
        [battery("A", 50), battery("B", 20), battery("C", 70)],
        now=datetime(2026, 6, 3, 21, 59, 50),
        pv_forecast_kwh=None,
        settings=rules(desired_total_capacity=15.0),
    )
    world.grid = 300.0
    world.run(2.5 * 3600)  # to 00:30
    world.pv_forecast_kwh = 30.0
    world.run(3600)  # to 01:30, in the super-off-peak
    plan = world.engine.plan
    assert plan is not None
    assert plan.energy_wh
    assert any(c.role is Role.CHARGE for c in world.log)


def test_a_forecast_said_to_be_for_the_coming_day_counts_after_midnight() -> None:
    # A source that knows its day (a weather entity's sunny hours of today, read after midnight) gives the
    # coming day's PV: counted as such, 5 kWh less to charge.
    batteries = (battery("A", 50), battery("B", 20), battery("C", 70))
    stored = (50 + 20 + 70) / 100 * 5120
    plan = plan_night(
        date(2026, 6, 3),
        batteries,
        15_000,
        5_000,
        DEFAULT_TARIFF,
        clock_time(22),
        clock_time(7),
        datetime(2026, 6, 4, 1, 0),
        pv_day=date(2026, 6, 4),
    )
    assert sum(plan.energy_wh.values()) == pytest.approx(15_000 - stored - 5_000)


# --- nights whose clock jumps -------------------------------------------------------------------------------


def _run_night(evening: date, settings: Settings, socs: dict[str, float]) -> tuple[World, list[float]]:
    """Step the optimiser through the night after `evening` on the real clock (10 s steps), the batteries
    charging at the power they are told. Returns the world and how much each step charged (Wh)."""
    world = World([battery(name, soc) for name, soc in socs.items()], settings=settings, pv_forecast_kwh=0.0)
    engine = world.engine
    epoch = datetime.combine(evening, clock_time(21, 59, 50)).timestamp()
    end = datetime.combine(date.fromordinal(evening.toordinal() + 1), clock_time(7, 5)).timestamp()
    charged: list[float] = []
    t = 1000.0
    while epoch < end:
        epoch += 10
        t += 10
        charging = sum(-min(0.0, b.ac_power or 0.0) for b in world.batteries if b.mode == "Passive")
        result = engine.step(
            Inputs(t, datetime.fromtimestamp(epoch), 300.0 + charging, 0.0, tuple(world.batteries), 0.0)
        )
        for command in result.commands:
            world.apply(command)
        step_wh = 0.0
        for index, view in enumerate(world.batteries):
            watts = -min(0.0, view.ac_power or 0.0) if view.mode == "Passive" else 0.0
            step_wh += watts * 10 / 3600
            soc = min(100.0, (view.soc or 0.0) + watts * 10 / 3600 / view.capacity_wh * 100)
            world.batteries[index] = replace(view, soc=soc)
        charged.append(step_wh)
        world.log.extend(result.commands)
    return world, charged


def _powers(world: World) -> dict[str, int]:
    """The highest charging power each battery was told."""
    out: dict[str, int] = {}
    for command in world.log:
        if command.role is Role.CHARGE:
            out[command.battery_id] = max(out.get(command.battery_id, 0), -command.power_w)
    return out


@pytest.mark.parametrize(
    ("evening", "real_hours", "repeated"),
    [
        # 29 March 2026, 02:00 -> 03:00: the super-off-peak (01:00-07:00) lasts five real hours, not six.
        # A plan over six would charge at 5/6 of the power needed and leave a sixth of the deficit uncharged.
        pytest.param(date(2026, 3, 28), 5, None, id="spring-forward"),
        # 25 October 2026, 03:00 -> 02:00: the super-off-peak (01:00-07:00) lasts seven real hours. Charged
        # as if it were six, the power (and the capacity tariff's night peak) is higher than it needs to be;
        # and it must charge through both passes of the repeated hour, not only the first.
        pytest.param(date(2026, 10, 24), 7, datetime(2026, 10, 25, 2, 30, fold=1), id="fall-back"),
    ],
)
def test_a_night_whose_clock_jumps_charges_its_deficit_over_its_real_hours(
    brussels: None, evening: date, real_hours: int, repeated: datetime | None
) -> None:
    desired = 9_000.0
    socs = {"A": 20.0, "B": 30.0}
    deficit = desired - sum(socs.values()) / 100 * 5120
    world, charged = _run_night(evening, rules(desired_total_capacity=desired / 1000), socs)
    assert sum(charged) == pytest.approx(deficit, rel=0.02)
    # the lowest power that gets each battery's share done in the night's real hours (50 W steps)
    assert _powers(world) == {
        "a": math.ceil(4096 / real_hours / 50) * 50,
        "b": math.ceil((deficit - 4096) / real_hours / 50) * 50,
    }
    if repeated is not None:  # the second pass of the repeated hour charges too
        first_step = datetime.combine(evening, clock_time(21, 59, 50)).timestamp()
        assert charged[int((repeated.timestamp() - first_step) / 10)] > 0


def test_a_weather_forecast_for_the_coming_day_counts_after_midnight() -> None:
    # A weather entity read after midnight forecasts the coming day (the source says which): the plan made
    # at 01:00 counts its 30 kWh and charges nothing.
    world = World(
        [battery("A", 50), battery("B", 20), battery("C", 70)],
        now=datetime(2026, 6, 4, 0, 59, 50),
        pv_forecast_kwh=30.0,
        pv_forecast_day=date(2026, 6, 4),
        settings=rules(desired_total_capacity=15.0),
    )
    world.grid = 300.0
    world.run(600)
    plan = world.engine.plan
    assert plan is not None
    assert plan.expected_pv_wh == pytest.approx(30_000)
    assert not plan.energy_wh
    assert not any(c.role is Role.CHARGE for c in world.log)


def test_each_pv_source_says_which_day_it_forecasts_for_the_night() -> None:
    # What the controller hands the night plan: a weather forecast read after midnight is the coming day's
    # (today), one read in the evening tomorrow's; a detailed forecast holds today's quarters too and gives
    # the coming day's total; a "tomorrow" entity says no day (tomorrow, whenever it is read).
    weather = WeatherPvForecast("weather.home")
    weather.update(hourly(date(2026, 6, 4), range(8, 18)), datetime(2026, 6, 4, 1, 0))
    kwh, day = weather.for_night(datetime(2026, 6, 4, 1, 0))
    assert kwh == pytest.approx(10 * 0.6)
    assert day == date(2026, 6, 4)
    weather.update(hourly(date(2026, 6, 5), range(8, 18)), datetime(2026, 6, 4, 22, 0))
    assert weather.for_night(datetime(2026, 6, 4, 22, 0))[1] == date(2026, 6, 5)
    entity = EntityPvForecast("sensor.energy_production_tomorrow")
    assert entity.for_night(datetime(2026, 6, 4, 1, 0))[1] is None
    detailed = DetailedPvForecast(["sensor.solcast_today", "sensor.solcast_tomorrow"])
    today, tomorrow = date.today(), date.today() + timedelta(days=1)
    grid = quarter_grid(datetime.combine(today, clock_time(0)), 3 * 96)
    # 1 kWh an hour today, 2 tomorrow
    energy = {q: 0.25 if q.astimezone().date() == today else 0.5 for q in grid}
    detailed.combined = QuarterEnergy(energy, len(energy), 0, "test")
    after_midnight = datetime.combine(today, clock_time(1))
    kwh, day = detailed.for_night(after_midnight)
    assert kwh == pytest.approx(24.0)
    assert day == today
    kwh, day = detailed.for_night(datetime.combine(today, clock_time(22)))
    assert kwh == pytest.approx(48.0)
    assert day == tomorrow
    assert detailed.kwh() == pytest.approx(48.0)  # the forecast sensor's "tomorrow" is still tomorrow


@pytest.mark.parametrize("process_zone", ["UTC", "America/New_York"])
def test_a_night_in_a_named_zone_is_the_same_whatever_the_machines_zone(
    monkeypatch: pytest.MonkeyPatch, process_zone: str
) -> None:
    # The replay's clock is Brussels time on every machine: the spring-forward night's super-off-peak
    # (01:00-07:00) is five real hours there, whatever zone the process runs in.
    monkeypatch.setenv("TZ", process_zone)
    time.tzset()
    try:
        plan = plan_night(
            date(2026, 3, 28),
            (battery("A", 20), battery("B", 30)),
            9_000,
            0.0,
            DEFAULT_TARIFF,
            clock_time(22),
            clock_time(7),
            datetime(2026, 3, 28, 22, 0),
            zone=ZoneInfo("Europe/Brussels"),
        )
    finally:
        monkeypatch.undo()
        time.tzset()
    # 01:00-07:00 on the wall clock, of which 02:00-03:00 does not exist
    assert plan.windows == ((datetime(2026, 3, 29, 1, 0), datetime(2026, 3, 29, 7, 0)),)
    assert plan.power_w["a"] == math.ceil(0.8 * 5120 / 5 / 50) * 50  # spread over five real hours
