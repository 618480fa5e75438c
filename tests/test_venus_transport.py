"""A battery over Modbus TCP, and `transport: auto`, against the simulators on 127.0.0.1: the options, the
bridge end to end (entities, commands, the lease and its end, releases), the bounded control, and the
fallback from UDP to Modbus and back."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.options import OptionsError, parse_options
from marstek_webasto_addon.cli.marstek import probe
from marstek_webasto_addon.devices.marstek.commands import AutoMode, PassiveMode
from marstek_webasto_addon.devices.marstek.fallback import FallbackBattery, silence_before_switch
from marstek_webasto_addon.devices.marstek.link import BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.modbus.battery import ModbusBattery
from marstek_webasto_addon.devices.marstek.modbus.registers import ForceMode, Generation, Rs485
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator, VenusModbusServer
from marstek_webasto_addon.devices.marstek.simulator.device import SimulatedBattery
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint
from marstek_webasto_addon.devices.outcome import WriteStatus

from .conftest import SimFactory, client_for, free_port, until
from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import bridge, command, state_of, wait_ready

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(120)
POLL = 3.0  # a v3 poll is 13 requests 150 ms apart: about 2 s


def fast(server: VenusModbusServer, **kwargs: Any) -> ModbusBattery:
    return ModbusBattery("127.0.0.1", server.port, timeout=1.0, request_gap=0.005, **kwargs)


@contextlib.asynccontextmanager
async def venus_on_modbus(
    make_sim: SimFactory, *, soc: float = 55.0, profile: str | None = None, **client: Any
) -> AsyncIterator[tuple[SimulatedBattery, VenusModbusServer, ModbusBattery]]:
    """One simulated Venus serving its Modbus map on 127.0.0.1, and a fast client for it (closed after)."""
    sim = await (make_sim(1, socs=[soc]) if profile is None else make_sim(1, socs=[soc], profile=profile))
    server = await sim.serve_modbus()
    battery = fast(server, **client)
    try:
        yield sim.batteries[0], server, battery
    finally:
        await battery.close()


async def owe_a_release(client: ModbusBattery, venus: SimulatedBattery, server: VenusModbusServer) -> None:
    """A forced discharge, then a person's Auto while the battery cannot be reached: the lease it
    supersedes is over and its release is owed. The battery answers again afterwards."""
    await client.read()
    assert (await client.set_mode(PassiveMode(800, 900))).ok
    assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.DISCHARGE)
    server.quirks.refuse_connections = True
    client.modbus.drop()
    person = await client.set_mode(AutoMode())
    assert person.status is WriteStatus.NOT_APPLIED, person
    server.quirks.refuse_connections = False


# options ----------------------------------------------------------------------------------------------


def test_transport_options_and_their_bad_combinations() -> None:
    broker_opts = {"mqtt": {"host": "127.0.0.1"}}
    parsed = parse_options(
        {"batteries": [{"name": "A", "transport": "modbus", "modbus_host": "10.0.0.9"}], **broker_opts}
    )
    battery = parsed.batteries[0]
    assert (battery.modbus_address, battery.modbus_port, battery.modbus_unit_id) == ("10.0.0.9", 502, 1)
    assert battery.modbus_generation == "auto"
    assert (
        parse_options({"batteries": [{"name": "A", "host": "10.0.0.5"}], **broker_opts})
        .batteries[0]
        .transport
        == "udp"
    )  # today's behaviour unchanged
    auto = parse_options(
        {"batteries": [{"name": "A", "host": "10.0.0.5", "transport": "auto"}], **broker_opts}
    )
    assert auto.batteries[0].modbus_address == "10.0.0.5"  # the battery's own LAN port
    with pytest.raises(OptionsError) as caught:
        parse_options(
            {
                "batteries": [
                    {"name": "A", "transport": "modbus"},
                    {"name": "B", "transport": "auto", "modbus_host": "10.0.0.9"},
                    {"name": "C", "host": "10.0.0.7", "transport": "modbus", "modbus_generation": "v4"},
                    {"name": "D", "host": "10.0.0.8", "transport": "udp", "modbus_port": 0},
                ],
                **broker_opts,
            }
        )
    problems = caught.value.problems
    assert "batteries: A: transport modbus needs modbus_host" in problems[0]
    assert "batteries: B: host is required with transport auto" in problems[1]
    assert "batteries[2].modbus_generation: 'v4' is not one of the choices: auto, v12 or v3" in problems
    assert any(p.startswith("batteries[3].modbus_port: 0 is out of range") for p in problems)
    assert len(problems) == 4  # every problem at once, none lost
    with pytest.raises(OptionsError, match="two entries point at the same host and port"):
        parse_options(
            {
                "batteries": [
                    {"name": "A", "transport": "modbus", "modbus_host": "10.0.0.9"},
                    {"name": "B", "transport": "modbus", "modbus_host": "10.0.0.9"},
                ],
                **broker_opts,
            }
        )
    # the optimiser's grid meter: a battery's CT, which Modbus cannot read
    modbus_only = {
        "batteries": [{"name": "A", "transport": "modbus", "modbus_host": "10.0.0.9"}],
        **broker_opts,
    }
    parse_options(modbus_only)  # the bridge alone needs no meter
    with pytest.raises(
        OptionsError, match="A is on transport modbus, which cannot read the battery's CT meter"
    ):
        parse_options({**modbus_only, "optimiser": {"enabled": True}})
    parse_options(
        {**modbus_only, "optimiser": {"enabled": True}, "grid_source": {"type": "mqtt", "topic": "p1/power"}}
    )
    with pytest.raises(OptionsError, match=r"grid_source\.battery: no battery is named 'B'"):
        parse_options({**modbus_only, "grid_source": {"type": "battery", "battery": "B"}})


# the bridge end to end over Modbus --------------------------------------------------------------------


def modbus_options(server: VenusModbusServer) -> dict[str, Any]:
    return {
        "batteries": [
            {"name": "FaseA", "transport": "modbus", "modbus_host": "127.0.0.1", "modbus_port": server.port}
        ],
        "battery_poll_interval": POLL,
        "offline_after": 2,
    }


async def test_a_modbus_battery_works_end_to_end_through_the_bridge(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1, socs=[60.0])
    venus = sim.batteries[0]
    server = await sim.serve_modbus()
    # A run that died holding control: the battery still discharges under RS485 control.
    venus.rs485_control, venus.force_mode, venus.force_discharge_w = True, 2, 500
    async with recording(broker) as recorder, bridge(broker, modbus_options(server), tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=20)
        battery = f"battery_{venus.ble_mac}"
        await until(lambda: not venus.rs485_control, 10)  # released at start-up
        assert venus.force_mode == 0
        await until(lambda: state_of(recorder, battery).get("mode") == "Auto", 10)
        state = state_of(recorder, battery)
        assert state["transport"] == "modbus"
        assert state["connection"] == "online"
        assert state["soc"] == pytest.approx(venus.physics.soc, abs=1)
        assert state["model"] == "VNSE3-0"
        assert state["firmware"] == venus.profile.ver

        # a work mode: written once, then only on change
        outcome = await command(recorder, battery, "mode", "AI")
        assert outcome["status"] == "applied", outcome
        assert venus.mode == "AI"
        again = await command(recorder, battery, "mode", "AI")
        assert again["status"] == "applied", again
        assert "43000 not written" in again["detail"]  # EEPROM: written only on change

        # Passive from a person: RS485 control and a forced charge, held by the add-on
        assert (await command(recorder, battery, "passive_power", "-1200"))["status"] == "applied"
        assert (await command(recorder, battery, "passive_duration", "10"))["status"] == "applied"
        outcome = await command(recorder, battery, "charge_now", "PRESS")
        assert outcome["status"] == "applied", outcome
        assert (venus.rs485_control, venus.force_mode, venus.force_charge_w) == (True, 1, 1200)
        assert "the add-on releases control after 600 s" in outcome["detail"]
        await until(lambda: state_of(recorder, battery)["mode"] == "Passive", 10)

        # clamped to the device limits (the model's 2500 W, lowered by the battery's own 44002)
        venus.max_charge_setting_w = 2000
        client = runtime.battery_links[0].client
        assert isinstance(client, ModbusBattery)
        await client.read()  # the new maximum is read with the control registers
        clamped = await client.set_mode(PassiveMode(-2400, 60))
        assert clamped.status is WriteStatus.APPLIED, clamped
        assert venus.force_charge_w == 2000
        assert "2000" in clamped.clamped

        # Auto: control released, the stored work mode written back
        outcome = await command(recorder, battery, "mode", "Auto")
        assert outcome["status"] == "applied", outcome
        assert (venus.rs485_control, venus.mode) == (False, "Auto")

        # the lease: renewed before it ends, then ended by the add-on itself (no countdown over Modbus)
        started = time.monotonic()
        assert (await client.set_mode(PassiveMode(800, 3))).ok
        assert venus.force_mode == ForceMode.DISCHARGE
        await asyncio.sleep(1.5)
        assert (await client.set_mode(PassiveMode(800, 6))).ok  # the renewal: now ends at ~7.5 s
        await asyncio.sleep(max(0.0, started + 3 + POLL + 0.5 - time.monotonic()))
        assert venus.rs485_control, "released at the first lease's end despite the renewal"
        await until(lambda: not venus.rs485_control, 3 * POLL)
        assert time.monotonic() - started >= 7.0
        assert venus.force_mode == 0

        # left in Passive when the add-on stops cleanly
        outcome = await command(recorder, battery, "discharge_now", "PRESS")
        assert outcome["status"] == "applied", outcome
        assert venus.rs485_control
    assert not venus.rs485_control  # released at the clean stop
    assert (venus.force_mode, venus.force_discharge_w) == (0, 0)


@pytest.mark.parametrize("profile", ["venus_e2_v156", "venus_e3_v150"])
async def test_a_poll_and_a_command_at_once_share_one_connection(make_sim: SimFactory, profile: str) -> None:
    # The add-on's first seconds: the first poll and the optimiser's first command both find the client
    # unconnected. Two connections would leave one open and unreferenced in the battery's single slot.
    sim = await make_sim(1, socs=[50.0], profile=profile)
    server = await sim.serve_modbus()
    client = fast(server)  # the map chosen from the device name: the v12 battery changes maps once
    try:
        report, outcome = await asyncio.gather(client.read(), client.set_mode(AutoMode()))
        assert report.any_answer, report.errors
        assert outcome.ok, outcome
        assert server.refused == 0
        assert server.current is not None
        await client.close()
        await until(lambda: server.current is None, 2)  # nothing left holding the slot
        again = fast(server)
        assert (await again.read()).any_answer  # a restart gets in
        await again.close()
    finally:
        await client.close()


# the bounded control ------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["venus_e2_v156", "venus_e3_v150"])  # the v12 map, the v3 map
@pytest.mark.parametrize("power", [2500, -2500])
async def test_forced_power_stops_at_the_soc_bound(make_sim: SimFactory, power: int, profile: str) -> None:
    sim = await make_sim(1, socs=[20.0 if power > 0 else 80.0], speed=20, profile=profile)
    venus = sim.batteries[0]
    server = await sim.serve_modbus()
    assert server.generation is (Generation.V12 if profile == "venus_e2_v156" else Generation.V3)
    client = fast(server)
    client.soc_floor, client.soc_ceiling = 17.0, 83.0
    try:
        await client.read()
        assert (await client.set_mode(PassiveMode(power, 900))).ok
        assert venus.force_mode == (ForceMode.DISCHARGE if power > 0 else ForceMode.CHARGE)

        async def poll_until_stopped() -> None:
            while venus.force_mode != ForceMode.STOP:
                await client.read()
                await asyncio.sleep(0.2)

        await asyncio.wait_for(poll_until_stopped(), 30)
        assert client.lease is not None
        assert client.lease.at_bound
        stopped_at = venus.physics.soc
        assert (stopped_at <= 17.0 + 1) if power > 0 else (stopped_at >= 83.0 - 1)
        assert venus.rs485_control  # held idle while the lease runs, not handed to the work mode
        await asyncio.sleep(1.0)
        await client.read()
        assert venus.physics.soc == pytest.approx(stopped_at, abs=0.5)  # no further forced power
        # a renewal while at the bound does not start the forced power again
        assert (await client.set_mode(PassiveMode(power, 900))).ok
        assert venus.force_mode == ForceMode.STOP
        assert (await client.set_mode(AutoMode())).ok
        assert not venus.rs485_control
    finally:
        await client.close()


# transport: auto ----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(link: BatteryLink) -> AsyncIterator[None]:
    task = asyncio.create_task(link.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_auto_falls_back_to_modbus_when_udp_goes_silent_and_returns(
    make_sim: SimFactory, endpoint: UdpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    sim: MarstekSimulator = await make_sim(1, socs=[55.0])
    server = await sim.serve_modbus()
    settings = LinkSettings(poll_interval=1.0, offline_after=3)
    silent_for = silence_before_switch(settings.poll_interval, settings.offline_window)
    assert silent_for == 1.5  # 1.5 poll intervals, within half the offline window (3.25 s)
    udp = client_for(sim, endpoint)
    battery = FallbackBattery(udp, fast(server), name="FaseA", silent_for=silent_for, probe_every=2.0)
    updates: list[tuple[bool, str, float | None]] = []
    link = BatteryLink(
        "FaseA",
        battery,
        settings,
        lambda link: updates.append((link.online, battery.transport, link.snapshot.soc)),
    )
    caplog.set_level("INFO")
    async with running(link):
        await until(lambda: link.online and battery.transport == "udp", 10)
        assert battery.snapshot.values["model"] == "VenusE 3.0"
        silent_at = time.monotonic()
        sim.outage(0, 1e6)  # the Local API stops answering; Modbus does not
        heard = udp.last_answer_at
        assert heard is not None
        await until(lambda: battery.transport == "modbus" and battery.modbus.last_answer_at, 15)
        assert battery.switches[-1].to == "modbus"
        assert "no answer over UDP for 1.5 s" in battery.switches[-1].reason
        # the switch comes after 1.5 s of silence, whatever the phase of the outage in the poll cadence
        assert battery.switches[-1].at - heard == pytest.approx(silent_for, abs=0.2)
        switch_over = battery.modbus.last_answer_at - silent_at  # type: ignore[operator]
        assert switch_over < settings.offline_window  # answered over Modbus before it counts as offline
        assert all(online for online, _, _ in updates[-3:])  # the battery never went unavailable
        # one battery across the switch: same model spelling, same MAC, the guard saw no jump
        assert battery.snapshot.values["model"] == "VenusE 3.0"
        assert battery.identity == sim.batteries[0].ble_mac
        assert not battery.snapshot.problems
        # what only the Local API reads: identity kept, live readings (the CT meter) out of date in time,
        # then unknown rather than a frozen number
        udp_only = battery.snapshot.values
        assert udp_only.get("wifi_ssid") is not None
        assert udp_only.get("meter_power") is not None
        await until(lambda: "meter_power" not in link.current_values(), 20)
        meter_age = battery.snapshot.age("meter_power")
        assert meter_age is not None
        assert meter_age > link.allowed_age("meter_power")
        current = link.current_values()
        assert current["wifi_ssid"] == udp_only["wifi_ssid"]
        assert current["soc"] == battery.snapshot.soc  # read over Modbus all along
        soc_age = battery.snapshot.age("soc")
        assert soc_age is not None
        assert soc_age < 2 * settings.poll_interval
        # a Passive sent over Modbus, then carried over to the Local API when it answers again
        assert (await battery.set_mode(PassiveMode(-600, 120))).ok
        assert sim.batteries[0].rs485_control
        sim.outage(0, 0)
        await until(lambda: battery.transport == "udp", 15)
        assert battery.switches[-1].reason == "the Local API answers again"
        assert not sim.batteries[0].rs485_control  # control released when leaving Modbus
        await until(lambda: sim.batteries[0].mode == "Passive", 5)
        assert sim.batteries[0].passive_power == -600
        await until(lambda: link.online and updates[-1][1] == "udp", 5)
    switches = [r.message for r in caplog.records if "now over" in r.message]
    assert len(switches) == 2  # each switch logged once, with its reason
    assert "now over modbus (was udp): no answer over UDP" in switches[0]
    assert "now over udp (was modbus): the Local API answers again" in switches[1]
    await battery.close()


def auto_battery(
    sim: MarstekSimulator,
    endpoint: UdpEndpoint,
    server: VenusModbusServer,
    poll_interval: float = 1.0,
    **kwargs: Any,
) -> tuple[FallbackBattery, BatteryLink]:
    """One battery on `auto` with 1 s polls: the switch to Modbus after 1.5 s of silence."""
    settings = LinkSettings(poll_interval=poll_interval, offline_after=3)
    silent_for = silence_before_switch(settings.poll_interval, settings.offline_window)
    battery = FallbackBattery(
        client_for(sim, endpoint), fast(server), name="FaseA", silent_for=silent_for, **kwargs
    )
    return battery, BatteryLink("FaseA", battery, settings)


async def test_auto_a_persons_auto_the_silent_local_api_missed_is_not_overridden_at_the_switch(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # The optimiser's Passive, then a person's Auto just as the Local API goes silent: the Auto is not
    # applied, but it supersedes the Passive, which must not come back over Modbus at the switch.
    sim = await make_sim(1, socs=[55.0])
    venus = sim.batteries[0]
    server = await sim.serve_modbus()
    battery, link = auto_battery(sim, endpoint, server)
    try:
        async with running(link):
            await until(lambda: link.online and battery.transport == "udp", 10)
            assert (await battery.set_mode(PassiveMode(600, 120))).ok  # the optimiser's
            sim.outage(0, 1e6)
            person = await battery.set_mode(AutoMode())
            assert person.status is WriteStatus.NOT_APPLIED, person
            await until(lambda: battery.transport == "modbus" and battery.modbus.last_answer_at, 15)
            await asyncio.sleep(2.0)  # two polls over Modbus
            assert not venus.rs485_control, "the superseded Passive was sent again over Modbus"
            assert (venus.force_mode, battery.modbus.lease) == (ForceMode.STOP, None)
    finally:
        await battery.close()


async def test_auto_a_command_during_the_carrying_over_goes_out_after_it(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # A slow Modbus (each reply 0.2 s late): the person's Auto comes while the running Passive is being
    # carried over to Modbus. It waits for the carrying and wins; the two never interleave.
    sim = await make_sim(1, socs=[55.0])
    venus = sim.batteries[0]
    server = await sim.serve_modbus()
    server.quirks.reply_delay = 0.2
    battery, link = auto_battery(sim, endpoint, server)
    try:
        async with running(link):
            await until(lambda: link.online and battery.transport == "udp", 10)
            assert (await battery.set_mode(PassiveMode(-600, 120))).ok
            sim.outage(0, 1e6)
            await until(lambda: battery.transport == "modbus", 15, every=0.001)  # the carrying starts
            person = await battery.set_mode(AutoMode())
            assert person.ok, person
            assert not venus.rs485_control
            assert battery.modbus.lease is None
            await asyncio.sleep(2 * 13 * 0.2)  # polls (13 requests) after it: nothing takes control again
            assert not venus.rs485_control
            assert venus.force_mode == ForceMode.STOP
    finally:
        await battery.close()


async def test_auto_releases_a_control_left_by_a_run_that_died_while_on_the_local_api(
    make_sim: SimFactory, endpoint: UdpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    # A run that died holding control, and a start on the Local API, which never polls Modbus. Modbus
    # cannot be reached at first: the release is tried again until it can.
    sim = await make_sim(1, socs=[55.0])
    venus = sim.batteries[0]
    venus.rs485_control, venus.force_mode, venus.force_discharge_w = True, ForceMode.DISCHARGE, 500
    server = await sim.serve_modbus()
    server.quirks.refuse_connections = True
    battery, link = auto_battery(sim, endpoint, server, release_retry=1.0)
    caplog.set_level("DEBUG", logger="marstek_webasto_addon.devices.marstek.fallback")
    try:
        async with running(link):
            await until(lambda: link.online and battery.transport == "udp", 10)

            def warned() -> list[str]:
                return [
                    r.levelname for r in caplog.records if "could not be checked over Modbus" in r.message
                ]

            await until(lambda: len(warned()) >= 2, 10)  # tried again
            assert venus.rs485_control
            assert battery.modbus.release_owed
            assert warned()[:2] == ["WARNING", "DEBUG"]  # said once, not at every attempt
            server.quirks.refuse_connections = False
            await until(lambda: not battery.modbus.release_owed, 5)  # released, verified by read-back
            assert not venus.rs485_control
            assert (venus.force_mode, venus.force_discharge_w) == (ForceMode.STOP, 0)
            assert battery.transport == "udp"  # still polled over the Local API
            assert battery.switches == []
            await until(lambda: server.current is None, 2)  # and the battery's Modbus slot left free
            connections = server.connections
            await asyncio.sleep(2.0)
            assert server.connections == connections  # done once
    finally:
        await battery.close()


async def test_auto_a_release_that_fails_when_leaving_modbus_is_done_when_modbus_answers(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # On Modbus with a forced charge; Modbus goes away just as the Local API comes back, so the release at
    # the switch fails. The forced power must not stay for good, lease or no lease.
    sim = await make_sim(1, socs=[55.0])
    venus = sim.batteries[0]
    server = await sim.serve_modbus()
    battery, link = auto_battery(sim, endpoint, server, probe_every=1.0, release_retry=1.0)
    try:
        async with running(link):
            await until(lambda: link.online and battery.transport == "udp", 10)
            sim.outage(0, 1e6)
            await until(lambda: battery.transport == "modbus" and battery.modbus.last_answer_at, 15)
            assert (await battery.set_mode(PassiveMode(-600, 120))).ok
            assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.CHARGE)
            server.quirks.refuse_connections = True
            battery.modbus.modbus.drop()  # the connection lost
            sim.outage(0, 0)
            await until(lambda: battery.transport == "udp", 10)
            assert venus.rs485_control  # the release at the switch could not be done
            assert battery.modbus.release_owed
            server.quirks.refuse_connections = False
            await until(lambda: not venus.rs485_control, 5)
            assert venus.force_mode == ForceMode.STOP
            # the rest of the charge over the Local API, the battery's own countdown
            await until(lambda: venus.mode == "Passive" and venus.passive_power == -600, 5)
            assert battery.transport == "udp"
    finally:
        await battery.close()


async def test_a_work_mode_that_does_not_get_through_ends_the_modbus_lease(make_sim: SimFactory) -> None:
    # A person's Auto while the battery cannot be reached: the lease it supersedes is not taken again when
    # the battery answers, and the control is released at that poll.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        await owe_a_release(client, venus, server)
        assert (await client.read()).any_answer
        assert not venus.rs485_control
        assert (venus.force_mode, client.lease, client.release_owed) == (ForceMode.STOP, None, False)
        await client.read()
        assert not venus.rs485_control  # and stays so


# probe --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["venus_e2_v156", "venus_e3_v150"])
async def test_probe_over_modbus_prints_the_values_and_the_control_registers(
    make_sim: SimFactory, capsys: pytest.CaptureFixture[str], profile: str
) -> None:
    sim = await make_sim(1, socs=[42.0], profile=profile)
    server = await sim.serve_modbus()
    args = argparse.Namespace(
        target=None,
        transport="modbus",
        host="127.0.0.1",
        port=server.port,
        unit_id=1,
        generation="auto",
        timeout=2.0,
        json=True,
    )
    assert await probe(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["map"] == server.generation.value  # chosen from the device name
    assert document["status"]["soc"] == 42
    assert document["device"]["ble_mac"] == sim.batteries[0].ble_mac
    assert document["control"]["rs485_control"] == Rs485.OFF
    assert document["control"]["work_mode"] == 1
    args.json = False
    assert await probe(args) == 0
    human = capsys.readouterr().out
    assert "over Modbus TCP" in human
    assert "rs485_control" in human
    assert not sim.batteries[0].rs485_control  # a probe writes nothing
    args.port = free_port(socket.SOCK_STREAM)
    assert await probe(args) == 1
    assert "cannot connect" in capsys.readouterr().err
