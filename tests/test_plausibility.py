"""Fault injection: implausible device values never reach a snapshot, and so never MQTT, the panel, the
site totals or the optimiser (issue 11). Rogue simulators on real sockets, the real clients."""

from __future__ import annotations

import logging

import pytest

from marstek_webasto_addon.devices.marstek.datapoints import Method
from marstek_webasto_addon.devices.marstek.decode import BatterySnapshot
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint
from marstek_webasto_addon.devices.plausibility import COUNTER_SLACK_H, PlausibilityGuard, Range, counter
from marstek_webasto_addon.devices.webasto.registers import WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import Car

from .conftest import SimFactory, client_for
from .webasto_fixtures import BoxFactory, make_box
from .webasto_fixtures import client_for as wallbox_client

__all__ = ["make_box"]
pytestmark = pytest.mark.timeout(60)
NEXT, UNITE = WallboxModel.NEXT, WallboxModel.UNITE
BATTERY_LOG = "marstek_webasto_addon.devices.marstek.decode"
WALLBOX_LOG = "marstek_webasto_addon.devices.webasto.client"


def warnings_about(caplog: pytest.LogCaptureFixture, key: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and f": {key} = " in r.getMessage()
        and "implausible" in r.getMessage()
    ]


def problems_about(problems: list[str], key: str) -> list[str]:
    return [p for p in problems if p.startswith(f"{key}: ")]


# the battery (real UDP) ----------------------------------------------------------------------------------


async def test_soc_outside_0_to_100_keeps_the_last_good_value_and_is_logged_once(
    make_sim: SimFactory, endpoint: UdpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=BATTERY_LOG)
    sim = await make_sim(1, socs=[40.0])
    sim.frozen = True
    rogue = sim.batteries[0].quirks.rogue_values
    client = client_for(sim, endpoint)
    await client.read()
    assert client.snapshot.soc == 40

    rogue.update(bat_soc=250, soc=250)  # every method that reports a SOC
    await client.read()
    assert client.snapshot.soc == 40
    assert problems_about(client.snapshot.problems, "soc") == ["soc: 250 outside 0..100 %"]
    rogue.update(bat_soc=-5, soc=-5)
    await client.read()
    await client.observe()  # ES.GetMode alone goes through the same screen
    assert client.snapshot.soc == 40
    assert problems_about(client.snapshot.problems, "soc") == ["soc: -5 outside 0..100 %"]
    [warning] = warnings_about(caplog, "soc")
    assert "soc = 250 is implausible, outside 0..100 %" in warning
    assert "02a1b2c3d400" in warning  # which battery

    rogue.clear()
    sim.batteries[0].physics.soc = 55.0
    await client.read()
    assert client.snapshot.soc == 55
    assert problems_about(client.snapshot.problems, "soc") == []
    assert any("soc is plausible again (55)" in r.getMessage() for r in caplog.records)

    rogue.update(bat_soc=250, soc=250)  # a relapse is news again
    await client.read()
    assert client.snapshot.soc == 55
    assert len(warnings_about(caplog, "soc")) == 2


async def test_an_implausible_first_reading_leaves_the_point_unknown(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1, socs=[40.0])
    sim.batteries[0].quirks.rogue_values.update(bat_soc=250, soc=250, ongrid_power=1e9)
    client = client_for(sim, endpoint)
    await client.read()
    assert client.snapshot.soc is None
    assert client.snapshot.ac_power is None
    assert problems_about(client.snapshot.problems, "ac_power") == [
        "ac_power: 1000000000 outside -3750..3750 W"
    ]


