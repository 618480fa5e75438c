"""Firmware identification, scaling and sign normalisation: the one place in firmware.py, via the table."""

from __future__ import annotations

import time

import pytest

from marstek_webasto_addon.devices.marstek.datapoints import BATTERY_POINTS, Kind, Method
from marstek_webasto_addon.devices.marstek.decode import BatterySnapshot, decode_values
from marstek_webasto_addon.devices.marstek.firmware import Family, Mode, identify, parse_mode

E3_150 = identify("VenusE 3.0", 150)


@pytest.mark.parametrize(
    ("device", "family"),
    [
        ("VenusE 3.0", Family.VENUS_E3),
        ("VNSE3-0", Family.VENUS_E3),
        ("VenusE", Family.VENUS_E2),
        ("VenusC", Family.VENUS_E2),
        ("Venus A", Family.VENUS_A),
        ("VenusA", Family.VENUS_A),
        ("VenusA 3.0", Family.VENUS_A),
        ("VNSA-0", Family.VENUS_A),
        ("Venus D", Family.VENUS_D),
        ("VNSEM-0", Family.VENUS_E_MINI),
        ("Toaster", Family.UNKNOWN),
        (None, Family.UNKNOWN),
    ],
)
def test_device_strings_are_normalised(device: str | None, family: Family) -> None:
    assert identify(device, 150).family is family


def test_dotted_four_digit_versions_compare_by_generation() -> None:
    assert identify("VenusE 3.0", 1476).generation == 147
    assert identify("VenusE 3.0", 1476).generation < identify("VenusE 3.0", 148).generation  # type: ignore[operator]


def test_unknown_models_get_the_conservative_power_limit() -> None:
    assert identify("Toaster", 1).power_limits.discharge_w == 800
    assert identify("VenusE 3.0", 150).power_limits.charge_w == 2500


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        ("Auto", Mode.AUTO),
        ("Ups", Mode.UPS),
        ("UPS", Mode.UPS),
        (3, Mode.PASSIVE),
        (2.0, Mode.MANUAL),
        ("x", None),
        (True, None),
        (None, None),
    ],
)
def test_mode_strings_and_ints(raw: object, mode: Mode | None) -> None:
    assert parse_mode(raw) is mode


def test_temperature_and_capacity_are_rescaled_on_v139() -> None:
    results = {Method.BAT_STATUS: {"bat_temp": 314.0, "bat_capacity": 441.0, "soc": 86.0}}
    values = decode_values(results, identify("VenusE 3.0", 139))
    assert values["temperature"] == pytest.approx(31.4)
    assert values["remaining_energy"] == pytest.approx(4410)
    current = decode_values(results, E3_150)
    assert current["remaining_energy"] == pytest.approx(441)


def test_old_bms_temperature_ten_times_too_high_is_corrected() -> None:
    values = decode_values({Method.BAT_STATUS: {"bat_temp": 254.0}}, E3_150)
    assert values["temperature"] == pytest.approx(25.4)


def test_hmg50_energy_counters_are_in_tenths_of_kwh() -> None:
    # the seed's own v155 unit: 703 / 919 after weeks of use
    results = {Method.ES_STATUS: {"total_grid_output_energy": 703.0, "total_grid_input_energy": 919.0}}
    values = decode_values(results, identify("VenusE", 155))
    assert values["ac_output_energy"] == pytest.approx(70.3)
    assert values["ac_input_energy"] == pytest.approx(91.9)
    e3 = decode_values({Method.ES_STATUS: {"total_grid_output_energy": 8583.0}}, E3_150)
    assert e3["ac_output_energy"] == pytest.approx(8.583)


def test_venus_a_pv1_is_in_tenths_of_a_watt_and_es_pv_power_is_derived() -> None:
    results = {
        Method.PV_STATUS: {"pv1_power": 2500.0, "pv2_power": 240.0, "pv3_power": 0.0, "pv4_power": 10.0},
        Method.ES_STATUS: {"ongrid_power": 300.0},
    }
    values = decode_values(results, identify("Venus A", 148))
    assert values["pv1_power"] == pytest.approx(250)
    assert values["pv_power"] == pytest.approx(500)
    # battery: + = discharging; 300 W out of the AC port while 500 W come in from PV -> charging 200 W
    assert values["battery_power"] == pytest.approx(-200)
    assert decode_values(results, identify("Venus A", 150))["pv1_power"] == pytest.approx(2500)


def test_each_value_keeps_the_time_it_was_read_and_a_derived_one_the_time_of_its_inputs() -> None:
    venus_a = identify("Venus A", 150)
    first = BatterySnapshot(firmware=venus_a).merged(
        {Method.PV_STATUS: {"pv1_power": 250.0}, Method.ES_STATUS: {"ongrid_power": 300.0, "bat_soc": 50.0}},
        [],
    )
    read_at = first.seen["pv1_power"]
    assert first.seen["pv_power"] == read_at
    time.sleep(0.01)
    # the next read has no PV channels (PV.GetStatus unanswered, or a transport that cannot read them)
    second = first.merged({Method.ES_STATUS: {"ongrid_power": 320.0, "bat_soc": 51.0}}, [])
    assert second.values["pv_power"] == 250  # still there (kept, then judged by its age)
    assert second.seen["pv1_power"] == read_at
    assert second.seen["pv_power"] == read_at  # made from old channels: as old as they are
    assert second.seen["ac_power"] > read_at
    age = second.age("pv_power", now=read_at + 60)
    assert age == pytest.approx(60)
    assert second.age("never_read") is None


