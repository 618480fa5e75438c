"""A Venus over Modbus: a person's work mode ends the add-on's RS485 lease, and a register a firmware
update removed is asked for as rarely as one the firmware never had (simulators on 127.0.0.1).

Covers: a work mode picked in the Marstek app while a lease runs (control not taken again, the person's mode
kept, said once), beside the battery dropping control by itself (taken again, also after a work mode the
add-on set) and a poll overlapping the add-on's own switch (no outside change); a register that answered
and is then refused as an illegal address (backed off, asked again after the back-off, back when it
answers); and the refusals that never hide a register (a battery refusing every read while it boots,
another exception code, a read that gets no reply).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from marstek_webasto_addon.devices.marstek.commands import AiMode, PassiveMode
from marstek_webasto_addon.devices.marstek.modbus import client as modbus_client
from marstek_webasto_addon.devices.marstek.modbus.battery import ModbusBattery
from marstek_webasto_addon.devices.marstek.modbus.client import (
    ABSENT_AFTER,
    ABSENT_RETRY_S,
    ModbusLinkError,
)
from marstek_webasto_addon.devices.marstek.modbus.readplan import poll_plan
from marstek_webasto_addon.devices.marstek.modbus.registers import ForceMode, Function, Generation
from marstek_webasto_addon.devices.marstek.simulator import VenusModbusServer
from marstek_webasto_addon.devices.marstek.simulator.modbus_map import ILLEGAL_ADDRESS, ModbusRefusal
from marstek_webasto_addon.devices.outcome import WriteOutcome

from .conftest import SimFactory, until
from .test_venus_transport import venus_on_modbus

pytestmark = pytest.mark.timeout(60)

TEMPERATURE = 35010  # a live register read on its own (35010+1 on the v3 map)


# the lease and a person's work mode ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["Manual", "AI"])
async def test_a_work_mode_picked_in_the_app_ends_the_modbus_lease(
    make_sim: SimFactory, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The optimiser holds a forced discharge; the battery first drops control by itself (its work mode
    # unchanged: a reboot), which the lease takes again. Then a person picks a work mode in the app: the
    # lease must not take control back over it at the following polls.
    caplog.set_level("INFO")
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        assert (await client.read()).any_answer
        assert (await client.set_mode(PassiveMode(800, 900))).ok
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.DISCHARGE)
        venus.rs485_control = False  # dropped by the battery, the stored work mode unchanged
        await client.read()
        assert venus.rs485_control, "the battery's own drop of control is no person's choice"
        assert client.lease is not None
        server.registers.app_sets_work_mode(mode)
        for _ in range(3):
            await client.read()
        assert not venus.rs485_control, f"the lease took RS485 control again over the person's {mode}"
        assert venus.mode == mode
        assert client.lease is None
        assert (venus.force_mode, venus.force_discharge_w) == (ForceMode.STOP, 0)  # nothing left in RAM
        assert client.snapshot.values.get("mode") == mode
        said = [r for r in caplog.records if "outside the add-on" in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in said]
        assert said[0].levelname == "WARNING"


async def test_a_work_mode_the_add_on_set_and_its_own_switches_are_no_outside_change(
    make_sim: SimFactory,
) -> None:
    # The add-on sets AI itself (the stored mode now differs from the one seen at the start). Its forced
    # discharge then takes control between a poll's read of 42000 (off) and of 43000 (1 under control): a
    # state the battery was never in, no person's change. The battery then drops control by itself: taken
    # again. Last, a person's Manual: not taken again.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        assert (await client.read()).any_answer
        assert (await client.set_mode(AiMode())).ok
        assert (await client.read()).any_answer
        assert (venus.mode, venus.rs485_control) == ("AI", False)
        ask = client.modbus._ask
        switches: list[asyncio.Task[WriteOutcome]] = []

        async def switch_midway(what: str, function: Function, address: int, payload: int) -> list[int]:
            words = await ask(what, function, address, payload)
            if function is Function.READ_HOLDING and address == 42000 and not switches:
                switches.append(asyncio.create_task(client.set_mode(PassiveMode(800, 900))))
                await until(lambda: venus.rs485_control, 10)  # taken before the poll reads 43000
            return words

        client.modbus._ask = switch_midway  # type: ignore[method-assign]
        await client.read()
        assert switches, "the poll never read 42000"
        assert (await switches[0]).ok
        assert client.lease is not None, "the add-on's own switch was taken for a person's"
        await client.read()
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.DISCHARGE)
        venus.rs485_control = False  # the battery drops control; AI, which the add-on set, is stored
        await client.read()
        assert venus.rs485_control, "the work mode the add-on set itself was taken for a person's"
        assert client.lease is not None
        server.registers.app_sets_work_mode("Manual")
        for _ in range(3):
            await client.read()
        assert not venus.rs485_control, "the lease took control again over the person's Manual"
        assert (venus.mode, client.lease) == ("Manual", None)


# a register removed by a firmware update ----------------------------------------------------------


def count_asks(server: VenusModbusServer, watched: int) -> list[int]:
    """Every read touching `watched` the battery receives, refused or answered."""
    asked: list[int] = []
    reading = server.registers.read

    def read(address: int, count: int) -> list[int]:
        if address <= watched < address + count:
            asked.append(address)
        return reading(address, count)

    server.registers.read = read  # type: ignore[method-assign]
    return asked


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The client's clock `seconds` ahead (its back-off only: the event loop keeps the real one)."""
    monkeypatch.setattr(modbus_client, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + seconds))


