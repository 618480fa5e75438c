"""Two faults at the edges of a run: Home Assistant states that were already old when the add-on
(re)connected, and the bridge's `offline` cut short at a stop.

Against the fake Home Assistant (tests/ha_fake.py), a real Mosquitto and the battery simulators, all on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiomqtt
import pytest

from marstek_webasto_addon.addon.ha_inputs import EntityPowerInput, EntityPvForecast, HomeAssistantInputs
from marstek_webasto_addon.bridge import mqtt
from marstek_webasto_addon.bridge.devices import BridgeDevice
from marstek_webasto_addon.bridge.mqtt import BrokerSettings, MqttBridge
from marstek_webasto_addon.bridge.topics import Topics
from marstek_webasto_addon.tasks import RECANCEL_S, cancel_all

from . import ha_fake
from .conftest import until
from .ha_fake import FakeHomeAssistant, FakeState
from .mqtt_fixtures import Broker, broker, recording
from .test_ha_inputs import running

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(90)
BASE, PREFIX = "marstek_webasto", "homeassistant"
P1 = "sensor.p1_power"
PV = "sensor.energy_production_tomorrow"
HOUR = 3600.0


def stopped_meter(fake: FakeHomeAssistant, seconds_ago: float, value: str = "0.8") -> None:
    """The grid meter's state as Home Assistant keeps it, the meter stopped `seconds_ago` (by its clock)."""
    then = vars(ha_fake)["time"].time() - seconds_ago  # the fake's clock, which a test may set apart
    fake.states[P1] = FakeState(value, {"unit_of_measurement": "kW", "device_class": "power"}, then, then)


# 1. states already old at a (re)connection -----------------------------------------------------------------