async def test_lifetime_counters_never_go_back_nor_jump(
    make_sim: SimFactory, endpoint: UdpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=BATTERY_LOG)
    sim = await make_sim(1)  # Venus E 3.0 v150: counters in Wh on the wire
    sim.frozen = True
    physics = sim.batteries[0].physics
    physics.ac_in_wh, physics.ac_out_wh = 1_234_500.0, 1_000_000.0
    rogue = sim.batteries[0].quirks.rogue_values
    client = client_for(sim, endpoint)
    await client.read()
    assert client.snapshot.number("ac_input_energy") == pytest.approx(1234.5)
    assert client.snapshot.number("ac_output_energy") == pytest.approx(1000.0)

    rogue["total_grid_input_energy"] = -1.18e21  # -1.18e18 kWh, as a rogue unit sent it
    rogue["total_grid_output_energy"] = 1_000_000.0 + 1e9  # +1e6 kWh in one poll
    await client.read()
    assert client.snapshot.number("ac_input_energy") == pytest.approx(1234.5)
    assert client.snapshot.number("ac_output_energy") == pytest.approx(1000.0)
    assert problems_about(client.snapshot.problems, "ac_input_energy") == [
        "ac_input_energy: -1.18e+18 outside 0..1000000 kWh"
    ]
    assert problems_about(client.snapshot.problems, "ac_output_energy") == [
        "ac_output_energy: 1001000 outside 0..1000000 kWh"
    ]

    # Within the lifetime range, yet more than 3.75 kW could deliver since the last good reading.
    rogue["total_grid_output_energy"] = 1_000_000.0 + 500_000.0
    await client.read()
    assert client.snapshot.number("ac_output_energy") == pytest.approx(1000.0)
    [jump] = problems_about(client.snapshot.problems, "ac_output_energy")
    assert jump.startswith("ac_output_energy: 1500 outside 1000..1000.9")
    assert "faster than the device can deliver" in jump

    # A counter that restarts from 0 is a fault, not a new meter.
    rogue["total_grid_input_energy"] = 0.0
    await client.read()
    assert client.snapshot.number("ac_input_energy") == pytest.approx(1234.5)
    assert "never goes back" in problems_about(client.snapshot.problems, "ac_input_energy")[0]
    assert len(warnings_about(caplog, "ac_input_energy")) == 1
    assert len(warnings_about(caplog, "ac_output_energy")) == 1

    # A dip of a rounding step is no fault, but is not published either; a real rise is accepted again.
    rogue["total_grid_input_energy"] = 1_234_450.0
    del rogue["total_grid_output_energy"]
    physics.ac_out_wh += 200.0
    await client.read()
    assert client.snapshot.number("ac_input_energy") == pytest.approx(1234.5)
    assert client.snapshot.number("ac_output_energy") == pytest.approx(1000.2)
    assert problems_about(client.snapshot.problems, "ac_input_energy") == []
    assert problems_about(client.snapshot.problems, "ac_output_energy") == []
    rogue.clear()
    physics.ac_in_wh += 300.0
    await client.read()
    assert client.snapshot.number("ac_input_energy") == pytest.approx(1234.8)
    assert client.snapshot.problems == []


# the wallbox (real Modbus TCP) ---------------------------------------------------------------------------


async def test_rogue_wallbox_values_never_reach_the_snapshot(
    make_box: BoxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=WALLBOX_LOG)
    sim, server = await make_box(NEXT)
    sim.plug_in(Car(max_current=16))
    sim.setpoint = 10
    client = wallbox_client(server, NEXT)
    await client.connect()
    try:
        await client.poll(include_slow=True)
        assert client.snapshot.values["power"] == 6900
        assert client.snapshot.problems == []

        sim.quirks.rogue_values.update(power=2_147_483_646, failsafe_current=32_767, min_current=65_535)
        for _ in range(3):
            snapshot = await client.poll(include_slow=True)
        assert snapshot.values["power"] == 6900
        assert snapshot.values["failsafe_current"] == 6
        assert snapshot.values["min_current"] == 6
        assert sorted(snapshot.problems) == [
            "failsafe_current: 32767 outside 0..80 A",
            "min_current: 65535 outside 0..80 A",
            "power: 2147483646 outside 0..12144 W",  # what a 16 A box draws on 3 phases at 253 V
        ]
        assert client.current_limits() == (6, 16)  # the limits a command is checked against stay sane
        for key in ("power", "failsafe_current", "min_current"):
            [warning] = warnings_about(caplog, key)
            assert client.config.label in warning

        sim.quirks.rogue_values.clear()
        sim.setpoint = 12
        snapshot = await client.poll(include_slow=True)
        assert snapshot.values["power"] == 3 * 230 * 12
        assert snapshot.problems == []

        sim.quirks.rogue_values["power"] = 2_147_483_646
        await client.poll()
        assert len(warnings_about(caplog, "power")) == 2  # a relapse after a good value is logged again
        assert len(warnings_about(caplog, "min_current")) == 1
    finally:
        await client.close()


