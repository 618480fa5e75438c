"""Bridged devices: one adapter per physical device (and the site totals, and the bridge itself).

Each turns a device link into what the MQTT bridge and the panel need: a stable id, Home Assistant
device info, its exposes, a state object, availability, and the execution of validated commands.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from .. import __version__
from ..devices.marstek.commands import AiMode, AutoMode, ManualSlot, ModeCommand, PassiveMode, UpsMode
from ..devices.marstek.datapoints import BATTERY_POINTS, Method
from ..devices.marstek.firmware import Mode
from ..devices.marstek.link import BatteryLink, local_api
from ..devices.outcome import WriteOutcome, WriteStatus
from ..devices.webasto.client import WallboxError
from ..devices.webasto.link import WallboxLink
from ..devices.webasto.registers import Cadence, WallboxModel
from . import controls as c
from .exposes import Component, Expose, bounded, sensor_from_point, sensor_from_register, state_value
from .holds import ManualHolds
from .site_energy import METERS, SiteEnergy

_LOG = logging.getLogger(__name__)
Settings = dict[str, Any]
# Modes a person picks in the Marstek app and the optimiser never sends
_APP_MODES = (Mode.MANUAL, Mode.AI, Mode.UPS)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "device"


@dataclass(frozen=True)
class Outcome:
    """A command outcome as published: what was asked, what happened, when."""

    status: str
    command: str
    detail: str
    at: float

    @property
    def summary(self) -> str:
        return f"{self.status}: {self.command}"[:250]


class BridgedDevice:
    """Common parts: last command outcome and connection state."""

    name: str
    kind: str = "device"

    def __init__(self) -> None:
        self.last_outcome: Outcome | None = None
        self.notices: list[str] = []  # problems a person has to act on (the runtime's notice board)

    @property
    def device_id(self) -> str | None:
        raise NotImplementedError

    def device_info(self) -> dict[str, Any]:
        raise NotImplementedError

    def exposes(self) -> list[Expose]:
        raise NotImplementedError

    def values(self) -> Mapping[str, Any]:
        raise NotImplementedError

    @property
    def available(self) -> bool:
        return True

    def connection_attributes(self) -> dict[str, Any]:
        return {}

    async def execute(self, key: str, value: Any, source: str = "mqtt") -> WriteOutcome:
        raise NotImplementedError

    def channel(self, key: str) -> str:
        """Commands on the same channel replace each other while queued (the latest wins)."""
        return key

    def rank(self, channel: str) -> int:
        """Queued commands run by rank, then in the order they came (see BatteryDevice)."""
        return 0

    def record(self, outcome: WriteOutcome) -> None:
        self.last_outcome = Outcome(
            outcome.status.value,
            outcome.command,
            outcome.detail + (f" ({outcome.clamped})" if outcome.clamped else ""),
            time.time(),
        )

    def reject(self, command: str, detail: str) -> None:
        self.last_outcome = Outcome(WriteStatus.REJECTED.value, command, detail, time.time())

    def state(self) -> dict[str, Any]:
        """The JSON object on the device's state topic: every exposed key, None when unknown."""
        values = {
            **self.values(),
            "last_command": self.last_outcome.summary if self.last_outcome else None,
            "connection": "online" if self.available else "offline",
            "problem": bool(self.notices),
        }
        state: dict[str, Any] = {}
        for expose in self.exposes():
            if expose.component is Component.BUTTON or expose.write_only:
                continue
            value = state_value(expose, values.get(expose.key))
            if expose.options and value is not None and value not in expose.options:
                value = None  # an enum value Home Assistant would refuse
            state[expose.key] = value
        return state

    def attributes(self) -> dict[str, dict[str, Any]]:
        """JSON attributes, for the exposes that have an attributes topic."""
        outcome = self.last_outcome
        wanted = {e.key for e in self.exposes() if e.attributes}
        every = {
            "last_command": {}
            if outcome is None
            else {
                "status": outcome.status,
                "command": outcome.command,
                "detail": outcome.detail,
                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(outcome.at)),
            },
            "connection": self.connection_attributes(),
            "problem": {"problems": list(self.notices)},
        }
        return {key: value for key, value in every.items() if key in wanted}

    def common_exposes(self) -> list[Expose]:
        return [c.LAST_COMMAND, c.CONNECTION, c.PROBLEM]


