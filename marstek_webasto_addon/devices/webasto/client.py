"""Async Modbus TCP client for one Webasto/Ampure NEXT or UNITE wallbox.

One connection, one transaction at a time, no automatic reconnection inside pymodbus (the link owns that,
with backoff, after closing the socket). Static data is read at connect; each poll follows a read plan
computed from the register table. Every write is validated, clamped within the documented limits, logged,
and, where the box allows a read-back, verified.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from ..modbus_reply import ModbusExceptionReply
from ..outcome import WriteOutcome, WriteStatus
from ..plausibility import COUNTER_SLACK_H, PlausibilityGuard, Range, show
from .codec import Value, decode, encode, problem
from .readplan import ReadPlan, ReadRequest
from .registers import (
    FC,
    MAX_POWER_W,
    RULES,
    VOLTS_MAX,
    Cadence,
    ModelRules,
    Register,
    WallboxModel,
    power_ranges,
)

_LOG = logging.getLogger(__name__)

DEFAULT_PORT = 502
DEFAULT_UNIT = 255
HARD_MAX_CURRENT = 63  # no EVSE goes beyond this; anything higher is a mistake, not a wish
DEFAULT_MIN_CURRENT = 6
FAILSAFE_TIMEOUT_RANGE = (6, 600)  # s; the UNITE checks the alive bit every T/2, at least every 3 s
UNSET_TIMEOUT_S = 20.0  # a box that reads 2002 = 0 behaves as if 20 s were set
REPEAT_WARNING_S = 600.0


class WallboxError(Exception):
    """Base class for everything that goes wrong talking to a wallbox."""


class WallboxUnavailable(WallboxError):
    """Not connected, and connecting failed."""


class WallboxLinkError(WallboxError):
    """The connection failed during a transaction; the socket has been closed."""


class WallboxDeviceError(ModbusExceptionReply, WallboxError):
    """The box answered with a Modbus exception."""


@dataclass(frozen=True)
class WallboxConfig:
    host: str
    model: WallboxModel
    port: int = DEFAULT_PORT
    unit_id: int = DEFAULT_UNIT
    timeout: float = 3.0
    installation_max_current: float | None = None  # what the installer's fuse allows; never exceeded
    detect: bool = False  # model "auto": `model` is a first guess until the box has answered

    @property
    def label(self) -> str:
        return f"{self.model.value} at {self.host}:{self.port}"


@dataclass(frozen=True)
class FailsafeCorrection:
    current: int | None = None  # A; None: fine as it is
    timeout_s: int | None = None

    @property
    def needed(self) -> bool:
        return self.current is not None or self.timeout_s is not None


@dataclass
class WallboxSnapshot:
    values: dict[str, Value] = field(default_factory=dict)
    updated_at: float = 0.0
    problems: list[str] = field(default_factory=list)

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        return float(value) if isinstance(value, int | float) else None


@dataclass
class _Reading:
    values: dict[str, Value] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)  # keys the box refused to read: unknown, not unset

    def add(self, other: _Reading) -> None:
        self.values.update(other.values)
        self.problems.extend(other.problems)
        self.failed |= other.failed


class _Repeats:
    """The same problem again for the same thing (a command, a read): a warning once every
    REPEAT_WARNING_S, debug in between; news again once forgotten (it went through) or changed."""

    def __init__(self) -> None:
        self._said: dict[str, tuple[str, float]] = {}  # what -> (why, when it was warned of)

    def level(self, what: str, why: str) -> int:
        now, last = time.monotonic(), self._said.get(what)
        if last is not None and last[0] == why and now - last[1] < REPEAT_WARNING_S:
            return logging.DEBUG
        if len(self._said) >= 64:  # bounded: a box refusing ever new things must not grow it
            self._said.clear()
        self._said[what] = (why, now)
        return logging.WARNING

    def forget(self, what: str) -> None:
        self._said.pop(what, None)


def parse_firmware(text: str | None) -> tuple[int, ...] | None:
    """UNITE firmware looks like `v3.187.0-1.0.156.0`: HMI version, then power board."""
    if not text:
        return None
    match = re.match(r"v?(\d+(?:\.\d+)*)", text.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


class WebastoClient:
    """`await client.connect()`, then `poll()` and the setters; `await client.close()` at the end."""

    def __init__(self, config: WallboxConfig) -> None:
        self.config = config
        self.rules: ModelRules = RULES[config.model]
        self.snapshot = WallboxSnapshot()
        self.plausibility = PlausibilityGuard(_LOG)
        # The charging current last written (A), re-sent on reconnect; None: none, or the last one was cut off
        self.current_setpoint: int | None = None
        self.phase_setpoint: str | None = None  # UNITE: 405 reverts on every disconnect
        self.firmware: tuple[int, ...] | None = None
        self.connects = 0  # successful connections so far: the link renews the life bit after each
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._connected_at = 0.0
        self._refused_commands = _Repeats()
        self._refused_reads = _Repeats()
        self._read_problems: list[str] = []  # the last merge's
        self._standing: dict[str, str] = {}  # problems no read clears (a refused write), shown until fixed
        self._session_count: tuple[float, float] | None = None  # (kWh, monotonic time first seen at it)
        self._gap_reads_refused = False
        self._alone: set[str] = set()  # registers the box refused inside a batch: read on their own
        self._static_retry: set[str] = set()  # static registers whose last read the box refused
        self._plans: dict[Cadence, ReadPlan] = {}
        self._model_checked = False
        self._model_unanswered = False  # the last model check got an exception that says nothing
        self.last_words: dict[str, list[int]] = {}  # the latest raw registers per read request
        self._build_plans()

    # connection -----------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """Connect, read static data, re-send the last set-points. Raises WallboxUnavailable."""
        if self.connected:
            return
        self.drop()
        cfg = self.config
        client = AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            timeout=cfg.timeout,
            retries=0,
            reconnect_delay=0,
            name=f"wallbox-{cfg.host}",
        )
        if not await client.connect():
            client.close()
            raise WallboxUnavailable(
                f"cannot connect to the {cfg.label}: refused or no answer. The wallbox accepts one Modbus "
                f"client at a time (is evcc or another integration connected?) and may refuse connections"
                f" until its fail-safe timeout has passed; check also that Modbus is enabled "
                f"({'HEMS mode' if cfg.model is WallboxModel.NEXT else 'Modbus TCP in the web UI'})."
            )
        self._client = client
        self._connected_at = time.monotonic()
        _LOG.info("connected to the %s", cfg.label)
        try:
            if not self._model_checked:
                await self._check_model()
            await self._after_connect()
        except WallboxError:
            self.drop()
            raise
        self.connects += 1

    async def _after_connect(self) -> None:
        static = {r.key for r in self.rules.registers if r.cadence is Cadence.STATIC}
        reading = await self._read_static(static)
        self._merge(reading.values, reading.problems)
        # The phases first: a current meant for one phase, sent while 405 is back on three, would draw three
        # times the power meant for a moment.
        if not await self._resend_phases() and self.current_setpoint:
            _LOG.warning(
                "%s: not re-sending the charging current of %d A: it was meant for one phase and the box "
                "is on three; whoever steers it sets it again",
                self.config.label,
                self.current_setpoint,
            )
            self.current_setpoint = None
        if self.current_setpoint is not None:
            await self._resend_current(self.current_setpoint)

    async def _read_static(self, keys: set[str]) -> _Reading:
        """Static data (identity, the box's own limits), read at connect. A read the box refuses keeps the
        value known before (the same box: a firmware read cut short at a reconnect must not take phase
        switching away, and with it the return to one phase) and is tried again at the next slow poll."""
        registers = [r for r in self.rules.registers if r.key in keys]
        reading = await self._read_plan(ReadPlan.for_registers(registers, self.rules, self._alone))
        self._static_retry = reading.failed & keys
        for key in self._static_retry:
            if self.snapshot.values.get(key) is not None:
                reading.values.pop(key, None)
        if self.config.model is WallboxModel.UNITE and "firmware" in reading.values:
            firmware = reading.values["firmware"]
            self.firmware = parse_firmware(firmware if isinstance(firmware, str) else None)
        self._build_plans()
        return reading

    async def _resend_phases(self) -> bool:
        """Send 405 again (it reverts on every disconnect). A refusal is a problem to show, not a reason to
        stay offline (a UNITE whose 404 flipped to single phase refuses three phases on every reconnect,
        reference section 4): the box stays on the phases it has. False when it stays on more than meant."""
        wanted = self.phase_setpoint
        if wanted is None or not self.supports("phase_switch"):
            return True
        try:
            await self._write("phase_switch", wanted)
        except WallboxDeviceError as exc:
            self.phase_setpoint = None
            self.set_problem(
                "phase_switch",
                f"the box refused to go back to {wanted} phase(s) after reconnecting ({exc}): it stays on "
                "the phases it has",
            )
            return wanted != "1"  # a current meant for three phases draws less on one
        return True

    async def _resend_current(self, amps: int) -> None:
        """The current last asked for, within today's limits (the box's may have changed meanwhile)."""
        minimum, maximum = self.current_limits()
        target = 0 if amps == 0 or maximum < minimum else min(amps, maximum)
        _LOG.info("%s: re-sending the charging current of %d A after connecting", self.config.label, target)
        try:
            await self._write("charging_current_setpoint", target)
        except WallboxDeviceError as exc:
            _LOG.warning("%s: the box refused the re-sent %d A: %s", self.config.label, target, exc)
            self.current_setpoint = None
            return
        self.current_setpoint = target

    async def detect_model(self) -> WallboxModel | None:
        """Which map this box answers: the UNITE has its serial number in input registers 100.., the NEXT
        has nothing there (exception 2). None when the answer says neither."""
        serial = RULES[WallboxModel.UNITE].by_key("serial_number")
        try:
            words = await self._transaction("model check", FC.READ_INPUT, serial.address, serial.count)
        except WallboxDeviceError as exc:
            if exc.code != 2:
                self._model_unanswered = True  # busy or booting: asked again at the next connect
            return WallboxModel.NEXT if exc.code == 2 else None
        text = decode(serial, words)
        return WallboxModel.UNITE if isinstance(text, str) and text.strip() else None

    async def _check_model(self) -> None:
        """A UNITE read with the NEXT's map gives plausible-looking zeros: use the map the box answers.

        Settled once the box has answered the question; a check cut off (another client still holding the
        box, a box still booting) is repeated at the next connect, or a UNITE would keep the NEXT's map."""
        cfg = self.config
        self._model_unanswered = False
        try:
            found = await self.detect_model()
        except WallboxLinkError as exc:
            _LOG.warning(
                "%s: could not tell a NEXT from a UNITE (%s); using the %s map until it answers",
                cfg.label,
                exc,
                cfg.model,
            )
            raise
        self._model_checked = not self._model_unanswered
        if found is None:
            if cfg.detect:
                _LOG.log(
                    logging.INFO if self._model_unanswered else logging.WARNING,
                    "%s: the box does not say whether it is a NEXT or a UNITE; using the %s map%s",
                    cfg.label,
                    cfg.model.value.upper(),
                    " and asking again at the next connect" if self._model_unanswered else "",
                )
            return
        if found is cfg.model:
            if cfg.detect:
                _LOG.info("%s: detected a %s", cfg.label, found.value.upper())
            return
        if not cfg.detect:
            _LOG.warning(
                "%s: configured as %s, but it answers like a %s: using the %s map; set its model to %s "
                "(or auto) in the options",
                cfg.label,
                cfg.model.value.upper(),
                found.value.upper(),
                found.value.upper(),
                found.value,
            )
        else:
            _LOG.info("%s: detected a %s", cfg.label, found.value.upper())
        self.config = replace(cfg, model=found)
        self.rules = RULES[found]
        self._build_plans()

    def drop(self) -> None:
        """Close the socket (before any reconnect, so the box never sees two of ours)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def close(self) -> None:
        self.drop()

    # plans ----------------------------------------------------------------------------------------

    def supports(self, key: str) -> bool:
        if not self.rules.has(key):
            return False
        needed = self.rules.by_key(key).min_firmware
        return needed is None or (self.firmware is not None and self.firmware >= needed)

    def _build_plans(self) -> None:
        usable = [r for r in self.rules.registers if self.supports(r.key)]
        fast = [r for r in usable if r.cadence is Cadence.FAST]
        slow = [r for r in usable if r.cadence in (Cadence.FAST, Cadence.SLOW)]
        self._plans = {Cadence.FAST: self._plan(fast), Cadence.SLOW: self._plan(slow)}

    def _plan(self, registers: Iterable[Register]) -> ReadPlan:
        plan = ReadPlan.for_registers(registers, self.rules, self._alone)
        if self._gap_reads_refused:
            plan = ReadPlan(tuple(part for request in plan.requests for part in request.contiguous_parts()))
        return plan

    def plan(self, cadence: Cadence = Cadence.FAST) -> ReadPlan:
        return self._plans[cadence]

    # transactions ---------------------------------------------------------------------------------

    async def _transaction(self, what: str, fc: FC, address: int, payload: int | list[int]) -> list[int]:
        if not self.connected:
            raise WallboxUnavailable(f"not connected to the {self.config.label}")
        assert self._client is not None
        client, unit = self._client, self.config.unit_id
        async with self._lock:
            try:
                match fc:
                    case FC.READ_HOLDING:
                        assert isinstance(payload, int)
                        response = await client.read_holding_registers(address, count=payload, device_id=unit)
                    case FC.READ_INPUT:
                        assert isinstance(payload, int)
                        response = await client.read_input_registers(address, count=payload, device_id=unit)
                    case FC.WRITE_SINGLE:
                        assert isinstance(payload, list)
                        response = await client.write_register(address, payload[0], device_id=unit)
                    case FC.WRITE_MULTIPLE:
                        assert isinstance(payload, list)
                        response = await client.write_registers(address, payload, device_id=unit)
            except (ModbusIOException, ConnectionException, ModbusException, OSError) as exc:
                self.drop()
                hint = ""
                if time.monotonic() - self._connected_at < 2:
                    hint = " right after connecting: another Modbus client probably holds the box"
                raise WallboxLinkError(f"{what} on the {self.config.label} failed{hint}: {exc}") from None
        if response.isError():
            raise WallboxDeviceError(what, int(getattr(response, "exception_code", 0)))
        registers = list(getattr(response, "registers", []) or [])
        if fc in (FC.READ_HOLDING, FC.READ_INPUT) and len(registers) != payload:
            raise WallboxDeviceError(
                f"{what}: {len(registers)} registers in the reply instead of {payload}", 0
            )
        return registers

    async def _read_request(self, request: ReadRequest) -> list[int]:
        return await self._transaction(
            f"read {request.describe()}", request.fc, request.address, request.count
        )

    async def _read_plan(self, plan: ReadPlan) -> _Reading:
        reading = _Reading()
        for request in plan.requests:
            try:
                words = await self._read_request(request)
                self.last_words[request.describe()] = words  # raw, for the diagnostics
                self._refused_reads.forget(request.describe())  # failing again later is news again
            except WallboxDeviceError as exc:
                reading.add(await self._refused(request, exc))
                continue
            for register in request.registers:
                offset = register.address - request.address
                chunk = words[offset : offset + register.count]
                try:
                    reading.values[register.key] = decode(register, chunk)
                    if why := problem(register, chunk):
                        reading.problems.append(f"{register.key}: {why}; shown as unknown")
                except (ValueError, IndexError) as exc:
                    reading.problems.append(f"{register.key}: {exc}")
                    reading.values[register.key] = None
        return reading

    async def _refused(self, request: ReadRequest, exc: WallboxDeviceError) -> _Reading:
        """A read the box answered with an exception. Firmware that refuses reads across gaps gets
        contiguous runs from now on. A batch is read again register by register: one register the box
        refuses must not blank its neighbours (a refused fault code taking the cable state with it), and
        the one it refuses is read on its own from then on, so the batch does not fail at every poll."""
        label = self.config.label
        if exc.code == 2 and len(request.contiguous_parts()) > 1 and not self._gap_reads_refused:
            reading = await self._read_plan(ReadPlan(tuple(request.contiguous_parts())))
            # Only when every run answered on its own was it the gaps: a run that failed holds a register
            # the box refuses, which the reading above has isolated already.
            if not reading.failed:
                _LOG.warning(
                    "%s: the box refuses reads across gaps; reading contiguous runs from now on", label
                )
                self._gap_reads_refused = True
                self._build_plans()
            elif len(reading.failed) < len(request.registers) and reading.failed - self._alone:
                # Some runs answered: the failed ones hold what the box refuses (a run of one register is
                # not split further above), read on their own from now on, out of the batch.
                self._alone |= reading.failed
                self._build_plans()
            return reading
        if len(request.registers) > 1 and exc.code != 0:  # 0: a malformed reply, not one register's fault
            reading = await self._read_plan(ReadPlan(tuple(request.single_parts())))
            # Only when its neighbours answered: a box refusing everything (busy, booting) is not one
            # register's fault, and isolating them all would multiply the requests of every poll.
            new = reading.failed - self._alone if len(reading.failed) < len(request.registers) else set()
            if new:
                _LOG.warning(
                    "%s: the box refuses %s inside a batch (%s); reading %s on its own from now on",
                    label,
                    ", ".join(sorted(new)),
                    exc,
                    "it" if len(new) == 1 else "them",
                )
                self._alone |= new
                self._build_plans()
            return reading
        # A register the box keeps refusing fails at every poll: in the log once every REPEAT_WARNING_S (the
        # snapshot's problems show it all the time), not every few seconds.
        level = self._refused_reads.level(request.describe(), str(exc))
        _LOG.log(level, "%s: %s; those values are unknown until the next read", label, exc)
        keys = [r.key for r in request.registers]
        return _Reading(dict.fromkeys(keys), [str(exc)], set(keys))

    def _merge(self, values: dict[str, Value], problems: list[str]) -> None:
        """Implausible readings stay out (the last good value is kept) and are listed among the problems."""
        now, rules = time.monotonic(), self.rules
        kept = self.plausibility.screen(
            values, self._ranges(), now=now, label=self.config.label, units=rules.units
        )
        self._screen_session_energy(kept, now)
        self._read_problems = [*problems, *self.plausibility.problems]
        self.snapshot = WallboxSnapshot({**self.snapshot.values, **kept}, now)
        self._show_problems()

    def _show_problems(self) -> None:
        self.snapshot.problems = [*self._read_problems, *self._setup_problems(), *self._standing.values()]

    def set_problem(self, key: str, problem: str | None) -> None:
        """A problem that no read clears (a write the box refuses): logged once when it appears, shown among
        the snapshot's problems until it is set to None."""
        if problem is None:
            if (old := self._standing.pop(key, None)) is not None:
                _LOG.info("%s: resolved: %s", self.config.label, old)
                self._show_problems()
            return
        if key not in self._standing:
            _LOG.warning("%s: %s", self.config.label, problem)
        self._standing[key] = problem
        self._show_problems()

    def _max_power_w(self) -> float:
        """The most this box can draw: its own maximum current on three phases at the grid's upper voltage
        tolerance, once read; until then the limit of AC charging itself."""
        box = self.snapshot.number("evse_max_current")
        return 3 * VOLTS_MAX * box if box else MAX_POWER_W

    def _ranges(self) -> dict[str, Range | None]:
        box = self.snapshot.number("evse_max_current")
        return {**self.rules.ranges, **power_ranges(box)} if box else self.rules.ranges

    def _screen_session_energy(self, kept: dict[str, Value], now: float) -> None:
        """The UNITE's session energy counts up through a session and starts from 0 with the next one. A fall
        is a new session; a rise faster than the box can deliver is a glitch (evcc #9787: ~1930 kWh), held
        back like an implausible reading (the plan would take the car for charged)."""
        value = kept.get("session_energy")
        if not isinstance(value, int | float):
            return
        last = self._session_count
        if last is not None and value > last[0]:
            allowed = self._max_power_w() / 1000 * (max(0.0, now - last[1]) / 3600 + COUNTER_SLACK_H)
            if value - last[0] > allowed:
                del kept["session_energy"]
                self.set_problem(
                    "session_energy",
                    f"session_energy: {show(value)} outside {show(last[0])}..{last[0] + allowed:.3f} kWh (it "
                    "rose faster than the box can deliver); keeping the last good value",
                )
                return
        if last is None or value != last[0]:
            self._session_count = (value, now)
        self.set_problem("session_energy", None)

    def _setup_problems(self) -> list[str]:
        """The box's own fail-safe settings that would break the add-on's promises if it stopped (see
        `failsafe_correction`). The link corrects them; until then, and if the box refuses, they are shown."""
        problems = []
        current, timeout = self.snapshot.number("failsafe_current"), self.snapshot.number("failsafe_timeout")
        correction = self.failsafe_correction()
        if correction.current is not None and current is not None:
            problems.append(
                f"the box's fail-safe current of {current:g} A is above the maximum of "
                f"{self.fixed_maximum_current()} A: if the add-on stops, the box falls back to more than the "
                f"installation allows (the add-on sets it to {correction.current} A)"
            )
        if correction.timeout_s is not None and timeout is not None:
            problems.append(
                f"the box's fail-safe timeout of {timeout:g} s is longer than {FAILSAFE_TIMEOUT_RANGE[1]} s: "
                f"if the add-on stops, its last current stays in force that long (the add-on sets it to "
                f"{correction.timeout_s} s)"
            )
        return problems

    def fixed_maximum_current(self) -> int | None:
        """The installation's maximum, or the box's own: what no current may exceed whatever is plugged in
        (the cable's and the car's limits come and go with the car; the box applies those itself)."""
        known = [
            v
            for v in (self.config.installation_max_current, self.snapshot.number("evse_max_current"))
            if v is not None and v > 0
        ]
        return math.floor(min(known)) if known else None

    def failsafe_correction(self) -> FailsafeCorrection:
        """What the box's fail-safe settings, set in its own web page, must become so that nothing the add-on
        set outlives it by more than FAILSAFE_TIMEOUT_RANGE's maximum, and its fallback current stays within
        the installation's maximum. None where the setting is fine or not read yet."""
        current, timeout = self.snapshot.number("failsafe_current"), self.snapshot.number("failsafe_timeout")
        fixed = self.fixed_maximum_current()
        wanted_current = None
        if current is not None and fixed is not None and current > fixed:
            minimum, maximum = self.current_limits()
            # The box's minimum above the fuse: only 0 (stop) is safe to fall back to.
            wanted_current = maximum if maximum >= minimum else 0
        too_long = timeout is not None and timeout > FAILSAFE_TIMEOUT_RANGE[1]
        return FailsafeCorrection(wanted_current, FAILSAFE_TIMEOUT_RANGE[1] if too_long else None)

    # reading --------------------------------------------------------------------------------------

    async def poll(self, *, include_slow: bool = False) -> WallboxSnapshot:
        """Read the fast registers (and the slow ones when asked). A failed group reads as unknown."""
        if not self.connected:
            await self.connect()
        reading = _Reading()
        if include_slow and self._static_retry:
            reading = await self._read_static(self._static_retry)
        reading.add(await self._read_plan(self._plans[Cadence.SLOW if include_slow else Cadence.FAST]))
        self._merge(reading.values, reading.problems)
        return self.snapshot

    async def read_key(self, key: str) -> Value:
        register = self.rules.by_key(key)
        if not register.readable or register.read_fc is None:
            raise WallboxDeviceError(f"{key} is write-only on the {self.config.model.value}", 2)
        words = await self._transaction(f"read {key}", register.read_fc, register.address, register.count)
        value = decode(register, words)
        self._merge({key: value}, [])
        return value

    # writing --------------------------------------------------------------------------------------

    async def _write(self, key: str, value: float | int | str) -> None:
        register = self.rules.by_key(key)
        if register.write_fc is None:
            raise WallboxDeviceError(f"{key} is read-only", 2)
        await self._transaction(
            f"write {key}={value}", register.write_fc, register.address, encode(register, value)
        )

    def _outcome(self, status: WriteStatus, command: str, detail: str, clamped: str = "") -> WriteOutcome:
        outcome = WriteOutcome(status, command, 1, detail, clamped)
        level = logging.INFO
        if not outcome.ok:
            # The same refusal again (a correction tried at every slow poll, a controller's retries): once
            # every REPEAT_WARNING_S in the log, not every minute. Forgotten once it went through.
            level = self._refused_commands.level(command, detail)
        else:
            self._refused_commands.forget(command)
        _LOG.log(
            level,
            "%s: %s -> %s: %s%s",
            self.config.label,
            command,
            status.value,
            detail,
            f" ({clamped})" if clamped else "",
        )
        return outcome

    async def _guarded(self, command: str, write: Callable[[], Awaitable[WriteOutcome]]) -> WriteOutcome:
        try:
            return await write()
        except WallboxDeviceError as exc:
            return self._outcome(WriteStatus.REJECTED, command, f"the box refused: {exc}")
        except WallboxError as exc:
            return self._outcome(WriteStatus.NOT_APPLIED, command, str(exc))

    def current_limits(self) -> tuple[int, int]:
        """(minimum, maximum) charging current in A: the box's own limits, capped by the installation's.

        The installation's maximum is a hard ceiling, also below the box's minimum: then the maximum is
        below the minimum and no current but 0 can be set (the fuse wins over the box)."""
        minimum = int(self.snapshot.number("min_current") or DEFAULT_MIN_CURRENT) or DEFAULT_MIN_CURRENT
        box = [self.snapshot.number(k) for k in (*self.rules.max_current_keys, "evse_max_current")]
        known = [b for b in box if b is not None and b > 0]
        maximum = min(known) if known else float(self.config.installation_max_current or 16)
        if self.config.installation_max_current is not None:
            maximum = min(maximum, self.config.installation_max_current)
        return minimum, math.floor(maximum)

    def _below_minimum(self, minimum: int, maximum: int) -> str:
        return (
            f"the maximum of {maximum} A (installation or box) is below the box's minimum of {minimum} A: "
            "only 0 (pause) can be set"
        )

    async def set_charging_current(self, amps: float) -> WriteOutcome:
        """0 pauses; otherwise between the box's minimum and maximum, never above the installation limit."""
        command = f"charging current {amps:g} A"
        minimum, maximum = self.current_limits()
        if not math.isfinite(amps) or amps < 0 or amps > HARD_MAX_CURRENT:
            return self._outcome(
                WriteStatus.REJECTED,
                command,
                f"must be 0 (pause) or {minimum}..{maximum} A; {amps:g} A is not a charging current",
            )
        if amps > 0 and maximum < minimum:
            return self._outcome(WriteStatus.REJECTED, command, self._below_minimum(minimum, maximum))
        if 0 < amps < minimum:
            return self._outcome(
                WriteStatus.REJECTED,
                command,
                f"{amps:g} A is below the box's minimum of {minimum} A; use 0 to pause",
            )
        target = 0 if amps == 0 else min(math.floor(amps), maximum)
        clamped = "" if target == math.floor(amps) else f"clamped to {target} A (limit {maximum} A)"
        paused_before = self.current_setpoint == 0

        async def write() -> WriteOutcome:
            try:
                await self._write("charging_current_setpoint", target)
            except WallboxDeviceError:
                raise  # refused: the box kept what it had
            except WallboxError:
                # Cut off by a disconnect (the box may have applied it) or never sent: what the box has is not
                # known. Re-sending the current before this one on the reconnect could undo it (a pause), so
                # nothing is re-sent; whoever steers the box sets it again.
                self.current_setpoint = None
                raise
            self.current_setpoint = target
            if self.config.model is WallboxModel.UNITE:
                back = await self.read_key("charging_current_setpoint")
                if back != target:
                    why = (
                        " (the UNITE falls back to 6 A when 0 is written with no vehicle connected)"
                        if target == 0
                        else ""
                    )
                    return self._outcome(
                        WriteStatus.NOT_APPLIED, command, f"the box reads back {back} A{why}", clamped
                    )
                return self._outcome(WriteStatus.APPLIED, command, "verified by read-back", clamped)
            if target > 0 and paused_before and self.snapshot.values.get("charge_point_state") == "error":
                # A NEXT can strand in state 7 after a 0 A pause (reference section 5): restart the session.
                _LOG.warning(
                    "%s: stuck in the error state after a pause; restarting the session", self.config.label
                )
                await self._write("session_command", 0)
                await self._write("session_command", 1)
                return self._outcome(
                    WriteStatus.APPLIED, command, "accepted; session restarted after a 0 A pause", clamped
                )
            return self._outcome(
                WriteStatus.APPLIED, command, "accepted (the NEXT cannot read it back)", clamped
            )

        return await self._guarded(command, write)

    async def set_failsafe(
        self, *, current: float | None = None, timeout_s: float | None = None
    ) -> WriteOutcome:
        """Fail-safe current (0 = stop, or min..max) and timeout (6..600 s)."""
        parts = [
            f"current {current:g} A" if current is not None else "",
            f"timeout {timeout_s:g} s" if timeout_s is not None else "",
        ]
        command = "fail-safe " + ", ".join(p for p in parts if p)
        minimum, maximum = self.current_limits()
        if current is not None and current != 0 and maximum < minimum:
            return self._outcome(
                WriteStatus.REJECTED, command, f"fail-safe current: {self._below_minimum(minimum, maximum)}"
            )
        if current is not None and not (current == 0 or minimum <= current <= maximum):
            return self._outcome(
                WriteStatus.REJECTED, command, f"fail-safe current must be 0 or {minimum}..{maximum} A"
            )
        low, high = FAILSAFE_TIMEOUT_RANGE
        if timeout_s is not None and not low <= timeout_s <= high:
            return self._outcome(WriteStatus.REJECTED, command, f"fail-safe timeout must be {low}..{high} s")

        async def write() -> WriteOutcome:
            wanted: dict[str, int] = {}
            if current is not None:
                wanted["failsafe_current"] = math.floor(current)
            if timeout_s is not None:
                wanted["failsafe_timeout"] = round(timeout_s)
            for key, value in wanted.items():
                await self._write(key, value)
            for key, value in wanted.items():
                if (back := await self.read_key(key)) != value:
                    return self._outcome(WriteStatus.NOT_APPLIED, command, f"{key} reads back {back}")
            return self._outcome(WriteStatus.APPLIED, command, "verified by read-back")

        return await self._guarded(command, write)

    async def start_session(self) -> WriteOutcome:
        return await self._session_command(1, "start session")

    async def stop_session(self) -> WriteOutcome:
        return await self._session_command(2, "stop session")

    async def _session_command(self, value: int, command: str) -> WriteOutcome:
        if not self.rules.has("session_command"):
            return self._outcome(
                WriteStatus.REJECTED, command, f"the {self.config.model.value} has no session command"
            )

        async def write() -> WriteOutcome:
            # 5006 is edge-triggered: 0 first re-arms it, so a repeated command acts again.
            await self._write("session_command", 0)
            await self._write("session_command", value)
            return self._outcome(WriteStatus.APPLIED, command, "accepted")

        return await self._guarded(command, write)

    async def set_phases(self, phases: int) -> WriteOutcome:
        """UNITE 405: 1 or 3 phases (firmware 3.187 and a three-phase installation)."""
        command = f"{phases} phase{'s' if phases != 1 else ''}"
        if not self.rules.has("phase_switch"):
            return self._outcome(WriteStatus.REJECTED, command, "the NEXT has no phase switching over Modbus")
        if phases not in (1, 3):
            return self._outcome(WriteStatus.REJECTED, command, "phases must be 1 or 3")
        if not self.supports("phase_switch"):
            shown = ".".join(map(str, self.firmware)) if self.firmware else "unknown"
            return self._outcome(
                WriteStatus.REJECTED, command, f"needs UNITE firmware 3.187 or later (this box: {shown})"
            )
        if phases == 3 and self.snapshot.values.get("phases_installed") == "1":
            return self._outcome(
                WriteStatus.REJECTED, command, "the installation is single-phase (register 404)"
            )
        label, before = str(phases), self.phase_setpoint

        async def write() -> WriteOutcome:
            # Before it goes out: a switch cut off by a disconnect is sent again, first, on the reconnect (the
            # current that follows may be meant for these phases only).
            self.phase_setpoint = label
            try:
                await self._write("phase_switch", label)
            except WallboxDeviceError:
                self.phase_setpoint = before
                raise
            back = await self.read_key("phase_switch")
            if back != label:
                return self._outcome(WriteStatus.NOT_APPLIED, command, f"the box reads back {back} phase(s)")
            self.set_problem("phase_switch", None)
            return self._outcome(WriteStatus.APPLIED, command, "verified by read-back")

        return await self._guarded(command, write)

    # keepalive ------------------------------------------------------------------------------------

    @property
    def failsafe_timeout(self) -> float:
        value = self.snapshot.number("failsafe_timeout")
        return float(value) if value else UNSET_TIMEOUT_S

    @property
    def keepalive_interval(self) -> float:
        """Often enough for the fail-safe timeout (T/4), never slower than 5 s nor faster than 1 s. Until the
        timeout has been read, as often as for the shortest the box can have."""
        if self.snapshot.number("failsafe_timeout") is None:
            return max(1.0, FAILSAFE_TIMEOUT_RANGE[0] / 4)
        return max(1.0, min(5.0, self.failsafe_timeout / 4))

    async def keepalive(self) -> None:
        """Write the life bit; the box clears it, and falls back to the fail-safe current if we stop."""
        await self._write("life_bit", 1)
