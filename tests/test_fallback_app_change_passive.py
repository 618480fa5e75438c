"""`transport: auto`: a running Passive that a mode picked in the Marstek app ended is not carried over at
the next switch (simulators on 127.0.0.1, UDP and Modbus).

The fallback carries the running Passive across a switch for the rest of its time. One the battery was seen
to leave on the transport in use must not be: over Modbus a poll that sees the app's work mode ends the
lease, over the Local API a poll reads the app's mode; sending the Passive again at the switch would
override the person's choice. A Passive still running is carried as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from marstek_webasto_addon.devices.marstek.commands import PassiveMode
from marstek_webasto_addon.devices.marstek.fallback import FallbackBattery
from marstek_webasto_addon.devices.marstek.firmware import Mode
from marstek_webasto_addon.devices.marstek.modbus.registers import ForceMode
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator, VenusModbusServer
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint

from .conftest import SimFactory, until
from .test_venus_transport import auto_battery, running

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def on_auto(
    make_sim: SimFactory, endpoint: UdpEndpoint, **kwargs: float
) -> AsyncIterator[tuple[MarstekSimulator, VenusModbusServer, FallbackBattery]]:
    """One battery on `auto`, polled, on the Local API."""
    sim = await make_sim(1, socs=[55.0])
    server = await sim.serve_modbus()
    battery, link = auto_battery(sim, endpoint, server, **kwargs)
    try:
        async with running(link):
            await until(lambda: link.online and battery.transport == "udp", 10)
            yield sim, server, battery
    finally:
        await battery.close()


async def test_a_passive_the_app_ended_over_modbus_is_not_carried_back_to_the_local_api(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    async with on_auto(make_sim, endpoint, probe_every=1.0) as (sim, server, battery):
        venus = sim.batteries[0]
        sim.outage(0, 1e6)
        await until(lambda: battery.transport == "modbus" and battery.modbus.last_answer_at, 15)
        assert (await battery.set_mode(PassiveMode(-600, 120))).ok
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.CHARGE)
        server.registers.app_sets_work_mode("AI")  # the person's tap in the Marstek app
        await until(lambda: battery.modbus.lease is None, 10)  # a poll saw it: the lease ended
        written = len(venus.setmode_log)
        sim.outage(0, 0)
        await until(lambda: battery.transport == "udp", 15)
        await asyncio.sleep(1.0)  # (a carried Passive goes out right after the switch)
        assert venus.setmode_log[written:] == [], "the Passive the app ended was sent again over UDP"
        assert venus.mode == "AI"
        assert not venus.rs485_control


async def test_a_passive_the_app_ended_over_the_local_api_is_not_carried_to_modbus(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    async with on_auto(make_sim, endpoint) as (sim, _, battery):
        venus = sim.batteries[0]
        assert (await battery.set_mode(PassiveMode(-600, 120))).ok
        assert venus.mode == "Passive"
        venus.mode = "AI"  # the person's tap in the Marstek app
        await until(lambda: battery.udp.snapshot.mode is Mode.AI, 5)  # a poll read it
        sim.outage(0, 1e6)
        await until(lambda: battery.transport == "modbus" and battery.modbus.last_answer_at, 15)
        await asyncio.sleep(2.0)  # two polls over Modbus
        assert not venus.rs485_control, "the Passive the app ended was sent again over Modbus"
        assert (venus.mode, venus.force_mode, battery.modbus.lease) == ("AI", ForceMode.STOP, None)


async def test_a_passive_read_running_over_the_local_api_is_still_carried_to_modbus(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # The counterpart: polls after the command read it running, so nothing ended it.
    async with on_auto(make_sim, endpoint) as (sim, _, battery):
        venus = sim.batteries[0]
        assert (await battery.set_mode(PassiveMode(-600, 120))).ok
        sent = time.monotonic()
        await until(lambda: battery.udp.snapshot.seen.get("mode", 0.0) > sent, 5)  # a poll read it
        assert battery.udp.snapshot.mode is Mode.PASSIVE
        sim.outage(0, 1e6)
        await until(lambda: battery.transport == "modbus", 15)
        await until(lambda: venus.rs485_control and venus.force_mode == ForceMode.CHARGE, 5)
        assert venus.force_charge_w == 600
        assert battery.modbus.lease is not None