# Everything that changes the battery's mode: one channel (the latest request wins), and a manual hold.
_MODE_KEYS = ("mode", "charge_now", "discharge_now", "stop", "clear_schedules")


class BatteryDevice(BridgedDevice):
    kind = "battery"

    def __init__(
        self,
        link: BatteryLink,
        settings: Settings,
        save: Callable[[], None] = lambda: None,
        holds: ManualHolds | None = None,
    ) -> None:
        super().__init__()
        self.link = link
        self.name = link.name
        self.settings = settings
        _drop_implausible(settings, self.name)
        self.settings.setdefault("passive_power", 1000)
        self.settings.setdefault("passive_duration", 30)
        self._save = save
        if isinstance(settings.get("depth_of_discharge"), int):
            link.client.soc_floor = 100.0 - settings["depth_of_discharge"]  # set before a restart: still so
        self.holds = holds or ManualHolds({})
        # Taken by every mode write, the person's and the optimiser's, so that a hold is checked and a
        # write sent as one step: an optimiser write can never land after a person's command.
        self.mode_lock = asyncio.Lock()

    @property
    def device_id(self) -> str | None:
        mac = self.link.client.identity
        return f"battery_{mac}" if mac else None

    @property
    def available(self) -> bool:
        return self.link.online

    @property
    def announce_ready(self) -> bool:
        """Its model is known: the limits, modes and sensors it exposes are its own, not the generic ones."""
        return self.link.snapshot.firmware.ver is not None

    def device_info(self) -> dict[str, Any]:
        firmware = self.link.snapshot.firmware
        mac = self.link.client.identity or ""
        info: dict[str, Any] = {
            "name": self.name,
            "manufacturer": "Marstek",
            "model": firmware.model if firmware.family.value != "unknown" else "Venus",
            "connections": [["bluetooth", ":".join(mac[i : i + 2] for i in range(0, 12, 2))]] if mac else [],
        }
        if firmware.ver is not None:
            info["sw_version"] = str(firmware.ver)
        return info

    def modes(self) -> tuple[str, ...]:
        firmware = self.link.snapshot.firmware
        modes = [Mode.AUTO, Mode.AI, Mode.MANUAL, Mode.PASSIVE]
        if firmware.has_system_setters:
            modes.append(Mode.UPS)
        local_api = "udp" in self.link.client.transports
        return tuple(m.value for m in modes if local_api or m.value not in c.LOCAL_API_MODES)

    def exposes(self) -> list[Expose]:
        limits = self.link.client.limits
        # Only what this firmware reports: a Venus E has no PV inputs, only the HMG-50 sends pack voltage.
        seen = self.link.snapshot.values
        sensors = [sensor_from_point(p) for p in BATTERY_POINTS if p.key != "mode" and p.key in seen]
        exposes = [
            *sensors,
            Expose(**{**c.MODE.__dict__, "options": self.modes()}),
            bounded(c.PASSIVE_POWER, -limits.charge_w, limits.discharge_w),
            c.PASSIVE_DURATION,
            c.CHARGE_NOW,
            c.DISCHARGE_NOW,
            c.STOP,
            c.CLEAR_SCHEDULES,
            c.MANUAL_HOLD,
            c.RESUME_OPTIMISER,
            c.TRANSPORT,
        ]
        transports = self.link.client.transports
        if self.link.snapshot.firmware.has_system_setters or "udp" not in transports:
            # Over Modbus alone the depth of discharge is the add-on's own floor for forced discharging.
            exposes += [c.DEPTH_OF_DISCHARGE, c.LED]
        # Only what one of its transports carries: no LED or schedule slots on a battery on Modbus alone.
        offered = [e for e in exposes if e.needs is None or e.needs in transports]
        return offered + self.common_exposes()

    def _not_carried(self, key: str, value: Any) -> WriteOutcome | None:
        """A command the transport in use cannot carry (an `auto` battery on Modbus asked for the LED, UPS
        or its schedules), rejected before anything is sent, held or stored (None: it can be carried)."""
        client = self.link.client
        expose = next((e for e in self.exposes() if e.key == key), None)
        if expose is None:
            return None
        needs = "udp" if key == "mode" and value in c.LOCAL_API_MODES else expose.needs
        if needs is None or needs == client.transport:
            return None
        shown = state_value(expose, value)
        what = expose.name if expose.component is Component.BUTTON else f"{expose.name} {shown}"
        over = {"udp": "the Local API", "modbus": "Modbus"}
        if needs in client.transports:
            why = (
                f"{what} goes over {over[needs]} only, and {self.name} is reached over "
                f"{over[client.transport]} now (its Local API is silent): nothing was sent, held or stored; "
                f"ask again once its Transport shows {needs}"
            )
        else:
            why = f"{what} goes over {over[needs]} only, and {self.name} is on {over[client.transport]} alone"
        return WriteOutcome(WriteStatus.REJECTED, what, 0, why)

    def values(self) -> Mapping[str, Any]:
        snapshot = self.link.snapshot
        mode = snapshot.mode
        return {
            **self.link.current_values(),
            "mode": mode.value if mode else None,
            "passive_power": self.settings.get("passive_power"),
            "passive_duration": self.settings.get("passive_duration"),
            # The battery cannot be asked; what the add-on set, else the firmware's default that the
            # optimiser assumes as well (DOD 88 = a floor of 12 %).
            "depth_of_discharge": self.settings.get(
                "depth_of_discharge", round(100 - self.link.client.soc_floor)
            ),
            "manual_hold": self._hold_end(),
            "transport": self.link.client.transport,
        }

    def _hold_end(self) -> str | None:
        hold = self.holds.get(self.device_id)
        return None if hold is None else datetime.fromtimestamp(hold.until).astimezone().isoformat()

    def connection_attributes(self) -> dict[str, Any]:
        client = self.link.client
        return {
            "address": f"{client.host}:{client.port}",
            "transport": client.transport,
            "last_error": self.link.last_error or None,
            "unsupported_methods": [m.value for m in client.unsupported_methods],
            "problems": self.link.snapshot.problems[-5:],
            "firmware": self.link.snapshot.firmware.ver,
        }

    def channel(self, key: str) -> str:
        # Everything that changes the battery's mode is one channel: the latest request wins. Clearing the
        # schedules is not a mode (it puts back the one the battery had): a mode chosen after it must not
        # drop it.
        return "mode" if key in (*_MODE_KEYS, "resume_optimiser") and key != "clear_schedules" else key

    def rank(self, channel: str) -> int:
        # The mode command runs after the settings queued with it (its Passive power and duration, the
        # schedules cleared), whichever came first: the person's last values are what it runs with.
        return 1 if channel == "mode" else 0

    def _passive_power(self, sign: int) -> int:
        return abs(int(self.settings["passive_power"])) * sign

    def _person_command(self, key: str, value: Any) -> tuple[ModeCommand | None, int | None]:
        """The command for a mode key, and the Passive power to keep leased (None: not Passive)."""
        if key == "mode" and value == "Passive":
            key = "charge_now" if self.settings["passive_power"] < 0 else "discharge_now"
        power = {"charge_now": -1, "discharge_now": 1, "stop": 0}
        if key in power:
            return None, self._passive_power(power[key])
        if key == "clear_schedules":
            return None, None
        if value == "Manual":
            # Manual follows the battery's own schedule; slot 9 takes the disabled placeholder (Q22).
            return ManualSlot.disabled(9), None
        commands: dict[str, ModeCommand] = {"Auto": AutoMode(), "AI": AiMode(), "UPS": UpsMode()}
        return commands[str(value)], None

    async def _execute_mode(self, key: str, value: Any, source: str) -> WriteOutcome:
        client = self.link.client
        command, passive_power = self._person_command(key, value)
        duration_s = int(self.settings["passive_duration"]) * 60 if passive_power is not None else None
        async with self.mode_lock:
            device_id = self.device_id or self.name
            previous = self.holds.get(device_id)
            if passive_power is not None:
                wish = f"Passive {passive_power:+d} W for {duration_s // 60 if duration_s else 0} min"
                before = self.link.snapshot.mode
                changed = self.holds.changed_at(device_id)
                read_for = self.link.snapshot.age("mode")
                if changed is not None and read_for is not None and read_for > self.holds.now() - changed:
                    before = None  # read before the last command of a person's: not where it is now
                prior = before.value if before is not None and before is not Mode.PASSIVE else ""
                if before is Mode.PASSIVE and previous is not None and previous.passive_power is not None:
                    prior = previous.prior_mode  # a new Passive of a person's over their last one
                hold = self.holds.start(device_id, wish, source, duration_s, passive_power, prior)
                outcome = await client.set_mode(PassiveMode(passive_power, self.holds.lease_seconds(hold)))
            elif command is None:
                hold = self.holds.start(device_id, "clear manual schedules", source)
                outcome = await client.clear_schedules()
            else:
                hold = self.holds.start(device_id, command.describe(), source)
                outcome = await client.set_mode(command)
            if outcome.status is WriteStatus.REJECTED:
                # Nothing changed on the battery: whatever held it before holds it still.
                self.holds.release(device_id)
                if previous is not None:
                    self.holds.restore(previous)
                return outcome
        lease = " (renewed every 5 min)" if passive_power is not None else ""
        return replace(outcome, detail=f"{outcome.detail}; {hold.describe()}{lease}")

    # A renewal decides on a reading of the mode at most this old (s); an older one is taken again first.
    fresh_mode_s = 3.0
    mode_read_s = 4.0  # the most a renewal waits for that reading (two read attempts at the defaults)

    async def _mode_for_renewal(self) -> Mode | None:
        """The battery's mode for a lease renewal to decide on: read again when the last reading is older
        than `fresh_mode_s`, so that a mode picked in the Marstek app since the last poll is not overwritten
        once by the renewal; else, or when that read fails, the last reading.

        Once a renewal (every few minutes) only: the polls themselves are left as they are."""
        snapshot = self.link.snapshot
        age = snapshot.age("mode")
        if age is not None and age <= self.fresh_mode_s:
            return snapshot.mode
        client = self.link.client
        if client.transport != "udp":
            # Over Modbus the client has no read of the mode alone: its `read()` is a whole poll (seconds,
            # not cut at a deadline) that also keeps the lease, beside the link's own poll. The last poll's
            # reading decides there, as before.
            return snapshot.mode
        # On `auto`, its UDP client's own read: the fallback's read may switch to Modbus at the end of a
        # silence, and the link's poll may be doing the same at that moment.
        udp = local_api(client)
        if udp is None:
            return snapshot.mode
        started = time.monotonic()
        # The mode alone goes into the snapshot: ES.GetMode's power, SOC and CT copies rank below what the
        # last poll read from ES.GetStatus and EM.GetStatus, and are left as that poll left them.
        report = await udp.read(
            [Method.ES_MODE],
            deadline=started + self.mode_read_s,
            give_up_after=1,
            only={Method.ES_MODE: ("mode",)},
        )
        why = "; ".join(str(e) for e in report.errors.values()) or (
            "not answered on this firmware" if Method.ES_MODE in report.skipped else "no mode in the answer"
        )
        snapshot = self.link.snapshot
        age = snapshot.age("mode")
        if age is None or age > time.monotonic() - started:
            # Not answered in time (or not at all on this firmware, or without a mode): renewing on the last
            # reading is what the add-on did before it asked, and a silent battery must not lose the
            # person's Passive for it.
            _LOG.info(
                "%s: the mode could not be read before renewing the Passive (%s): deciding on the last "
                "reading (%s)",
                self.name,
                why,
                "never read" if age is None else f"{age:.0f} s old",
            )
        return snapshot.mode

    async def renew_lease(self) -> WriteOutcome | None:
        """Write a person's Passive command again before its countdown runs out (None: nothing due)."""
        if not self.available or self.holds.lease_due(self.device_id) is None:
            return None
        async with self.mode_lock:
            hold = self.holds.lease_due(self.device_id)  # a newer command may have replaced it meanwhile
            if hold is None or hold.passive_power is None:
                return None
            # Read now, not at the last poll: a mode picked in the app since then wins as well.
            modbus = self.link.client.transport == "modbus"
            mode = await self._mode_for_renewal()
            if (self.link.client.transport == "modbus") != modbus:
                return None  # `auto` switched while it was read: the next round reads it where it is now
            # Over the Local API a countdown that ran out goes back to the prior mode, or to Auto on some
            # firmware: Auto is no one's choice there. Over Modbus no countdown runs out (the add-on holds
            # the lease), so Auto read there was picked in the app too.
            chosen = mode in _APP_MODES or (mode is Mode.AUTO and modbus)
            if chosen and mode is not None and hold.prior_mode and mode.value != hold.prior_mode:
                # That later choice of a person's wins over the Passive: Manual, AI or UPS is held as any
                # app change (an optimiser would take it otherwise); Auto is the optimiser's again.
                if mode is Mode.AUTO:
                    self.holds.release(hold.device_id)
                else:
                    until = self.holds.now() + self.holds.default_hold_s()
                    self.holds.hold_outside(hold.device_id, mode.value, until)
                _LOG.warning(
                    "%s: put in %s outside the add-on: the Passive of the manual hold is not renewed",
                    self.name,
                    mode.value,
                )
                return None
            command = PassiveMode(hold.passive_power, self.holds.lease_seconds(hold))
            outcome = await self.link.client.set_mode(command)
            if outcome.status is not WriteStatus.REJECTED and outcome.status is not WriteStatus.NOT_APPLIED:
                self.holds.leased(hold)
            else:
                self.record(replace(outcome, command=f"{outcome.command} (lease renewal)"))
        return outcome

    async def end_lease(self) -> WriteOutcome | None:
        """The add-on stops: a battery a person left in Passive goes back to Auto (the hold is kept, and
        taken up again after a restart if its time has not run out)."""
        hold = self.holds.get(self.device_id)
        if hold is None or hold.passive_power is None or not self.available:
            return None
        async with self.mode_lock:
            outcome = await self.link.client.set_mode(AutoMode())
            if outcome.ok:
                self.holds.left_in(hold, Mode.AUTO.value)  # a restart must not take it for the app's Auto
            return outcome

    async def execute(self, key: str, value: Any, source: str = "mqtt") -> WriteOutcome:
        client = self.link.client
        refused = self._not_carried(key, value)
        if refused is not None:
            return refused
        match key:
            case "passive_power" | "passive_duration":
                self.settings[key] = int(value)
                self._save()
                return WriteOutcome(
                    WriteStatus.APPLIED, f"{key} = {int(value)}", 1, "stored for the next command"
                )
            case "mode" | "charge_now" | "discharge_now" | "stop" | "clear_schedules":
                return await self._execute_mode(key, value, source)
            case "resume_optimiser":
                released = self.holds.hand_back(self.device_id or self.name)
                detail = (
                    "no manual hold was in force" if released is None else f"ended the {released.describe()}"
                )
                return WriteOutcome(WriteStatus.APPLIED, "return to optimiser", 1, detail)
            case "depth_of_discharge":
                outcome = await client.set_dod(int(value))
                if outcome.ok:
                    self.settings[key] = int(value)
                    self._save()
                return outcome
            case "led":
                outcome = await client.set_led(bool(value))
                if outcome.ok:
                    self.settings[key] = bool(value)
                    self._save()
                return outcome
        return WriteOutcome(WriteStatus.REJECTED, key, 1, f"{key} is not a battery command")


