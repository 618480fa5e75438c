"""Batteries that change address: two that swap addresses, a battery configured by host name, and a battery
on `transport: auto` whose Local API moves while it runs on Modbus or while both transports are silent."""

from __future__ import annotations

import pytest

from marstek_webasto_addon.devices.marstek.client import MarstekClient
from marstek_webasto_addon.devices.marstek.commands import PassiveMode
from marstek_webasto_addon.devices.marstek.datapoints import Method
from marstek_webasto_addon.devices.marstek.discovery import expand_targets
from marstek_webasto_addon.devices.marstek.fallback import FallbackBattery, silence_before_switch
from marstek_webasto_addon.devices.marstek.link import BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.modbus.battery import ModbusBattery
from marstek_webasto_addon.devices.marstek.protocol import IdentityMismatch
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator, VenusModbusServer
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint
from marstek_webasto_addon.devices.outcome import WriteStatus

from .conftest import FAST, SimFactory, client_for, free_port, until
from .test_marstek_link import settings
from .test_venus_transport import running

pytestmark = pytest.mark.timeout(90)
SEARCHED = ["127.0.0.0/27"]


async def swap(sim: MarstekSimulator, first: int, second: int) -> None:
    """Two batteries trade addresses (DHCP gave each the other's lease)."""
    one, other = sim.addresses[first][0], sim.addresses[second][0]
    await sim.move(first, "127.0.0.30")  # out of the way: one address, one battery
    await sim.move(second, one)
    await sim.move(first, other)


# two batteries swap addresses ----------------------------------------------------------------------


async def test_after_two_batteries_swap_addresses_no_command_for_one_reaches_the_other(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int
) -> None:
    sim = await make_sim(2)
    ours, other = sim.batteries
    client = client_for(sim, endpoint, 0)
    link = BatteryLink("FaseA", client, settings(udp_port))
    assert await link.poll_once()
    await swap(sim, 0, 1)  # ours now answers at 127.0.0.12, the other one at our 127.0.0.11
    report = await client.read([Method.ES_MODE])  # the next poll sees the other battery's identity
    assert isinstance(report.errors[Method.ES_MODE], IdentityMismatch)
    dod = other.physics.dod
    # Until the link counts ours offline and finds it (the offline window, then the search's back-off),
    # commands for ours must not be carried out by the other battery.
    outcomes = [
        await client.set_mode(PassiveMode(-800, 300)),
        await client.set_led(False),
        await client.set_dod(50),
        await client.clear_schedules(),
    ]
    assert [o.status for o in outcomes] == [WriteStatus.REJECTED] * 4
    assert all("another battery" in o.detail for o in outcomes)
    # the other battery carried out none of them
    assert other.mode == "Auto"
    assert other.setmode_log == []
    assert other.led_on
    assert other.physics.dod == dod

    # the link finds ours at its new address; commands go there
    async with running(link):
        await until(lambda: client.host == "127.0.0.12" and link.online, 20)
    outcome = await client.set_mode(PassiveMode(-800, 300))
    assert outcome.ok, outcome
    assert ours.mode == "Passive"
    assert other.mode == "Auto"


async def test_commands_go_out_again_once_our_battery_answers_at_its_address_again(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(2)
    ours, other = sim.batteries
    client = client_for(sim, endpoint, 0)
    await client.read([Method.GET_DEVICE, Method.ES_MODE])
    await swap(sim, 0, 1)
    assert not (await client.read([Method.ES_MODE])).any_answer
    assert (await client.set_led(False)).status is WriteStatus.REJECTED
    assert other.led_on
    await swap(sim, 0, 1)  # a glitch: each is back at its own address
    assert (await client.read([Method.ES_MODE])).any_answer  # ours, seen at the address again
    outcome = await client.set_led(False)
    assert outcome.ok, outcome
    assert not ours.led_on
    assert other.led_on


# a host name --------------------------------------------------------------------------------------


async def test_a_battery_configured_by_host_name_keeps_its_name_after_an_outage(
    make_sim: SimFactory, endpoint: UdpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # 127.0.0.1 on the test's port is the add-on's own socket
    sim = await make_sim(1, port=port)
    await sim.move(0, "127.0.0.1")
    client = MarstekClient("localhost", port, endpoint=endpoint, pacing=FAST)
    # The search asks every 2 s for 5 s: the battery is back before its second question.
    link = BatteryLink("FaseA", client, settings(port, rediscovery_timeout=5.0))
    assert await link.poll_once()
    assert client.address[0] == "127.0.0.1"
    caplog.set_level("INFO")
    sim.outage(0, 1e6)
    async with running(link):
        await until(lambda: "looking for battery" in caplog.text, 20)
        sim.outage(0, 0)  # the outage ends while the link searches for the battery
        await until(lambda: "looking for battery" in caplog.text and link.online, 20)
    assert "not found" not in caplog.text  # the search found it, where the name points
    assert client.host == "localhost"  # the name stays: a later DHCP change is followed by name


# transport: auto ----------------------------------------------------------------------------------


def auto_battery(
    sim: MarstekSimulator, endpoint: UdpEndpoint, server: VenusModbusServer
) -> tuple[FallbackBattery, BatteryLink]:
    """As the add-on builds it: the search's targets name no port (the Local API's port is meant)."""
    link_settings = LinkSettings(
        poll_interval=1.0,
        offline_after=3,
        rediscovery_targets=tuple(expand_targets(SEARCHED, 0)),
        rediscovery_timeout=1.0,
        rediscovery_interval=0.5,
    )
    modbus = ModbusBattery("127.0.0.1", server.port, timeout=1.0, request_gap=0.005)
    silent_for = silence_before_switch(link_settings.poll_interval, link_settings.offline_window)
    # probed every 2 s on Modbus: a Local API silent past that and the offline window is searched for
    battery = FallbackBattery(
        client_for(sim, endpoint), modbus, name="FaseA", silent_for=silent_for, probe_every=2.0
    )
    return battery, BatteryLink("FaseA", battery, link_settings)


async def test_auto_finds_a_battery_that_moved_while_both_transports_were_silent(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1)
    server = await sim.serve_modbus()
    battery, link = auto_battery(sim, endpoint, server)
    try:
        async with running(link):
            await until(lambda: link.online and battery.transport == "udp", 10)
            server.quirks.refuse_connections = True  # the LAN cable is out too
            battery.modbus.modbus.drop()
            await sim.move(0, "127.0.0.21")  # and the WiFi gave the battery a new address
            # offline on both, then found by a search over the Local API's port, and back over it
            await until(lambda: battery.transport == "udp" and battery.udp.host == "127.0.0.21", 30)
            await until(lambda: link.online, 5)
        assert [s.to for s in battery.switches] == ["modbus", "udp"]
    finally:
        await battery.close()


async def test_auto_finds_a_battery_whose_local_api_moved_while_modbus_answers(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1)
    server = await sim.serve_modbus()
    battery, link = auto_battery(sim, endpoint, server)
    try:
        async with running(link):
            await until(lambda: link.online and battery.transport == "udp", 10)
            await sim.move(0, "127.0.0.21")  # a new WiFi address; the LAN port keeps its own
            await until(lambda: battery.transport == "modbus", 15)
            # the Local API is found at its new address and taken back, without an outage
            await until(lambda: battery.transport == "udp" and battery.udp.host == "127.0.0.21", 30)
            assert link.online
    finally:
        await battery.close()