async def test_wallbox_meter_that_resets_or_jumps_keeps_its_last_good_reading(make_box: BoxFactory) -> None:
    sim, server = await make_box(UNITE)  # 0.1 kWh on the wire
    client = wallbox_client(server, UNITE)
    await client.connect()
    try:
        await client.poll()
        good = client.snapshot.values["energy_total"]
        assert good == pytest.approx(sim.meter_wh / 1000, abs=0.1)
        sim.quirks.rogue_values["energy_total"] = 0
        await client.poll()
        assert client.snapshot.values["energy_total"] == good
        sim.quirks.rogue_values["energy_total"] = round(sim.meter_wh / 100) + 10_000  # +1000 kWh at once
        await client.poll()
        assert client.snapshot.values["energy_total"] == good
        [problem] = client.snapshot.problems
        assert problem.startswith("energy_total: 2234.6 outside 1234.6..")
    finally:
        await client.close()


async def test_a_static_register_implausible_at_connect_stays_unknown(make_box: BoxFactory) -> None:
    sim, server = await make_box(UNITE)
    sim.quirks.rogue_values["min_current"] = 65_535  # the UNITE's 1102 is read once, at connect
    client = wallbox_client(server, UNITE)
    await client.connect()
    try:
        assert client.snapshot.values.get("min_current") is None
        assert client.snapshot.problems == ["min_current: 65535 outside 0..80 A"]
        assert client.current_limits()[0] == 6  # the documented default, not 65 535 A
    finally:
        await client.close()


# the rules themselves ------------------------------------------------------------------------------------


def test_a_counter_may_rise_by_its_power_over_the_time_since_its_last_good_reading() -> None:
    guard = PlausibilityGuard(logging.getLogger(__name__))
    rule = {"energy": counter(3.0)}  # kWh, fed by 3 kW at most
    assert guard.screen({"energy": 100.0}, rule, now=0.0, label="t") == {"energy": 100.0}
    slack = 3.0 * COUNTER_SLACK_H
    assert guard.screen({"energy": 100.0 + slack + 0.01}, rule, now=1.0, label="t") == {}
    # Two hours later 6 kWh more is possible; the reference is when the counter last changed.
    assert guard.screen({"energy": 106.0}, rule, now=7200.0, label="t") == {"energy": 106.0}
    assert guard.problems == []
    assert guard.screen({"energy": 105.95}, rule, now=7201.0, label="t") == {"energy": 106.0}
    assert guard.screen({"energy": 105.0}, rule, now=7202.0, label="t") == {}
    assert guard.problems == ["energy: 105 outside 106..106.752 (a lifetime counter never goes back)"]


def test_ranges_ignore_what_they_do_not_judge() -> None:
    guard = PlausibilityGuard(logging.getLogger(__name__))
    ranges = {"soc": Range(0, 100), "mode": None}
    values = {"soc": True, "mode": "Auto", "other": 1e12, "unknown": None}
    assert guard.screen(values, ranges, now=0.0, label="t") == values
    assert guard.problems == []


def test_power_ranges_follow_the_model_and_never_reject_an_unknown_strong_one() -> None:
    venus_a = BatterySnapshot().merged(
        {Method.GET_DEVICE: {"device": "Venus A", "ver": 150}, Method.ES_STATUS: {"ongrid_power": 2400.0}}, []
    )
    assert venus_a.ac_power is None  # 1500 W model: 2400 W is beyond 1.5 x its rating
    assert venus_a.problems == ["ac_power: 2400 outside -2250..2250 W"]
    new_model = BatterySnapshot().merged(
        {Method.GET_DEVICE: {"device": "VenusE 4.0", "ver": 100}, Method.ES_STATUS: {"ongrid_power": 2500.0}},
        [],
    )
    assert new_model.ac_power == 2500
    assert new_model.problems == []
