"""The MQTT bridge against a real Mosquitto, simulated batteries (UDP) and wallboxes (Modbus TCP)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.options import parse_options
from marstek_webasto_addon.addon.runtime import Runtime
from marstek_webasto_addon.addon.state import StateStore
from marstek_webasto_addon.bridge.mqtt import BrokerSettings
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator
from marstek_webasto_addon.devices.webasto.registers import WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import Car, WallboxServer, WallboxSim

from .conftest import SimFactory
from .ha_discovery_rules import problems
from .mqtt_fixtures import Broker, Recorder, broker, recording
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["broker", "make_box"]
pytestmark = pytest.mark.timeout(90)
BASE, PREFIX = "marstek_webasto", "homeassistant"


@dataclass
class Site:
    batteries: MarstekSimulator
    next_sim: WallboxSim
    next_server: WallboxServer
    unite_sim: WallboxSim
    unite_server: WallboxServer
    port: int

    def options(self, *, batteries: int = 2, wallboxes: bool = True) -> dict[str, Any]:
        return {
            "batteries": [
                {"name": f"Fase{'ABC'[i]}", "host": host, "port": port}
                for i, (host, port) in enumerate(self.batteries.addresses[:batteries])
            ],
            "wallboxes": [
                {
                    "name": "Garage",
                    "host": "127.0.0.1",
                    "port": self.next_server.port,
                    "model": "next",
                    "max_current": 16,
                },
                {
                    "name": "Carport",
                    "host": "127.0.0.1",
                    "port": self.unite_server.port,
                    "model": "unite",
                    "max_current": 16,
                },
            ]
            if wallboxes
            else [],
            "marstek_bind": "127.0.0.1",
            "rediscovery_targets": ["127.0.0.0/27"],
            "battery_poll_interval": 1,
            "wallbox_poll_interval": 1,
            "offline_after": 2,
            "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
        }


@pytest.fixture
async def site(make_sim: SimFactory, make_box: BoxFactory, udp_port: int) -> Site:
    batteries = await make_sim(2, socs=[80.0, 30.0])
    next_sim, next_server = await make_box(WallboxModel.NEXT)
    unite_sim, unite_server = await make_box(WallboxModel.UNITE)
    next_sim.plug_in(Car())
    return Site(batteries, next_sim, next_server, unite_sim, unite_server, udp_port)


@contextlib.asynccontextmanager
async def bridge(broker: Broker, options: dict[str, Any], state_dir: Path) -> AsyncIterator[Runtime]:
    parsed = parse_options({**options, "mqtt": {"host": broker.host, "port": broker.port}})
    async with Runtime(
        parsed, StateStore(state_dir / "state.json"), BrokerSettings(broker.host, broker.port)
    ) as rt:
        task = asyncio.create_task(rt.run())
        try:
            yield rt
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def configs(recorder: Recorder) -> dict[str, dict[str, Any]]:
    return {
        t: json.loads(p)
        for t, p in recorder.latest.items()
        if t.startswith(f"{PREFIX}/") and t.endswith("/config")
    }


def state_of(recorder: Recorder, device_id: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(recorder.latest[f"{BASE}/{device_id}/state"])
    return state


def published(runtime: Runtime) -> set[str]:
    assert runtime.mqtt is not None
    return {topic for topics in runtime.mqtt._published_discovery.values() for topic in topics}


async def wait_ready(recorder: Recorder, runtime: Runtime, entities: int = 100) -> None:
    """Every device answered, and the broker holds exactly the discovery the bridge published, for 0.5 s."""

    def ready() -> bool:
        return (
            all(d.device_id and f"{BASE}/{d.device_id}/state" in recorder.latest for d in runtime.devices)
            and len(configs(recorder)) >= entities
            and set(configs(recorder)) == published(runtime)
        )

    await recorder.wait_for(ready, 20, "discovery and states of every device")
    await asyncio.sleep(0.5)
    await recorder.wait_for(ready, 5, "a stable set of entities")


async def test_discovery_is_valid_for_every_entity_kind(broker: Broker, site: Site, tmp_path: Path) -> None:
    async with recording(broker) as recorder, bridge(broker, site.options(), tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        found = configs(recorder)
        async with recording(broker, (f"{PREFIX}/#",)) as late:  # retained: a late subscriber gets them too
            await late.wait_for(lambda: set(configs(late)) == set(found), 10, "retained discovery")
            assert all(retain for topic, _, retain in late.messages if topic in found)
    all_problems = [p for topic, payload in found.items() for p in problems(topic, payload)]
    assert all_problems == []
    components = {topic.split("/")[1] for topic in found}
    assert components == {"sensor", "binary_sensor", "select", "number", "button", "switch", "text"}
    unique_ids = [payload["unique_id"] for payload in found.values()]
    assert len(unique_ids) == len(set(unique_ids))
    battery = next(p for t, p in found.items() if t.endswith("/ac_input_energy/config"))
    assert (battery["device_class"], battery["state_class"], battery["unit_of_measurement"]) == (
        "energy",
        "total_increasing",
        "kWh",
    )  # usable in the Energy dashboard
    assert battery["device"]["manufacturer"] == "Marstek"
    assert battery["device"]["via_device"] == f"{BASE}_bridge"
    assert battery["origin"]["name"]
    wallbox = next(p for t, p in found.items() if "wallbox_4711" in t and t.endswith("/energy_total/config"))
    assert wallbox["device"]["configuration_url"].startswith("http://127.0.0.1")
    modes = next(p for t, p in found.items() if t.endswith("/mode/config"))
    assert modes["options"] == ["Auto", "AI", "Manual", "Passive", "UPS"]
    power = next(p for t, p in found.items() if t.endswith("/passive_power/config"))
    assert (power["min"], power["max"]) == (-2500, 2500)
    phases = [t for t in found if t.endswith("/phases/config")]
    assert len(phases) == 1  # UNITE only
    sessions = [t for t in found if t.endswith("/start_session/config")]
    assert len(sessions) == 1  # NEXT only
    site_soc = next(p for t, p in found.items() if t.endswith("/soc_average/config"))
    assert site_soc["device"]["name"] == "Energy site"


async def test_states_and_availability_arrive(broker: Broker, site: Site, tmp_path: Path) -> None:
    async with recording(broker) as recorder, bridge(broker, site.options(), tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        first = site.batteries.batteries[0]
        state = state_of(recorder, f"battery_{first.ble_mac}")
        assert state["soc"] == pytest.approx(first.physics.soc, abs=1)
        assert state["mode"] == "Auto"
        assert recorder.latest[f"{BASE}/battery_{first.ble_mac}/availability"] == b"online"
        assert recorder.latest[f"{BASE}/status"] == b"online"
        totals = state_of(recorder, "site")
        assert totals["batteries_online"] == 2
        assert totals["soc_min"] == pytest.approx(30, abs=1)
        unite = state_of(recorder, "wallbox_4711001234567890")
        assert unite["cable_state"] == "no_cable"
        garage = next(d for d in runtime.wallboxes if d.name == "Garage")
        assert state_of(recorder, str(garage.device_id))["charge_point_state"] == "charging"


async def command(
    recorder: Recorder, device_id: str, key: str, payload: str, *, matching: str = ""
) -> dict[str, Any]:
    """Send a command and wait for its outcome in the device's last_command attributes. `matching`: a
    text the outcome's command must contain, where the add-on itself also writes to the device (an
    outcome of its own could otherwise be taken for the person's)."""
    topic = f"{BASE}/{device_id}/last_command/attributes"
    before = recorder.latest.get(topic)

    def arrived() -> bool:
        latest = recorder.latest.get(topic)
        if latest in (before, None):
            return False
        outcome = recorder.json(topic)
        return not matching or (isinstance(outcome, dict) and matching in str(outcome.get("command")))

    await recorder.publish(f"{BASE}/{device_id}/{key}/set", payload)
    await recorder.wait_for(arrived, 15, f"outcome of {key}")
    result = recorder.json(topic)
    assert isinstance(result, dict)
    return result


