"""The MQTT side: what Home Assistant is left with when devices change identity, vanish or
misbehave, against a real Mosquitto, simulated batteries (UDP) and wallboxes (Modbus TCP)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.devices.webasto.registers import WallboxModel

from .conftest import free_port
from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import BASE, Site, bridge, configs, site, wait_ready
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["broker", "make_box", "site"]
pytestmark = pytest.mark.timeout(90)
STALL_S = 11.0
TIMING = {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2}


def _wallbox_options(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "batteries": [],
        "wallboxes": [{"name": "Carport", "host": "127.0.0.1", "port": port, **extra}],
        "marstek_bind": "127.0.0.1",
        "wallbox_poll_interval": 1,
        "offline_after": 2,
        "timing": TIMING,
    }


async def test_a_wallbox_that_turns_out_to_be_a_unite_leaves_no_ghost_device(
    broker: Broker, make_box: BoxFactory, tmp_path: Path
) -> None:
    """First start with model auto (the default): until the box answers, it is known by its address; once
    it answers as a UNITE, by its serial. The address-named device must not stay in Home Assistant."""
    port = free_port(socket.SOCK_STREAM)
    ghost = f"{BASE}_wallbox_127_0_0_1_255"
    async with recording(broker) as recorder, bridge(broker, _wallbox_options(port), tmp_path) as runtime:
        await recorder.wait_for(
            lambda: any(f"/{ghost}/" in t for t in configs(recorder)), 15, "the box announced by address"
        )
        sim, _ = await make_box(WallboxModel.UNITE, port=port)
        real = f"{BASE}_wallbox_{sim.profile.serial}"
        await recorder.wait_for(
            lambda: any(f"/{real}/" in t for t in configs(recorder)), 20, "the box announced by serial"
        )
        await recorder.wait_for(
            lambda: not any(f"/{ghost}/" in t for t in configs(recorder)),
            10,
            "the address-named device's discovery cleared",
        )
        old_topics = f"{BASE}/wallbox_127_0_0_1_255/"
        await recorder.wait_for(
            lambda: not any(t.startswith(old_topics) for t in recorder.latest),
            10,
            "the address-named device's state and availability cleared",
        )
        assert runtime.wallboxes[0].device_id == f"wallbox_{sim.profile.serial}"


async def test_states_flow_again_after_the_broker_stalls_past_the_publish_timeout(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """Mosquitto stops answering for a while (a loaded host) without the connection dropping: a publish
    that waited for its acknowledgement times out. The bridge must go on publishing afterwards, not leave
    every entity showing its last value as if it were live; and when the add-on stops, Home Assistant
    must be told it is offline, not be left with a retained `online`."""
    sim = site.batteries.batteries[0]
    availability = f"{BASE}/battery_{sim.ble_mac}/availability"
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        sessions = runtime.mqtt.sessions if runtime.mqtt else 0
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            site.batteries.outage(0, 60)  # its availability changes while the broker is stalled
            await recorder.wait_for(lambda: not runtime.batteries[0].available, 15, "the battery offline")
            await asyncio.sleep(STALL_S)  # past aiomqtt's 10 s wait for the acknowledgement
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        await recorder.wait_for(lambda: recorder.latest.get(availability) == b"offline", 15, "offline")
        site.batteries.outage(0, 0)
        await recorder.wait_for(lambda: recorder.latest.get(availability) == b"online", 20, "online again")
        assert runtime.mqtt is not None
        assert runtime.mqtt.sessions == sessions  # the connection itself survived the stall
    async with recording(broker, (f"{BASE}/status",)) as after:
        await after.wait_for(lambda: after.latest.get(f"{BASE}/status") == b"offline", 5, "offline, retained")


async def test_a_device_whose_state_cannot_be_made_does_not_stop_the_others(
    broker: Broker, site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unforeseen error while one device's state is made (a bug, a value no one expected) ended the
    publishing task for good: no device's state reached Home Assistant again until a reconnect."""
    first, second = site.batteries.batteries
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=2, wallboxes=False), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        broken = runtime.batteries[0]
        working = broken.state
        failing = True

        def state() -> dict[str, Any]:
            if failing:
                raise ValueError("an unforeseen value")
            return working()

        broken.state = state  # type: ignore[method-assign]

        def logged() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.exc_info and "an unforeseen value" in str(r.exc_info[1])]

        # the broken device's publish fails first (after its next poll), then the other's state must still go
        await recorder.wait_for(lambda: bool(logged()), 20, "the error logged")
        second_state = f"{BASE}/battery_{second.ble_mac}/state"
        second.physics.soc = 41.0
        await recorder.wait_for(lambda: b'"soc":41' in recorder.latest[second_state], 20, "the other's state")
        assert len(logged()) == 1  # once, not at every publish
        failing = False
        first.physics.soc = 57.0
        first_state = f"{BASE}/battery_{first.ble_mac}/state"
        await recorder.wait_for(lambda: b'"soc":57' in recorder.latest[first_state], 20, "its state again")
