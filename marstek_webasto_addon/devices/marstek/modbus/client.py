"""Async Modbus TCP client for one Venus battery: its LAN port (E v3, A, D) or an RS485-to-TCP gateway.

One connection (the battery serves one client at a time), one request at a time with the generation's
gap between a reply and the next request, and a long response timeout: firmware 150 leaves Modbus
unanswered for 4-7 s at each cloud upload (docs/marstek-modbus.md §6). pymodbus neither retries nor
reconnects: a failed request closes the socket, so a late reply can never pass for a later request's, and
the caller decides when to connect again. One exception: a Venus A/D closes the connection after every
exception reply (§6), so a register one firmware lacks would fail every poll from there on; that
connection is opened again here, after the 1.5-2 s the device needs, and the request goes on.

Writes go through the control-register table (range-checked), in the order the firmware needs (§3.2),
and are verified by reading the control registers back. Nothing here times out by itself: the battery
holds a forced mode until it is stopped, so leases and bounds belong to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, replace

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from ...modbus_reply import ModbusExceptionReply
from ...outcome import WriteOutcome, WriteStatus
from ..datapoints import Value
from ..decode import BatterySnapshot
from ..firmware import Firmware, PowerLimits
from ..protocol import MarstekError
from .codec import CodecError, Reading, encode
from .decode import ControlState, firmware_for, point_values, read_request, screen_identity, with_control
from .readplan import ReadPlan, control_plan, identity_plan, poll_plan
from .registers import CONTROL_BY_KEY, RULES, ForceMode, Function, Generation, Rs485, WorkMode

_LOG = logging.getLogger(__name__)

DEFAULT_PORT = 502
DEFAULT_UNIT = 1
DEFAULT_TIMEOUT_S = 10.0  # longer than firmware 150's upload stalls
REOPEN_DELAY_S = 2.0  # a Venus D takes a new connection 1.5-2 s after closing one at an exception (§6)
_JUST_CONNECTED_S = 2.0  # a connection dropped this soon was refused: another client holds the battery
# A read refused as an illegal address at ABSENT_AFTER polls in a row, each time while other reads of the same
# poll answered, is a register this firmware lacks, or no longer has after an update: asked again only this
# often. A battery booting or a gateway that refuses everything for a moment is not one (nothing answers),
# nor is a timeout, a broken link or another exception code, so a live register never goes unread for long.
ABSENT_AFTER = 3
# Never hidden once they answered: the SOC the add-on keeps the floor by (over Modbus the battery's own
# depth of discharge is not set) and the control registers a lease is checked against. A stale one would
# let a forced discharge run below the floor; asked at every poll, as a refusal that passes may.
_VITAL = frozenset({"soc", *CONTROL_BY_KEY})
ABSENT_RETRY_S = 600.0
ILLEGAL_ADDRESS = 2
_HINT = (
    "The battery serves one Modbus client at a time (is another integration or a proxy connected?). "
    "Its LAN port speaks Modbus TCP from EMS firmware 144 on, over the cable and not over WiFi; an RS485 "
    "gateway must convert Modbus TCP to RTU (115200 8N1, unit 1)."
)


class ModbusUnavailable(MarstekError):
    """Not connected, and connecting failed."""


class ModbusLinkError(MarstekError):
    """The connection failed during a request (no reply in time, or closed); the socket is closed."""


class ModbusDeviceError(ModbusExceptionReply, MarstekError):
    """The battery answered with a Modbus exception."""


@dataclass(frozen=True)
class VenusModbusConfig:
    host: str
    generation: Generation
    port: int = DEFAULT_PORT
    unit_id: int = DEFAULT_UNIT  # the v3's LAN port ignores it; gateways need 1
    timeout: float = DEFAULT_TIMEOUT_S
    request_gap: float | None = None  # None: the generation's minimum
    limits: PowerLimits | None = None  # configured limits: lower the model's, never raise them
    reopen_delay: float = REOPEN_DELAY_S  # after an exception reply, before a new connection

    @property
    def label(self) -> str:
        return f"Venus ({self.generation.value} map) at {self.host}:{self.port}"

    @property
    def gap(self) -> float:
        return RULES[self.generation].request_gap_s if self.request_gap is None else self.request_gap


class VenusModbusClient:
    """`async with VenusModbusClient(config) as client:` then `poll()` and the control helpers."""

    def __init__(self, config: VenusModbusConfig) -> None:
        self.config = config
        self.snapshot = BatterySnapshot()
        self.control = ControlState()
        self.requests = 0  # sent since creation, for benchmarks and diagnostics
        self.last_words: dict[str, list[int]] = {}  # the latest raw registers per read request
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()  # one request at a time
        self._connecting = asyncio.Lock()
        # The BLE MAC the latest identity read found (None: not read): the battery's identity.
        self.mac: str | None = None
        self._connected_at = 0.0
        self._last_reply = -1e9
        self._identified = False
        self._refused_at: float | None = None  # the latest reply was an exception: a Venus A/D closes now
        # The connection was lost after an exception reply: the device's habit, not another battery taking
        # the address, so it is opened again without reading the identity. Never after `drop()`.
        self._may_reopen = False
        # Reads refused as an illegal address -> when to ask again: a Venus A/D drops the connection after
        # every exception and takes a new one only seconds later, so asking at every poll cost each poll that
        # long (and a warning).
        self._absent: dict[str, float] = {}
        # Reads refused since they last answered, per request: a key is a run of refusals already in the log
        # (said once a run). Its count takes a register for absent: refused as an illegal address at
        # consecutive polls in which other reads answered. A refusal for another reason, a vital register's
        # refusal, or no reply restarts the count; only an answer ends the run.
        self._refused: dict[str, int] = {}
        # The control registers read by the latest poll alone (`control` keeps older readings of those it
        # could not read): what the battery is in now, for the lease to compare with.
        self.polled_control = ControlState()
        # Commands under way and started so far: a poll that overlapped one may have read some control
        # registers before a write and some after it, a state the battery was never in.
        self.commands_running = 0
        self.commands_started = 0

    # connection -----------------------------------------------------------------------------------

    @property
    def identified(self) -> bool:
        """The firmware version answered in this map's identity registers (not merely handed over)."""
        return self._identified

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """Connect and read the identity. Raises ModbusUnavailable when the battery cannot be reached.

        One connection at a time: a poll and a command that both find the client unconnected (the add-on's
        first seconds) would otherwise open two, the battery would reset the second, and the first would be
        left open, unreferenced, holding the battery's single client slot for good."""
        async with self._connecting:
            await self._connect()

    async def _connect(self) -> None:
        if self.connected:
            return
        self.drop()
        await self._open()
        try:
            await self.read_identity()
        except ModbusLinkError as exc:
            self.drop()
            raise ModbusUnavailable(
                f"the {self.config.label} dropped the connection: {exc}. {_HINT}"
            ) from None
        except MarstekError:
            self.drop()
            raise
        _LOG.info("connected to the %s", self.config.label)

    async def _open(self) -> None:
        """A new socket, once the device can take one after an exception reply closed the last."""
        self._may_reopen = False  # (one attempt: a failed one is not retried here)
        self._close_socket()
        if self._refused_at is not None:
            wait = self._refused_at + self.config.reopen_delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        cfg = self.config
        client = AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            timeout=cfg.timeout,
            retries=0,
            reconnect_delay=0,
            name=f"venus-{cfg.host}",
        )
        if not await client.connect():
            client.close()
            raise ModbusUnavailable(f"cannot connect to the {cfg.label}: refused or no answer. {_HINT}")
        # A socket opened meanwhile (a reopen beside a connect) is closed, never left holding the battery's
        # single client slot unreferenced.
        self._close_socket()
        self._client = client
        self._connected_at = time.monotonic()
        self._refused_at = None

    def drop(self) -> None:
        """Close the socket (before any reconnect: the battery has a single client slot)."""
        self._may_reopen = False  # a connection the owner dropped is opened again only by `connect()`
        self._close_socket()

    def _close_socket(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def close(self) -> None:
        self.drop()

    async def __aenter__(self) -> VenusModbusClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # requests -------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[AsyncModbusTcpClient]:
        """The connection for one request, once the gap since the last reply has passed."""
        async with self._lock:
            if not self.connected and self._may_reopen:
                _LOG.info("%s: closed after an exception reply: connecting again", self.config.label)
                await self._open()
            if self._client is None or not self._client.connected:
                raise ModbusUnavailable(f"not connected to the {self.config.label}")
            wait = self._last_reply + self.config.gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._client is None:  # dropped while waiting for the gap
                raise ModbusUnavailable(f"not connected to the {self.config.label}")
            try:
                yield self._client
            finally:
                self._last_reply = time.monotonic()

    async def _request(self, what: str, function: Function, address: int, payload: int) -> list[int]:
        try:
            return await self._ask(what, function, address, payload)
        except (ModbusLinkError, ModbusUnavailable):
            if not self._may_reopen:
                raise
        # The close that follows an exception reply came while this request was under way: asked again on
        # a new connection (a read, or a single register set to a value: the same result if it got through).
        return await self._ask(what, function, address, payload)

    async def _ask(self, what: str, function: Function, address: int, payload: int) -> list[int]:
        unit = self.config.unit_id
        async with self._turn() as client:
            self.requests += 1
            try:
                if function is Function.READ_HOLDING:
                    response = await client.read_holding_registers(address, count=payload, device_id=unit)
                else:
                    response = await client.write_register(address, payload, device_id=unit)
            except (ModbusException, OSError) as exc:  # no reply in time, or the connection went
                self._close_socket()
                hint = ""
                if time.monotonic() - self._connected_at < _JUST_CONNECTED_S:
                    hint = " right after connecting: another Modbus client probably holds the battery"
                raise ModbusLinkError(f"{what} on the {self.config.label} failed{hint}: {exc}") from None
            refused = response.isError()
            self._refused_at = time.monotonic() if refused else None
            self._may_reopen = refused
        if refused:
            raise ModbusDeviceError(what, int(getattr(response, "exception_code", 0)))
        words = list(getattr(response, "registers", []) or [])
        if function is Function.READ_HOLDING and len(words) != payload:
            raise ModbusDeviceError(f"{what}: {len(words)} registers in the reply instead of {payload}", 0)
        return words

    async def _read_plan(
        self, plan: ReadPlan, *, required: Collection[str] = ()
    ) -> tuple[dict[str, Reading], dict[str, Reading], list[str]]:
        """Readings of every request that was answered; a refused request is a problem, not a failure,
        unless it holds a `required` key (a write's read-back must see the registers it checks: a stale
        reading would pass for the new one)."""
        points: dict[str, Reading] = {}
        controls: dict[str, Reading] = {}
        problems: list[str] = []
        illegal: list[tuple[str, bool]] = []  # refused as an illegal address: (what, answered before)
        answered = False
        for request in plan.requests:
            what = f"read {request.describe()}"
            needed = any(f.key in required for f in request.fields)
            if not needed and self._absent.get(what, 0.0) > time.monotonic():
                problems.append(f"{what}: not offered by this firmware; asked again every 10 min")
                continue
            try:
                words = await self._request(what, Function.READ_HOLDING, request.address, request.count)
            except (ModbusLinkError, ModbusUnavailable):
                if what in self._refused:  # no reply is no refusal: the count restarts
                    self._refused[what] = 0
                raise
            except ModbusDeviceError as exc:
                if needed:
                    raise
                problems.append(str(exc))
                if what not in self._refused:  # the same refusal poll after poll: in the log once
                    _LOG.warning("%s: %s; those values keep their last reading", self.config.label, exc)
                    self._refused[what] = 0
                before = request.describe() in self.last_words
                vital = before and any(f.key in _VITAL for f in request.fields)
                if exc.code == ILLEGAL_ADDRESS and not vital:
                    illegal.append((what, before))
                else:
                    self._refused[what] = 0  # there (busy, failing), or never hidden
                continue
            answered = True
            if self._absent.pop(what, None) is not None:
                _LOG.info("%s: %s answers again", self.config.label, what)
            self._refused.pop(what, None)
            self.last_words[request.describe()] = words
            got_points, got_controls = read_request(request, words)
            points.update(got_points)
            controls.update(got_controls)
        if answered:  # (a plan that failed midway raised above: a broken link counts for nothing)
            for what, before in illegal:
                self._count_missing(what, answered_before=before)
        return points, controls, problems

    def _count_missing(self, what: str, *, answered_before: bool) -> None:
        missing = self._refused[what] = self._refused.get(what, 0) + 1
        if missing < ABSENT_AFTER:
            return
        if what not in self._absent:
            if answered_before:
                _LOG.warning(
                    "%s: %s answered before but is refused as an illegal address at %d polls in a row (a "
                    "firmware update removed it?): those values keep their last reading, asked again every "
                    "%.0f min",
                    self.config.label,
                    what,
                    missing,
                    ABSENT_RETRY_S / 60,
                )
            else:
                _LOG.info("%s: %s is not offered by this firmware", self.config.label, what)
        self._absent[what] = time.monotonic() + ABSENT_RETRY_S

    # reading --------------------------------------------------------------------------------------

    async def read_identity(self) -> BatterySnapshot:
        """Model, firmware, MAC (and IP on v3): once a connection, as they decide limits and ranges."""
        points, _, problems = await self._read_plan(identity_plan(self.config.generation))
        values = point_values(points)
        problems += screen_identity(values)
        model, ver = values.get("model"), values.get("firmware")
        firmware = firmware_for(
            self.config.generation,
            model if isinstance(model, str) else None,
            ver if isinstance(ver, int) else None,
        )
        self._identified = "firmware" in values
        mac = values.get("ble_mac")
        self.mac = mac if isinstance(mac, str) else None
        self._merge(values, problems, firmware)
        return self.snapshot

    async def poll(self) -> BatterySnapshot:
        """Every live data point and the control registers, into `snapshot` and `control`."""
        if not self.connected:
            await self.connect()
        points, controls, problems = await self._read_plan(poll_plan(self.config.generation))
        self.polled_control = ControlState(controls)
        self.control = ControlState({**self.control.readings, **controls})
        self._merge(with_control(point_values(points), self.control), problems)
        return self.snapshot

    async def read_control(self, required: Collection[str] = ()) -> ControlState:
        """The control registers; raises if a request holding a `required` key is refused (any other
        refused request is logged, its registers keep their last reading)."""
        state, _ = await self._read_control(required)
        return state

    async def _read_control(self, required: Collection[str]) -> tuple[ControlState, list[str]]:
        _, controls, problems = await self._read_plan(control_plan(self.config.generation), required=required)
        self.control = ControlState({**self.control.readings, **controls})
        return self.control, problems

    def _merge(self, values: dict[str, Value], problems: list[str], firmware: Firmware | None = None) -> None:
        known = firmware or self.snapshot.firmware
        self.snapshot = self.snapshot.with_readings(values, known, problems, label=self.config.label)

    # limits ---------------------------------------------------------------------------------------

    @property
    def limits(self) -> PowerLimits:
        """The model's limits, lowered by the battery's own maximums (44002/44003, which the firmware
        clamps every forced set-point to) and by a configured limit."""
        model = self.snapshot.firmware.power_limits
        charge = [model.charge_w, self.control.watts("max_charge_power")]
        discharge = [model.discharge_w, self.control.watts("max_discharge_power")]
        if self.config.limits is not None:
            charge.append(self.config.limits.charge_w)
            discharge.append(self.config.limits.discharge_w)
        return PowerLimits(_lowest(charge), _lowest(discharge))

    # writing --------------------------------------------------------------------------------------

    async def _write(self, key: str, value: float) -> None:
        control = CONTROL_BY_KEY[key]
        if self.config.generation not in control.generations:
            raise CodecError(f"{key}: not offered by the {self.config.generation.value} map")
        word = encode(control, value)
        await self._request(f"write {key}={value:g}", Function.WRITE_SINGLE, control.register.address, word)

    async def _command(
        self,
        command: str,
        steps: Sequence[tuple[str, float]],
        expected: Sequence[tuple[str, float]],
        clamped: str = "",
    ) -> WriteOutcome:
        """Write `steps` in order, then read the control registers back and compare with `expected`."""
        done = 0
        self.commands_running += 1
        self.commands_started += 1
        try:
            for key, value in steps:
                await self._write(key, value)
                done += 1
            # Strict only about what is compared: a refused diagnostic register (44002/44003 on some
            # firmware) must not fail a release, which would leave a forced power on.
            state, problems = await self._read_control({key for key, _ in expected})
        except (CodecError, ModbusDeviceError) as exc:
            # Only a refusal of the very first write leaves the battery as it was.
            status = WriteStatus.REJECTED if done == 0 else WriteStatus.NOT_APPLIED
            return self._outcome(status, command, 1, f"the battery refused: {exc}", clamped)
        except MarstekError as exc:
            return self._outcome(WriteStatus.NOT_APPLIED, command, 1, str(exc), clamped)
        finally:
            self.commands_running -= 1
        unmet = [
            f"{key} reads {state.readings.get(key)!r}, not {want:g}"
            for key, want in expected
            if state.number(key) != want
        ]
        unread = f" ({'; '.join(problems)})" if problems else ""
        if unmet:
            detail = "accepted but not applied: " + "; ".join(unmet) + unread
            return self._outcome(WriteStatus.NOT_APPLIED, command, done, detail, clamped)
        return self._outcome(WriteStatus.APPLIED, command, done, f"verified by read-back{unread}", clamped)

    def _outcome(
        self, status: WriteStatus, command: str, sent: int, detail: str, clamped: str
    ) -> WriteOutcome:
        # One attempt: a command is never resent here (the caller's lease renews it).
        outcome = WriteOutcome(status, command, min(sent, 1), detail, clamped)
        level = logging.INFO if outcome.ok else logging.WARNING
        _LOG.log(level, "%s: %s -> %s: %s", self.config.label, command, status.value, detail)
        return outcome

    async def take_control(self) -> WriteOutcome:
        """RS485 control on, idle: any forced mode another controller left in RAM is cleared at once."""
        steps = [("rs485_control", Rs485.ON), *_IDLE]
        return await self._command("take control", steps, [("rs485_control", Rs485.ON), *_IDLE])

    async def force_charge(self, watts: float) -> WriteOutcome:
        """Charge at `watts` (clamped to the limits) until stopped, or until the battery is full."""
        return await self._force(ForceMode.CHARGE, watts)

    async def force_discharge(self, watts: float) -> WriteOutcome:
        """Discharge at `watts` (clamped to the limits) until stopped, or down to the battery's floor."""
        return await self._force(ForceMode.DISCHARGE, watts)

    async def _force(self, mode: ForceMode, watts: float) -> WriteOutcome:
        charging = mode is ForceMode.CHARGE
        command = f"force {'charge' if charging else 'discharge'} {watts:g} W"
        if not math.isfinite(watts) or watts < 0:
            return self._outcome(WriteStatus.REJECTED, command, 0, "the power must be 0 W or more", "")
        try:
            if not self._identified:
                await self.read_identity()  # the model decides the limits
            if not self._identified:
                detail = "the battery has not identified itself yet (is the generation's map right?)"
                return self._outcome(WriteStatus.REJECTED, command, 0, detail, "")
            if self.control.number("max_charge_power") is None:
                await self.read_control()  # and so do the battery's own maximums
        except MarstekError as exc:
            return self._outcome(WriteStatus.NOT_APPLIED, command, 0, f"limits unknown: {exc}", "")
        limit = self.limits.charge_w if charging else self.limits.discharge_w
        target = min(round(watts), limit)
        clamped = "" if target == round(watts) else f"clamped to {target} W (limit {limit} W)"
        power, other = (
            ("force_charge_power", "force_discharge_power")
            if charging
            else ("force_discharge_power", "force_charge_power")
        )
        # The firmware's order: control on, then the powers, then the mode that uses them.
        steps = [("rs485_control", Rs485.ON), (other, 0), (power, target), ("force_mode", mode)]
        expected = [("rs485_control", Rs485.ON), ("force_mode", mode), (power, target)]
        return await self._command(command, steps, expected, clamped)

    async def stop(self) -> WriteOutcome:
        """Standby, still under RS485 control."""
        return await self._command("stop", _IDLE, _IDLE)

    async def set_work_mode(self, mode: WorkMode) -> WriteOutcome:
        """The stored work mode (43000, EEPROM): RS485 control released first, 43000 written only when it
        differs (under control it reads 1 whatever is stored, so it is read again after the release)."""
        command = f"work mode {mode.name.lower().replace('_', '-')}"
        try:
            state = await self.read_control(("rs485_control", "work_mode"))
        except MarstekError as exc:
            return self._outcome(WriteStatus.NOT_APPLIED, command, 0, f"control unknown: {exc}", "")
        released = ""
        if state.in_control:
            outcome = await self.release()
            if not outcome.ok:
                return replace(outcome, command=command)
            state, released = self.control, "control released; "
        if state.work_mode is mode:
            detail = f"{released}already in this mode: 43000 not written (stored in EEPROM)"
            return self._outcome(WriteStatus.APPLIED, command, 1 if released else 0, detail, "")
        outcome = await self._command(command, [("work_mode", mode)], [("work_mode", mode)])
        return replace(outcome, detail=released + outcome.detail) if released else outcome

    async def release(self) -> WriteOutcome:
        """Stop, then RS485 control off: the battery resumes its stored work mode."""
        steps = [*_IDLE, ("rs485_control", Rs485.OFF)]
        return await self._command("release control", steps, [*_IDLE, ("rs485_control", Rs485.OFF)])


def _lowest(watts: list[int | None]) -> int:
    return min(w for w in watts if w is not None)


_IDLE: tuple[tuple[str, float], ...] = (
    ("force_mode", ForceMode.STOP),
    ("force_charge_power", 0),
    ("force_discharge_power", 0),
)
