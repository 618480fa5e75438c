"""Every Marstek data point, declared once.

Reply validation (`models.py`), decoding (`decode.py`), Home Assistant discovery and the panel are all
generated from `BATTERY_POINTS`. Adding a field the firmware reports is one line here.

Sign convention everywhere inside the add-on (Home Assistant's): battery and AC power positive = discharging.

Every number the firmware sends declares its plausible range (`plausible`), fixed or following the model's
peak power; `decode.py` keeps readings outside it out of the snapshot (see `devices/plausibility.py`).

Points the battery also offers over Modbus declare their register per hardware generation (`modbus`,
`v12` = Venus E v1/v2 and C, `v3` = Venus E v3, A and D; facts in docs/marstek-modbus.md). The sign is
turned into ours in the declaration (a negative scale), so both transports fill the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ..plausibility import ANY, LIFETIME_KWH, Range, counter, show
from .firmware import Firmware, Mode, Quantity
from .modbus.registers import NONE, PerGeneration, RegType, reg

Value = float | int | str | bool | None


class Kind(StrEnum):
    """How a wire value is validated and represented."""

    FLOAT = "float"
    INT = "int"
    TEXT = "text"
    BOOL = "bool"
    MODE = "mode"


class Group(StrEnum):
    """Sections of a full read, as `probe` prints them."""

    DEVICE = "device"
    STATUS = "status"
    MODE = "mode"
    BATTERY = "battery"
    PV = "pv"
    METER = "meter"
    WIFI = "wifi"
    BLE = "ble"


class Method(StrEnum):
    GET_DEVICE = "Marstek.GetDevice"
    WIFI_STATUS = "Wifi.GetStatus"
    BLE_STATUS = "BLE.GetStatus"
    BAT_STATUS = "Bat.GetStatus"
    PV_STATUS = "PV.GetStatus"
    ES_STATUS = "ES.GetStatus"
    ES_MODE = "ES.GetMode"
    EM_STATUS = "EM.GetStatus"
    SET_MODE = "ES.SetMode"
    SET_DOD = "DOD.SET"
    LED_CTRL = "Led.Ctrl"
    BLE_ADV = "Ble.Adv"


READ_METHODS = (
    Method.GET_DEVICE,
    Method.ES_STATUS,
    Method.ES_MODE,
    Method.BAT_STATUS,
    Method.PV_STATUS,
    Method.EM_STATUS,
    Method.WIFI_STATUS,
    Method.BLE_STATUS,
)


@dataclass(frozen=True)
class Source:
    method: Method
    field: str


Derivation = Callable[[Mapping[str, Value]], Value]


@dataclass(frozen=True)
class PerModel:
    """A plausible range that follows the model (`Firmware.peak_power_w`), described for the docs."""

    text: str
    make: Callable[[Firmware], Range]

    def resolve(self, firmware: Firmware) -> Range:
        return self.make(firmware)

    def __str__(self) -> str:
        return self.text


Plausible = Range | PerModel

# A measured power may overshoot the set-point and the nominal rating for a moment, never the hardware by half.
OVERSHOOT = 1.5
PACK_MIN_V = 40.0  # LFP packs: Venus E 49-51 V, Venus A 41-42 V at low SOC (reference 5.1)
MAX_CAPACITY_WH = 20_000.0  # the largest seen is a Venus A with an extra pack, 4160 Wh
# The CT meters (CT002/CT003, Shelly 3EM) clamp up to 120 A a phase: 120 A x 253 V = 30.4 kW, 91 kW in all.
METER_PHASE_W = 35_000.0
METER_TOTAL_W = 100_000.0


def _ac_power() -> PerModel:
    return PerModel(
        f"±{OVERSHOOT:g} x model power",
        lambda fw: Range(-OVERSHOOT * fw.peak_power_w, OVERSHOOT * fw.peak_power_w),
    )


def _pv_channel_power() -> PerModel:
    return PerModel(f"0..{OVERSHOOT:g} x model power", lambda fw: Range(0.0, OVERSHOOT * fw.peak_power_w))


def _pack_current() -> PerModel:
    def make(fw: Firmware) -> Range:
        amps = OVERSHOOT * fw.peak_power_w / PACK_MIN_V
        return Range(-amps, amps)

    return PerModel(f"±{OVERSHOOT:g} x model power / {PACK_MIN_V:g} V", make)


def _energy_counter(channels: int = 1) -> PerModel:
    """A lifetime counter fed by `channels` paths of at most the overshoot power each."""
    factor = OVERSHOOT * channels
    return PerModel(
        f"0..{show(LIFETIME_KWH)}, never down, at most +{factor:g} x model kW/h",
        lambda fw: counter(factor * fw.peak_power_w / 1000),
    )


@dataclass(frozen=True)
class BatteryPoint:
    """One data point: where it comes from on the wire and how Home Assistant should show it."""

    key: str
    name: str
    group: Group
    kind: Kind
    sources: tuple[Source, ...] = ()  # first one present in the replies wins
    scale: float = 1.0  # engineering value = wire value x scale x firmware factor
    quantity: Quantity | None = None  # firmware-dependent wire unit, see firmware.factor()
    derive: Derivation | None = None  # computed from other points when no source is present
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    entity_category: str | None = None  # None, "diagnostic" or "config"
    icon: str | None = None
    precision: int | None = None
    options: tuple[str, ...] = ()
    enabled_by_default: bool = True
    plausible: Plausible | None = None  # numbers from the wire only; text, flags and modes need none
    modbus: PerGeneration = NONE  # its holding register in each Modbus map

    def plausible_for(self, firmware: Firmware) -> Range | None:
        rule = self.plausible
        return rule.resolve(firmware) if isinstance(rule, PerModel) else rule


def _s(method: Method, field: str) -> tuple[Source, ...]:
    return (Source(method, field),)


def _number(values: Mapping[str, Value], key: str) -> float | None:
    value = values.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pv_total(values: Mapping[str, Value]) -> Value:
    """Venus A <= 148 hard-codes ES.GetStatus.pv_power to 0 (Q6): add up the MPPT channels instead."""
    channels = [_number(values, f"pv{i}_power") for i in range(1, 5)]
    known = [c for c in channels if c is not None]
    return sum(known) if known else None


def _battery_power(values: Mapping[str, Value]) -> Value:
    """bat_power is missing on almost all firmware (Q5): P_bat = AC out + off-grid out - PV in."""
    ac = _number(values, "ac_power")
    if ac is None:
        return None
    return ac + (_number(values, "offgrid_power") or 0.0) - (_number(values, "pv_power") or 0.0)


def _remaining_energy(values: Mapping[str, Value]) -> Value:
    soc, rated = _number(values, "soc"), _number(values, "rated_capacity")
    return None if soc is None or rated is None else soc * rated / 100


D, ST, MO, BA, PV, ME, WI, BL = (
    Group.DEVICE,
    Group.STATUS,
    Group.MODE,
    Group.BATTERY,
    Group.PV,
    Group.METER,
    Group.WIFI,
    Group.BLE,
)
M = Method
mb = PerGeneration
I16, U32, I32, ASCII, IPV4 = RegType.I16, RegType.U32, RegType.I32, RegType.ASCII, RegType.IPV4
NAME, MAC = 10, 6  # registers of the device name and of the BLE MAC text
DIAG = "diagnostic"
MEAS, TOTAL_INC = "measurement", "total_increasing"

_PV_CHANNELS = tuple(
    point
    for i in range(1, 5)
    for point in (
        BatteryPoint(
            f"pv{i}_power",
            f"PV{i} power",
            PV,
            Kind.FLOAT,
            _s(M.PV_STATUS, f"pv{i}_power"),
            quantity=Quantity.PV1_POWER if i == 1 else None,
            unit="W",
            device_class="power",
            state_class=MEAS,
            precision=0,
            plausible=_pv_channel_power(),
        ),
        BatteryPoint(
            f"pv{i}_voltage",
            f"PV{i} voltage",
            PV,
            Kind.FLOAT,
            _s(M.PV_STATUS, f"pv{i}_voltage"),
            unit="V",
            device_class="voltage",
            state_class=MEAS,
            entity_category=DIAG,
            precision=1,
            enabled_by_default=False,
            plausible=Range(0, 150),  # no sourced figure: generous for low-voltage MPPT inputs
        ),
        BatteryPoint(
            f"pv{i}_current",
            f"PV{i} current",
            PV,
            Kind.FLOAT,
            _s(M.PV_STATUS, f"pv{i}_current"),
            unit="A",
            device_class="current",
            state_class=MEAS,
            entity_category=DIAG,
            precision=2,
            enabled_by_default=False,
            plausible=Range(0, 30),  # no sourced figure: one panel string gives ~15 A
        ),
        BatteryPoint(
            f"pv{i}_state",
            f"PV{i} state",
            PV,
            Kind.INT,
            _s(M.PV_STATUS, f"pv{i}_state"),
            entity_category=DIAG,
            enabled_by_default=False,
            plausible=ANY,
        ),
    )
)

_WORK_MODES = (Mode.MANUAL.value, Mode.AUTO.value, Mode.AI.value)  # 43000 = 0, 1, 2

# Order matters: derivations read points declared above them.
# fmt: off
BATTERY_POINTS: tuple[BatteryPoint, ...] = (
    # identity (Marstek.GetDevice)
    BatteryPoint("model", "Model", D, Kind.TEXT, _s(M.GET_DEVICE, "device"), entity_category=DIAG,
                 modbus=mb(v12=reg(31000, ASCII, length=NAME), v3=reg(31000, ASCII, length=NAME))),
    # the control (EMS) firmware, as `ver` is
    BatteryPoint("firmware", "Firmware", D, Kind.INT, _s(M.GET_DEVICE, "ver"), entity_category=DIAG,
                 icon="mdi:chip", plausible=ANY, modbus=mb(v12=reg(31101), v3=reg(30200))),
    BatteryPoint("ble_mac", "BLE MAC", D, Kind.TEXT, _s(M.GET_DEVICE, "ble_mac"), entity_category=DIAG,
                 enabled_by_default=False, modbus=mb(v12=reg(30402, ASCII, length=MAC), v3=reg(30304, ASCII, length=MAC))),
    BatteryPoint("wifi_mac", "WiFi MAC", D, Kind.TEXT, _s(M.GET_DEVICE, "wifi_mac"), entity_category=DIAG,
                 enabled_by_default=False),
    BatteryPoint("ip", "IP address", D, Kind.TEXT, _s(M.GET_DEVICE, "ip"), entity_category=DIAG,
                 icon="mdi:ip-network", modbus=mb(v3=reg(30400, IPV4))),
    # energy system (ES.GetStatus, with ES.GetMode / Bat.GetStatus as fallbacks)
    BatteryPoint("soc", "State of charge", ST, Kind.INT,
                 (Source(M.ES_STATUS, "bat_soc"), Source(M.BAT_STATUS, "soc"), Source(M.ES_MODE, "bat_soc")),
                 unit="%", device_class="battery", state_class=MEAS, plausible=Range(0, 100),
                 modbus=mb(v12=reg(32104), v3=reg(34002, scale=0.1))),
    BatteryPoint("ac_power", "AC power", ST, Kind.FLOAT,
                 (Source(M.ES_STATUS, "ongrid_power"), Source(M.ES_MODE, "ongrid_power")),
                 unit="W", device_class="power", state_class=MEAS, precision=0, plausible=_ac_power(),
                 modbus=mb(v12=reg(32202, I32), v3=reg(30006, I16))),  # both + = delivering, as ours
    BatteryPoint("offgrid_power", "Off-grid power", ST, Kind.FLOAT,
                 (Source(M.ES_STATUS, "offgrid_power"), Source(M.ES_MODE, "offgrid_power")),
                 unit="W", device_class="power", state_class=MEAS, precision=0, enabled_by_default=False,
                 plausible=_ac_power(), modbus=mb(v12=reg(32302, I32), v3=reg(30007, I16))),
    *_PV_CHANNELS,
    BatteryPoint("pv_power", "PV power", ST, Kind.FLOAT, derive=_pv_total, unit="W", device_class="power",
                 state_class=MEAS, precision=0),
    BatteryPoint("battery_power", "Battery power", ST, Kind.FLOAT, _s(M.ES_STATUS, "bat_power"),
                 scale=-1.0,  # wire bat_power is assumed + = charging (jaapp, taurgis); ours: + = discharging
                 quantity=Quantity.BAT_POWER, derive=_battery_power, unit="W", device_class="power",
                 state_class=MEAS, precision=0, plausible=_ac_power(),
                 # registers: + = charging (v3 high confidence, v12 low); 32102 reads 0 on the v3 map
                 modbus=mb(v12=reg(32102, I32, -1.0), v3=reg(30001, I16, -1.0))),
    BatteryPoint("rated_capacity", "Rated capacity", BA, Kind.FLOAT,
                 (Source(M.BAT_STATUS, "rated_capacity"), Source(M.ES_STATUS, "bat_cap")),
                 unit="Wh", device_class="energy_storage", entity_category=DIAG, precision=0,
                 plausible=Range(500, MAX_CAPACITY_WH),
                 modbus=mb(v12=reg(32105), v3=reg(32105))),  # 0.001 kWh = Wh (0.01 kWh on E v2 fw 147)
    BatteryPoint("ac_input_energy", "AC energy in", ST, Kind.FLOAT,
                 _s(M.ES_STATUS, "total_grid_input_energy"),
                 quantity=Quantity.ENERGY_COUNTER, scale=0.001, unit="kWh", device_class="energy",
                 state_class=TOTAL_INC, precision=2, plausible=_energy_counter(),
                 modbus=mb(v12=reg(33000, U32, 0.01), v3=reg(33000, U32, 0.01))),  # counted at the AC port
    BatteryPoint("ac_output_energy", "AC energy out", ST, Kind.FLOAT,
                 _s(M.ES_STATUS, "total_grid_output_energy"), quantity=Quantity.ENERGY_COUNTER, scale=0.001,
                 unit="kWh", device_class="energy", state_class=TOTAL_INC, precision=2,
                 plausible=_energy_counter(), modbus=mb(v12=reg(33002, U32, 0.01), v3=reg(33002, U32, 0.01))),
    BatteryPoint("pv_energy", "PV energy", ST, Kind.FLOAT, _s(M.ES_STATUS, "total_pv_energy"),
                 quantity=Quantity.PV_ENERGY, scale=0.001, unit="kWh", device_class="energy",
                 state_class=TOTAL_INC, precision=2, enabled_by_default=False,
                 plausible=_energy_counter(channels=4)),
    BatteryPoint("load_energy", "Off-grid energy", ST, Kind.FLOAT, _s(M.ES_STATUS, "total_load_energy"),
                 quantity=Quantity.ENERGY_COUNTER, scale=0.001, unit="kWh", device_class="energy",
                 state_class=TOTAL_INC, precision=2, enabled_by_default=False, plausible=_energy_counter()),
    # mode (ES.GetMode)
    BatteryPoint("mode", "Mode", MO, Kind.MODE, _s(M.ES_MODE, "mode"), device_class="enum",
                 options=tuple(m.value for m in Mode), icon="mdi:battery-sync",
                 # the user work mode; self-consumption is what the Local API calls Auto
                 modbus=mb(v12=reg(43000, labels=_WORK_MODES), v3=reg(43000, labels=_WORK_MODES))),
    # battery pack (Bat.GetStatus)
    BatteryPoint("temperature", "Battery temperature", BA, Kind.FLOAT, _s(M.BAT_STATUS, "bat_temp"),
                 quantity=Quantity.TEMPERATURE, unit="°C", device_class="temperature", state_class=MEAS,
                 precision=1, plausible=Range(-40, 100),
                 # the warmest cell; E v1/v2 count whole degC from BMS 213 on (0.1 degC before)
                 modbus=mb(v12=reg(35010, I16), v3=reg(35010, I16, 0.1))),
    BatteryPoint("remaining_energy", "Stored energy", BA, Kind.FLOAT, _s(M.BAT_STATUS, "bat_capacity"),
                 quantity=Quantity.REMAINING_ENERGY, derive=_remaining_energy, unit="Wh",
                 device_class="energy_storage", state_class=MEAS, precision=0,
                 plausible=Range(0, MAX_CAPACITY_WH)),
    BatteryPoint("charge_allowed", "Charging allowed", BA, Kind.BOOL, _s(M.BAT_STATUS, "charg_flag"),
                 entity_category=DIAG),
    BatteryPoint("discharge_allowed", "Discharging allowed", BA, Kind.BOOL, _s(M.BAT_STATUS, "dischrg_flag"),
                 entity_category=DIAG),
    BatteryPoint("battery_voltage", "Battery voltage", BA, Kind.FLOAT, _s(M.BAT_STATUS, "bat_voltage"),
                 scale=0.01, unit="V", device_class="voltage", state_class=MEAS, entity_category=DIAG,
                 precision=2, plausible=Range(0, 100), modbus=mb(v12=reg(32100, scale=0.01), v3=reg(30100, scale=0.01))),
    BatteryPoint("battery_current", "Battery current", BA, Kind.FLOAT, _s(M.BAT_STATUS, "bat_current"),
                 scale=0.01, unit="A", device_class="current", state_class=MEAS, entity_category=DIAG,
                 precision=2, enabled_by_default=False, plausible=_pack_current(),
                 # + = charging, as the Local API's; the v3's 32101 returns garbage while discharging
                 modbus=mb(v12=reg(32101, I16, 0.01), v3=reg(30101, I16, 0.1))),
    BatteryPoint("error_code", "Error code", BA, Kind.INT, _s(M.BAT_STATUS, "error_code"),
                 entity_category=DIAG, icon="mdi:alert-circle-outline", plausible=ANY),
    # meter (EM.GetStatus; ES.GetMode's copies read zero on v150 even with a live CT, Q15)
    BatteryPoint("ct_connected", "Meter connected", ME, Kind.BOOL,
                 (Source(M.EM_STATUS, "ct_state"), Source(M.ES_MODE, "ct_state")), entity_category=DIAG),
    BatteryPoint("meter_power", "Meter power", ME, Kind.FLOAT,
                 (Source(M.EM_STATUS, "total_power"), Source(M.ES_MODE, "total_power")),
                 unit="W", device_class="power", state_class=MEAS, precision=0,
                 plausible=Range(-METER_TOTAL_W, METER_TOTAL_W)),
    BatteryPoint("meter_power_a", "Meter power phase A", ME, Kind.FLOAT,
                 (Source(M.EM_STATUS, "a_power"), Source(M.ES_MODE, "a_power")),
                 unit="W", device_class="power", state_class=MEAS, precision=0, enabled_by_default=False,
                 plausible=Range(-METER_PHASE_W, METER_PHASE_W)),
    BatteryPoint("meter_power_b", "Meter power phase B", ME, Kind.FLOAT,
                 (Source(M.EM_STATUS, "b_power"), Source(M.ES_MODE, "b_power")),
                 unit="W", device_class="power", state_class=MEAS, precision=0, enabled_by_default=False,
                 plausible=Range(-METER_PHASE_W, METER_PHASE_W)),
    BatteryPoint("meter_power_c", "Meter power phase C", ME, Kind.FLOAT,
                 (Source(M.EM_STATUS, "c_power"), Source(M.ES_MODE, "c_power")),
                 unit="W", device_class="power", state_class=MEAS, precision=0, enabled_by_default=False,
                 plausible=Range(-METER_PHASE_W, METER_PHASE_W)),
    BatteryPoint("meter_import_energy", "Meter energy imported", ME, Kind.FLOAT,
                 _s(M.EM_STATUS, "input_energy"), scale=0.0001, unit="kWh", device_class="energy",
                 state_class=TOTAL_INC, precision=2, enabled_by_default=False,
                 plausible=counter(METER_TOTAL_W / 1000)),
    BatteryPoint("meter_export_energy", "Meter energy exported", ME, Kind.FLOAT,
                 _s(M.EM_STATUS, "output_energy"), scale=0.0001, unit="kWh", device_class="energy",
                 state_class=TOTAL_INC, precision=2, enabled_by_default=False,
                 plausible=counter(METER_TOTAL_W / 1000)),
    # radio links
    BatteryPoint("wifi_rssi", "WiFi signal", WI, Kind.INT, _s(M.WIFI_STATUS, "rssi"), unit="dBm",
                 device_class="signal_strength", state_class=MEAS, entity_category=DIAG, plausible=Range(-120, 0),
                 modbus=mb(v12=reg(30303, scale=-1.0), v3=reg(30303, scale=-1.0))),  # the register holds -dBm
    BatteryPoint("wifi_ssid", "WiFi network", WI, Kind.TEXT, _s(M.WIFI_STATUS, "ssid"), entity_category=DIAG,
                 enabled_by_default=False),
    BatteryPoint("wifi_ip", "WiFi IP address", WI, Kind.TEXT, _s(M.WIFI_STATUS, "sta_ip"),
                 entity_category=DIAG, enabled_by_default=False),
    BatteryPoint("ble_state", "Bluetooth", BL, Kind.TEXT, _s(M.BLE_STATUS, "state"), entity_category=DIAG,
                 enabled_by_default=False),
)
# fmt: on

POINTS_BY_KEY: dict[str, BatteryPoint] = {p.key: p for p in BATTERY_POINTS}
