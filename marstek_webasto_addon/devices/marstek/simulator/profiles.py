"""Firmware profiles: how each model/firmware answers on the wire (reference sections 2, 4 and 5).

A profile describes the device's behaviour, independently of the client's decoding in `firmware.py`,
so that tests check the client against the device and not against itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..datapoints import Method

M = Method
_BASE_READS = frozenset(
    {M.GET_DEVICE, M.WIFI_STATUS, M.BLE_STATUS, M.BAT_STATUS, M.ES_STATUS, M.ES_MODE, M.EM_STATUS}
)
_SETTERS = frozenset({M.SET_DOD, M.LED_CTRL, M.BLE_ADV})


@dataclass(frozen=True)
class FirmwareProfile:
    name: str
    description: str
    device: str  # Marstek.GetDevice.device
    src_prefix: str  # reply `src` is f"{src_prefix}-{ble_mac}"
    ver: int
    capacity_wh: int
    max_charge_w: int
    max_discharge_w: int
    methods: frozenset[Method]  # answered normally (ES.SetMode is always answered)
    silent: frozenset[Method] = frozenset()  # never answered; anything else unknown gets -32601
    unknown_method: Literal["error", "silent"] = "error"
    int_ids_only: bool = False  # string ids are silently ignored (VE3 v139)
    temperature_scale: float = 1.0  # wire = degC x scale
    remaining_scale: float = 1.0  # wire = Wh x scale
    energy_scale: float = 1.0  # wire = Wh x scale
    energy_as_float: bool = True
    pv_channels: int = 0
    pv1_scale: float = 1.0  # wire = W x scale (10 = 0.1 W units)
    pv_energy_scale: float = 1.0
    es_pv_broken: bool = False  # ES.GetStatus pv_power / total_pv_energy hard-coded 0
    bat_power_field: bool = False
    bat_power_scale: float = 1.0  # wire = W x scale (10 = deci-W); wire sign + = charging
    bat_extras: bool = False  # bat_voltage, bat_current, error_code (HMG-50)
    em_parse_state: bool = False
    getmode_ct_fields: bool = True
    getmode_ct_zero: bool = False  # GetMode CT fields zero while EM is live (Q15)
    modes: frozenset[str] = field(default_factory=lambda: frozenset({"Auto", "AI", "Manual", "Passive"}))
    pretty: bool = False  # cJSON-style tabs and newlines


PROFILES: dict[str, FirmwareProfile] = {
    p.name: p
    for p in (
        FirmwareProfile(
            name="venus_e3_v150",
            description="Venus E 3.0, firmware 150 (current)",
            device="VenusE 3.0",
            src_prefix="VenusE 3.0",
            ver=150,
            capacity_wh=5120,
            max_charge_w=2500,
            max_discharge_w=2500,
            methods=_BASE_READS | _SETTERS,
            getmode_ct_zero=True,
            modes=frozenset({"Auto", "AI", "Manual", "Passive", "UPS"}),
            pretty=True,
        ),
        FirmwareProfile(
            name="venus_e3_v148",
            description="Venus E 3.0, firmware 148 (no PV, no setters)",
            device="VenusE 3.0",
            src_prefix="VenusE 3.0",
            ver=148,
            capacity_wh=5120,
            max_charge_w=2500,
            max_discharge_w=2500,
            methods=_BASE_READS,
            getmode_ct_zero=True,
        ),
        FirmwareProfile(
            name="venus_e3_v139",
            description="Venus E 3.0, firmware 139 (no ES.GetStatus, temperature x10, capacity /10)",
            device="VenusE 3.0",
            src_prefix="VenusE 3.0",
            ver=139,
            capacity_wh=5120,
            max_charge_w=2500,
            max_discharge_w=2500,
            methods=_BASE_READS - {M.ES_STATUS},
            silent=frozenset({M.ES_STATUS}),
            unknown_method="silent",
            int_ids_only=True,
            temperature_scale=10.0,
            remaining_scale=0.1,
            getmode_ct_fields=False,
        ),
        FirmwareProfile(
            name="venus_e2_v156",
            description="Venus E 2.0 (HMG-50), firmware 156",
            device="VenusE",
            src_prefix="VenusE",
            ver=156,
            capacity_wh=5120,
            max_charge_w=2500,
            max_discharge_w=2500,
            methods=_BASE_READS,
            energy_scale=0.01,
            energy_as_float=False,
            bat_extras=True,
            em_parse_state=True,
        ),
        FirmwareProfile(
            # What the seed's own unit did (marstek-roadmap-nl.txt, fase 2): Bat, Wifi and EM time out,
            # PV answers "Method not found". The reference expects EM from v155 on: the device wins.
            name="venus_e2_v155",
            description="Venus E 2.0 (HMG-50), firmware 155 as the seed's user saw it",
            device="VenusE",
            src_prefix="VenusE",
            ver=155,
            capacity_wh=5120,
            max_charge_w=2500,
            max_discharge_w=2500,
            methods=frozenset({M.GET_DEVICE, M.BLE_STATUS, M.ES_STATUS, M.ES_MODE}),
            silent=frozenset({M.BAT_STATUS, M.WIFI_STATUS, M.EM_STATUS}),
            energy_scale=0.01,
            energy_as_float=False,
        ),
        FirmwareProfile(
            name="venus_c_v156",
            description="Venus C (HMG-50, 2.56 kWh), firmware 156",
            device="VenusC",
            src_prefix="VenusC",
            ver=156,
            capacity_wh=2560,
            max_charge_w=2500,
            max_discharge_w=2500,
            methods=_BASE_READS,
            energy_scale=0.01,
            energy_as_float=False,
            bat_extras=True,
            em_parse_state=True,
        ),
        FirmwareProfile(
            # Early HMG-50 with the uncertain [?] scales as jaapp decodes them (reference 2.4, 2.6): bat_power
            # in 0.1 W, energy counters raw x 10 = Wh, stored energy raw / 100 = Wh, and no EM server yet.
            name="venus_e2_v153",
            description="Venus E 2.0 (HMG-50), firmware 153 (bat_power present; early scales)",
            device="VenusE",
            src_prefix="VenusE",
            ver=153,
            capacity_wh=5120,
            max_charge_w=2500,
            max_discharge_w=2500,
            methods=_BASE_READS - {M.EM_STATUS},
            silent=frozenset({M.EM_STATUS}),
            unknown_method="silent",
            energy_scale=0.1,
            energy_as_float=False,
            remaining_scale=100.0,
            bat_power_field=True,
            bat_power_scale=10.0,
            bat_extras=True,
        ),
        FirmwareProfile(
            name="venus_a_v148",
            description="Venus A, firmware 148 (4 MPPT, PV1 in 0.1 W, ES PV fields broken)",
            device="Venus A",
            src_prefix="VenusA",
            ver=148,
            capacity_wh=2080,
            max_charge_w=1500,
            max_discharge_w=1500,
            methods=_BASE_READS | {M.PV_STATUS},
            energy_as_float=False,
            pv_channels=4,
            pv1_scale=10.0,
            es_pv_broken=True,
            getmode_ct_zero=True,
        ),
        FirmwareProfile(
            name="venus_a_v150",
            description="Venus A, firmware 150 (PV in W, PV energy in 0.01 kWh, UPS and setters)",
            device="Venus A",
            src_prefix="VenusA",
            ver=150,
            capacity_wh=2080,
            max_charge_w=1500,
            max_discharge_w=1500,
            methods=_BASE_READS | {M.PV_STATUS} | _SETTERS,
            energy_as_float=False,
            pv_channels=4,
            pv_energy_scale=0.1,
            getmode_ct_zero=True,
            modes=frozenset({"Auto", "AI", "Manual", "Passive", "UPS"}),
        ),
    )
}

DEFAULT_PROFILE = "venus_e3_v150"