async def test_every_command_reaches_the_device(broker: Broker, site: Site, tmp_path: Path) -> None:
    sim = site.batteries.batteries[0]
    async with recording(broker) as recorder, bridge(broker, site.options(), tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        battery = f"battery_{sim.ble_mac}"
        assert (await command(recorder, battery, "passive_power", "-1200"))["status"] == "applied"
        assert (await command(recorder, battery, "passive_duration", "10"))["status"] == "applied"
        outcome = await command(recorder, battery, "charge_now", "PRESS")
        assert outcome["status"] == "applied", outcome
        assert (sim.mode, sim.passive_power) == ("Passive", -1200)
        assert sim.passive_until - site.batteries.clock.seconds() == pytest.approx(600, abs=5)
        assert (await command(recorder, battery, "discharge_now", "PRESS"))["status"] == "applied"
        assert sim.passive_power == 1200
        assert (await command(recorder, battery, "stop", "PRESS"))["status"] == "applied"
        assert sim.passive_power == 0
        assert (await command(recorder, battery, "mode", "Auto"))["status"] == "applied"
        assert sim.mode == "Auto"
        assert (await command(recorder, battery, "depth_of_discharge", "80"))[
            "status"
        ] == "accepted"  # no read-back
        assert sim.physics.dod == 80
        assert (await command(recorder, battery, "led", "OFF"))["status"] == "accepted"
        assert sim.led_on is False
        sim.slots[4].enabled = True
        assert (await command(recorder, battery, "clear_schedules", "PRESS"))["status"] == "accepted"
        assert not any(slot.enabled for slot in sim.slots)
        # write-only: no state for Home Assistant to wait on forever; the DOD shows what was set
        await recorder.wait_for(
            lambda: state_of(recorder, battery)["depth_of_discharge"] == 80, 5, "DOD state"
        )
        assert "led" not in state_of(recorder, battery)
        led = configs(recorder)[f"{PREFIX}/switch/marstek_webasto_{battery}/led/config"]
        assert "state_topic" not in led  # Home Assistant shows an assumed state (on/off buttons)

        garage = next(d for d in runtime.wallboxes if d.name == "Garage").device_id
        assert (await command(recorder, str(garage), "charging_current", "10"))["status"] == "applied"
        assert site.next_sim.setpoint == 10
        assert (await command(recorder, str(garage), "failsafe_current", "8"))["status"] == "applied"
        assert (await command(recorder, str(garage), "failsafe_timeout", "30"))["status"] == "applied"
        assert (site.next_sim.failsafe_current, site.next_sim.failsafe_timeout) == (8, 30)
        assert (await command(recorder, str(garage), "stop_session", "PRESS"))["status"] == "applied"
        assert not site.next_sim.session_active
        assert (await command(recorder, str(garage), "start_session", "PRESS"))["status"] == "applied"
        assert site.next_sim.session_active
        writes = site.next_sim.writes.get(6000, 0)
        assert (await command(recorder, str(garage), "keepalive", "PRESS"))["status"] == "applied"
        assert site.next_sim.writes[6000] > writes
        carport = "wallbox_4711001234567890"
        assert (await command(recorder, carport, "phases", "1"))["status"] == "applied"
        assert site.unite_sim.phase_switch == 0
        await recorder.wait_for(lambda: state_of(recorder, carport)["phases"] == "1", 5, "phases state")


@pytest.mark.parametrize(
    ("key", "payload", "reason"),
    [
        ("passive_power", "9000", "9000 is out of range: it must be between -2500 and 2500 W"),
        ("passive_power", "lots", "not a number"),
        ("passive_power", "nan", "not a number"),
        ("mode", "Turbo", "not one of"),
        ("charge_now", "YES", "expected 'PRESS'"),
        ("led", "maybe", "expected 'ON' or 'OFF'"),
        ("soc", "50", "no control"),
    ],
)
async def test_bad_payloads_are_rejected_and_reported(
    broker: Broker, site: Site, tmp_path: Path, key: str, payload: str, reason: str
) -> None:
    sim = site.batteries.batteries[0]
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        battery = f"battery_{sim.ble_mac}"
        setmodes = len(sim.setmode_log)
        states_before = sum(1 for t, _, _ in recorder.messages if t == f"{BASE}/{battery}/state")
        outcome = await command(recorder, battery, key, payload)
        assert outcome["status"] == "rejected"
        assert reason in outcome["detail"]
        await recorder.wait_for(
            lambda: sum(1 for t, _, _ in recorder.messages if t == f"{BASE}/{battery}/state") > states_before,
            5,
            "the state with the last command",
        )
        assert len(sim.setmode_log) == setmodes  # nothing reached the battery
        assert state_of(recorder, battery)["passive_power"] == 1000
        assert state_of(recorder, battery)["last_command"].startswith("rejected")


async def test_commands_are_coalesced_and_the_latest_wins(broker: Broker, site: Site, tmp_path: Path) -> None:
    sim = site.batteries.batteries[0]
    options = site.options(batteries=1, wallboxes=False)
    options["timing"]["write_gap"] = 0.5  # a slow battery: the queue fills while a write is pending
    async with recording(broker) as recorder, bridge(broker, options, tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=40)
        battery = f"battery_{sim.ble_mac}"
        for mode in ("Passive", "AI", "Manual", "Passive", "AI", "Auto", "AI"):
            await recorder.publish(f"{BASE}/{battery}/mode/set", mode)
        await recorder.wait_for(
            lambda: (
                sim.mode == "AI"
                and runtime.mqtt is not None
                and runtime.mqtt.router.backlog() == 0
                and all(q.task is None or q.task.done() for q in runtime.mqtt.router._queues.values())
            ),
            20,
            "queue drained",
        )
    executed = [entry["mode"] for entry in sim.setmode_log]
    assert executed[-1] == "AI"
    assert len(executed) < 7


async def test_retained_commands_are_ignored(broker: Broker, site: Site, tmp_path: Path) -> None:
    sim = site.batteries.batteries[0]
    async with recording(broker) as recorder:
        await recorder.publish(f"{BASE}/battery_{sim.ble_mac}/mode/set", "Passive", retain=True)
        async with bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime:
            await wait_ready(recorder, runtime, entities=40)
            await asyncio.sleep(0.5)
        await recorder.publish(f"{BASE}/battery_{sim.ble_mac}/mode/set", "", retain=True)
    assert sim.setmode_log == []


async def test_birth_message_republishes_discovery_and_states(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        count = len(recorder.messages)
        await recorder.publish(f"{PREFIX}/status", "online")
        await recorder.wait_for(
            lambda: sum(1 for t, _, r in recorder.messages[count:] if t.endswith("/config") and not r) > 40,
            10,
            "discovery after birth",
        )
        fresh = {t for t, _, r in recorder.messages[count:] if not r}
        assert any(t.endswith("/state") for t in fresh)


async def test_home_assistant_coming_online_never_removes_our_own_discovery(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    # Found with a real Home Assistant: the stale-topic clean-up ran while the birth's republish was half
    # done and emptied our own retained configs, so Home Assistant deleted those entities.
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=2, wallboxes=True), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        await asyncio.sleep(2.5)  # past the start-up scan: the clean-up is armed
        mqtt = runtime.mqtt
        assert mqtt is not None
        count = len(recorder.messages)
        # What a birth message starts, with the clean-up that a device's news runs at the same moment.
        await asyncio.gather(mqtt.publish_everything(), mqtt._clear_stale())
        await recorder.publish(f"{PREFIX}/status", "online")
        await asyncio.sleep(3)  # the birth's own republish, with devices polling and publishing meanwhile
        ours = {t for wanted in mqtt._published_discovery.values() for t in wanted}
        emptied = [t for t, payload, _ in recorder.messages[count:] if t in ours and not payload]
        assert emptied == []
        assert all(recorder.latest.get(t) for t in ours)


async def test_broker_restart_is_survived(broker: Broker, site: Site, tmp_path: Path) -> None:
    async with bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime:
        assert runtime.mqtt is not None
        await asyncio.wait_for(runtime.mqtt.connected.wait(), 10)
        broker.stop()
        await asyncio.sleep(1.0)
        assert not runtime.mqtt.connected.is_set()
        broker.start()  # no persistence: every retained message is gone
        async with recording(broker) as recorder:
            await wait_ready(recorder, runtime, entities=40)
            assert recorder.latest[f"{BASE}/status"] == b"online"
        assert runtime.mqtt.sessions >= 2


async def test_offline_battery_goes_unavailable_and_comes_back(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    sim = site.batteries.batteries[0]
    availability = f"{BASE}/battery_{sim.ble_mac}/availability"
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        site.batteries.outage(0, 60)
        await recorder.wait_for(lambda: recorder.latest.get(availability) == b"offline", 20, "offline")
        # (the state follows the availability message; on a loaded machine a moment later)
        state = f"battery_{sim.ble_mac}"
        await recorder.wait_for(lambda: state_of(recorder, state)["connection"] == "offline", 5, "state")
        site.batteries.outage(0, 0)
        await recorder.wait_for(lambda: recorder.latest.get(availability) == b"online", 20, "online again")


async def test_removed_device_is_cleaned_up(broker: Broker, site: Site, tmp_path: Path) -> None:
    removed = site.batteries.batteries[1].ble_mac
    async with recording(broker) as recorder:
        async with bridge(broker, site.options(batteries=2, wallboxes=False), tmp_path) as runtime:
            await wait_ready(recorder, runtime, entities=80)
        assert any(f"battery_{removed}" in t for t in configs(recorder))
        async with bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime:
            await wait_ready(recorder, runtime, entities=40)
            await recorder.wait_for(
                lambda: not any(f"battery_{removed}" in t for t in recorder.latest),
                10,
                "the removed battery's retained topics cleared",
            )
        kept = site.batteries.batteries[0].ble_mac
        assert any(f"battery_{kept}" in t for t in configs(recorder))
