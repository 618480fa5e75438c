"""A Venus over Modbus when the device misbehaves (simulators on 127.0.0.1).

Covers: another battery at a pinned battery's address (refused at every poll, its control untouched); a
release still owed at a clean stop; a refused read of a register an operation does not check (`release`
and Auto still done); a Venus A/D that closes the connection after an exception reply (reopened, so a
lease still ends), and a lease past its end when a poll fails; the Local API's readings kept across the
switch to Modbus when the register map is chosen there; identity registers the firmware has not filled in
(0xFFFF) taken as unread; and `release` through a gateway reaching only its own unit id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.cli import release
from marstek_webasto_addon.devices.marstek.commands import AutoMode, PassiveMode
from marstek_webasto_addon.devices.marstek.datapoints import Value
from marstek_webasto_addon.devices.marstek.fallback import FallbackBattery
from marstek_webasto_addon.devices.marstek.modbus.client import ABSENT_AFTER, ModbusLinkError
from marstek_webasto_addon.devices.marstek.modbus.decode import screen_identity
from marstek_webasto_addon.devices.marstek.modbus.registers import ForceMode
from marstek_webasto_addon.devices.marstek.protocol import IdentityMismatch
from marstek_webasto_addon.devices.marstek.simulator import VenusModbusServer
from marstek_webasto_addon.devices.marstek.simulator.modbus_map import ILLEGAL_ADDRESS, ModbusRefusal
from marstek_webasto_addon.devices.marstek.simulator.modbus_server import _Handler
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint

from .conftest import SimFactory, client_for
from .test_venus_transport import fast, owe_a_release, venus_on_modbus

pytestmark = pytest.mark.timeout(60)


def refuse_reads(server: VenusModbusServer, first: int, last: int) -> None:
    """The device answers reads touching `first..last` with exception 2 (a register this firmware lacks)."""
    registers = server.registers
    original = registers.read

    def read(address: int, count: int) -> list[int]:
        if address <= last and address + count > first:
            raise ModbusRefusal(ILLEGAL_ADDRESS, f"{first} is not a register on this firmware")
        return original(address, count)

    registers.read = read  # type: ignore[method-assign]


async def test_a_battery_that_is_not_the_pinned_one_stays_refused_at_the_next_poll(
    make_sim: SimFactory,
) -> None:
    # The address now belongs to another battery (DHCP), held in RS485 control by its own controller: the
    # connection that read its MAC is dropped, so every poll reads the MAC again and refuses it.
    sim = await make_sim(1, socs=[55.0])
    other = sim.batteries[0]
    other.rs485_control, other.force_mode, other.force_charge_w = True, ForceMode.CHARGE, 700
    server = await sim.serve_modbus()
    client = fast(server, ble_mac="0011223344ff")  # ours, pinned
    try:
        first = await client.read()
        assert not first.any_answer
        assert any(isinstance(e, IdentityMismatch) for e in first.errors.values())
        second = await client.read()
        assert not second.any_answer, "the second poll reads the wrong battery as if it were ours"
        assert other.rs485_control, "the other battery's control was released by our poll"
    finally:
        await client.close()


async def test_a_clean_stop_releases_a_control_whose_release_is_still_owed(make_sim: SimFactory) -> None:
    # A forced discharge; the battery cannot be reached when a person's Auto comes (the lease ends, the
    # release is owed). The battery answers again, then the add-on stops cleanly: the s6 finish script
    # runs `release` only after a crash, so the clean stop itself releases the control.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        await owe_a_release(client, venus, server)
        assert client.release_owed
        assert client.lease is None
    assert not venus.rs485_control, "a clean stop left the forced discharge on"


def options_file(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "options.json"
    entry = {"name": "FaseA", "host": "127.0.0.1", "transport": "modbus", "modbus_port": port}
    path.write_text(json.dumps({"batteries": [entry]}))
    return path


async def test_release_is_not_stopped_by_a_refused_read_of_a_register_it_does_not_need(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # A firmware that answers the maximum-power registers (44002/44003, read for the limits only) with an
    # exception: 42000/42010/42020 answer, so the forced discharge a dead bridge left is released, and the
    # refused group is only a problem.
    sim = await make_sim(1, socs=[55.0])
    venus = sim.batteries[0]
    venus.rs485_control, venus.force_mode, venus.force_discharge_w = True, ForceMode.DISCHARGE, 800
    server = await sim.serve_modbus()
    refuse_reads(server, 44002, 44003)
    code = await release.release(argparse.Namespace(options=options_file(tmp_path, server.port), budget=5.0))
    assert not venus.rs485_control, "the forced discharge is still on"
    assert (venus.force_mode, venus.force_discharge_w) == (ForceMode.STOP, 0)
    assert code == 0


async def test_auto_is_applied_when_a_register_it_does_not_need_refuses_reads(make_sim: SimFactory) -> None:
    # Auto checks 42000, 42010/42020 and 43000: a refused 44002/44003 neither stops the release nor Auto.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        assert (await client.read()).any_answer
        assert (await client.set_mode(PassiveMode(800, 900))).ok
        refuse_reads(server, 44002, 44003)
        outcome = await client.set_mode(AutoMode())
        assert not venus.rs485_control
        assert outcome.ok, outcome


def close_after_exceptions(server: VenusModbusServer) -> None:
    """The Venus D's quirk (docs/marstek-modbus.md §6): it closes the connection after an exception reply."""

    class Closing(_Handler):
        def server_send(self, pdu: Any, addr: Any) -> None:
            super().server_send(pdu, addr)
            if pdu is not None and pdu.isError() and self.transport is not None:
                self.transport.close()

    def new_connection() -> _Handler:
        traces = (server.trace_packet, server.trace_pdu, server.trace_connect)
        return Closing(server, *traces)  # type: ignore[no-untyped-call]

    server.callback_new_connection = new_connection  # type: ignore[method-assign]