_WALLBOX_CONTROLLED = {
    "failsafe_current",
    "failsafe_timeout",
    "charging_current_setpoint",
    "phase_switch",
    "life_bit",
}


class ChargeModePort(Protocol):
    """The wallbox's charge-mode control (addon/car_control.py)."""

    @property
    def mode(self) -> str: ...

    def set_mode(self, mode: str, why: str = "") -> str | None: ...  # None, or why it was refused

    def set_target(self, *, energy_kwh: float | None = None, departure: str | None = None) -> None: ...

    @property
    def energy_kwh(self) -> float: ...

    @property
    def departure(self) -> str: ...

    def describe(self) -> str: ...


class WallboxDevice(BridgedDevice):
    kind = "wallbox"

    def __init__(self, link: WallboxLink, known_serial: str | None = None, *, by_port: bool = False) -> None:
        super().__init__()
        self.link = link
        self.name = link.name
        self.known_serial = known_serial  # learned before: entities exist even while the box is away
        # Another configured box has this host and unit id (a Modbus proxy, port forwards): the port tells
        # them apart. Only then: every other box keeps the id its entities have always had.
        self.by_port = by_port
        self.charge: ChargeModePort | None = None  # set by the runtime

    @property
    def device_id(self) -> str | None:
        serial = self.link.snapshot.values.get("serial_number") or self.known_serial
        if isinstance(serial, str) and serial:
            return f"wallbox_{slug(serial)}"
        cfg = self.link.client.config
        if cfg.model is WallboxModel.UNITE and not self.link.online:
            return None  # its serial is the identity: wait for the first connection
        return f"wallbox_{slug(cfg.host)}_{cfg.unit_id}" + (f"_{cfg.port}" if self.by_port else "")

    @property
    def available(self) -> bool:
        return self.link.online

    def device_info(self) -> dict[str, Any]:
        values, cfg = self.link.snapshot.values, self.link.client.config
        brand = values.get("brand")
        info: dict[str, Any] = {
            "name": self.name,
            "manufacturer": brand if isinstance(brand, str) and brand else "Webasto",
            "model": "UNITE" if cfg.model is WallboxModel.UNITE else "NEXT",
            "configuration_url": f"http://{cfg.host}/",
        }
        if isinstance(values.get("firmware"), str):
            info["sw_version"] = values["firmware"]
        return info

    def exposes(self) -> list[Expose]:
        client = self.link.client
        _, maximum = client.current_limits()
        registers = [
            r
            for r in client.rules.registers
            if r.readable
            and r.cadence is not Cadence.NEVER
            and r.key not in _WALLBOX_CONTROLLED
            and client.supports(r.key)
        ]
        exposes = [sensor_from_register(r) for r in registers]
        exposes += [
            bounded(c.CHARGING_CURRENT, 0, maximum),
            bounded(c.FAILSAFE_CURRENT, 0, maximum),
            c.FAILSAFE_TIMEOUT,
            c.KEEPALIVE,
        ]
        if client.rules.has("session_command"):
            exposes += [c.START_SESSION, c.STOP_SESSION]
        if client.supports("phase_switch"):
            exposes.append(c.PHASES)
        if self.charge is not None:
            exposes += [c.CHARGE_MODE, c.CHARGE_ENERGY, c.DEPARTURE, c.CHARGE_CONTROL]
        return exposes + self.common_exposes()

    def values(self) -> Mapping[str, Any]:
        values, client = self.link.snapshot.values, self.link.client
        readable_setpoint = values.get("charging_current_setpoint")
        return {
            **values,
            "charging_current": readable_setpoint
            if readable_setpoint is not None
            else client.current_setpoint,
            "phases": values.get("phase_switch"),
            "charge_mode": self.charge.mode if self.charge is not None else None,
            "charge_energy": self.charge.energy_kwh if self.charge is not None else None,
            "departure": self.charge.departure if self.charge is not None else None,
            "charge_control": self.charge.describe()[:250] if self.charge is not None else None,
        }

    def connection_attributes(self) -> dict[str, Any]:
        cfg = self.link.client.config
        return {
            "address": f"{cfg.host}:{cfg.port}",
            "unit_id": cfg.unit_id,
            "model": cfg.model.value,
            "last_error": self.link.last_error or None,
            "problems": self.link.snapshot.problems[-5:],
            "keepalive_interval_s": self.link.keepalive_interval(),
        }

    async def execute(self, key: str, value: Any, source: str = "mqtt") -> WriteOutcome:
        client = self.link.client
        match key:
            case "charging_current":
                return await self._person_wins(
                    f"charging current set from {source}", client.set_charging_current(float(value))
                )
            case "charge_energy" | "departure" if self.charge is not None:
                if key == "charge_energy":
                    self.charge.set_target(energy_kwh=float(value))
                else:
                    self.charge.set_target(departure=str(value))
                return WriteOutcome(WriteStatus.APPLIED, f"{key} {value}", 1, "in force; stored")
            case "charge_mode":
                refused = self.charge.set_mode(str(value), f"from {source}") if self.charge else "no control"
                if refused:
                    return WriteOutcome(WriteStatus.REJECTED, f"charge mode {value}", 1, refused)
                return WriteOutcome(WriteStatus.APPLIED, f"charge mode {value}", 1, "in force; stored")
            case "failsafe_current":
                return await client.set_failsafe(current=float(value))
            case "failsafe_timeout":
                return await client.set_failsafe(timeout_s=float(value))
            case "keepalive":
                try:
                    await client.keepalive()
                except WallboxError as exc:
                    return WriteOutcome(WriteStatus.NOT_APPLIED, "keepalive", 1, str(exc))
                return WriteOutcome(WriteStatus.APPLIED, "keepalive", 1, "life bit written")
            case "start_session":
                return await client.start_session()
            case "stop_session":
                return await client.stop_session()
            case "phases":
                if not client.supports("phase_switch"):
                    return await client.set_phases(int(value))  # refused, with the reason
                return await self._person_wins(f"phases set from {source}", client.set_phases(int(value)))
        return WriteOutcome(WriteStatus.REJECTED, key, 1, f"{key} is not a wallbox command")

    async def _person_wins(self, why: str, write: Awaitable[WriteOutcome]) -> WriteOutcome:
        """A person's current or phases win over the charge mode: it steps back to manual until they choose
        one again. Before the write, so that a charge step that runs while it is on its way cannot undo it;
        and back as it was when the wallbox refused it (nothing was written: bad input loses nothing)."""
        before = self.charge.mode if self.charge is not None else "manual"
        if self.charge is not None and before != "manual":
            self.charge.set_mode("manual", why)
        outcome = await write
        if self.charge is not None and before != "manual" and outcome.status is WriteStatus.REJECTED:
            self.charge.set_mode(before, "back: the command was refused")
        return outcome


