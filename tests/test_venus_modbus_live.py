"""A Venus on `transport: modbus` (and `auto` while on Modbus) end to end, as the add-on runs (`run`'s
runtime, a real Mosquitto, the simulators on 127.0.0.1), on each register map: every entity it announces
has a state and every Modbus data point the value of the simulated battery; every control it offers works
through MQTT, with its effect on the simulated battery; the controls Modbus cannot carry are not offered
(`modbus`) or refused with their reason and nothing lost (`auto`); the planner steers it under RS485
control and a clean stop releases it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.devices.marstek.datapoints import BATTERY_POINTS
from marstek_webasto_addon.devices.marstek.modbus.registers import Generation
from marstek_webasto_addon.devices.marstek.simulator import SimulatedBattery, VenusModbusServer

from .conftest import SimFactory, until
from .mqtt_fixtures import Broker, Recorder, broker, recording
from .test_bridge_mqtt import command, configs, state_of, wait_ready
from .test_venus_transport_live import BASE, POLL, addon

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(120)
MAPS = {Generation.V12: "venus_e2_v156", Generation.V3: "venus_e3_v150"}
TIMING = {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2}


def modbus_battery(server: VenusModbusServer) -> dict[str, Any]:
    return {"name": "FaseA", "transport": "modbus", "modbus_host": "127.0.0.1", "modbus_port": server.port}


def announced(recorder: Recorder, device_id: str) -> dict[str, dict[str, Any]]:
    """The discovery of one device: `component/key` -> its config."""
    node = f"{BASE}_{device_id}"
    return {
        f"{topic.split('/')[1]}/{topic.split('/')[3]}": payload
        for topic, payload in configs(recorder).items()
        if topic.split("/")[2] == node
    }


def modbus_points(generation: Generation) -> set[str]:
    return {p.key for p in BATTERY_POINTS if p.modbus.get(generation) is not None}


# every entity ---------------------------------------------------------------------------------------------


def expected_values(venus: SimulatedBattery, generation: Generation) -> dict[str, tuple[Any, float]]:
    """What each Modbus data point must show, from the simulated battery and its physics, with the
    tolerance of its register's resolution (and of the physics moving within one poll)."""
    p = venus.physics
    volts = 48.0 + 3.3 * p.soc / 100
    model = venus.profile.device if generation is Generation.V12 else "VNSE3-0"
    values: dict[str, tuple[Any, float]] = {
        "model": (model, 0),
        "firmware": (venus.profile.ver, 0),
        "ble_mac": (venus.ble_mac, 0),
        "soc": (p.soc, 1),  # a whole percent
        "ac_power": (p.ac_power, 5),
        "offgrid_power": (0, 0),
        "battery_power": (p.dc_power, 5),  # + = discharging, as the add-on counts
        "rated_capacity": (p.capacity_wh, 1),
        "ac_input_energy": (p.ac_in_wh / 1000, 0.02),  # 0.01 kWh
        "ac_output_energy": (p.ac_out_wh / 1000, 0.02),
        "mode": ("Passive", 0),  # under RS485 control
        "temperature": (p.temperature_c + 1, 1),  # the warmest cell; whole degrees on the v12 map
        "battery_voltage": (volts, 0.02),
        "battery_current": (-p.dc_power / volts, 0.15),  # + = charging; 0.1 A on the v3 map
        "wifi_rssi": (venus.rssi, 0),
    }
    if generation is Generation.V3:
        values["ip"] = (venus.ip, 0)
    return values


def mismatches(state: dict[str, Any], expected: dict[str, tuple[Any, float]]) -> list[str]:
    wrong = []
    for key, (want, tolerance) in expected.items():
        got = state.get(key)
        if isinstance(want, str) or isinstance(got, str) or got is None:
            ok = got == want
        else:
            ok = abs(float(got) - float(want)) <= tolerance
        if not ok:
            wrong.append(f"{key}: {got!r}, the simulator {want!r} (±{tolerance:g})")
    return wrong


@pytest.mark.parametrize("generation", list(MAPS))
async def test_every_entity_of_a_modbus_battery_has_its_state_and_the_simulators_value(
    broker: Broker, make_sim: SimFactory, tmp_path: Path, generation: Generation
) -> None:
    sim = await make_sim(1, socs=[60.0], profile=MAPS[generation])
    venus = sim.batteries[0]
    server = await sim.serve_modbus(0)
    assert server.generation is generation
    opts = {"batteries": [modbus_battery(server)], "battery_poll_interval": POLL, "timing": TIMING}
    async with recording(broker) as recorder, addon(broker, opts, tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=20)
        battery = f"battery_{venus.ble_mac}"
        await recorder.wait_for(lambda: "soc" in state_of(recorder, battery), 3 * POLL, "a full poll")
        # a forced discharge, so that powers, current and counters carry a sign and move
        assert (await command(recorder, battery, "passive_power", "600"))["status"] == "applied"
        outcome = await command(recorder, battery, "discharge_now", "PRESS")
        assert outcome["status"] == "applied", outcome
        await until(lambda: venus.physics.ac_power > 590, 10)

        def wrong() -> list[str]:  # the physics move on: compared with their value now
            return mismatches(state_of(recorder, battery), expected_values(venus, generation))

        with contextlib.suppress(AssertionError):  # the mismatches themselves, not a timeout, if they stay
            await recorder.wait_for(lambda: not wrong(), 4 * POLL, "the simulator's values")
        assert wrong() == []
        await wait_ready(recorder, runtime, entities=20)  # the discovery that follows the full poll

        # every data point with a source in this map is shown, with the simulator's value (above)
        assert set(expected_values(venus, generation)) == modbus_points(generation)
        entities = announced(recorder, battery)
        sensors = {key.split("/")[1] for key in entities if key.split("/")[0] in ("sensor", "binary_sensor")}
        points = {p.key for p in BATTERY_POINTS}
        # the data points it shows: those in its map, and what follows from them (stored energy); none
        # that only the Local API reports (PV, meter, BLE, flags) stays an entity without a state
        assert sensors & points == modbus_points(generation) - {"mode"} | {"remaining_energy"}
        state = state_of(recorder, battery)
        assert state["remaining_energy"] == pytest.approx(
            state["soc"] * venus.physics.capacity_wh / 100, abs=1
        )
        # every sensor it announces has a state (the add-on's own too: transport, hold, last command)
        empty = sorted(key for key in sensors if state.get(key) is None)
        assert empty == []
        assert (state["transport"], state["connection"], state["problem"]) == ("modbus", "online", "OFF")
        assert state["manual_hold"] is not None  # the person's discharge above