async def test_a_lease_ends_on_a_battery_that_refuses_one_live_group_and_drops_the_connection(
    make_sim: SimFactory,
) -> None:
    # A Venus A/D (closes the connection after an exception) whose temperature block is refused: the poll
    # opens the connection again and reads on, so the control registers are read and the forced discharge
    # ends with its lease.
    async with venus_on_modbus(make_sim, soc=55.0, profile="venus_a_v150") as (venus, server, client):
        assert (await client.read()).any_answer
        assert (await client.set_mode(PassiveMode(800, 2))).ok
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.DISCHARGE)
        refuse_reads(server, 35010, 35010)
        close_after_exceptions(server)
        client.modbus.drop()  # (the quirk holds from the next connection on)
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline and venus.rs485_control:
            await client.read()
            await asyncio.sleep(0.3)
        assert not venus.rs485_control, "the forced discharge outlived its lease"


async def test_a_lease_past_its_end_is_released_when_the_poll_fails(make_sim: SimFactory) -> None:
    # The poll loses its connection (a stall, a reset): the lease that is over is released all the same,
    # on a new connection, instead of waiting for a poll that succeeds.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, _server, client):
        assert (await client.read()).any_answer
        assert (await client.set_mode(PassiveMode(800, 1))).ok
        await asyncio.sleep(1.1)

        async def lost() -> None:
            client.modbus.drop()
            raise ModbusLinkError("the connection went")

        client.modbus.poll = lost  # type: ignore[assignment,method-assign]
        report = await client.read()
        assert not report.any_answer
        assert not venus.rs485_control, "the forced discharge outlived its lease"
        assert client.lease is None


def test_identity_registers_that_are_not_filled_in_are_unread() -> None:
    values: dict[str, Value] = {"firmware": 0, "ble_mac": "000000000000", "model": "VNSE3-0"}
    assert len(screen_identity(values)) == 2
    assert values == {"model": "VNSE3-0"}
    values = {"firmware": 1476, "ble_mac": " 02A1B2C3D400 "}
    assert screen_identity(values) == []
    assert values == {"firmware": 1476, "ble_mac": "02a1b2c3d400"}  # the Local API's spelling