def _drop_implausible(settings: Settings, name: str) -> None:
    """Stored settings (state.json) outside what their control accepts are forgotten, with a warning: a
    depth of discharge of 500 % would move the optimiser's SOC floor below zero, a text would fail every
    command that uses it."""
    for control in (c.PASSIVE_POWER, c.PASSIVE_DURATION, c.DEPTH_OF_DISCHARGE):
        if control.key not in settings:
            continue
        value = settings[control.key]
        low, high = control.minimum, control.maximum
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (low is None or value >= low)
            and (high is None or value <= high)
        ):
            continue
        _LOG.warning("%s: the stored %s %r is not usable; back to its default", name, control.key, value)
        del settings[control.key]


@dataclass
class SiteSources:
    """What the site totals are computed from: the devices, and the meter and PV readings (W) if any."""

    batteries: list[BatteryDevice]
    wallboxes: list[WallboxDevice] = field(default_factory=list)
    grid: Callable[[], float | None] = lambda: None  # + = import; None: no fresh reading
    pv: Callable[[], float | None] = lambda: None  # None: no fresh reading
    pv_measured: bool = False  # a PV source is configured (else the house load leaves PV out)
    energy: SiteEnergy | None = None  # the Energy dashboard's meters


@dataclass(frozen=True)
class SitePoint:
    key: str
    name: str
    unit: str | None
    device_class: str | None
    precision: int | None
    compute: Callable[[SiteSources], float | int | None]
    icon: str | None = None


