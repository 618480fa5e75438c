"""A Venus over Modbus: a lease that runs while the stored work mode is not known yields to a person's work
mode all the same (simulator on 127.0.0.1, the writes recorded as the battery receives them).

The add-on tells a person's work mode from the battery dropping control by itself by comparing 43000 with
the stored mode it last set or read (`_work_mode`). That mode is not known when the first command is a
Passive (a Passive carried over from the Local API at a switch, before any Modbus poll without a lease),
or after a work mode write that was not applied. A control read off after the lease held it is then taken
for a person's choice: the lease ends, control is not taken again, and the mode read becomes the stored
one. A take of the add-on's own that did not land, and a release of its own, are no person's choice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from marstek_webasto_addon.devices.marstek.commands import AiMode, PassiveMode
from marstek_webasto_addon.devices.marstek.modbus.battery import ModbusBattery
from marstek_webasto_addon.devices.marstek.modbus.registers import ForceMode, Rs485, WorkMode
from marstek_webasto_addon.devices.marstek.simulator import VenusModbusServer
from marstek_webasto_addon.devices.marstek.simulator.device import SimulatedBattery
from marstek_webasto_addon.devices.marstek.simulator.modbus_map import ILLEGAL_VALUE, ModbusRefusal
from marstek_webasto_addon.devices.outcome import WriteStatus

from .conftest import SimFactory
from .test_venus_modbus_write_lock import recorded_writes
from .test_venus_transport import venus_on_modbus

pytestmark = pytest.mark.timeout(60)

RS485, WORK_MODE, FORCE_MODE, CHARGE_W = 42000, 43000, 42010, 42020
IDLE = [(FORCE_MODE, ForceMode.STOP), (CHARGE_W, 0), (42021, 0)]  # the yield clears the set-points


def taking(writes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The writes that take RS485 control or set a forced power."""
    return [
        (address, value)
        for address, value in writes
        if (address == RS485 and value == Rs485.ON) or (address == FORCE_MODE and value != ForceMode.STOP)
    ]


def outside_said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "outside the add-on" in r.getMessage()]


async def first_command_a_passive(
    venus: SimulatedBattery, server: VenusModbusServer, client: ModbusBattery
) -> None:
    """A Passive before any poll (as when `transport: auto` carries it over at a switch): no stored mode.
    (A forced charge: a forced discharge would idle, no SOC having been read yet.)"""
    assert (await client.set_mode(PassiveMode(-600, 900))).ok


async def after_a_work_mode_not_applied(
    venus: SimulatedBattery, server: VenusModbusServer, client: ModbusBattery
) -> None:
    """A poll learns the stored mode (Auto); a work mode the battery refuses makes it unknown; then a
    Passive."""
    assert (await client.read()).any_answer
    assert client._work_mode is WorkMode.SELF_CONSUMPTION
    write = server.registers.write

    def refuse_43000(address: int, value: int) -> None:
        if address == WORK_MODE:
            raise ModbusRefusal(ILLEGAL_VALUE, "refused")
        write(address, value)

    server.registers.write = refuse_43000  # type: ignore[method-assign]
    assert not (await client.set_mode(AiMode())).ok
    server.registers.write = write  # type: ignore[method-assign]
    assert venus.mode == "Auto"
    assert (await client.set_mode(PassiveMode(-600, 900))).ok


Setup = Callable[[SimulatedBattery, VenusModbusServer, ModbusBattery], Awaitable[None]]


@pytest.mark.parametrize("setup", [first_command_a_passive, after_a_work_mode_not_applied])
async def test_a_work_mode_picked_in_the_app_ends_a_lease_whose_stored_mode_is_not_known(
    make_sim: SimFactory, caplog: pytest.LogCaptureFixture, setup: Setup
) -> None:
    caplog.set_level("INFO")
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        await setup(venus, server, client)
        assert client._work_mode is None, "the stored mode is known: not the case under test"
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.CHARGE)
        writes = recorded_writes(server)
        # The first poll after the take reads control on: nothing changed, nothing written.
        assert (await client.read()).any_answer
        assert (writes, client.lease is not None) == ([], True)
        server.registers.app_sets_work_mode("AI")  # the person's tap in the Marstek app
        for _ in range(3):
            assert (await client.read()).any_answer
        assert taking(writes) == [], f"the lease took RS485 control again over the person's AI: {writes}"
        assert writes == IDLE, writes  # the forced set-points cleared, control never written
        assert not venus.rs485_control
        assert venus.mode == "AI"
        assert client.lease is None
        assert client._work_mode is WorkMode.AI
        assert client.snapshot.values.get("mode") == "AI"
        said = outside_said(caplog)
        assert len(said) == 1, said
        assert "stored work mode was not known" in said[0], said[0]


async def test_a_take_that_did_not_land_is_tried_again_while_the_stored_mode_is_not_known(
    make_sim: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The battery accepts the writes but ignores 42000 (its read-back reads control off): the lease never
    # held control, so a poll that reads it off sees the add-on's own take that did not land.
    caplog.set_level("INFO")
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        write = server.registers.write

        def ignore_rs485(address: int, value: int) -> None:
            if address != RS485:
                write(address, value)

        server.registers.write = ignore_rs485  # type: ignore[method-assign]
        outcome = await client.set_mode(PassiveMode(-600, 900))
        assert outcome.status is WriteStatus.NOT_APPLIED, outcome
        server.registers.write = write  # type: ignore[method-assign]
        assert (client._work_mode, client.lease is not None, venus.rs485_control) == (None, True, False)
        assert (await client.read()).any_answer
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.CHARGE)
        assert client.lease is not None
        assert outside_said(caplog) == []


async def test_a_release_of_the_add_on_s_own_is_no_person_s_choice(
    make_sim: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The lease's end: its release turns control off, but the battery ignores one set-point (read-back
    # not met), so the lease stays. The next poll reads control off with no stored mode known: that is
    # the add-on's own release, done again, not a person's mode.
    caplog.set_level("INFO")
    now = [0.0]
    async with venus_on_modbus(make_sim, soc=55.0, clock=lambda: now[0]) as (venus, server, client):
        assert (await client.set_mode(PassiveMode(-600, 60))).ok
        assert client._work_mode is None
        assert (await client.read()).any_answer
        write = server.registers.write

        def ignore_charge_power(address: int, value: int) -> None:
            if address != CHARGE_W:
                write(address, value)

        server.registers.write = ignore_charge_power  # type: ignore[method-assign]
        now[0] = 61.0
        assert (await client.read()).any_answer  # the release: control off, not verified
        assert not venus.rs485_control
        assert client.lease is not None
        server.registers.write = write  # type: ignore[method-assign]
        assert (await client.read()).any_answer
        assert client.lease is None
        assert not venus.rs485_control
        assert (venus.force_mode, venus.force_charge_w) == (ForceMode.STOP, 0)
        assert outside_said(caplog) == []
        assert any("ended: control released" in r.getMessage() for r in caplog.records)