@pytest.mark.parametrize("profile", ["venus_e3_v150", "venus_e2_v156"])
async def test_auto_keeps_what_the_local_api_read_across_the_switch_to_modbus(
    make_sim: SimFactory, endpoint: UdpEndpoint, profile: str
) -> None:
    # One battery across the switch (the v3 case is tested in test_venus_transport.py): the snapshot the
    # Local API handed over is kept whichever register map the device name picks.
    sim = await make_sim(1, socs=[55.0], profile=profile)
    server = await sim.serve_modbus()
    battery = FallbackBattery(client_for(sim, endpoint), fast(server), name="FaseA", silent_for=0.5)
    try:
        assert (await battery.read()).any_answer
        handed = dict(battery.snapshot.values)
        assert handed.get("wifi_ssid") is not None
        sim.outage(0, 1e6)
        for _ in range(20):
            await battery.read(deadline=time.monotonic() + 3.0)
            if battery.transport == "modbus" and battery.modbus.last_answer_at:
                break
        assert battery.transport == "modbus"
        values = battery.snapshot.values
        assert values.get("wifi_ssid") == handed["wifi_ssid"], "the Local API's readings were dropped"
        assert values.get("model") == handed["model"]
    finally:
        await battery.close()


async def test_auto_keeps_the_local_apis_readings_when_modbus_is_first_reached_at_the_switch(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # A Venus E v2 behind an RS485 gateway that is off while the add-on starts: the map is chosen from the
    # device name only at the switch, and the snapshot the Local API handed over is carried to it.
    sim = await make_sim(1, socs=[55.0], profile="venus_e2_v156")
    server = await sim.serve_modbus()
    server.quirks.refuse_connections = True
    battery = FallbackBattery(client_for(sim, endpoint), fast(server), name="FaseA", silent_for=0.5)
    try:
        assert (await battery.read()).any_answer
        await asyncio.sleep(0.3)  # the start's check of RS485 control fails: Modbus cannot be reached
        handed = dict(battery.snapshot.values)
        assert handed.get("wifi_ssid") is not None
        server.quirks.refuse_connections = False
        sim.outage(0, 1e6)
        for _ in range(20):
            await battery.read(deadline=time.monotonic() + 3.0)
            if battery.transport == "modbus" and battery.modbus.last_answer_at:
                break
        assert battery.transport == "modbus"
        values = battery.snapshot.values
        assert values.get("wifi_ssid") == handed["wifi_ssid"], "the Local API's readings were dropped"
        assert values.get("model") == handed["model"]
    finally:
        await battery.close()


def override_words(server: VenusModbusServer, words: dict[int, int]) -> None:
    """Registers that read a fixed word (0xFFFF: a value the firmware has not filled in)."""
    registers = server.registers
    original = registers.read

    def read(address: int, count: int) -> list[int]:
        got = original(address, count)
        return [words.get(address + i, word) for i, word in enumerate(got)]

    registers.read = read  # type: ignore[method-assign]


async def test_a_firmware_register_that_reads_0xffff_is_not_taken_as_the_version(
    make_sim: SimFactory,
) -> None:
    # 0xFFFF is a register the firmware has not filled in: unread, so it picks neither limits nor features.
    sim = await make_sim(1, socs=[55.0])
    server = await sim.serve_modbus()
    override_words(server, {30200: 0xFFFF})
    client = fast(server)
    try:
        assert (await client.read()).any_answer
        assert client.snapshot.values.get("firmware") != 65535, "firmware 65535 reached the snapshot"
        assert client.snapshot.firmware.ver != 65535
    finally:
        await client.close()


async def test_a_mac_that_reads_0xffff_does_not_become_the_batterys_identity(make_sim: SimFactory) -> None:
    # Only 12 hex digits are a MAC: anything else is unread, and the real MAC read later becomes the identity.
    sim = await make_sim(1, socs=[55.0])
    venus = sim.batteries[0]
    server = await sim.serve_modbus()
    override_words(server, dict.fromkeys(range(30304, 30310), 0xFFFF))
    client = fast(server)
    try:
        assert (await client.read()).any_answer
        assert client.identity in (None, venus.ble_mac), f"identity {client.identity!r}"
        del server.registers.read  # the MAC reads right again, at the next connection
        client.modbus.drop()
        report = await client.read()
        assert report.any_answer, f"our own battery taken for another: {report.errors}"
    finally:
        await client.close()


async def test_release_through_a_gateway_reaches_only_its_own_unit_id(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # Two Venus E v2 on one RS485 bus behind a gateway, at unit ids 1 and 2: only unit 2 is released.
    from pymodbus.server import ModbusTcpServer

    from marstek_webasto_addon.devices.marstek.simulator.modbus_map import VenusRegisterMap
    from marstek_webasto_addon.devices.marstek.simulator.modbus_server import ModbusQuirks, make_device

    from .conftest import free_port

    sim = await make_sim(2, socs=[55.0, 55.0], profile="venus_e2_v156")
    first, second = sim.batteries
    devices = []
    for unit, venus in ((1, first), (2, second)):
        venus.rs485_control, venus.force_mode, venus.force_discharge_w = True, ForceMode.DISCHARGE, 600
        registers = VenusRegisterMap(venus)
        registers.unit_id = unit
        devices.append(make_device(registers, ModbusQuirks()))
    port = free_port(socket.SOCK_STREAM)
    gateway = ModbusTcpServer(devices, address=("127.0.0.1", port))
    await gateway.serve_forever(background=True)
    try:
        path = tmp_path / "options.json"
        entry = {"name": "FaseB", "host": "127.0.0.1", "transport": "modbus", "modbus_port": port,
                 "modbus_unit_id": 2}  # fmt: skip
        path.write_text(json.dumps({"batteries": [entry]}))
        assert await release.release(argparse.Namespace(options=path, budget=5.0)) == 0
        assert not second.rs485_control
        assert (second.force_mode, second.force_discharge_w) == (ForceMode.STOP, 0)
        assert first.rs485_control, "the release reached the other unit on the bus"
    finally:
        await gateway.shutdown()  # type: ignore[no-untyped-call]


async def test_a_register_the_firmware_lacks_is_not_asked_for_at_every_poll(
    make_sim: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # A Venus A/D closes the connection after every exception reply and takes a new one only ~2 s later:
    # a register its firmware lacks (exception 2), asked for at every poll, cost each poll 2 s and a warning.
    # Lacking means refused at consecutive polls and never answered: a passing refusal is not.
    sim = await make_sim(1, socs=[55.0], profile="venus_a_v150")
    server = await sim.serve_modbus()
    asked: list[int] = []
    refuse_reads(server, 35010, 35010)
    refusing = server.registers.read

    def read(address: int, count: int) -> list[int]:
        if address <= 35010 < address + count:
            asked.append(address)
        return refusing(address, count)

    server.registers.read = read  # type: ignore[method-assign]
    client = fast(server)
    try:
        for _ in range(6):
            assert (await client.read()).any_answer
        assert len(asked) == ABSENT_AFTER  # then taken as lacking: not asked at every poll
        assert any("35010" in problem for problem in client.modbus.snapshot.problems)
        warned = [r for r in caplog.records if r.levelname == "WARNING" and "35010" in r.getMessage()]
        assert len(warned) == 1
    finally:
        await client.close()


async def test_a_live_register_refused_once_is_asked_again_at_the_next_poll(make_sim: SimFactory) -> None:
    # A battery booting, or a gateway, may refuse a live register for a moment: it must not go unread for
    # long (its SOC shown unknown, its control registers stale).
    sim = await make_sim(1, socs=[55.0])
    server = await sim.serve_modbus()
    asked: list[int] = []
    reading = server.registers.read

    def read(address: int, count: int) -> list[int]:
        if address <= 34002 < address + count:
            asked.append(address)
            if len(asked) == 2:
                raise ModbusRefusal(ILLEGAL_ADDRESS, "34002 refused for a moment")
        return reading(address, count)

    server.registers.read = read  # type: ignore[method-assign]
    client = fast(server)
    try:
        for _ in range(4):
            await client.read()
        assert len(asked) == 4
    finally:
        await client.close()
