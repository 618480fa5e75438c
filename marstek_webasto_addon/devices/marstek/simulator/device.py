"""One simulated Venus battery: its EMS (modes, schedules) and its JSON-RPC request handler.

`handle()` is pure with respect to I/O (bytes and an address in, datagrams to send out), so the protocol can
be tested without sockets; `server.py` puts it on real UDP.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..datapoints import Method
from .physics import BatteryPhysics, Site
from .profiles import FirmwareProfile

Address = tuple[str, int]
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_AUTO_DEADBAND_W = 10.0
_AUTO_TIME_CONSTANT_S = 2.0
_QUIET_SPELL_S = 30.0


@dataclass
class Quirks:
    """Misbehaviours seen on real units, each off by default (reference sections 1.8, 4.1, 5.2)."""

    loss_percent: float = 0.0  # requests dropped
    duplicate_replies: bool = False  # every reply sent twice (pre-150, Q20)
    spurious_parse_error_percent: float = 0.0  # valid requests answered with -32700 id 0 (Q10)
    ignore_first_setmode: bool = False  # the first SetMode after a quiet spell is acked, not applied (Q12)
    leave_passive_after_s: float | None = None  # Passive silently abandoned after this long (Q13)
    reply_to_port: int | None = None  # replies go to this port, not the sender's (Q18)
    passive_returns_to_auto: bool = False  # after cd_time: Auto (taurgis mock) instead of the previous mode
    # A rogue or glitching unit: wire field -> the value it reports instead, in every reply that carries
    # that field (e.g. {"bat_soc": 250} for ES.GetStatus and ES.GetMode). Change it while running.
    rogue_values: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass
class Slot:
    start: int  # minutes since midnight
    end: int  # inclusive minute
    weekdays: int
    power: int
    enabled: bool

    def active(self, at: datetime) -> bool:
        if not self.enabled or not self.weekdays & (1 << at.weekday()):
            return False
        minute = at.hour * 60 + at.minute
        if self.start <= self.end:
            return self.start <= minute <= self.end
        return minute >= self.start or minute <= self.end  # wraps past midnight


@dataclass
class SimulatedBattery:
    profile: FirmwareProfile
    physics: BatteryPhysics
    site: Site
    ble_mac: str
    ip: str
    phase: int = 0
    wifi_mac: str = "02f0e1d2c3b4"
    wifi_name: str = "HomeNet"
    rssi: int = -58
    quirks: Quirks = field(default_factory=Quirks)
    mode: str = "Auto"
    previous_mode: str = "Auto"
    passive_power: int = 0
    passive_until: float = 0.0  # simulated seconds
    passive_since: float = 0.0
    slots: list[Slot] = field(default_factory=lambda: [Slot(0, 0, 0, 0, False) for _ in range(10)])
    led_on: bool = True
    ble_advertising: bool = True
    requests: int = 0
    setmode_log: list[dict[str, Any]] = field(default_factory=list)
    # Modbus control (docs/marstek-modbus.md §3): set-points in RAM, no countdown as Passive's cd_time.
    rs485_control: bool = False  # 42000: while on, 42010 decides; off resumes `mode`, which it never changed
    force_mode: int = 0  # 42010: 0 stop, 1 charge, 2 discharge
    force_charge_w: int = 0  # 42020
    force_discharge_w: int = 0  # 42021
    charge_to_soc: int = 0  # 42011: stored only; its effect is unverified
    charge_cutoff_soc: float = 100.0  # 44000, E v1/v2 only
    max_charge_setting_w: int = field(init=False)  # 44002: the firmware clamps every forced set-point to it
    max_discharge_setting_w: int = field(init=False)  # 44003
    _last_setmode_at: float = -1e18
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.quirks.seed}-{self.ble_mac}")
        self.max_charge_setting_w = self.profile.max_charge_w
        self.max_discharge_setting_w = self.profile.max_discharge_w
        if self.profile.pv_channels:
            self.physics.pv_w = [0.0] * self.profile.pv_channels
        self.site.attach(self.phase, lambda: self.physics.ac_power)

    @property
    def src(self) -> str:
        return f"{self.profile.src_prefix}-{self.ble_mac}"

    # EMS ------------------------------------------------------------------------------------------

    def tick(self, seconds: float, now_s: float, at: datetime) -> None:
        """Advance the battery by `seconds` of simulated time."""
        if self.mode == "Passive":
            left_by_quirk = (
                self.quirks.leave_passive_after_s is not None
                and now_s - self.passive_since >= self.quirks.leave_passive_after_s
            )
            if left_by_quirk:
                self.mode = "Auto"
            elif now_s >= self.passive_until:
                # Which mode follows is undocumented: the previous one (foae) by default, Auto as an option.
                self.mode = "Auto" if self.quirks.passive_returns_to_auto else self.previous_mode
        if self.profile.pv_channels:
            share = self.site.household.pv_w(at)[0] * 3 / max(self.site.household.pv_kwp, 0.1) / 1000
            self.physics.pv_w = [
                round(450 * share * (1 - 0.05 * i), 1) for i in range(self.profile.pv_channels)
            ]
        self.physics.step(seconds, self._target(seconds, at))

    def _target(self, seconds: float, at: datetime) -> float:
        if self.rs485_control:
            return self._forced_target()
        match self.mode:
            case "Auto" | "AI":
                error = self.site.total_power()
                if abs(error) < _AUTO_DEADBAND_W:
                    return self.physics.ac_power
                response = 1 - math.exp(-seconds / _AUTO_TIME_CONSTANT_S)
                return self.physics.ac_power + error * response
            case "Passive":
                return float(self.passive_power)
            case "Manual":
                for slot in self.slots:
                    if slot.active(at):
                        return float(slot.power)
                return 0.0
            case _:  # UPS holds the charge
                return 0.0

    def _forced_target(self) -> float:
        """A forced mode runs until stopped; only the BMS ends it: full (or the E v1/v2 cut-off) when
        charging, the SOC floor when discharging (docs/marstek-modbus.md §3.3, §4.4)."""
        p = self.physics
        if self.force_mode == 1 and p.soc < self.charge_cutoff_soc:
            return -float(min(self.force_charge_w, self.max_charge_setting_w))
        if self.force_mode == 2 and p.soc > p.soc_floor:
            return float(min(self.force_discharge_w, self.max_discharge_setting_w))
        return 0.0

    # protocol -------------------------------------------------------------------------------------

    def handle(self, data: bytes, sender: Address, now_s: float) -> list[tuple[bytes, Address]]:
        """Answer one request datagram: zero, one or (with the duplicate quirk) two replies."""
        self.requests += 1
        if self._rng.random() * 100 < self.quirks.loss_percent:
            return []
        reply = self._answer(data, now_s)
        if reply is None:
            return []
        target = (sender[0], self.quirks.reply_to_port) if self.quirks.reply_to_port else sender
        encoded = self._encode(reply)
        return [(encoded, target)] * (2 if self.quirks.duplicate_replies else 1)

    def _encode(self, reply: dict[str, Any]) -> bytes:
        if self.profile.pretty:
            return json.dumps(reply, indent="\t", separators=(",", ":\t")).encode()
        return json.dumps(reply, separators=(",", ":")).encode()

    def _error(
        self, request_id: int | str, code: int, message: str, data: int | None = None
    ) -> dict[str, Any]:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        return {"id": request_id, "src": self.src, "error": error}

    def _answer(self, data: bytes, now_s: float) -> dict[str, Any] | None:
        if not data:
            return None
        try:
            request = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return self._error(0, -32700, "Parse error", 402)
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return self._error(0, -32600, "Invalid Request")
        raw_id = request.get("id")
        if isinstance(raw_id, str) and self.profile.int_ids_only:
            return None
        if isinstance(raw_id, bool) or not isinstance(raw_id, int | str):
            return self._error(0, -32600, "Invalid Request")
        request_id = raw_id & 0xFFFF if isinstance(raw_id, int) else raw_id
        if self.quirks.spurious_parse_error_percent and (
            self._rng.random() * 100 < self.quirks.spurious_parse_error_percent
        ):
            return self._error(0, -32700, "Parse error", 403)
        try:
            method = Method(request["method"])
        except ValueError:
            method = None
        if method is not None and method in self.profile.silent:
            return None
        served = method is not None and (method in self.profile.methods or method is Method.SET_MODE)
        if not served:
            if self.profile.unknown_method == "silent":
                return None
            return self._error(request_id, -32601, "Method not found", 424)
        assert method is not None
        params = request.get("params")
        if not isinstance(params, dict):
            return self._error(request_id, -32602, "Invalid params")
        if method is Method.GET_DEVICE:
            wanted = params.get("ble_mac")
            if wanted not in ("0", self.ble_mac):
                return None if isinstance(wanted, str) else self._error(request_id, -32602, "Invalid params")
        elif method not in (Method.SET_DOD, Method.LED_CTRL, Method.BLE_ADV) and not isinstance(
            params.get("id"), int
        ):
            return self._error(request_id, -32602, "Invalid params")
        result = self._result(method, params, now_s)
        rogue = {k: v for k, v in self.quirks.rogue_values.items() if k in result and k != "id"}
        return {"id": request_id, "src": self.src, "result": result | rogue}

    def _result(self, method: Method, params: dict[str, Any], now_s: float) -> dict[str, Any]:
        p, prof = self.physics, self.profile
        match method:
            case Method.GET_DEVICE:
                return {
                    "device": prof.device,
                    "ver": prof.ver,
                    "ble_mac": self.ble_mac,
                    "wifi_mac": self.wifi_mac,
                    "wifi_name": self.wifi_name,
                    "ip": self.ip,
                }
            case Method.WIFI_STATUS:
                return {
                    "id": 0,
                    "wifi_mac": self.wifi_mac,
                    "ssid": self.wifi_name,
                    "rssi": self.rssi,
                    "sta_ip": self.ip,
                    "sta_gate": _gateway(self.ip),
                    "sta_mask": "255.255.255.0",
                    "sta_dns": _gateway(self.ip),
                }
            case Method.BLE_STATUS:
                return {"id": 0, "state": "disconnect", "ble_mac": self.ble_mac}
            case Method.BAT_STATUS:
                result: dict[str, Any] = {
                    "id": 0,
                    "soc": round(p.soc),
                    "charg_flag": p.can_charge,
                    "dischrg_flag": p.can_discharge,
                    "bat_temp": round(p.temperature_c * prof.temperature_scale, 1),
                    "bat_capacity": float(round(p.remaining_wh * prof.remaining_scale)),
                    "rated_capacity": float(p.capacity_wh),
                }
                if prof.bat_extras:
                    volts = 48.0 + 3.3 * p.soc / 100
                    result |= {
                        "bat_voltage": round(volts * 100),
                        "bat_current": round(-p.dc_power / volts * 100),
                        "error_code": 0,
                    }
                return result
            case Method.PV_STATUS:
                result = {"id": 0}
                for i, watts in enumerate(p.pv_w, start=1):
                    volts = 38.0 if watts > 0 else 0.0
                    scale = prof.pv1_scale if i == 1 else 1.0
                    result |= {
                        f"pv{i}_power": round(watts * scale),
                        f"pv{i}_voltage": volts,
                        f"pv{i}_current": round(watts / volts, 2) if volts else 0.0,
                        f"pv{i}_state": int(watts > 0),
                    }
                return result
            case Method.ES_STATUS:
                result = {
                    "id": 0,
                    "bat_soc": round(p.soc),
                    "bat_cap": int(p.capacity_wh),
                    "pv_power": 0 if prof.es_pv_broken else round(p.pv_total),
                    "ongrid_power": round(p.ac_power),
                    "offgrid_power": 0,
                    "total_pv_energy": 0
                    if prof.es_pv_broken or not prof.pv_channels
                    else self._energy(p.pv_wh, prof.pv_energy_scale),
                    "total_grid_output_energy": self._energy(p.ac_out_wh),
                    "total_grid_input_energy": self._energy(p.ac_in_wh),
                    "total_load_energy": self._energy(0.0),
                }
                if prof.bat_power_field:
                    result["bat_power"] = round(-p.dc_power * prof.bat_power_scale)  # wire: + = charging
                return result
            case Method.ES_MODE:
                result = {
                    "id": 0,
                    "mode": self.mode,
                    "ongrid_power": round(p.ac_power),
                    "offgrid_power": 0,
                    "bat_soc": round(p.soc),
                }
                if prof.getmode_ct_fields:
                    result |= self._meter(zero=prof.getmode_ct_zero)
                return result
            case Method.EM_STATUS:
                result = self._meter(zero=False)
                if prof.em_parse_state:
                    result["parse_state"] = 1
                return result
            case Method.SET_MODE:
                return {"id": 0, "set_result": self._set_mode(params.get("config"), now_s)}
            case Method.SET_DOD:
                value = params.get("value")
                ok = isinstance(value, int) and not isinstance(value, bool) and 30 <= value <= 88
                if ok:
                    assert isinstance(value, int)
                    p.dod = value
                return {"id": 0, "set_result": ok}
            case Method.LED_CTRL:
                state = params.get("state")
                if state in (0, 1):
                    self.led_on = state == 1
                return {"id": 0, "set_result": state in (0, 1)}
            case Method.BLE_ADV:
                enable = params.get("enable")
                if enable in (0, 1):
                    self.ble_advertising = enable == 0  # inverted on the wire
                return {"id": 0, "set_result": enable in (0, 1)}

    def _energy(self, wh: float, scale: float | None = None) -> float | int:
        raw = wh * (self.profile.energy_scale if scale is None else scale)
        return float(round(raw, 1)) if self.profile.energy_as_float else round(raw)

    def _meter(self, *, zero: bool) -> dict[str, Any]:
        phases = [0, 0, 0] if zero else [round(self.site.phase_power(i)) for i in range(3)]
        return {
            "id": 0,
            "ct_state": 0 if zero else 1,
            "a_power": phases[0],
            "b_power": phases[1],
            "c_power": phases[2],
            "total_power": sum(phases),
            "input_energy": 0 if zero else round(self.site.import_wh * 10),
            "output_energy": 0 if zero else round(self.site.export_wh * 10),
        }

    def _set_mode(self, config: object, now_s: float) -> bool:
        if not isinstance(config, dict):
            return False
        name = config.get("mode")
        if not isinstance(name, str):
            return False
        name = "UPS" if name.upper() == "UPS" else name
        if name not in self.profile.modes:
            return False
        cfg_key = {
            "Auto": "auto_cfg",
            "AI": "ai_cfg",
            "Manual": "manual_cfg",
            "Passive": "passive_cfg",
            "UPS": "ups_cfg",
        }[name]
        cfg = config.get(cfg_key)
        if not isinstance(cfg, dict):
            return False
        apply = _validated(name, cfg)
        if apply is None:
            return False
        self.setmode_log.append(config)
        quiet = now_s - self._last_setmode_at > _QUIET_SPELL_S
        self._last_setmode_at = now_s
        if self.quirks.ignore_first_setmode and quiet:
            return True  # acknowledged, not applied
        if name == "Passive":
            if self.mode != "Passive":
                self.previous_mode = self.mode
                self.passive_since = now_s
            self.passive_power = max(
                -int(self.physics.max_charge_w), min(int(self.physics.max_discharge_w), cfg["power"])
            )
            self.passive_until = now_s + cfg["cd_time"]
        elif name == "Manual":
            slot = self.slots[cfg["time_num"]]
            slot.start, slot.end = _minutes(cfg["start_time"]), _minutes(cfg["end_time"])
            slot.weekdays, slot.power, slot.enabled = cfg["week_set"] & 0x7F, cfg["power"], cfg["enable"] == 1
        self.mode = name
        return True


def ticking_order(batteries: list[SimulatedBattery]) -> list[SimulatedBattery]:
    """Set-point batteries first, self-regulating ones (Auto, AI) last: in a real house the Auto control
    reacts within seconds to everything else on the meter, so within one simulation step it must see the
    others' new power, not last step's."""
    return sorted(batteries, key=lambda b: b.mode in ("Auto", "AI") and not b.rs485_control)


def _validated(mode: str, cfg: dict[str, Any]) -> dict[str, Any] | None:
    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if mode in ("Auto", "AI", "UPS"):
        return cfg if cfg.get("enable") in (0, 1) else None
    if mode == "Passive":
        ok = is_int(cfg.get("power")) and is_int(cfg.get("cd_time")) and cfg["cd_time"] > 0
        return cfg if ok else None
    ok = (
        is_int(cfg.get("time_num"))
        and 0 <= cfg["time_num"] <= 9
        and all(isinstance(cfg.get(k), str) and _HHMM.match(cfg[k]) for k in ("start_time", "end_time"))
        and is_int(cfg.get("week_set"))
        and 0 <= cfg["week_set"] <= 255
        and is_int(cfg.get("power"))
        and cfg.get("enable") in (0, 1)
    )
    return cfg if ok else None


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _gateway(ip: str) -> str:
    return ".".join([*ip.split(".")[:3], "1"])
