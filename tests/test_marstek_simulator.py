"""The simulated battery's physics and EMS, stepped directly (no sockets, no wall clock)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator, SimClock
from marstek_webasto_addon.devices.marstek.simulator.device import SimulatedBattery
from marstek_webasto_addon.devices.marstek.simulator.physics import BatteryPhysics, Household

MONDAY_NOON = datetime(2026, 6, 1, 12, 0)


def world(
    count: int = 1, socs: list[float] | None = None, profile: str = "venus_e3_v150"
) -> MarstekSimulator:
    sim = MarstekSimulator.build(count, socs=socs or [50.0] * count, profile=profile)
    sim.clock = SimClock(start=MONDAY_NOON)
    return sim


def set_mode(battery: SimulatedBattery, config: dict[str, object], now_s: float = 0.0) -> bool:
    request = {"id": 1, "method": "ES.SetMode", "params": {"id": 0, "config": config}}
    [(reply, _)] = battery.handle(json.dumps(request).encode(), ("127.0.0.1", 1), now_s)
    return bool(json.loads(reply)["result"]["set_result"])


def test_auto_holds_the_meter_at_zero_within_limits() -> None:
    sim = world(1, [60.0])
    sim.advance(60)
    assert abs(sim.site.total_power()) < 15
    assert sim.batteries[0].physics.ac_power != 0  # it is working for it


def test_auto_cannot_exceed_the_power_limit() -> None:
    sim = world(1, [60.0])
    sim.site.extra = (9000.0, 0.0, 0.0)  # a wallbox and an oven on phase A, more than any PV at noon
    sim.advance(60)
    battery = sim.batteries[0].physics
    assert battery.ac_power == pytest.approx(battery.max_discharge_w)
    assert sim.site.total_power() > 2000


def test_passive_holds_its_setpoint_then_returns_to_the_previous_mode() -> None:
    sim = world(1, [60.0])
    battery = sim.batteries[0]
    assert set_mode(battery, {"mode": "Passive", "passive_cfg": {"power": -1000, "cd_time": 120}})
    sim.advance(60)
    assert battery.mode == "Passive"
    assert battery.physics.ac_power == pytest.approx(-1000)
    sim.advance(70)
    assert battery.mode == "Auto"


def test_manual_slots_follow_the_weekday_mask_and_wrap_midnight() -> None:
    sim = world(1, [50.0])
    battery = sim.batteries[0]
    tuesday_only = {
        "time_num": 0,
        "start_time": "11:00",
        "end_time": "13:00",
        "week_set": 0b10,
        "power": 700,
        "enable": 1,
    }
    assert set_mode(battery, {"mode": "Manual", "manual_cfg": tuesday_only})
    sim.advance(10)
    assert battery.physics.ac_power == 0  # Monday: no slot applies, the battery idles
    monday = {**tuesday_only, "time_num": 1, "week_set": 0b1, "power": -900}
    assert set_mode(battery, {"mode": "Manual", "manual_cfg": monday})
    sim.advance(10)
    assert battery.physics.ac_power == pytest.approx(-900)
    overnight = {**monday, "time_num": 2, "start_time": "22:00", "end_time": "06:00", "week_set": 127}
    assert set_mode(battery, {"mode": "Manual", "manual_cfg": overnight})
    assert battery.slots[2].active(MONDAY_NOON.replace(hour=23))
    assert battery.slots[2].active(MONDAY_NOON.replace(hour=3))
    assert not battery.slots[2].active(MONDAY_NOON)


def test_discharge_stops_at_the_soc_floor_and_charge_at_full() -> None:
    physics = BatteryPhysics(5120, 2500, 2500, soc=13.0, dod=88)
    for _ in range(120):
        physics.step(60, 2500)
    assert physics.soc == pytest.approx(12.0, abs=0.3)
    assert physics.feasible(2500) == pytest.approx(0, abs=1)
    physics.soc = 99.0
    for _ in range(240):
        physics.step(60, -2500)
    assert physics.soc <= 100.0
    assert physics.feasible(-2500) > -130


def test_energy_counters_and_efficiency() -> None:
    physics = BatteryPhysics(5120, 2500, 2500, soc=20.0, standby_w=0)
    physics.step(3600, -1000)  # charge 1 kWh from AC for one hour
    assert physics.ac_in_wh == pytest.approx(1000)
    assert physics.soc == pytest.approx(20.0 + 950 / 5120 * 100)
    physics.step(3600, 500)
    assert physics.ac_out_wh == pytest.approx(500)
    assert physics.soc == pytest.approx(20.0 + (950 - 500 / 0.95) / 5120 * 100)


def test_household_has_no_pv_at_night_and_some_at_noon() -> None:
    house = Household(pv_kwp=4.0)
    assert sum(house.pv_w(MONDAY_NOON.replace(hour=2))) == 0
    assert sum(house.pv_w(MONDAY_NOON)) > 1000
    assert all(load > 0 for load in house.load_w(MONDAY_NOON))


def test_speed_factor_runs_simulated_time_faster() -> None:
    clock = SimClock(speed=1000, start=MONDAY_NOON)
    import time

    time.sleep(0.05)
    assert clock.seconds() >= 50
    clock.speed = 1
    frozen = clock.seconds()
    time.sleep(0.02)
    assert clock.seconds() - frozen < 1


def test_venus_a_reports_pv_from_its_own_inputs() -> None:
    sim = world(1, [40.0], profile="venus_a_v148")
    sim.advance(5)
    battery = sim.batteries[0].physics
    assert len(battery.pv_w) == 4
    assert battery.pv_total > 0
    assert battery.pv_wh > 0
