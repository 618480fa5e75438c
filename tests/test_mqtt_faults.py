"""The bridge under faults: a command flood, a battery whose model is learned after start, a broker outage.

Against a real Mosquitto, simulated batteries (UDP) and wallboxes (Modbus TCP), and the add-on's Runtime.
Bounds are generous (a loaded 2-core machine); the speed figures are in bench/command_flood.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from marstek_webasto_addon.bridge.mqtt import RECONNECT_MAX, MqttBridge
from marstek_webasto_addon.devices.marstek.simulator.profiles import PROFILES, FirmwareProfile

from .conftest import SimFactory
from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import BASE, PREFIX, Site, bridge, configs, site, state_of, wait_ready
from .webasto_fixtures import make_box

__all__ = ["broker", "make_box", "site"]
pytestmark = pytest.mark.timeout(120)
FLOOD = 8000

# A model narrower than the stored passive power default (1000 W): the Venus E mini's 800 W.
E_MINI = replace(
    PROFILES["venus_e3_v150"],
    name="venus_e_mini_test",
    description="Venus E mini (800 W)",
    device="VNSEM-0",
    src_prefix="VNSEM-0",
    max_charge_w=800,
    max_discharge_w=800,
)


def _in_window(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.name == "marstek_webasto_addon.bridge.commands"]


async def test_a_command_flood_delays_nothing_else(
    broker: Broker, site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="marstek_webasto_addon.bridge.commands")
    sim = site.batteries.batteries[0]
    options = {**site.options(), "grid_source": {"type": "mqtt", "topic": "p1/power"}}
    async with recording(broker) as recorder, bridge(broker, options, tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        mqtt = runtime.mqtt
        assert mqtt is not None
        assert runtime.grid is not None
        mqtt.router.summary.window = 3.0  # the add-on's is 60 s
        commands = sorted(c["command_topic"] for c in configs(recorder).values() if "command_topic" in c)
        assert len(commands) > 40
        seen = len(recorder.messages)
        started = time.monotonic()
        highest_backlog = 0
        async with aiomqtt.Client(broker.host, broker.port, identifier="flooder") as flooder:
            for n in range(FLOOD):
                await flooder.publish(commands[n % len(commands)], f"bad-{n}", qos=0)
                highest_backlog = max(highest_backlog, mqtt.router.backlog())
            await flooder.publish("flood/done", "", qos=1)  # acknowledged after every message before it
            garage = str(next(d for d in runtime.wallboxes if d.name == "Garage").device_id)
            await flooder.publish(f"{BASE}/battery_{sim.ble_mac}/mode/set", "AI", qos=0)
            await flooder.publish(f"{BASE}/{garage}/charging_current/set", "10", qos=0)
            await flooder.publish("p1/power", "1234", qos=0)
            await flooder.publish(f"{PREFIX}/status", "online", qos=0)
            after = len(recorder.messages)

            def birth_answered() -> bool:
                return any(
                    t.endswith("/config") and not retained for t, _, retained in recorder.messages[after:]
                )

            def everything_applied() -> bool:
                nonlocal highest_backlog
                highest_backlog = max(highest_backlog, mqtt.router.backlog())
                return (
                    sim.mode == "AI"
                    and site.next_sim.setpoint == 10
                    and runtime.grid is not None
                    and runtime.grid.reading.value == 1234
                    and birth_answered()
                )

            await recorder.wait_for(everything_applied, 30, "the commands and messages after the flood")
            await recorder.wait_for(lambda: mqtt.router.dropped.rejected == FLOOD, 30, "every rejection")
        elapsed = time.monotonic() - started
        # the summaries cover every rejection but the first, logged in full
        await recorder.wait_for(
            lambda: (
                sum(int(m) for m in re.findall(r"ignored (\d+) more", " ".join(_in_window(caplog.records))))
                == FLOOD - 1
            ),
            20,
            "the summary warnings",
        )
        span = time.monotonic() - started
        published = recorder.messages[seen:]
    warnings = _in_window(caplog.records)
    assert len(warnings) <= 2 + elapsed / 3.0, warnings[:5]
    assert "'bad-0'" in warnings[0]  # the first in full, at once
    # at most one command per channel ever waited, whatever the number of messages
    assert highest_backlog <= len(commands)
    # No republish per rejection (that was ~FLOOD / devices state messages each): a device's state and
    # last command follow its polls (1 s) and at most one rejection report per outcome window, plus the
    # birth's republish and the valid commands' outcomes.
    per_topic: dict[str, int] = {}
    for topic, _, _ in published:
        if topic.endswith(("/state", "/last_command/attributes")):
            per_topic[topic] = per_topic.get(topic, 0) + 1
    assert per_topic
    limit = 5 + span * (1 + 1 / mqtt.outcome_window)
    assert max(per_topic.values()) <= limit, (per_topic, limit)
    assert limit < FLOOD / len(commands)  # the check means something


async def test_a_rejection_is_reported_without_republishing_the_device(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    sim = site.batteries.batteries[0]
    battery = f"battery_{sim.ble_mac}"
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        site.batteries.frozen = True  # no value changes: only the rejection can cause a message
        await asyncio.sleep(1.5)
        seen = len(recorder.messages)
        await recorder.publish(f"{BASE}/{battery}/passive_power/set", "9000")
        outcome = f"{BASE}/{battery}/last_command/attributes"
        await recorder.wait_for(
            lambda: any(t == outcome for t, _, _ in recorder.messages[seen:]), 10, "the outcome"
        )
        await asyncio.sleep(1.0)
        published = [t for t, _, _ in recorder.messages[seen:] if not t.endswith("/set")]
        topics = [t for t in published if battery in t]
    assert "rejected" in state_of(recorder, battery)["last_command"]
    assert set(topics) <= {outcome, f"{BASE}/{battery}/state"}, topics
    assert not any(t.endswith("/config") for t in topics)


def _out_of_range(messages: list[tuple[str, bytes, bool]]) -> list[str]:
    """Every state value of a number entity outside the range of the discovery config in force then.

    Home Assistant validates a number's state when it arrives, and the retained state when a config
    arrives (it subscribes then): both must be inside the config's range.
    """
    numbers: dict[str, dict[str, Any]] = {}  # config topic -> config
    states: dict[str, dict[str, Any]] = {}  # state topic -> latest state
    found: list[str] = []

    def check(config: dict[str, Any], state: dict[str, Any], when: str) -> None:
        match = re.search(r"value_json\.(\w+)", config["value_template"])
        assert match is not None
        value = state.get(match.group(1))
        if value is not None and not config["min"] <= value <= config["max"]:
            found.append(f"{when}: {config['unique_id']} = {value} ({config['min']}..{config['max']})")

    for topic, payload, _ in messages:
        if topic.startswith(f"{PREFIX}/number/") and topic.endswith("/config"):
            if not payload:
                numbers.pop(topic, None)
                continue
            config = json.loads(payload)
            numbers[topic] = config
            if config["state_topic"] in states:
                check(config, states[config["state_topic"]], "config after state")
        elif topic.startswith(f"{BASE}/") and topic.endswith("/state") and payload:
            states[topic] = json.loads(payload)
            for config in numbers.values():
                if config["state_topic"] == topic:
                    check(config, states[topic], "state")
    return found


async def test_a_bad_or_retained_meter_message_is_not_a_reading_and_the_session_goes_on(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    sim = site.batteries.batteries[0]
    options = {**site.options(), "grid_source": {"type": "mqtt", "topic": "p1/power"}}
    async with aiomqtt.Client(broker.host, broker.port, identifier="meter") as meter:
        # the broker's copy of a reading from before the add-on started
        await meter.publish("p1/power", "777", qos=1, retain=True)
        async with recording(broker) as recorder, bridge(broker, options, tmp_path) as runtime:
            await wait_ready(recorder, runtime)
            grid = runtime.grid
            assert grid is not None
            await asyncio.sleep(0.5)
            assert grid.reading.value is None  # a retained reading is old, not the meter now
            bad = {
                "9" * 400: "not a power reading",  # float() overflows
                "[" * 5000 + "]" * 5000: "not a power reading",  # the JSON parser's recursion limit
                "true": "not a power reading",
                "4200000": "beyond 60 kW",  # a glitch, or kW sent to a topic set up for W
            }
            for payload, why in bad.items():
                await meter.publish("p1/power", payload, qos=1)
                await recorder.wait_for(lambda why=why: why in grid.reading.problem, 10, why)
                assert grid.reading.value is None
            await meter.publish("p1/power", "1234", qos=1)
            await recorder.wait_for(lambda: grid.reading.value == 1234, 10, "the next good reading")
            assert grid.reading.problem == ""
            # the session lives on: a command still reaches the battery
            await meter.publish(f"{BASE}/battery_{sim.ble_mac}/mode/set", "AI", qos=1)
            await recorder.wait_for(lambda: sim.mode == "AI", 20, "the command after the bad messages")
        await meter.publish("p1/power", "", qos=1, retain=True)


@pytest.mark.parametrize(
    ("profile", "limit", "shown"),
    [(PROFILES["venus_e3_v150"], 2500, 1000), (E_MINI, 800, 800)],
    ids=["venus_e3_2500W", "venus_e_mini_800W"],
)
async def test_no_number_state_outside_its_announced_range(
    broker: Broker,
    make_sim: SimFactory,
    tmp_path: Path,
    profile: FirmwareProfile,
    limit: int,
    shown: int,
) -> None:
    """A restart: the battery's identity is known (configured or remembered) before it answers."""
    sims = await make_sim(1, profile=profile)
    battery = sims.batteries[0]
    host, port = sims.addresses[0]
    options: dict[str, Any] = {
        "batteries": [{"name": "FaseA", "host": host, "port": port, "ble_mac": battery.ble_mac}],
        "wallboxes": [],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "offline_after": 2,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
    }
    sims.outage(0, 3.0)  # it answers only after the bridge is connected to the broker
    async with recording(broker) as recorder, bridge(broker, options, tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=30)
        await asyncio.sleep(2.0)  # a few more polls, a refresh of every state
        assert runtime.mqtt is not None
        await runtime.mqtt.publish_everything()
        await asyncio.sleep(0.5)
    assert _out_of_range(recorder.messages) == []
    device = f"battery_{battery.ble_mac}"
    power = configs(recorder)[f"{PREFIX}/number/{BASE}_{device}/passive_power/config"]
    assert (power["min"], power["max"]) == (-limit, limit)
    assert state_of(recorder, device)["passive_power"] == shown
    ranges = {
        (config["min"], config["max"])
        for topic, payload, _ in recorder.messages
        if topic.endswith("/passive_power/config") and payload and (config := json.loads(payload))
    }
    assert ranges == {(-limit, limit)}  # never announced with the generic model's range


def test_the_add_on_reconnects_within_10_s() -> None:
    assert inspect.signature(MqttBridge).parameters["reconnect_max"].default == RECONNECT_MAX
    assert RECONNECT_MAX <= 10


async def test_back_within_the_cap_after_a_long_broker_outage(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    async with bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime:
        mqtt = runtime.mqtt
        assert mqtt is not None
        assert mqtt.reconnect_max <= 10  # as the add-on builds it
        mqtt.reconnect_max = 1.5  # the production schedule, scaled down: 1, 1.5, 1.5, ... s
        await asyncio.wait_for(mqtt.connected.wait(), 10)
        sessions = mqtt.sessions
        broker.stop()
        await asyncio.sleep(8.0)  # long enough for the backoff to reach its cap several times over
        assert not mqtt.connected.is_set()
        broker.start()
        back = time.monotonic()
        await asyncio.wait_for(mqtt.connected.wait(), 10)
        assert time.monotonic() - back < 1.5 + 8.5  # the cap, and a loaded machine's connect
        assert mqtt.sessions == sessions + 1
