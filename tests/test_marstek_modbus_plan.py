"""The Venus's Modbus tables, read plan and codec, and the simulated register map: no sockets."""

from __future__ import annotations

import pytest

from marstek_webasto_addon.devices.marstek.datapoints import BATTERY_POINTS, POINTS_BY_KEY
from marstek_webasto_addon.devices.marstek.firmware import Family
from marstek_webasto_addon.devices.marstek.modbus.codec import CodecError, decode, encode
from marstek_webasto_addon.devices.marstek.modbus.decode import ControlState, firmware_for, with_control
from marstek_webasto_addon.devices.marstek.modbus.readplan import (
    ReadPlan,
    control_fields,
    control_plan,
    identity_plan,
    point_fields,
    poll_plan,
)
from marstek_webasto_addon.devices.marstek.modbus.registers import (
    CONTROL_BY_KEY,
    Generation,
    RegType,
    Rs485,
    control_registers,
    reg,
)
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator
from marstek_webasto_addon.devices.marstek.simulator.modbus_map import (
    ILLEGAL_ADDRESS,
    ILLEGAL_VALUE,
    ModbusRefusal,
    VenusRegisterMap,
)

GENERATIONS = list(Generation)
PROFILE = {Generation.V12: "venus_e2_v156", Generation.V3: "venus_e3_v150"}


def plans(generation: Generation) -> list[ReadPlan]:
    return [identity_plan(generation), poll_plan(generation), control_plan(generation)]


def declared(generation: Generation) -> set[int]:
    fields = point_fields(generation, identity=True) + point_fields(generation, identity=False)
    fields += control_fields(generation)
    return {a for f in fields for a in range(f.register.address, f.register.end)}


@pytest.mark.parametrize("generation", GENERATIONS)
def test_no_read_crosses_an_unused_address_nor_exceeds_32_registers(generation: Generation) -> None:
    known = declared(generation)
    for plan in plans(generation):
        for request in plan.requests:
            assert request.count <= 32, request.describe()
            assert set(range(request.address, request.end)) <= known, request.describe()


@pytest.mark.parametrize("generation", GENERATIONS)
def test_every_register_is_read_once_from_its_first_word(generation: Generation) -> None:
    wanted = {
        (f.key, f.register) for f in point_fields(generation, identity=False) + control_fields(generation)
    }
    seen = [(f.key, f.register) for r in poll_plan(generation).requests for f in r.fields]
    assert sorted(seen, key=str) == sorted(wanted, key=str)
    for request in poll_plan(generation).requests:
        for f in request.fields:
            assert request.address <= f.register.address
            assert f.register.end <= request.end


@pytest.mark.parametrize(
    ("generation", "identity", "poll"), [(Generation.V12, 3, 11), (Generation.V3, 4, 13)]
)
def test_request_counts_are_pinned(generation: Generation, identity: int, poll: int) -> None:
    for plan in (identity_plan(generation), poll_plan(generation)):
        print(f"{generation.value}: {len(plan)} requests\n{plan.describe()}")
    assert (len(identity_plan(generation)), len(poll_plan(generation))) == (identity, poll)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_the_simulated_device_defines_every_address_the_plans_read(generation: Generation) -> None:
    """The table against the device map written independently from the research document."""
    sim = MarstekSimulator.build(1, profile=PROFILE[generation])
    device = VenusRegisterMap(sim.batteries[0])
    assert device.generation is generation
    for plan in plans(generation):
        for request in plan.requests:
            assert len(device.read(request.address, request.count)) == request.count


def test_the_maps_differ_where_the_research_says() -> None:
    def address(key: str, generation: Generation) -> int | None:
        register = POINTS_BY_KEY[key].modbus.get(generation)
        return None if register is None else register.address

    assert [address("soc", g) for g in GENERATIONS] == [32104, 34002]
    assert [address("battery_power", g) for g in GENERATIONS] == [32102, 30001]
    assert [address("ac_power", g) for g in GENERATIONS] == [32202, 30006]
    only_v12 = {c.key for c in control_registers(Generation.V12)} - {
        c.key for c in control_registers(Generation.V3)
    }
    assert only_v12 == {"charge_cutoff_soc", "discharge_cutoff_soc"}


