"""The add-on end to end with batteries on `transport: modbus` and `auto`, as it runs (`run`'s runtime, a real
Mosquitto, the simulators on 127.0.0.1): the optimiser's commands over Modbus (idle and discharge on the v3
map, night charging on the v12 map), `auto`'s switch to Modbus and back seen through MQTT, a person's
Passive carried across both switches, and the Modbus lease on the demo's faster clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.options import parse_options
from marstek_webasto_addon.addon.runtime import Runtime
from marstek_webasto_addon.addon.state import StateStore
from marstek_webasto_addon.bridge.mqtt import BrokerSettings
from marstek_webasto_addon.devices.marstek.fallback import FallbackBattery
from marstek_webasto_addon.devices.marstek.modbus.battery import ModbusBattery
from marstek_webasto_addon.devices.marstek.modbus.registers import ForceMode, Generation
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator, SimulatedBattery
from marstek_webasto_addon.devices.marstek.simulator.physics import SimClock

from .conftest import SimFactory, until
from .mqtt_fixtures import Broker, Recorder, broker, recording
from .test_bridge_mqtt import command, state_of, wait_ready

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(180)
BASE = "marstek_webasto"
P1 = "home/p1/power"
TIMING = {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2}
POLL = 3.0  # a v3 Modbus poll is 13 requests 150 ms apart: about 2 s


@contextlib.asynccontextmanager
async def addon(
    broker: Broker, options: dict[str, Any], state_dir: Path, clock: SimClock | None = None
) -> AsyncIterator[Runtime]:
    """The add-on as `run` starts it, on the demo's clock when one is given; stopped cleanly at the end."""
    parsed = parse_options({**options, "mqtt": {"host": broker.host, "port": broker.port}})
    async with Runtime(
        parsed, StateStore(state_dir / "state.json"), BrokerSettings(broker.host, broker.port), clock=clock
    ) as runtime:
        task = asyncio.create_task(runtime.run())
        try:
            yield runtime
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def keep_publishing(recorder: Recorder, kw: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await recorder.publish(P1, str(kw))
        await asyncio.sleep(0.5)


def under_control(venus: SimulatedBattery) -> tuple[bool, int, int]:
    """RS485 control, the forced mode and the forced discharge power, as the battery holds them."""
    return venus.rs485_control, venus.force_mode, venus.force_discharge_w


def auto_options(sim: MarstekSimulator, server_port: int) -> dict[str, Any]:
    """One battery on `transport: auto`, Modbus on its own address (the LAN port of a Venus E 3.0): offline
    after 9.75 s of silence, the switch to Modbus after 4.5 s."""
    host, udp_port = sim.addresses[0]
    return {
        "batteries": [
            {"name": "FaseA", "host": host, "port": udp_port, "transport": "auto", "modbus_port": server_port}
        ],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": POLL,
        "offline_after": 3,
        "timing": TIMING,
    }


# the optimiser over Modbus --------------------------------------------------------------------------------


def optimiser_options(sim: MarstekSimulator, modbus_ports: list[int]) -> dict[str, Any]:
    auto_host, udp_port = sim.addresses[1]
    return {
        "batteries": [
            # Modbus only: an RS485 gateway at its own address
            {
                "name": "FaseA",
                "transport": "modbus",
                "modbus_host": "127.0.0.1",
                "modbus_port": modbus_ports[0],
            },
            # auto: the Local API, and Modbus on the battery's own address (the LAN port of a Venus E 3.0)
            {
                "name": "FaseB",
                "host": auto_host,
                "port": udp_port,
                "transport": "auto",
                "modbus_port": modbus_ports[1],
            },
        ],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": POLL,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
        "grid_source": {"type": "mqtt", "topic": P1, "unit": "kW"},
        "control_interval": 1,
        # the rules, without night charging: the test behaves the same at any hour; no peak assist until the
        # test lowers the target
        "optimiser": {
            "enabled": True,
            "method": "rules",
            "hysteresis": 0,
            "min_switch_interval": 1,
            "input_stale_after": 10,
            "night_charging": False,
            "peak_target": 50,
            "peak_follow_month": False,
            "peak_assist_delay": 0,
        },
    }


async def test_the_optimiser_steers_a_modbus_battery_and_the_stop_releases_it(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    # FaseA (40 %, Modbus) is the emptier one: while the home imports it helps in Passive, FaseB (80 %, auto,
    # over the Local API) covers the home in Auto.
    sim = await make_sim(2, socs=[40.0, 80.0])
    modbus_a = await sim.serve_modbus(0)
    modbus_b = await sim.serve_modbus(1, host=sim.addresses[1][0])
    opts = optimiser_options(sim, [modbus_a.port, modbus_b.port])
    fase_a, fase_b = sim.batteries
    status = f"{BASE}/optimiser/state"
    stop = asyncio.Event()
    async with recording(broker) as recorder:
        meter = asyncio.create_task(keep_publishing(recorder, 0.4, stop))  # 400 W import
        async with addon(broker, opts, tmp_path) as runtime:
            await wait_ready(recorder, runtime, entities=40)
            client_a, client_b = (link.client for link in runtime.battery_links)
            assert isinstance(client_a, ModbusBattery)
            assert isinstance(client_b, FallbackBattery)
            battery_a, battery_b = f"battery_{fase_a.ble_mac}", f"battery_{fase_b.ble_mac}"

            # standing by in Passive at 0 W: RS485 control taken, forced mode "stop", held as a lease
            await recorder.wait_for(
                lambda: under_control(fase_a) == (True, ForceMode.STOP, 0) and fase_b.mode == "Auto",
                30,
                "FaseA idle under RS485 control, FaseB in Auto",
            )
            assert client_a.lease is not None
            assert client_a.lease.power == 0
            assert not fase_b.rs485_control  # the auto battery is steered over the Local API meanwhile
            await recorder.wait_for(
                lambda: state_of(recorder, battery_a).get("mode") == "Passive", 10, "FaseA shown in Passive"
            )
            assert state_of(recorder, battery_a)["transport"] == "modbus"
            assert state_of(recorder, battery_b)["transport"] == "udp"
            optimiser = json.loads(recorder.latest[status])
            assert optimiser["active_battery"] == "FaseB"

            # peak assist: the optimiser's Passive discharge becomes a forced discharge under RS485 control
            await recorder.publish(f"{BASE}/optimiser/peak_target/set", "0")
            # (what it already delivers counts as part of the peak, and the meter here is a fixed 400 W: the
            # power grows from 400 W, step by step)
            await recorder.wait_for(
                lambda: (
                    fase_a.rs485_control
                    and fase_a.force_mode == ForceMode.DISCHARGE
                    and fase_a.force_discharge_w >= 400
                ),
                20,
                "FaseA discharging under RS485 control",
            )
            lease = client_a.lease
            assert lease is not None
            assert lease.power >= 400
            # the optimiser's countdown (15 min) is the lease the add-on ends itself
            assert lease.until - time.monotonic() == pytest.approx(900, abs=30)
            last_command = f"{BASE}/{battery_a}/last_command/attributes"
            await recorder.wait_for(
                lambda: "peak assist" in json.loads(recorder.latest[last_command])["command"],
                10,
                "the optimiser's command in FaseA's last command",
            )
            outcome = json.loads(recorder.latest[last_command])
            assert outcome["status"] == "applied", outcome
            assert outcome["command"].startswith("Passive discharge"), outcome
            assert "verified by read-back" in outcome["detail"]
            await until(lambda: fase_a.physics.ac_power > 300, 10)  # the battery really delivers
            await recorder.wait_for(
                lambda: "peak assist" in json.loads(recorder.latest[status])["strategy"], 10, "peak assist"
            )
        # a clean stop while the optimiser holds control: released, the battery back on its stored Auto
        assert under_control(fase_a) == (False, ForceMode.STOP, 0)
        assert fase_a.mode == "Auto"
        assert fase_b.mode == "Auto"
        stop.set()
        await meter


async def test_the_optimisers_auto_hands_a_modbus_battery_back_to_its_work_mode(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(2, socs=[40.0, 80.0])
    modbus_a = await sim.serve_modbus(0)
    modbus_b = await sim.serve_modbus(1, host=sim.addresses[1][0])
    fase_a = sim.batteries[0]
    stop = asyncio.Event()
    async with recording(broker) as recorder:
        meter = asyncio.create_task(keep_publishing(recorder, 0.4, stop))
        async with addon(broker, optimiser_options(sim, [modbus_a.port, modbus_b.port]), tmp_path) as runtime:
            await recorder.wait_for(
                lambda: under_control(fase_a) == (True, ForceMode.STOP, 0), 30, "FaseA idle under control"
            )
            client_a = runtime.battery_links[0].client
            assert isinstance(client_a, ModbusBattery)
            # switched off: Auto for every battery it steered; over Modbus that releases RS485 control (no
            # lease left) and keeps the stored work mode, written only if it differed
            await recorder.publish(f"{BASE}/optimiser/enabled/set", "OFF")
            await recorder.wait_for(lambda: not fase_a.rs485_control, 20, "control released at Auto")
            assert (fase_a.mode, fase_a.force_mode) == ("Auto", ForceMode.STOP)
            assert client_a.lease is None
            battery_a = f"battery_{fase_a.ble_mac}"
            await recorder.wait_for(
                lambda: state_of(recorder, battery_a).get("mode") == "Auto", 10, "FaseA shown in Auto"
            )
            await asyncio.sleep(2 * POLL)
            assert not fase_a.rs485_control  # not taken again: nothing asks for it
        stop.set()
        await meter


async def test_the_optimisers_night_charging_force_charges_a_v12_modbus_battery(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    # A Venus E 2.0 through an RS485 gateway (the v12 map), at 30 % an hour and a half before dawn: the
    # optimiser's night charging, on the batteries' clock (x30), makes it charge in Passive.
    sim = await make_sim(
        1, socs=[30.0], profile="venus_e2_v156", speed=30, start=datetime(2026, 6, 21, 5, 30)
    )
    venus = sim.batteries[0]
    server = await sim.serve_modbus(0)
    assert server.generation is Generation.V12
    opts = {
        "batteries": [
            {"name": "FaseA", "transport": "modbus", "modbus_host": "127.0.0.1", "modbus_port": server.port}
        ],
        "battery_poll_interval": POLL,
        "grid_source": {"type": "mqtt", "topic": P1, "unit": "kW"},
        "control_interval": 1,
        "optimiser": {
            "enabled": True,
            "method": "rules",
            "min_switch_interval": 1,
            "input_stale_after": 300,  # simulated seconds: 10 real ones
            "night_charging": True,
        },
    }
    stop = asyncio.Event()
    async with recording(broker) as recorder:
        meter = asyncio.create_task(keep_publishing(recorder, 0.3, stop))
        async with addon(broker, opts, tmp_path, clock=sim.clock) as runtime:
            await wait_ready(recorder, runtime, entities=20)
            client = runtime.battery_links[0].client
            assert isinstance(client, ModbusBattery)
            battery = f"battery_{venus.ble_mac}"
            await recorder.wait_for(
                lambda: venus.rs485_control and venus.force_mode == ForceMode.CHARGE, 30, "a forced charge"
            )
            assert client.modbus.config.generation is Generation.V12  # chosen from the device name
            status = json.loads(recorder.latest[f"{BASE}/optimiser/state"])
            assert status["strategy"].startswith("night charging"), status
            lease = client.lease
            assert lease is not None
            assert lease.power < 0  # a charge
            assert venus.force_charge_w == -lease.power > 0  # the power asked is the power forced
            last_command = f"{BASE}/{battery}/last_command/attributes"
            await recorder.wait_for(
                lambda: (
                    "night charging"
                    in json.loads(recorder.latest.get(last_command, b"{}")).get("command", "")
                ),
                10,
                "the optimiser's command in the last command",
            )
            outcome = json.loads(recorder.latest[last_command])
            assert outcome["status"] == "applied", outcome
            assert outcome["command"].startswith("Passive charge"), outcome
            assert "verified by read-back" in outcome["detail"]
            # the simulated battery charges: power drawn, its SOC rising, both seen through MQTT too
            soc_before = venus.physics.soc
            await until(lambda: venus.physics.ac_power < -0.9 * venus.force_charge_w, 10)
            await until(lambda: venus.physics.soc >= soc_before + 1, 30)
            await recorder.wait_for(
                lambda: state_of(recorder, battery)["soc"] >= round(soc_before) + 1, 3 * POLL, "the SOC read"
            )
            state = state_of(recorder, battery)
            assert (state["mode"], state["transport"]) == ("Passive", "modbus")
        # a clean stop while the optimiser holds control: released, the battery back on its stored Auto
        assert under_control(venus) == (False, ForceMode.STOP, 0)
        assert (venus.force_charge_w, venus.mode) == (0, "Auto")
        stop.set()
        await meter


# transport: auto through MQTT -----------------------------------------------------------------------------


async def test_auto_keeps_the_entities_available_across_the_switch_to_modbus_and_back(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1, socs=[50.0])
    venus = sim.batteries[0]
    host = sim.addresses[0][0]
    server = await sim.serve_modbus(0, host=host)  # the battery's own LAN port: modbus_host is `host`
    opts = auto_options(sim, server.port)
    async with recording(broker) as recorder, addon(broker, opts, tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=20)
        client = runtime.battery_links[0].client
        assert isinstance(client, FallbackBattery)
        assert client.silent_for == 1.5 * POLL
        client.probe_every = 2 * POLL  # the Local API asked again after 6 s rather than 5 min
        battery = f"battery_{venus.ble_mac}"
        state_topic, availability = f"{BASE}/{battery}/state", f"{BASE}/{battery}/availability"
        assert state_of(recorder, battery)["transport"] == "udp"
        assert recorder.latest[availability] == b"online"
        since = len(recorder.messages)

        def transports() -> list[str]:
            seen = ["udp"]  # states are published when they change: the one before the outage first
            seen += [json.loads(p)["transport"] for t, p, _ in recorder.messages[since:] if t == state_topic]
            return [t for i, t in enumerate(seen) if i == 0 or seen[i - 1] != t]

        # the Local API goes silent; Modbus answers, and the values keep coming
        sim.outage(0, 1e6)
        await recorder.wait_for(lambda: "modbus" in transports(), 20, "Transport: modbus")
        venus.physics.soc = 61.0  # seen only over Modbus now
        await recorder.wait_for(
            lambda: state_of(recorder, battery)["soc"] == 61, 3 * POLL, "the SOC read over Modbus"
        )
        assert client.modbus.last_answer_at is not None
        assert state_of(recorder, battery)["connection"] == "online"

        # the Local API answers again: back on it at the next probe, Modbus released
        sim.outage(0, 0)
        await recorder.wait_for(lambda: transports()[-1:] == ["udp"], 20, "Transport: udp again")
        venus.physics.soc = 64.0
        await recorder.wait_for(
            lambda: state_of(recorder, battery)["soc"] == 64, 3 * POLL, "the SOC read over the Local API"
        )
        assert transports() == ["udp", "modbus", "udp"]
        assert [s.to for s in client.switches] == ["modbus", "udp"]
        # available all along: never an "offline" for its entities, never a state that says so
        after = recorder.messages[since:]
        assert all(p == b"online" for t, p, _ in after if t == availability)
        assert all(json.loads(p)["connection"] == "online" for t, p, _ in after if t == state_topic)
        assert not venus.rs485_control


async def test_auto_carries_a_persons_passive_charge_to_modbus_and_back(
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
        client.probe_every = 2 * POLL
        battery = f"battery_{venus.ble_mac}"
        # a person's charge for 10 minutes, over the Local API: the battery's own countdown
        assert (await command(recorder, battery, "passive_power", "-1200"))["status"] == "applied"
        assert (await command(recorder, battery, "passive_duration", "10"))["status"] == "applied"
        asked_at, asked_sim = time.monotonic(), sim.clock.seconds()  # the lease's clock, the battery's
        outcome = await command(recorder, battery, "charge_now", "PRESS")
        assert outcome["status"] == "applied", outcome
        assert (venus.mode, venus.passive_power, venus.rs485_control) == ("Passive", -1200, False)

        # the Local API goes silent: the charge goes on over Modbus as forced power, for what is left of it
        sim.outage(0, 1e6)
        await recorder.wait_for(lambda: client.transport == "modbus", 20, "the switch to Modbus")
        await until(lambda: venus.rs485_control and venus.force_mode == ForceMode.CHARGE, 5)
        assert venus.force_charge_w == 1200
        lease = client.modbus.lease
        assert lease is not None
        assert lease.power == -1200
        assert lease.until == pytest.approx(asked_at + 600, abs=2)  # the rest of the 10 minutes, not 10 more
        assert time.monotonic() - asked_at > 4  # (so a fresh lease would show)
        await until(lambda: venus.physics.ac_power < -1000, 5)  # the battery keeps charging
        await recorder.wait_for(
            lambda: state_of(recorder, battery)["transport"] == "modbus", 2 * POLL, "Transport: modbus"
        )
        assert state_of(recorder, battery)["mode"] == "Passive"

        # the Local API answers again: the rest of the charge over it, RS485 control released
        sent_before = len(venus.setmode_log)
        sim.outage(0, 0)
        await recorder.wait_for(lambda: client.transport == "udp", 20, "the switch back to the Local API")
        await until(lambda: len(venus.setmode_log) > sent_before, 5)
        assert not venus.rs485_control
        assert (venus.force_mode, venus.force_charge_w) == (ForceMode.STOP, 0)
        assert client.modbus.lease is None
        carried = venus.setmode_log[-1]
        assert carried["mode"] == "Passive", carried
        passive = carried["passive_cfg"]
        assert passive["power"] == -1200
        assert passive["cd_time"] == pytest.approx(asked_sim + 600 - sim.clock.seconds(), abs=2)
        assert passive["cd_time"] < 600 - 5  # what is left after the time on Modbus
        assert venus.passive_until == pytest.approx(asked_sim + 600, abs=2)
        assert (venus.mode, venus.passive_power) == ("Passive", -1200)
        await until(lambda: venus.physics.ac_power < -1000, 5)
        await recorder.wait_for(
            lambda: state_of(recorder, battery)["transport"] == "udp", 2 * POLL, "Transport: udp"
        )
        await asyncio.sleep(POLL)
        assert not venus.rs485_control  # not taken again
    assert not venus.rs485_control


# the lease on the demo's clock ----------------------------------------------------------------------------


async def test_on_the_demos_faster_clock_a_modbus_lease_ends_with_the_local_apis_countdown(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    # The demo runs the batteries' clock 60 times faster; a person's Passive for 1 minute then lasts one real
    # second, over the Local API (the battery's countdown) as over Modbus (the add-on's lease).
    sim = await make_sim(2, socs=[50.0, 50.0], speed=60)
    server = await sim.serve_modbus(0)
    fase_a, fase_b = sim.batteries
    host_b, udp_port = sim.addresses[1]
    opts = {
        "batteries": [
            {"name": "FaseA", "transport": "modbus", "modbus_host": "127.0.0.1", "modbus_port": server.port},
            {"name": "FaseB", "host": host_b, "port": udp_port},
        ],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": POLL,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
    }
    async with recording(broker) as recorder, addon(broker, opts, tmp_path, clock=sim.clock) as runtime:
        await wait_ready(recorder, runtime, entities=40)
        client_a = runtime.battery_links[0].client
        assert isinstance(client_a, ModbusBattery)
        for venus in (fase_a, fase_b):
            battery = f"battery_{venus.ble_mac}"
            assert (await command(recorder, battery, "passive_duration", "1"))["status"] == "applied"
        # over Modbus: the lease's end is on the simulated clock
        before_sim, before = sim.clock.seconds(), time.monotonic()
        outcome = await command(recorder, f"battery_{fase_a.ble_mac}", "discharge_now", "PRESS")
        assert outcome["status"] == "applied", outcome
        assert fase_a.rs485_control
        lease = client_a.lease
        assert lease is not None
        assert before_sim + 60 <= lease.until <= sim.clock.seconds() + 60
        # over the Local API: the battery's own countdown, on the same clock
        outcome = await command(recorder, f"battery_{fase_b.ble_mac}", "discharge_now", "PRESS")
        assert outcome["status"] == "applied", outcome
        assert fase_b.passive_until - fase_b.passive_since == pytest.approx(60, abs=15)
        # both end within seconds of real time, not a real minute: the lease at the first poll after its end
        await until(lambda: fase_b.mode != "Passive", 5)
        await until(lambda: client_a.lease is None, 1 + POLL + 2)  # ended, its release verified
        assert time.monotonic() - before < 1 + POLL + 3
        assert not fase_a.rs485_control