@pytest.mark.parametrize("subscribe_entities", [True, False], ids=["subscribe_entities", "get_states"])
async def test_a_meter_that_stopped_an_hour_ago_is_an_hour_old_at_the_connection(
    subscribe_entities: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    fake = FakeHomeAssistant(subscribe_entities=subscribe_entities)
    stopped_meter(fake, HOUR)
    await fake.start()
    try:
        grid = EntityPowerInput(P1)
        async with running(HomeAssistantInputs([grid], None, url=fake.url, token=fake.token)):
            await until(lambda: grid.current().value is not None, 10)
            age = grid.current().age()
            assert age is not None
            assert age > HOUR - 60, f"a meter silent for an hour counts as {age:.0f} s old"
            # said in the log, not only seen in the ages (the seconds the connection took count too)
            assert re.search(r"last updated 36\d\d s ago", caplog.text)
            # the meter comes back: a change is as fresh as its arrival
            await fake.set_state(P1, "0.5")
            await until(lambda: grid.current().value == pytest.approx(500), 10)
            age = grid.current().age()
            assert age is not None
            assert age < 5
    finally:
        await fake.stop()


async def test_after_a_reconnection_a_state_is_as_old_as_home_assistant_says() -> None:
    fake = FakeHomeAssistant()
    stopped_meter(fake, 0.0)
    await fake.start()
    try:
        grid = EntityPowerInput(P1)
        inputs = HomeAssistantInputs([grid], None, url=fake.url, token=fake.token)
        async with running(inputs):
            await until(lambda: grid.current().value is not None, 10)
            assert inputs.client is not None
            sessions = len(fake.auth_attempts)
            # Home Assistant restarts; the meter's integration failed meanwhile and Core restored its last
            # state, last updated an hour ago.
            await fake.drop_connections()
            stopped_meter(fake, HOUR, "1.2")
            await until(lambda: len(fake.auth_attempts) > sessions and grid.current().value == 1200, 15)
            age = grid.current().age()
            assert age is not None
            assert age > HOUR - 60, f"the restored state counts as {age:.0f} s old"
    finally:
        await fake.stop()


@pytest.mark.parametrize("skew", [-600.0, 600.0], ids=["ha_behind", "ha_ahead"])
async def test_the_age_of_a_state_is_corrected_for_home_assistants_clock(
    skew: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Home Assistant's clock 10 minutes off ours (a remote instance, a host without NTP): the age of a
    state found at a reconnection is what it is on Home Assistant's clock, not that plus the difference,
    nor 0 for a timestamp that looks like the future."""
    skewed = SimpleNamespace(time=lambda: time.time() + skew, monotonic=time.monotonic)
    monkeypatch.setattr(ha_fake, "time", skewed)  # the fake's clock, not ours
    fake = FakeHomeAssistant()
    fake.preset(PV, "9.6", {"unit_of_measurement": "kWh", "device_class": "energy"})
    stopped_meter(fake, 0.0)
    await fake.start()
    try:
        grid, pv = EntityPowerInput(P1), EntityPvForecast(PV)
        inputs = HomeAssistantInputs([grid], pv, url=fake.url, token=fake.token)
        async with running(inputs):
            await until(lambda: grid.current().value is not None, 10)
            await fake.set_state(PV, "9.7")  # a live change: Home Assistant's clock, read as it happens
            await until(lambda: pv.value == pytest.approx(9.7), 10)
            sessions = len(fake.auth_attempts)
            await fake.drop_connections()
            stopped_meter(fake, 300.0, "1.2")
            await until(lambda: len(fake.auth_attempts) > sessions and grid.current().value == 1200, 15)
            age = grid.current().age()
            assert age is not None
            assert 240 < age < 400, f"5 minutes old by Home Assistant's clock, {age:.0f} s by ours"
    finally:
        await fake.stop()


# 2. the bridge's `offline` at a stop -----------------------------------------------------------------------


@contextlib.contextmanager
def stalled(broker: Broker) -> Iterator[None]:
    """Mosquitto stops answering (a loaded host) and picks up where it was afterwards."""
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)


@pytest.fixture
def offline_publishes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How each publish of `offline` on the bridge's status topic ended: confirmed, cancelled or an error."""
    outcomes: list[str] = []
    publish = aiomqtt.Client.publish

    async def recorded(self: aiomqtt.Client, topic: str, payload: Any = None, *args: Any, **kw: Any) -> None:
        if topic != f"{BASE}/status" or payload != "offline":
            await publish(self, topic, payload, *args, **kw)
            return
        try:
            await publish(self, topic, payload, *args, **kw)
        except asyncio.CancelledError:
            outcomes.append("cancelled")
            raise
        except Exception as error:
            outcomes.append(f"error: {error}")
            raise
        outcomes.append("confirmed")

    monkeypatch.setattr(aiomqtt.Client, "publish", recorded)
    return outcomes


async def connected_bridge(broker: Broker) -> tuple[MqttBridge, asyncio.Task[None]]:
    bridge = MqttBridge(BrokerSettings(broker.host, broker.port), Topics(BASE, PREFIX), [BridgeDevice()])
    task = asyncio.create_task(bridge.run(), name="mqtt")
    await asyncio.wait_for(bridge.connected.wait(), 15)
    return bridge, task


async def test_a_slow_broker_still_gets_the_bridges_offline_at_a_stop(
    broker: Broker, offline_publishes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """cancel_all cancels a stopping task again after RECANCEL_S: the `offline` to a broker that took longer
    to confirm it was cut, and Home Assistant went on showing the devices available after the stop."""
    monkeypatch.setattr(mqtt, "OFFLINE_CONFIRM_S", 20.0, raising=False)  # room on a loaded machine
    _, task = await connected_bridge(broker)
    with stalled(broker):
        stop = asyncio.create_task(cancel_all([task]))
        await asyncio.sleep(RECANCEL_S * 2.5)  # cancel_all has cancelled the bridge again meanwhile
    await asyncio.wait_for(stop, 30)
    assert task.cancelled()
    assert offline_publishes == ["confirmed"]
    async with recording(broker, (f"{BASE}/status",)) as after:
        await after.wait_for(lambda: after.latest.get(f"{BASE}/status") == b"offline", 5, "offline, retained")


async def test_a_broker_that_never_confirms_the_offline_does_not_hold_up_the_stop(
    broker: Broker,
    offline_publishes: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(mqtt, "OFFLINE_CONFIRM_S", 2.0, raising=False)
    _, task = await connected_bridge(broker)
    with stalled(broker):
        started = time.monotonic()
        await asyncio.wait_for(cancel_all([task]), 30)
        took = time.monotonic() - started
    assert task.cancelled()
    assert took < 15, f"the stop took {took:.0f} s"
    assert "offline status was not confirmed by the broker within 2 s" in caplog.text  # the user is told
