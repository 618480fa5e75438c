"""A Venus over Modbus: a poll that fails altogether, once the SOC it goes on is too old, leaves the add-on
as blind as one that answered without the SOC (simulator on 127.0.0.1).

Over Modbus the add-on alone keeps the discharge floor, from the SOC it reads. After an outage (no reply, a
link that is down) longer than `soc_stale_s` the last reading is stale and the battery discharged on all
along, so a forced discharge idles at the first poll that reaches the battery again, and goes on only once
the SOC is read at two polls in a row. A single failed poll (a network chip that resets) pauses nothing.
Nothing is written while the battery cannot be reached. A poll one of the add-on's own commands overlapped
does not take the forced mode again either: its readings may predate the command's writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

import pytest

from marstek_webasto_addon.devices.marstek.commands import PassiveMode
from marstek_webasto_addon.devices.marstek.modbus.battery import ModbusBattery
from marstek_webasto_addon.devices.marstek.modbus.registers import ForceMode
from marstek_webasto_addon.devices.marstek.simulator import SimulatedBattery, VenusModbusServer

from .conftest import SimFactory
from .test_venus_transport import venus_on_modbus

pytestmark = pytest.mark.timeout(60)

Fault = Literal["no reply", "link down"]
IDLE = (True, ForceMode.STOP, 0)  # held under RS485 control, no forced power


def forced(venus: SimulatedBattery) -> tuple[bool, int, int]:  # (the simulator keeps the mode as a number)
    return venus.rs485_control, venus.force_mode, venus.force_discharge_w


@contextlib.asynccontextmanager
async def unreachable(
    server: VenusModbusServer, client: ModbusBattery, fault: Fault, *, lasting: bool = True
) -> AsyncIterator[None]:
    """The battery cannot be reached inside the block: it leaves requests unanswered past the client's
    timeout (1 s), or the link is down (connections refused); it answers again after. `lasting`: longer
    than the SOC may be old (the time itself is not waited for)."""
    stale_s = client.soc_stale_s
    if lasting:
        client.soc_stale_s = 0.0
    if fault == "no reply":
        server.quirks.reply_delay = 3.0
    else:
        server.quirks.refuse_connections = True
        client.modbus.drop()
    try:
        yield
    finally:
        server.quirks.reply_delay = 0.0
        server.quirks.refuse_connections = False
        client.soc_stale_s = stale_s


async def discharging(venus: SimulatedBattery, client: ModbusBattery, watts: int) -> None:
    assert (await client.read()).any_answer
    assert (await client.set_mode(PassiveMode(watts, 900))).ok
    assert forced(venus) == (True, ForceMode.DISCHARGE, watts)


@pytest.mark.parametrize("fault", ["no reply", "link down"])
async def test_a_forced_discharge_idles_after_a_failed_poll_until_the_soc_is_read_twice(
    make_sim: SimFactory, fault: Fault
) -> None:
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        await discharging(venus, client, 800)
        arrived = len(server.request_times)
        async with unreachable(server, client, fault):
            report = await client.read()
        assert not report.any_answer
        # at most the read that went unanswered: nothing is written on a dead link
        assert len(server.request_times) - arrived <= 1
        assert forced(venus) == (True, ForceMode.DISCHARGE, 800)  # (out of reach, it discharged on)
        assert (await client.read()).any_answer
        assert forced(venus) == IDLE, "the discharge went on at the first reading after the outage"
        assert client.lease is not None, "the lease must outlive the pause"
        assert (await client.read()).any_answer
        assert forced(venus) == (True, ForceMode.DISCHARGE, 800)
        assert not client.soc_blind


async def test_a_discharge_command_after_a_failed_poll_idles_until_the_soc_is_read_twice(
    make_sim: SimFactory,
) -> None:
    # The battery answers again, and the optimiser's next set-point reaches it before any poll does.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        await discharging(venus, client, 800)
        async with unreachable(server, client, "link down"):
            assert not (await client.read()).any_answer
        assert (await client.set_mode(PassiveMode(900, 900))).ok
        assert forced(venus) == IDLE, "a command after the outage discharged on the stale SOC"
        assert (await client.read()).any_answer
        assert forced(venus) == IDLE
        assert (await client.read()).any_answer
        assert forced(venus) == (True, ForceMode.DISCHARGE, 900)


@pytest.mark.parametrize("fault", ["no reply", "link down"])
async def test_a_single_failed_poll_with_a_recent_soc_pauses_nothing(
    make_sim: SimFactory, fault: Fault
) -> None:
    # A network chip that resets now and then: the SOC the discharge goes on is seconds old.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        await discharging(venus, client, 800)
        async with unreachable(server, client, fault, lasting=False):
            assert not (await client.read()).any_answer
        assert not client.soc_blind
        assert (await client.read()).any_answer
        assert forced(venus) == (True, ForceMode.DISCHARGE, 800), "one failed poll paused the discharge"


async def test_long_outages_between_single_readings_never_resume_the_discharge(make_sim: SimFactory) -> None:
    # A link that comes and goes for long never gives two readings in a row: the SOC is never trusted again.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        await discharging(venus, client, 800)
        for _ in range(3):
            async with unreachable(server, client, "link down"):
                assert not (await client.read()).any_answer
            assert (await client.read()).any_answer
            assert forced(venus) == IDLE, "the discharge went on between two failed polls"
        assert client.lease is not None


async def test_two_readings_in_a_row_are_needed_even_across_a_brief_failure(make_sim: SimFactory) -> None:
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        await discharging(venus, client, 800)
        async with unreachable(server, client, "link down"):
            assert not (await client.read()).any_answer
        assert (await client.read()).any_answer  # one reading
        async with unreachable(server, client, "link down", lasting=False):
            assert not (await client.read()).any_answer  # a brief failure breaks the run
        assert (await client.read()).any_answer
        assert forced(venus) == IDLE, "the discharge went on after readings that were not in a row"
        assert (await client.read()).any_answer
        assert forced(venus) == (True, ForceMode.DISCHARGE, 800)


async def test_a_command_on_a_soc_no_poll_read_lately_idles_until_it_is_read_twice(
    make_sim: SimFactory,
) -> None:
    # A renewal, or a switch from the Local API, between polls that stopped reading the SOC for a while.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, _, client):
        assert (await client.read()).any_answer
        client.soc_stale_s = 0.5
        await asyncio.sleep(0.6)
        assert (await client.set_mode(PassiveMode(900, 900))).ok
        assert forced(venus) == IDLE, "a discharge began on a SOC no poll had read lately"
        assert (await client.read()).any_answer
        assert forced(venus) == IDLE
        assert (await client.read()).any_answer
        assert forced(venus) == (True, ForceMode.DISCHARGE, 900)


async def test_a_poll_a_command_overlapped_does_not_take_the_forced_mode_again(
    make_sim: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Its control registers may have been read before the command's writes landed: a "battery that left the
    # forced mode" there is the command's own change under way, and writing the lease again from the poll
    # interleaved with the command's writes (and spoiled its read-back). A clean poll still takes it again.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, _, client):
        await discharging(venus, client, 800)
        venus.force_mode = ForceMode.STOP  # what a poll read before a command's force_mode write landed
        await client._poll()
        await client.keep_lease(settled=False)
        assert venus.force_mode == ForceMode.STOP, "a poll a command overlapped wrote the lease again"
        assert "left the forced mode" not in caplog.text
        await client.keep_lease(settled=True)
        assert forced(venus) == (True, ForceMode.DISCHARGE, 800)
        assert "left the forced mode" in caplog.text