def _online(batteries: list[BatteryDevice]) -> list[BatteryDevice]:
    return [b for b in batteries if b.available]


def _numbers(batteries: list[BatteryDevice], key: str) -> list[float]:
    return [v for b in _online(batteries) if (v := b.link.snapshot.number(key)) is not None]


def _weighted_soc(site: SiteSources) -> float | None:
    return weighted_soc(site.batteries)


def weighted_soc(batteries: list[BatteryDevice]) -> float | None:
    """The online batteries' state of charge together, weighted by their capacity."""
    pairs = [
        (b.link.snapshot.soc, b.link.snapshot.number("rated_capacity") or 1.0) for b in _online(batteries)
    ]
    known = [(soc, cap) for soc, cap in pairs if soc is not None]
    total = sum(cap for _, cap in known)
    return round(sum(soc * cap for soc, cap in known) / total, 1) if known and total else None


def _stored_kwh(site: SiteSources) -> float | None:
    parts = _numbers(site.batteries, "remaining_energy")
    return round(sum(parts) / 1000, 3) if parts else None


def _battery_power(site: SiteSources) -> float | None:
    parts = _numbers(site.batteries, "ac_power")
    return sum(parts) if parts else None


def _wallbox_power(site: SiteSources) -> float | None:
    parts = [v for w in site.wallboxes if w.available and (v := w.link.snapshot.number("power")) is not None]
    return sum(parts) if parts else None


