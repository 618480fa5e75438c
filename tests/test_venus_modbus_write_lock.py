"""A Venus over Modbus: a command's writes and the lease's upkeep after a poll never interleave (simulator on
127.0.0.1, the writes recorded as the battery receives them).

A clean poll that finds the battery out of the forced mode takes it again (`keep_lease(settled=True)`): a few
writes and a read-back. A command that starts meanwhile waits for them, then writes its own, so its read-back
sees its own set-points and the battery ends on the command's, not the old lease's. The other way round, an
upkeep that comes while a command is writing skips that round at once: the poll task never waits for a
command, which decides.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from marstek_webasto_addon.devices.marstek.commands import PassiveMode
from marstek_webasto_addon.devices.marstek.modbus.battery import ModbusBattery
from marstek_webasto_addon.devices.marstek.modbus.registers import ForceMode, Rs485
from marstek_webasto_addon.devices.marstek.simulator import VenusModbusServer
from marstek_webasto_addon.devices.outcome import WriteOutcome

from .conftest import SimFactory, until
from .test_venus_modbus_failed_poll import discharging, forced
from .test_venus_transport import venus_on_modbus

pytestmark = pytest.mark.timeout(60)

RS485, FORCE_MODE, CHARGE_W, DISCHARGE_W = 42000, 42010, 42020, 42021
RETAKE_800 = [(RS485, Rs485.ON), (CHARGE_W, 0), (DISCHARGE_W, 800), (FORCE_MODE, ForceMode.DISCHARGE)]
CHARGE_600 = [(RS485, Rs485.ON), (DISCHARGE_W, 0), (CHARGE_W, 600), (FORCE_MODE, ForceMode.CHARGE)]


def recorded_writes(server: VenusModbusServer) -> list[tuple[int, int]]:
    """Every register write, in the order the battery takes them."""
    writes: list[tuple[int, int]] = []
    write = server.registers.write

    def recording(address: int, value: int) -> None:
        write(address, value)
        writes.append((address, value))

    server.registers.write = recording  # type: ignore[method-assign]
    return writes


async def left_the_forced_mode(client: ModbusBattery) -> None:
    """The battery dropped the forced discharge by itself, and a poll read it."""
    await client._poll()
    assert client.modbus.control.force_mode is ForceMode.STOP


async def test_a_command_that_starts_during_a_retake_of_the_forced_mode_writes_after_it(
    make_sim: SimFactory,
) -> None:
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        await discharging(venus, client, 800)
        venus.force_mode = ForceMode.STOP
        await left_the_forced_mode(client)
        writes = recorded_writes(server)
        commands: list[asyncio.Task[WriteOutcome]] = []
        # The optimiser's next set-point starts as soon as the re-take's first write has landed.
        retake = asyncio.create_task(client.keep_lease(settled=True))
        await until(lambda: writes, 5, every=0.0)
        commands.append(asyncio.create_task(client.set_mode(PassiveMode(-600, 900))))
        await retake
        outcome = await commands[0]
        assert writes == RETAKE_800 + CHARGE_600, "the command's writes interleaved with the re-take's"
        assert outcome.ok, outcome
        assert forced(venus) == (True, ForceMode.CHARGE, 0)
        assert venus.force_charge_w == 600
        assert client.lease is not None
        assert client.lease.power == -600


async def test_an_upkeep_while_a_command_writes_skips_the_round_at_once(make_sim: SimFactory) -> None:
    # A slow battery (each reply 0.2 s late): the command's writes take about a second. A poll's upkeep that
    # comes meanwhile neither waits for them nor writes beside them.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        await discharging(venus, client, 800)
        venus.force_mode = ForceMode.STOP
        await left_the_forced_mode(client)
        writes = recorded_writes(server)
        server.quirks.reply_delay = 0.2
        command = asyncio.create_task(client.set_mode(PassiveMode(-600, 900)))
        await until(lambda: writes, 5, every=0.0)
        started = time.monotonic()
        await client.keep_lease(settled=True)
        assert time.monotonic() - started < 0.1, "the poll's upkeep waited for the command"
        outcome = await command
        assert writes == CHARGE_600, "the upkeep wrote beside the command"
        assert outcome.ok, outcome
        assert forced(venus) == (True, ForceMode.CHARGE, 0)
        assert venus.force_charge_w == 600