def test_es_getmode_ct_copies_stand_in_only_where_em_getstatus_never_answered() -> None:
    live_ct = {"ct_state": 1, "total_power": 1500.0, "a_power": 500.0, "b_power": 500.0, "c_power": 500.0}
    zero_copies = {"mode": "Auto", "ongrid_power": 300.0, "bat_soc": 60.0, "ct_state": 0, "total_power": 0.0}
    with_em = BatterySnapshot(firmware=E3_150).merged({Method.EM_STATUS: live_ct}, [])
    between = with_em.merged({Method.ES_MODE: zero_copies}, [])  # v150: zero copies with a live CT (Q15)
    assert between.values["meter_power"] == 1500  # the last EM.GetStatus reading, ageing by its own time
    assert between.values["ct_connected"] is True
    assert between.seen["meter_power"] == with_em.seen["meter_power"]
    assert between.values["ac_power"] == 300  # the rest of ES.GetMode is used as ever
    without_em = BatterySnapshot(firmware=E3_150).merged({Method.ES_MODE: {**zero_copies, "ct_state": 1}}, [])
    assert without_em.values["meter_power"] == 0  # no EM.GetStatus so far: ES.GetMode's copies it is
    assert without_em.values["ct_connected"] is True


def test_battery_power_sign_is_home_assistants_when_derived_and_when_reported() -> None:
    derived = decode_values({Method.ES_STATUS: {"ongrid_power": -984.0}}, E3_150)
    assert derived["ac_power"] == -984  # charging: negative
    assert derived["battery_power"] == -984
    reported = decode_values(
        {Method.ES_STATUS: {"ongrid_power": -984.0, "bat_power": 9500.0}}, identify("VenusE", 153)
    )
    assert reported["battery_power"] == pytest.approx(-950)  # wire + = charging in deci-W


def test_soc_falls_back_to_bat_status_when_es_status_is_missing() -> None:
    values = decode_values({Method.BAT_STATUS: {"soc": 41.0}, Method.ES_MODE: {"bat_soc": 40.0}}, E3_150)
    assert values["soc"] == 41


def test_firmware_dependent_values_wait_for_the_firmware() -> None:
    unknown = BatterySnapshot().merged(
        {Method.ES_STATUS: {"total_grid_input_energy": 919.0, "bat_soc": 40.0}}, []
    )
    assert "ac_input_energy" not in unknown.values  # x1 or x100? unknown until GetDevice answers
    assert unknown.values["soc"] == 40
    known = unknown.merged(
        {
            Method.GET_DEVICE: {"device": "VenusE", "ver": 155},
            Method.ES_STATUS: {"total_grid_input_energy": 919.0},
        },
        [],
    )
    assert known.values["ac_input_energy"] == pytest.approx(91.9)
    only_ver = known.merged({Method.GET_DEVICE: {"ver": 156}}, [])
    assert only_ver.firmware.family is Family.VENUS_E2  # the model is kept when only ver comes
    assert only_ver.firmware.ver == 156


def test_snapshot_keeps_values_of_methods_not_read_this_time_and_rederives() -> None:
    first = BatterySnapshot().merged(
        {
            Method.GET_DEVICE: {"device": "Venus A", "ver": 148},
            Method.PV_STATUS: {"pv1_power": 1000.0, "pv2_power": 0.0, "pv3_power": 0.0, "pv4_power": 0.0},
            Method.ES_STATUS: {"ongrid_power": 0.0, "bat_soc": 50.0},
        },
        [],
    )
    assert first.number("battery_power") == pytest.approx(-100)
    second = first.merged({Method.ES_MODE: {"ongrid_power": 100.0, "mode": "Passive"}}, [])
    assert second.number("pv_power") == pytest.approx(100)  # kept from the first read
    assert second.number("battery_power") == pytest.approx(0)  # re-derived from the new AC power
    assert second.mode is Mode.PASSIVE
    assert second.firmware.family is Family.VENUS_A


def test_every_point_has_a_source_or_a_derivation_and_a_unique_key() -> None:
    keys = [p.key for p in BATTERY_POINTS]
    assert len(keys) == len(set(keys))
    assert all(p.sources or p.derive for p in BATTERY_POINTS)
    energy = [p for p in BATTERY_POINTS if p.device_class == "energy"]
    assert energy
    assert all(p.state_class == "total_increasing" and p.unit == "kWh" for p in energy)


def test_every_number_from_the_wire_declares_its_plausible_range() -> None:
    for point in BATTERY_POINTS:
        numeric = point.kind in (Kind.FLOAT, Kind.INT)
        if numeric and point.sources:
            assert point.plausible is not None, point.key
        rule = point.plausible_for(E3_150)
        is_counter = rule is not None and rule.max_rate is not None
        assert is_counter == (point.state_class == "total_increasing"), point.key


def test_model_ranges_follow_the_models_power() -> None:
    ac = next(p for p in BATTERY_POINTS if p.key == "ac_power")
    assert str(ac.plausible_for(E3_150)) == "-3750..3750"
    assert str(ac.plausible_for(identify("Venus A", 150))) == "-2250..2250"
    assert ac.plausible_for(identify("Toaster", 1)) == ac.plausible_for(E3_150)  # never stricter than known