def _house_load(site: SiteSources) -> float | None:
    """What the home itself uses: grid + PV + battery discharge - car charging (energy balance)."""
    grid = site.grid()
    pv = site.pv() if site.pv_measured else 0.0
    if grid is None or pv is None:
        return None
    load = grid + pv + (_battery_power(site) or 0.0) - (_wallbox_power(site) or 0.0)
    return max(0.0, round(load))  # meters sampled at different moments can disagree for a second


SITE_POINTS: tuple[SitePoint, ...] = (
    SitePoint("grid_power", "Grid power", "W", "power", 0, lambda s: s.grid(), "mdi:transmission-tower"),
    SitePoint("pv_power", "PV power", "W", "power", 0, lambda s: s.pv(), "mdi:solar-power"),
    SitePoint("house_load", "House load", "W", "power", 0, _house_load, "mdi:home-lightning-bolt"),
    SitePoint("battery_power", "Battery power", "W", "power", 0, _battery_power, "mdi:home-battery"),
    SitePoint("wallbox_power", "Wallbox power", "W", "power", 0, _wallbox_power, "mdi:ev-station"),
    SitePoint("soc_average", "Average state of charge", "%", "battery", 1, _weighted_soc),
    SitePoint(
        "soc_min",
        "Lowest state of charge",
        "%",
        "battery",
        0,
        lambda s: min(_numbers(s.batteries, "soc"), default=None),
    ),
    SitePoint(
        "soc_max",
        "Highest state of charge",
        "%",
        "battery",
        0,
        lambda s: max(_numbers(s.batteries, "soc"), default=None),
    ),
    SitePoint("stored_energy", "Stored energy", "kWh", "energy_storage", 2, _stored_kwh),
    SitePoint("batteries_online", "Batteries online", None, None, 0, lambda s: len(_online(s.batteries))),
)