async def test_a_register_a_firmware_update_removed_is_backed_off_and_comes_back(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        asked = count_asks(server, TEMPERATURE)
        for _ in range(2):
            assert (await client.read()).any_answer
        assert len(asked) == 2  # it answers
        server.registers.removed.add(TEMPERATURE)  # the update drops it
        for _ in range(ABSENT_AFTER + 4):
            assert (await client.read()).any_answer
        assert len(asked) == 2 + ABSENT_AFTER, "a register the update removed is asked for at every poll"
        assert any(str(TEMPERATURE) in problem for problem in client.snapshot.problems)
        said = [r for r in caplog.records if "firmware update removed it" in r.getMessage()]
        assert len(said) == 1
        later(monkeypatch, ABSENT_RETRY_S + 1)  # the back-off is over: asked once, still refused
        for _ in range(3):
            assert (await client.read()).any_answer
        assert len(asked) == 3 + ABSENT_AFTER
        server.registers.removed.clear()  # back (a downgrade): answered at the next try
        venus.physics.temperature_c = 41.0
        later(monkeypatch, 2 * ABSENT_RETRY_S + 2)
        for _ in range(3):
            assert (await client.read()).any_answer
        assert len(asked) == 6 + ABSENT_AFTER  # asked at every poll again
        temperature = client.snapshot.values.get("temperature")
        assert isinstance(temperature, float)
        assert temperature > 35, temperature  # read again, not its last reading kept
        assert not any(str(TEMPERATURE) in problem for problem in client.snapshot.problems)


async def test_refusals_that_are_no_removed_register_never_hide_it(make_sim: SimFactory) -> None:
    # A battery refusing every read while it boots, a register failing with another exception code, and a
    # read that gets no reply between refusals: none is a register the firmware lacks.
    # (the map named: the device name is refused too while booting)
    async with venus_on_modbus(make_sim, soc=55.0, generation=Generation.V3) as (venus, server, client):
        assert server.generation is Generation.V3, venus.profile.device
        asked = count_asks(server, TEMPERATURE)
        counting = server.registers.read
        refuse: dict[str, int | None] = {"all": ILLEGAL_ADDRESS, "temperature": None}

        def read(address: int, count: int) -> list[int]:
            if refuse["all"] is not None:
                raise ModbusRefusal(refuse["all"], "booting")
            code = refuse["temperature"]
            if code is not None and address <= TEMPERATURE < address + count:
                counting(address, count)  # (counted as asked)
                raise ModbusRefusal(code, "refused")
            return counting(address, count)

        server.registers.read = read  # type: ignore[method-assign]
        for _ in range(ABSENT_AFTER + 2):
            await client.read()  # refused all through
        refuse["all"] = None
        before = len(asked)
        for _ in range(2):
            assert (await client.read()).any_answer
        assert len(asked) == before + 2, "registers refused while the battery booted were hidden"
        assert client.snapshot.values.get("temperature") is not None

        refuse["temperature"] = 4  # device failure: the register is there
        for _ in range(ABSENT_AFTER + 2):
            assert (await client.read()).any_answer
        assert len(asked) == before + 2 + ABSENT_AFTER + 2

        # Refused as an illegal address, then no reply, alternately: never refused at polls in a row.
        refuse["temperature"] = ILLEGAL_ADDRESS
        ask = client.modbus._ask
        polls = [0]

        async def no_reply_every_other_poll(
            what: str, function: Function, address: int, payload: int
        ) -> list[int]:
            if address == TEMPERATURE and polls[0] % 2:
                client.modbus.drop()
                raise ModbusLinkError(f"{what}: no reply in time")
            return await ask(what, function, address, payload)

        client.modbus._ask = no_reply_every_other_poll  # type: ignore[method-assign]
        before = len(asked)
        for poll in range(2 * ABSENT_AFTER + 1):
            polls[0] = poll
            await client.read()
        assert len(asked) == before + ABSENT_AFTER + 1, "a register that got no reply was taken as removed"
        assert isinstance(client, ModbusBattery)


async def test_the_soc_is_never_hidden_once_it_answered(make_sim: SimFactory) -> None:
    # The add-on keeps the discharge floor by the SOC it reads over Modbus: refused at several polls in a row
    # (a firmware hiccup), it is still asked at every poll, so the SOC is read again the moment it answers.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        plan = poll_plan(server.generation)
        soc_request = next(r for r in plan.requests if any(f.key == "soc" for f in r.fields))
        soc_address = next(f.register.address for f in soc_request.fields if f.key == "soc")
        asked = count_asks(server, soc_address)
        assert (await client.read()).any_answer
        server.registers.removed.add(soc_address)
        for _ in range(ABSENT_AFTER + 3):
            assert (await client.read()).any_answer
        assert len(asked) == 1 + ABSENT_AFTER + 3, "the SOC was backed off"
        server.registers.removed.clear()
        venus.physics.soc = 20.0
        await client.read()
        assert client.snapshot.values.get("soc") == pytest.approx(20.0, abs=1)


async def test_a_forced_discharge_pauses_while_the_soc_cannot_be_read(make_sim: SimFactory) -> None:
    # Over Modbus the add-on alone keeps the discharge floor, from the SOC it reads: a poll without it
    # leaves the floor unguarded, so the forced discharge idles (under control) until the SOC is read again.
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        assert (await client.read()).any_answer
        assert (await client.set_mode(PassiveMode(800, 900))).ok
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.DISCHARGE)
        soc_address = next(
            f.register.address
            for r in poll_plan(server.generation).requests
            for f in r.fields
            if f.key == "soc"
        )
        server.registers.removed.add(soc_address)
        for _ in range(2):
            await client.read()
            assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.STOP), "discharging blind"
        # a new command meanwhile (the optimiser's next set-point) does not discharge blind either
        assert (await client.set_mode(PassiveMode(900, 900))).ok
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.STOP), "a new command went blind"
        server.registers.removed.clear()
        await client.read()  # one reading is not yet trusted: a SOC refused every other poll must not flap
        assert venus.force_mode == ForceMode.STOP
        await client.read()
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.DISCHARGE)
        assert venus.force_discharge_w == 900
        assert client.lease is not None


async def test_a_soc_refused_every_other_poll_does_not_switch_the_discharge_on_and_off(
    make_sim: SimFactory,
) -> None:
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, client):
        assert (await client.read()).any_answer
        assert (await client.set_mode(PassiveMode(800, 900))).ok
        soc_address = next(
            f.register.address
            for r in poll_plan(server.generation).requests
            for f in r.fields
            if f.key == "soc"
        )
        forced = []
        for i in range(6):
            if i % 2 == 0:
                server.registers.removed.add(soc_address)
            else:
                server.registers.removed.clear()
            await client.read()
            forced.append(venus.force_mode)
        assert forced == [ForceMode.STOP] * 6
