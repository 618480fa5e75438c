"""A Venus on `transport: modbus` (and `auto` while on Modbus) end to end, as the add-on runs (`run`'s
runtime, a real Mosquitto, the simulators on 127.0.0.1), on each register map: every entity it announces
has a state and every Modbus data point the value of the simulated battery; every control it offers works
through MQTT, with its effect on the simulated battery; the controls Modbus cannot carry are not offered
(`modbus`) or refused with their reason and nothing lost (`auto`); the planner steers it under RS485
control and a clean stop releases it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.devices.marstek.datapoints import BATTERY_POINTS
from marstek_webasto_addon.devices.marstek.fallback import FallbackBattery
from marstek_webasto_addon.devices.marstek.modbus.battery import ModbusBattery
from marstek_webasto_addon.devices.marstek.modbus.registers import ForceMode, Generation
from marstek_webasto_addon.devices.marstek.simulator import SimulatedBattery, VenusModbusServer

from .conftest import SimFactory, until
from .mqtt_fixtures import Broker, Recorder, broker, recording
from .test_bridge_mqtt import command, configs, state_of, wait_ready
from .test_venus_transport_live import (
    BASE,
    P1,
    POLL,
    TIMING,
    addon,
    auto_options,
    keep_publishing,
    under_control,
)

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(120)
MAPS = {Generation.V12: "venus_e2_v156", Generation.V3: "venus_e3_v150"}


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


# every command --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("generation", list(MAPS))
async def test_every_control_a_modbus_battery_offers_steers_the_simulated_battery(
    broker: Broker, make_sim: SimFactory, tmp_path: Path, generation: Generation
) -> None:
    sim = await make_sim(1, socs=[50.0], profile=MAPS[generation])
    venus = sim.batteries[0]
    server = await sim.serve_modbus(0)
    opts = {"batteries": [modbus_battery(server)], "battery_poll_interval": POLL, "timing": TIMING}
    async with recording(broker) as recorder, addon(broker, opts, tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=20)
        client = runtime.battery_links[0].client
        assert isinstance(client, ModbusBattery)
        battery = f"battery_{venus.ble_mac}"

        # offered: what Modbus carries; not the LED, the schedules or UPS (the Local API's alone)
        entities = announced(recorder, battery)
        controls = {k for k, v in entities.items() if "command_topic" in v}
        assert controls == {
            "select/mode",
            "number/passive_power",
            "number/passive_duration",
            "number/depth_of_discharge",
            "button/charge_now",
            "button/discharge_now",
            "button/stop",
            "button/resume_optimiser",
        }
        assert entities["select/mode"]["options"] == ["Auto", "AI", "Manual", "Passive"]
        for key, payload in (("led", "ON"), ("clear_schedules", "PRESS"), ("mode", "UPS")):
            refused = await command(recorder, battery, key, payload)
            assert refused["status"] == "rejected", refused

        # the work modes: 43000, control released
        for mode in ("AI", "Manual", "Auto"):
            outcome = await command(recorder, battery, "mode", mode)
            assert outcome["status"] == "applied", outcome
            assert (venus.mode, venus.rs485_control) == (mode, False)
            await recorder.wait_for(
                lambda m=mode: state_of(recorder, battery).get("mode") == m, 2 * POLL, f"{mode} shown"
            )

        # Passive's power and duration, then charge / discharge now: forced power under RS485 control,
        # held by the add-on for the duration asked
        assert (await command(recorder, battery, "passive_power", "-800"))["status"] == "applied"
        assert (await command(recorder, battery, "passive_duration", "5"))["status"] == "applied"
        await recorder.wait_for(
            lambda: state_of(recorder, battery).get("passive_duration") == 5, 5, "the duration shown"
        )
        assert state_of(recorder, battery)["passive_power"] == -800
        for key, force, power in (
            ("charge_now", ForceMode.CHARGE, -800),
            ("discharge_now", ForceMode.DISCHARGE, 800),
            ("mode", ForceMode.CHARGE, -800),  # Passive: the sign of the stored power
        ):
            outcome = await command(recorder, battery, key, "Passive" if key == "mode" else "PRESS")
            assert outcome["status"] == "applied", outcome
            forced = venus.force_charge_w if force is ForceMode.CHARGE else venus.force_discharge_w
            assert (venus.rs485_control, venus.force_mode, forced) == (True, force, 800)
            assert client.lease is not None
            assert client.lease.power == power
            assert client.lease.until - time.monotonic() == pytest.approx(300, abs=5)
            await until(lambda: abs(venus.physics.ac_power - power) < 10, 10)  # noqa: B023 (awaited here)
        await recorder.wait_for(
            lambda: state_of(recorder, battery).get("mode") == "Passive", 2 * POLL, "Passive shown"
        )

        # stop: Passive at 0 W, idle and held
        outcome = await command(recorder, battery, "stop", "PRESS")
        assert outcome["status"] == "applied", outcome
        assert under_control(venus) == (True, ForceMode.STOP, 0)
        assert venus.force_charge_w == 0
        await until(lambda: abs(venus.physics.ac_power) < 5, 10)

        # the depth of discharge: the add-on's own floor (SOC 50 % is below 100 - 40): a discharge held idle
        outcome = await command(recorder, battery, "depth_of_discharge", "40")
        assert outcome["status"] == "accepted", outcome
        assert client.soc_floor == 60
        await recorder.wait_for(
            lambda: state_of(recorder, battery).get("depth_of_discharge") == 40, 5, "the DOD shown"
        )
        outcome = await command(recorder, battery, "discharge_now", "PRESS")
        assert outcome["status"] == "applied", outcome
        assert "the SOC bound is reached" in outcome["command"] + outcome["detail"]
        assert under_control(venus) == (True, ForceMode.STOP, 0)

        # return to the optimiser ends the person's hold; Auto hands control back
        outcome = await command(recorder, battery, "resume_optimiser", "PRESS")
        assert outcome["status"] == "applied", outcome
        assert runtime.batteries[0].holds.get(battery) is None
        outcome = await command(recorder, battery, "mode", "Auto")
        assert outcome["status"] == "applied", outcome
        assert (venus.rs485_control, venus.mode, client.lease) == (False, "Auto", None)


# auto on Modbus: what only the Local API carries ------------------------------------------------------------


async def test_auto_on_modbus_refuses_what_only_the_local_api_carries_and_loses_nothing(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1, socs=[50.0])
    venus = sim.batteries[0]
    host = sim.addresses[0][0]
    server = await sim.serve_modbus(0, host=host)
    opts = auto_options(sim, server.port)
    async with recording(broker) as recorder, addon(broker, opts, tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=20)
        client = runtime.battery_links[0].client
        assert isinstance(client, FallbackBattery)
        client.probe_every = 2 * POLL  # the Local API asked again after 6 s rather than 5 min
        device = runtime.batteries[0]
        battery = f"battery_{venus.ble_mac}"
        # announced as for the Local API, whichever transport is in use: no entity comes and goes
        entities = announced(recorder, battery)
        assert {"switch/led", "button/clear_schedules"} <= set(entities)
        assert "UPS" in entities["select/mode"]["options"]
        before = set(entities)
        # a person's discharge, running when the Local API goes silent
        assert (await command(recorder, battery, "passive_power", "700"))["status"] == "applied"
        assert (await command(recorder, battery, "discharge_now", "PRESS"))["status"] == "applied"
        hold = device.holds.get(battery)
        assert hold is not None

        sim.outage(0, 1e6)
        await recorder.wait_for(lambda: client.transport == "modbus", 20, "the switch to Modbus")
        await until(lambda: venus.rs485_control and venus.force_discharge_w == 700, 5)
        led_before, settings_before = venus.led_on, dict(device.settings)
        for key, payload, what in (
            ("led", "OFF", "LED OFF"),
            ("clear_schedules", "PRESS", "Clear manual schedules"),
            ("mode", "UPS", "Mode UPS"),
        ):
            refused = await command(recorder, battery, key, payload)
            assert refused["status"] == "rejected", refused
            assert refused["command"] == what
            assert "goes over the Local API only" in refused["detail"]
            assert "reached over Modbus now" in refused["detail"]
            assert "ask again once its Transport shows udp" in refused["detail"]
        # nothing lost: the person's discharge and hold, the settings, the battery as it was
        assert device.holds.get(battery) == hold
        assert dict(device.settings) == settings_before
        assert venus.led_on == led_before
        assert (venus.rs485_control, venus.force_mode, venus.force_discharge_w) == (
            True,
            ForceMode.DISCHARGE,
            700,
        )
        assert set(announced(recorder, battery)) == before

        # the depth of discharge is kept as the add-on's floor now, and the battery's own at the return
        outcome = await command(recorder, battery, "depth_of_discharge", "40")
        assert outcome["status"] == "accepted", outcome
        assert "written to the battery when its Local API answers again" in outcome["detail"]
        assert client.soc_floor == 60
        sim.outage(0, 0)
        await recorder.wait_for(lambda: client.transport == "udp", 20, "the switch back")
        await until(lambda: venus.physics.dod == 40, 5)
        assert not venus.rs485_control
        refused_no_more = await command(recorder, battery, "led", "OFF")
        assert refused_no_more["status"] in ("applied", "accepted"), refused_no_more
        assert venus.led_on is False


# the planner -----------------------------------------------------------------------------------------------


async def test_the_planner_force_charges_a_modbus_battery_at_a_negative_price_and_the_stop_releases_it(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    # 05:10 in an hour paid for importing (-0.50 EUR/kWh), dear all day after: the plan charges now at the
    # battery's full power, whatever it learned of the home (nothing yet).
    sim = await make_sim(1, socs=[30.0], start=datetime(2026, 6, 22, 5, 10))
    venus = sim.batteries[0]
    server = await sim.serve_modbus(0)
    opts = {
        "batteries": [modbus_battery(server)],
        "battery_poll_interval": POLL,
        "timing": TIMING,
        "grid_source": {"type": "mqtt", "topic": P1, "unit": "kW"},
        "control_interval": 1,
        "tariff": {
            "default_period": "dear",
            "default_price": 0.40,
            "periods": [{"name": "paid", "price": -0.5, "days": "all", "start": "05:00", "end": "06:00"}],
            "injection_price": 0.0,
            "capacity_price": 0,
        },
        "optimiser": {"enabled": True, "min_switch_interval": 1, "input_stale_after": 10},
    }
    stop = asyncio.Event()
    async with recording(broker) as recorder:
        meter = asyncio.create_task(keep_publishing(recorder, 0.3, stop))
        async with addon(broker, opts, tmp_path, clock=sim.clock) as runtime:
            await wait_ready(recorder, runtime, entities=20)
            assert runtime.optimiser is not None
            assert runtime.optimiser.settings.method == "planner"  # the default
            client = runtime.battery_links[0].client
            assert isinstance(client, ModbusBattery)
            await recorder.wait_for(
                lambda: venus.rs485_control and venus.force_mode == ForceMode.CHARGE, 40, "a forced charge"
            )
            status = json.loads(recorder.latest[f"{BASE}/optimiser/state"])
            assert status["strategy"].startswith("plan:"), status
            plan = runtime.optimiser.live.plan
            assert plan is not None
            assert plan.first is not None
            lease = client.lease
            assert lease is not None
            assert lease.power < 0
            # the power planned is the power forced, read back from the battery's registers
            await client.modbus.read_control()
            assert client.modbus.control.watts("force_charge_power") == venus.force_charge_w == -lease.power
            assert venus.force_charge_w >= 0.9 * client.limits.charge_w
            await until(lambda: venus.physics.ac_power < -0.9 * venus.force_charge_w, 10)
            battery = f"battery_{venus.ble_mac}"
            await recorder.wait_for(
                lambda: state_of(recorder, battery).get("mode") == "Passive", 2 * POLL, "Passive shown"
            )
        assert under_control(venus) == (False, ForceMode.STOP, 0)
        assert (venus.force_charge_w, venus.mode) == (0, "Auto")
        stop.set()
        await meter