class SiteDevice(BridgedDevice):
    """Totals over every battery and wallbox, with the grid meter and PV: the home's power flow."""

    kind = "site"

    def __init__(self, sources: SiteSources) -> None:
        super().__init__()
        self.sources = sources
        self.name = "Energy site"

    @property
    def batteries(self) -> list[BatteryDevice]:
        return self.sources.batteries

    @property
    def device_id(self) -> str:
        return "site"

    def device_info(self) -> dict[str, Any]:
        return {"name": self.name, "manufacturer": "marstek_webasto_addon", "model": "Site totals"}

    def _points(self) -> list[SitePoint]:
        s = self.sources
        skip = set()
        if not s.wallboxes:
            skip.add("wallbox_power")
        if not s.pv_measured:
            skip.add("pv_power")
        return [p for p in SITE_POINTS if p.key not in skip]

    def exposes(self) -> list[Expose]:
        exposes = [
            Expose(
                p.key,
                p.name,
                Component.SENSOR,
                p.unit,
                p.device_class,
                "measurement",
                icon=p.icon,
                precision=p.precision,
            )
            for p in self._points()
        ]
        if self.sources.energy is not None:
            exposes += [
                Expose(
                    m.key,
                    m.name,
                    Component.SENSOR,
                    "kWh",
                    "energy",
                    "total_increasing",
                    icon=m.icon,
                    precision=3,
                )
                for m in METERS
            ]
        return exposes

    def values(self) -> Mapping[str, Any]:
        energy = self.sources.energy.totals() if self.sources.energy is not None else {}
        return {**{p.key: p.compute(self.sources) for p in self._points()}, **energy}

    def state(self) -> dict[str, Any]:
        values = self.values()
        return {e.key: state_value(e, values.get(e.key)) for e in self.exposes()}


class BridgeDevice(BridgedDevice):
    kind = "bridge"

    def __init__(self) -> None:
        super().__init__()
        self.name = "Marstek & Webasto bridge"
        self.started = time.time()

    @property
    def device_id(self) -> str:
        return "bridge"

    def device_info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "manufacturer": "marstek_webasto_addon",
            "model": "Add-on",
            "sw_version": __version__,
        }

    def exposes(self) -> list[Expose]:
        return [Expose("version", "Version", Component.SENSOR, entity_category="diagnostic", icon="mdi:tag")]

    def values(self) -> Mapping[str, Any]:
        return {"version": __version__}

    def state(self) -> dict[str, Any]:
        return {"version": __version__}