def test_power_signs_are_turned_into_ours_in_the_declaration() -> None:
    """Registers count battery power + = charging, AC power + = delivering; ours: + = discharging."""
    for generation in GENERATIONS:
        battery = POINTS_BY_KEY["battery_power"].modbus.get(generation)
        ac = POINTS_BY_KEY["ac_power"].modbus.get(generation)
        assert battery is not None
        assert battery.scale < 0
        assert ac is not None
        assert ac.scale > 0


def test_only_points_of_the_table_carry_registers() -> None:
    with_modbus = {p.key for p in BATTERY_POINTS if p.modbus.v12 or p.modbus.v3}
    assert {"soc", "ac_power", "battery_power", "mode", "ac_input_energy"} <= with_modbus


def test_codec_signs_widths_text_and_labels() -> None:
    assert decode(reg(1, RegType.I16), [0xFFFF]) == -1
    assert decode(reg(1, RegType.I16, -1.0), [0xFC18]) == 1000  # -1000 W charging = +1000 W ours
    assert decode(reg(1, RegType.I32), [0xFFFF, 0xF830]) == -2000
    assert decode(reg(1, RegType.U32, 0.01), [0x0001, 0x0000]) == pytest.approx(655.36)
    assert decode(reg(1, RegType.ASCII, length=4), [0x564E, 0x5345, 0x332D, 0x3000]) == "VNSE3-0"
    assert decode(reg(1, RegType.IPV4), [0xC0A8, 0x0117]) == "192.168.1.23"
    assert decode(reg(1, labels=("Manual", "Auto", "AI")), [2]) == "AI"
    assert decode(reg(1, labels=("Manual", "Auto", "AI")), [7]) is None
    with pytest.raises(ValueError, match="expected 2 words"):
        decode(reg(1, RegType.U32), [1])


def test_control_values_are_checked_against_the_table() -> None:
    assert encode(CONTROL_BY_KEY["rs485_control"], Rs485.ON) == 0x55AA
    assert encode(CONTROL_BY_KEY["charge_cutoff_soc"], 95) == 950
    with pytest.raises(CodecError, match="0x55AA or 0x55BB"):
        encode(CONTROL_BY_KEY["rs485_control"], 1)  # the v3 refuses plain 0/1
    with pytest.raises(CodecError, match=r"0\.\.2500"):
        encode(CONTROL_BY_KEY["force_charge_power"], 2501)
    with pytest.raises(CodecError):
        encode(CONTROL_BY_KEY["force_mode"], 3)


def test_an_unknown_name_falls_back_to_the_generations_model() -> None:
    assert firmware_for(Generation.V12, "HMG-50", 156).family is Family.VENUS_E2
    assert firmware_for(Generation.V3, None, 150).family is Family.VENUS_E3
    assert firmware_for(Generation.V3, "VNSA-0", 150).family is Family.VENUS_A


def test_rs485_control_shows_as_passive() -> None:
    on = ControlState({"rs485_control": float(Rs485.ON)})
    off = ControlState({"rs485_control": float(Rs485.OFF)})
    assert with_control({"mode": "Auto"}, on)["mode"] == "Passive"
    assert with_control({"mode": "Auto"}, off)["mode"] == "Auto"


def test_device_map_refuses_gaps_and_bad_values_and_shares_the_mode_byte() -> None:
    sim = MarstekSimulator.build(1, profile="venus_e3_v150")
    battery = sim.batteries[0]
    device = VenusRegisterMap(battery)
    with pytest.raises(ModbusRefusal) as gap:
        device.read(30001, 6)  # 30002/30003 are unused
    assert gap.value.code == ILLEGAL_ADDRESS
    with pytest.raises(ModbusRefusal) as bad:
        device.write(42000, 1)
    assert bad.value.code == ILLEGAL_VALUE
    with pytest.raises(ModbusRefusal):
        device.write(44000, 900)  # the v3 has no cut-off registers
    device.write(42000, 0x55AA)
    assert battery.rs485_control
    assert device.read(43000, 1) == [1]
    device.write(43000, 0)  # a work mode ends RS485 control
    assert not battery.rs485_control
    assert battery.mode == "Manual"
    assert device.read(42000, 1) == [0x55BB]
