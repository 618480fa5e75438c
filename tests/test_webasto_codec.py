"""Register decoding and encoding, from the table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marstek_webasto_addon.devices.webasto.codec import CodecError, decode, encode
from marstek_webasto_addon.devices.webasto.registers import NEXT_REGISTERS, RULES, RegType, WallboxModel

NEXT = RULES[WallboxModel.NEXT]
UNITE = RULES[WallboxModel.UNITE]


def test_u32_is_high_word_first() -> None:
    assert decode(NEXT.by_key("energy_total"), [221, 9395]) == pytest.approx(14_492.851)  # 14 492 851 Wh
    assert decode(UNITE.by_key("energy_total"), [0, 3697]) == pytest.approx(369.7)  # 0.1 kWh units


def test_currents_are_milliamps() -> None:
    assert decode(UNITE.by_key("current_l1"), [14707]) == pytest.approx(14.707)


def test_unite_strings_are_one_utf16_character_per_register() -> None:
    words = [ord(c) for c in "v3.187.0-1.0.156.0"] + [0] * 32
    assert decode(UNITE.by_key("firmware"), words) == "v3.187.0-1.0.156.0"


def test_next_rfid_is_two_ascii_characters_per_register() -> None:
    raw = b"04A1B2C3D4".ljust(20, b"\x00")
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 20, 2)]
    assert decode(NEXT.by_key("user_id"), words) == "04A1B2C3D4"
    assert decode(NEXT.by_key("user_id"), [0] * 10) is None


def test_times_and_dates_are_decimal_digits() -> None:
    assert decode(UNITE.by_key("session_start_time"), list(divmod(143015, 65536))) == "14:30:15"
    assert decode(UNITE.by_key("date"), list(divmod(261121, 65536))) == "2026-11-21"  # yymmdd, not yyyymmdd
    assert decode(UNITE.by_key("session_end_time"), [0, 0]) is None


def test_enums_become_labels_and_unknown_values_say_so() -> None:
    assert decode(NEXT.by_key("charge_point_state"), [7]) == "error"
    assert decode(UNITE.by_key("charge_point_state"), [7]) == "unavailable"  # same number, other meaning
    assert decode(NEXT.by_key("charge_point_state"), [5]) == "unknown (5)"


def test_unite_fault_code_is_32_bit_and_the_next_one_16() -> None:
    assert UNITE.by_key("error_code").count == 2
    assert NEXT.by_key("error_code").count == 1


def test_encode_checks_range_and_type() -> None:
    assert encode(NEXT.by_key("charging_current_setpoint"), 16) == [16]
    assert encode(NEXT.by_key("charge_power_setpoint"), 70_000) == [1, 4464]
    assert encode(UNITE.by_key("phase_switch"), "3") == [1]
    with pytest.raises(CodecError, match="does not fit"):
        encode(NEXT.by_key("charging_current_setpoint"), -1)
    with pytest.raises(CodecError, match="not one of"):
        encode(UNITE.by_key("phase_switch"), "2")
    with pytest.raises(CodecError, match="not a number"):
        encode(NEXT.by_key("failsafe_timeout"), float("nan"))


def test_wrong_register_count_is_an_error_not_a_wrong_value() -> None:
    with pytest.raises(ValueError, match="expected 2 registers"):
        decode(NEXT.by_key("power"), [1])


@given(st.lists(st.integers(min_value=0, max_value=0xFFFF), min_size=50, max_size=50))
def test_any_register_content_decodes_without_crashing(words: list[int]) -> None:
    for register in (*NEXT_REGISTERS, *UNITE.registers):
        if register.readable:
            decode(register, words[: register.count])


def test_keys_are_unique_and_writable_registers_have_a_write_code() -> None:
    for rules in RULES.values():
        keys = [r.key for r in rules.registers]
        assert len(keys) == len(set(keys))
        for register in rules.registers:
            assert (register.write_fc is not None) == (register.access.value in ("w", "rw"))
            assert register.count <= rules.max_registers_per_request


def test_every_numeric_register_declares_its_plausible_range() -> None:
    for rules in RULES.values():
        for register in rules.registers:
            numeric = register.type in (RegType.U16, RegType.U32) and not register.enum
            assert (register.plausible is not None) == numeric, register.key
            is_counter = register.plausible is not None and register.plausible.max_rate is not None
            assert is_counter == (register.state_class == "total_increasing"), register.key


def test_any_register_content_outside_its_range_is_what_the_range_rejects() -> None:
    power = NEXT.by_key("power")
    assert power.plausible is not None
    assert decode(power, [0x7FFF, 0xFFFE]) == 2_147_483_646
    assert 2_147_483_646 not in power.plausible
    assert decode(power, [0, 22_080]) == 22_080
    assert 22_080 in power.plausible
    current = NEXT.by_key("failsafe_current")
    assert current.plausible is not None
    assert 32_767 not in current.plausible
    assert 32 in current.plausible
