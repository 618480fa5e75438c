"""A Venus over Modbus TCP behind the face every battery client shows (`BatteryClient`).

The Local API's commands map onto the control registers (docs/marstek-modbus.md §3):

* Auto, AI and Manual (without a slot) are the stored work mode (43000): RS485 control is released first,
  and 43000 is written only when it differs, as it lives in EEPROM.
* Passive with a power and a countdown is RS485 control with a forced charge or discharge, clamped to the
  limits. The battery has no countdown over Modbus and keeps a forced mode until it is stopped, so the add-on
  holds it as a lease (`Lease`) and enforces it at every poll: it releases control when the countdown ends
  (at most `PASSIVE_MAX_SECONDS` after the last command, as over UDP), stops a forced charge at
  `soc_ceiling` and a forced discharge at `soc_floor` itself, takes control again when the battery dropped
  it while the lease runs, and releases control at a clean stop.
* A person's work mode wins over a lease: the app's work mode writes the firmware byte RS485 control lives
  in (§3.2), so control reads off and 43000 reads the person's mode. A poll that sees control off with a work
  mode other than the stored one the add-on last set or saw (`_work_mode`) ends the lease without taking
  control again and without writing 42000 (0x55BB reloads the byte from EEPROM, which would undo a mode the
  app has not stored there). The same stored mode is the battery dropping control by itself (a reboot, §4.3):
  control is taken again. Only a poll no command of the add-on overlapped is compared: one that read 42000
  before a write and 43000 after it saw a state the battery was never in. When the stored mode is not known
  (a Passive carried over from the Local API before any poll without a lease read it, a work mode write that
  was not applied), a control read off after the lease held it (`Lease.held`) is taken for a person's choice
  all the same: the lease yields, and the mode read is the stored one from then on (a battery that dropped
  control by itself is then left in its own mode, the safe side).
* A control no lease asks for is released when it is seen (`release_owed`): at the first poll or
  `release_left_control()` after a start (a battery left in RS485 control by a run that died), and after a
  release that could not be done (a lease handed back while the battery could not be reached, a work mode
  that was not applied), and at a clean stop: a person's Auto is never overridden by a lease it ended, and a
  control the add-on dropped is never left on for good. A lease past its end is released even when the poll
  failed.
* One writer at a time (`_writing`): a command's writes and read-back never interleave with the lease's
  upkeep after a poll (taking the forced mode again, a stop, a release), whose writes would leave the old
  lease's set-points on the battery and spoil the command's read-back. A command waits for an upkeep under
  way (a few writes); an upkeep never waits for a command: it skips that poll, as the command decides.
* Only the pinned battery (`ble_mac`, else the first MAC read) is kept connected: a connection that reads
  another MAC is dropped at once, so another battery at the address is never read as ours nor released.

If the bridge dies while it holds control, the s6 finish script releases it (`cli.release`: the options
name the batteries, `release_left_control()` does the work). What cannot be bounded: a machine that loses
power or a network that is down then; the battery keeps the forced power until its BMS stops it (full, or
the discharge floor), a reboot, or someone releases it. DOCS.md says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from ...outcome import WriteOutcome, WriteStatus
from ..client import DEFAULT_SOC_FLOOR, OutOfTime, ReadReport
from ..commands import (
    DOD_MAX,
    DOD_MIN,
    AiMode,
    AutoMode,
    CommandError,
    ManualSlot,
    ModeCommand,
    PassiveMode,
    prepare,
)
from ..datapoints import READ_METHODS, Method
from ..decode import BatterySnapshot
from ..firmware import Family, PowerLimits, identify
from ..protocol import IdentityMismatch, MarstekError
from ..transport import UdpEndpoint
from .client import DEFAULT_PORT, DEFAULT_TIMEOUT_S, DEFAULT_UNIT, VenusModbusClient, VenusModbusConfig
from .decode import ControlState
from .registers import ForceMode, Generation, Rs485, WorkMode

_LOG = logging.getLogger(__name__)
SOC_READS_TO_RESUME = 2  # polls in a row that read the SOC before a blind forced discharge goes on

_WORK_MODES: dict[type, WorkMode] = {
    AutoMode: WorkMode.SELF_CONSUMPTION,  # what the Local API calls Auto
    AiMode: WorkMode.AI,
    ManualSlot: WorkMode.MANUAL,
}


@dataclass
class Lease:
    """A Passive command held by the add-on: `power` (+ discharge, - charge) until `until` (its clock)."""

    power: int
    until: float
    at_bound: bool = False  # the SOC bound was reached: idle under control until the lease ends
    # RS485 control was seen on for it (a take verified by its read-back, or a poll no command overlapped)
    # and no release of the add-on's own is under way: a control read off now was let go by someone else,
    # not a take of ours that did not land.
    held: bool = False

    @property
    def force(self) -> ForceMode:
        return (
            ForceMode.DISCHARGE if self.power > 0 else ForceMode.CHARGE if self.power < 0 else ForceMode.STOP
        )


class ModbusBattery:
    """One battery over Modbus TCP: `read()` polls it and keeps its lease; `set_mode()` commands it."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        unit_id: int = DEFAULT_UNIT,
        generation: Generation | None = None,  # None: chosen from the device name (31000)
        ble_mac: str | None = None,
        limits: PowerLimits | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        request_gap: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.identity = ble_mac.lower() if ble_mac else None
        self.soc_floor = DEFAULT_SOC_FLOOR  # forced discharging stops here
        self.soc_ceiling = 100.0  # forced charging stops here
        self.schedule: dict[int, ManualSlot] = {}  # the Local API's slots: none are written over Modbus
        self.last_answer_at: float | None = None
        self.last_src: str | None = None
        self.last_round_trip: float | None = None
        self.lease: Lease | None = None
        self._told_lease_over = False  # a lease past its end that could not be released: said once
        self._clock = clock
        self._generation = generation
        self._configured_generation = generation
        self._config = VenusModbusConfig(
            host,
            generation or Generation.V3,  # the device name is at 31000 in both maps
            port=port,
            unit_id=unit_id,
            timeout=timeout,
            request_gap=request_gap,
            limits=limits,
        )
        self.modbus = VenusModbusClient(self._config)
        # RS485 control must be off unless a lease asks for it: checked at the first poll or
        # `release_left_control()` (a control left on by an earlier run), and again after a release that
        # could not be done. Cleared once control is seen off or released.
        self.release_owed = True
        # Over Modbus the add-on alone keeps the discharge floor, from the SOC it reads: a poll that answered
        # without it makes the battery "blind", and a forced discharge idles (under control) until the SOC
        # is read at SOC_READS_TO_RESUME polls in a row (a SOC refused every other poll must not switch the
        # discharge on and off). A poll that failed altogether read no SOC either: after an outage longer than
        # `soc_stale_s` the last reading is stale, and the battery may have discharged on all along.
        self.soc_blind = False
        self._soc_reads = 0
        self._blind_said = False
        # The stored work mode (43000) as the add-on last set it, or read it with control off, no lease
        # running and no command of its own under way; None: not known (a write of it that failed, or none
        # read yet: a lease then yields to any control read off after it held it, see `_changed_outside`).
        self._work_mode: WorkMode | None = None
        self._connecting = asyncio.Lock()
        self._writing = asyncio.Lock()  # a command, or the lease's upkeep after a poll: never both at once

    # A poll that fails altogether makes a forced discharge idle once the SOC it goes on is this old (s):
    # three poll intervals, so a single failed poll does not pause it.
    soc_stale_s = 30.0
    transport: Literal["modbus"] = "modbus"
    transports: tuple[Literal["modbus"], ...] = ("modbus",)

    # the client face ------------------------------------------------------------------------------

    @property
    def snapshot(self) -> BatterySnapshot:
        return self.modbus.snapshot

    @snapshot.setter
    def snapshot(self, snapshot: BatterySnapshot) -> None:
        self.modbus.snapshot = snapshot

    @property
    def endpoint(self) -> UdpEndpoint | None:
        return None

    @property
    def limits(self) -> PowerLimits:
        return self.modbus.limits

    @property
    def unsupported_methods(self) -> list[Method]:
        return []

    @property
    def last_replies(self) -> dict[Method, dict[str, Any]]:
        return {}

    @property
    def last_words(self) -> dict[str, list[int]]:
        return self.modbus.last_words

    @property
    def requests(self) -> int:
        return self.modbus.requests

    def is_unsupported(self, method: Method) -> bool:
        return False

    def move_to(self, host: str) -> None:
        self.host = host
        self._replace_client(replace(self._config, host=host), self.modbus.snapshot)  # the same battery

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port} (Modbus)"

    # reading --------------------------------------------------------------------------------------

    async def read(
        self,
        methods: Iterable[Method] = READ_METHODS,
        *,
        deadline: float | None = None,
        persist: bool = False,
        give_up_after: int = 2,
        on_first_answer: Callable[[], None] | None = None,
    ) -> ReadReport:
        """One poll of every register (the methods only name the report's entries), then the lease kept.

        `persist` and `give_up_after` are the Local API's retry rules: a Modbus request is not resent."""
        wanted = list(methods) or [Method.ES_MODE]
        report = ReadReport()
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left < 0.05:
            report.errors[wanted[0]] = OutOfTime(f"no time left to ask {self.label}")
            report.unread.extend(wanted)
            return report
        started = time.monotonic()
        client, commands = self.modbus, self.modbus.commands_started
        idle = not client.commands_running  # a command under way at the start overlaps the poll too
        # Not cut at the deadline: the poll may wait for a command's writes, which must not be cut off
        # midway; every request has the client's timeout, and the link follows an overrun poll at once.
        try:
            await self._poll()
        except MarstekError as exc:
            report.errors[wanted[0]] = exc
            # Once the last SOC is older than `soc_stale_s`, blind, as at a poll that answered without it
            # (one failed poll of a network chip that resets now and then leaves it a few seconds old: no
            # pause for that). Nothing is written for it now: the battery cannot be reached, or another
            # battery answers at the address; the next poll that reaches ours idles the discharge
            # (`keep_lease`), and it goes on only once the SOC is read twice in a row.
            self._soc_reads = 0  # (the SOC is read at polls in a row to resume, never across a failed one)
            if self._soc_stale():
                self.soc_blind = True
            await self._end_lease_if_due()
            return report
        self.last_round_trip = time.monotonic() - started
        self.last_answer_at = time.monotonic()
        report.results = {method: {} for method in wanted}
        if on_first_answer is not None:
            on_first_answer()
        untouched = client is self.modbus and idle and not client.commands_running
        seen = self.snapshot.seen.get("soc")
        if seen is not None and seen >= started:
            self._soc_reads += 1
            self.soc_blind = self.soc_blind and self._soc_reads < SOC_READS_TO_RESUME
        else:
            self._soc_reads, self.soc_blind = 0, True
        await self.keep_lease(settled=untouched and client.commands_started == commands)
        return report

    async def _connected(self) -> VenusModbusClient:
        async with self._connecting:  # a poll and a command at once: one connection, one map chosen
            if not self.modbus.connected:
                before = self.modbus.snapshot
                await self.modbus.connect()
                if self._generation is None:
                    await self.choose_generation(before)
                self._check_identity(before)
            return self.modbus

    def _check_identity(self, before: BatterySnapshot) -> None:
        """Keep a connection only to the pinned battery, by the MAC it read (the address may now be another
        battery's): nothing is read from, or written to, another battery, at this poll or any later one."""
        mac = self.modbus.mac
        if mac is None:
            return
        if self.identity and mac != self.identity:
            self.modbus.drop()
            self.modbus.snapshot = before
            self._generation = self._configured_generation  # (chosen from the other battery's name)
            raise IdentityMismatch(
                f"another battery ({mac}) answers at {self.label}; expected {self.identity}"
            )
        self.identity = self.identity or mac

    async def choose_generation(self, before: BatterySnapshot | None = None) -> None:
        """The register map from the device name, which both maps keep at 31000. `before`: the snapshot
        from before this connection, carried over to the other map's client (the other registers read
        with the wrong map are not this battery's values); None: nothing was known."""
        model = self.modbus.snapshot.values.get("model")
        family = identify(model if isinstance(model, str) else None, None).family
        if family is Family.UNKNOWN:
            # An unknown name: the v3 map's identity registers answer only on the v3 firmware base (asked
            # of this connection: the snapshot may hold a version the Local API handed over).
            generation = Generation.V3 if self.modbus.identified else Generation.V12
        else:
            generation = Generation.for_family(family)
        self._generation = generation
        _LOG.info("%s: the %s register map, from the device name %r", self.label, generation.value, model)
        if generation is not self._config.generation:
            carried = before if before is not None else BatterySnapshot(guard=self.modbus.snapshot.guard)
            self._replace_client(replace(self._config, generation=generation), carried)
            await self.modbus.connect()

    def _replace_client(self, config: VenusModbusConfig, snapshot: BatterySnapshot) -> None:
        self.modbus.drop()  # the battery serves a single client
        self._config = config
        self.modbus = VenusModbusClient(config)
        self.modbus.snapshot = snapshot

    async def _poll(self) -> None:
        before = self.modbus.snapshot
        model_before = before.values.get("model")
        client = await self._connected()
        snapshot = await client.poll()
        values = snapshot.values
        model = values.get("model")
        # `VNSE3-0` over Modbus is `VenusE 3.0` over UDP: one model, one spelling across a switch.
        if isinstance(model_before, str) and isinstance(model, str) and _same_model(model, model_before):
            values["model"] = model_before
        self.last_src = str(values.get("model") or "") or None

    # the lease ------------------------------------------------------------------------------------

    async def keep_lease(self, *, settled: bool = False) -> None:
        """After a poll: end the lease when due, stop at the SOC bound, take control again when it was
        lost, and release a control no lease asks for while a release is owed (`release_owed`).

        `settled`: no command of the add-on overlapped the poll, so its control readings (`polled_control`)
        are a state the battery was in: a work mode changed outside the add-on ends the lease. A forced
        discharge idles while the SOC cannot be read (`soc_blind`).

        Skipped while a command is writing: it came after the poll's readings and decides (a new lease, or
        none), and the poll task must not wait for it; the next poll looks again."""
        if self._writing.locked():
            return
        async with self._writing:
            await self._keep_lease(settled)

    async def _keep_lease(self, settled: bool) -> None:
        """(With the write lock held.)"""
        client = self.modbus
        control = client.control
        lease = self.lease
        polled = client.polled_control if settled else None
        if lease is None:
            if polled is not None and _released(polled) and polled.work_mode is not None:
                self._work_mode = polled.work_mode  # the stored mode: what a lease is compared with
            if self.release_owed:
                await self._release_owed()
            return
        if polled is not None and polled.number("rs485_control") == Rs485.ON:
            lease.held = True
        if polled is not None and self._changed_outside(lease, polled):
            await self._yield_lease(lease, polled)
            return
        if self._clock() >= lease.until:
            await self._end_lease(lease)
            return
        if lease.power > 0 and not lease.at_bound and self.soc_blind:
            if not self._blind_said:
                self._blind_said = True
                _LOG.warning(
                    "%s: no recent SOC reading (not read, or the link was out): the forced discharge pauses "
                    "until the SOC is read at %d polls in a row",
                    self.label,
                    SOC_READS_TO_RESUME,
                )
            if not control.in_control or control.force_mode is not ForceMode.STOP:
                await client.stop()  # again at each poll until it holds
            return
        if self._blind_said:
            self._blind_said = False
            _LOG.info("%s: the SOC is read again: the forced discharge may go on", self.label)
            await self._apply(lease)
            return
        soc = self.snapshot.soc
        if not lease.at_bound and soc is not None and self._beyond_bound(lease, soc):
            lease.at_bound = True
            bound = self.soc_ceiling if lease.power < 0 else self.soc_floor
            _LOG.info(
                "%s: SOC %.0f %% reached the bound %.0f %%: the forced power stops", self.label, soc, bound
            )
            await client.stop()
            return
        if not settled:
            # A command overlapped the poll: its control readings may predate the command's writes (which
            # verified their own read-back). Taking control "again" now would write beside that command, and
            # spoil its read-back; the next poll no command overlaps decides.
            return
        wanted = ForceMode.STOP if lease.at_bound else lease.force
        if not control.in_control or control.force_mode is not wanted:
            _LOG.warning(
                "%s: the battery left the forced mode while the lease runs: taking it again", self.label
            )
            await self._apply(lease)

    def _changed_outside(self, lease: Lease, polled: ControlState) -> bool:
        mode = polled.work_mode
        if not _released(polled) or mode is None:
            return False
        if self._work_mode is None:
            # Nothing to compare with: a control the lease held and no release of ours let go is a
            # person's (their choice wins; the battery's own mode is the safe side). A take that never
            # landed is tried again.
            return lease.held
        return mode is not self._work_mode

    async def _yield_lease(self, lease: Lease, polled: ControlState) -> None:
        """A person's work mode: the lease ends, RS485 control stays off (their mode is the byte control
        lives in), and only the forced set-points are cleared (ignored outside control, §3.2), so that no
        forced power of the add-on waits in RAM for the next controller to switch control on."""
        mode = polled.work_mode
        assert mode is not None
        unknown = (
            ""
            if self._work_mode is not None
            else " (the stored work mode was not known: RS485 control released by someone else is taken as "
            "a person's choice)"
        )
        _LOG.warning(
            "%s: the work mode was changed to %s outside the add-on (the Marstek app?) while the lease of "
            "Passive %+d W ran: the lease ends and RS485 control is not taken again (a person's choice "
            "wins)%s",
            self.label,
            _mode_name(mode),
            lease.power,
            unknown,
        )
        if self.lease is lease:
            self.lease = None
        self._work_mode = mode
        await self.modbus.stop()

    async def _end_lease(self, lease: Lease) -> None:
        lease.held = False  # a control read off from now on may be this release's
        outcome = await self.modbus.release()
        if outcome.ok and self.lease is lease:  # (not a renewal that came meanwhile: it takes it again)
            _LOG.info("%s: the lease of Passive %+d W ended: control released", self.label, lease.power)
            self.lease = None

    async def _end_lease_if_due(self) -> None:
        """After a failed poll: a lease past its end is released all the same (a forced power must not
        outlive it because some reading failed), on a new connection if the poll lost its own."""
        lease = self.lease
        if lease is None or self._clock() < lease.until or self._writing.locked():
            return  # (a command writing decides, as in `keep_lease`)
        async with self._writing:
            try:
                await self._connected()
            except MarstekError as exc:
                if not self._told_lease_over:  # once an outage: the poll's own error says the rest
                    self._told_lease_over = True
                    _LOG.warning(
                        "%s: the lease of Passive %+d W is over, but: %s", self.label, lease.power, exc
                    )
                return
            self._told_lease_over = False
            await self._end_lease(lease)

    async def _release_owed(self) -> WriteOutcome | None:
        """Release the control last read if it is on (nothing asks for it); None: it was off."""
        if not self.modbus.control.in_control:
            self.release_owed = False
            return None
        _LOG.warning(
            "%s: the battery is in RS485 control but no command of this run asks for it (left by a run that "
            "stopped without releasing it, by a release that failed, or by another controller): releasing it",
            self.label,
        )
        outcome = await self.modbus.release()
        if outcome.ok and self.lease is None:
            self.release_owed = False
        return outcome

    async def release_left_control(self) -> WriteOutcome | None:
        """Connect, read the control registers and release a control no lease asks for, if a release is
        owed, then disconnect (`transport: auto` on the Local API, whose polls never run `keep_lease`; the
        battery serves one Modbus client at a time). None: nothing to do. Raises MarstekError when the
        battery cannot be reached (the release stays owed)."""
        if not self._owes_release():
            return None
        async with self._writing:
            try:
                client = await self._connected()
                await client.read_control(("rs485_control",))
                # (a command that came before this got its turn holds a lease: the lease decides)
                return await self._release_owed() if self._owes_release() else None
            finally:
                if self.lease is None:
                    await self.modbus.close()

    def _owes_release(self) -> bool:
        return self.lease is None and self.release_owed

    def _soc_stale(self) -> bool:
        """No SOC was read for `soc_stale_s`: too old for a forced discharge to go on (or none was read)."""
        age = self.snapshot.age("soc")
        return age is None or age > self.soc_stale_s

    def _beyond_bound(self, lease: Lease, soc: float) -> bool:
        if lease.power < 0:
            return soc >= self.soc_ceiling
        return lease.power > 0 and soc <= self.soc_floor

    async def _apply(self, lease: Lease) -> WriteOutcome:
        outcome = await self._force(lease)
        lease.held = lease.held or outcome.ok  # (verified by its read-back: control on)
        return outcome

    async def _force(self, lease: Lease) -> WriteOutcome:
        client = self.modbus
        soc = self.snapshot.soc
        if lease.power > 0 and not self.soc_blind and self._soc_stale():
            # A command (a renewal, a switch from the Local API) on a SOC no poll has read lately: blind
            # until the polls read it twice in a row, as after an outage.
            self._soc_reads, self.soc_blind = 0, True
        if lease.power > 0 and self.soc_blind:
            return await client.take_control()  # idle, held: no discharge without a SOC to stop it by
        if lease.power == 0 or lease.at_bound or (soc is not None and self._beyond_bound(lease, soc)):
            lease.at_bound = lease.power != 0
            return await client.take_control()  # idle, held
        if lease.power < 0:
            return await client.force_charge(-lease.power)
        return await client.force_discharge(lease.power)

    # writing --------------------------------------------------------------------------------------

    async def set_mode(self, command: ModeCommand) -> WriteOutcome:
        described = command.describe()
        if isinstance(command, ManualSlot) and command.enabled:
            return _outcome(
                WriteStatus.REJECTED,
                described,
                "schedule slots are not written over Modbus (use the Marstek app, or the Local API)",
            )
        work_mode = _WORK_MODES.get(type(command))
        if work_mode is None and not isinstance(command, PassiveMode):
            return _outcome(
                WriteStatus.REJECTED, described, f"{command.mode.value} mode is not offered over Modbus"
            )
        async with self._writing:  # (after an upkeep under way: its writes are over before these begin)
            return await self._write_mode(command, work_mode)

    async def _write_mode(self, command: ModeCommand, work_mode: WorkMode | None) -> WriteOutcome:
        """(With the write lock held.)"""
        described = command.describe()
        stored = self._work_mode
        if work_mode is not None:
            # A work mode ends the lease whatever comes of it: never taken again for a command it
            # superseded, and the control released at a poll if this command does not get through.
            self.lease = None
            # Ours before it lands: a lease that follows must not take it for a person's.
            self._work_mode = work_mode
        try:
            await self._connected()
        except MarstekError as exc:
            self.release_owed = self.release_owed or work_mode is not None
            if work_mode is not None:
                self._work_mode = stored  # nothing was written
            return _outcome(WriteStatus.NOT_APPLIED, described, str(exc))
        if isinstance(command, PassiveMode):
            return await self._passive(command)
        assert work_mode is not None
        outcome = await self.modbus.set_work_mode(work_mode)
        # ok: released (if it was on) and verified; else a control left on is released at a poll
        self.release_owed = not outcome.ok
        # Not applied: it may have landed or not, so learnt again at a poll without a lease.
        self._work_mode = work_mode if outcome.ok else None
        return replace(outcome, command=described, detail=f"{outcome.command}: {outcome.detail}")

    async def _passive(self, command: PassiveMode) -> WriteOutcome:
        if self.snapshot.firmware.ver is None:
            return _outcome(
                WriteStatus.REJECTED, command.describe(), "the battery has not identified itself yet"
            )
        try:
            prepared, clamped = prepare(command, self.snapshot.firmware, self.limits)
        except CommandError as exc:
            return _outcome(WriteStatus.REJECTED, command.describe(), str(exc))
        assert isinstance(prepared, PassiveMode)
        command = prepared
        previous, self.lease = self.lease, Lease(command.power, self._clock() + command.duration_s)
        owed, self.release_owed = self.release_owed, False  # the lease decides now
        outcome = await self._apply(self.lease)
        if outcome.status is WriteStatus.REJECTED:
            self.lease, self.release_owed = previous, owed  # nothing changed on the battery
        bound = " (held idle: the SOC bound is reached)" if self.lease and self.lease.at_bound else ""
        detail = (
            f"{outcome.command}{bound}: {outcome.detail}; no countdown over Modbus: the add-on releases "
            f"control after {command.duration_s} s"
        )
        notes = "; ".join(note for note in (clamped, outcome.clamped) if note)
        return replace(outcome, command=command.describe(), detail=detail, clamped=notes)

    async def clear_schedules(self, *, restore: bool = True) -> WriteOutcome:
        return WriteOutcome(
            WriteStatus.ACCEPTED,
            "clear schedules",
            0,
            "nothing written over Modbus: the battery ignores its schedules while the add-on controls it",
        )

    async def set_dod(self, depth_percent: int) -> WriteOutcome:
        value = max(DOD_MIN, min(DOD_MAX, int(depth_percent)))
        self.soc_floor = 100.0 - value
        return _outcome(
            WriteStatus.ACCEPTED,
            f"depth of discharge {value} %",
            f"kept by the add-on: forced discharging stops at {self.soc_floor:.0f} % (the battery's own "
            "depth of discharge cannot be set over Modbus)",
        )

    async def set_led(self, on: bool) -> WriteOutcome:
        return _outcome(WriteStatus.REJECTED, f"LED {'on' if on else 'off'}", "not available over Modbus")

    async def set_ble_advertising(self, on: bool) -> WriteOutcome:
        return _outcome(
            WriteStatus.REJECTED, f"BLE advertising {'on' if on else 'off'}", "not available over Modbus"
        )

    async def release_control(self) -> WriteOutcome | None:
        """End the lease and hand control back, if the add-on holds it (None: nothing held). A release
        that fails stays owed (`release_owed`): done at the next poll or `release_left_control()`."""
        async with self._writing:
            held = self.lease is not None or (self.modbus.connected and self.modbus.control.in_control)
            self.lease = None
            if not held:
                return None
            outcome = await self.modbus.release()
            self.release_owed = not outcome.ok
            return outcome

    async def close(self) -> None:
        """A clean stop: never leave RS485 control on without a reason. The s6 finish script releases only
        after a crash, so a control seen on whose release is still owed is released here, or never."""
        try:
            if self._owes_release() and self.modbus.control.in_control:
                await self.release_left_control()
            elif self.modbus.connected or self.lease is not None:
                await self._connected()
                await self.release_control()
        except MarstekError as exc:
            _LOG.warning("%s: could not release RS485 control at the stop: %s", self.label, exc)
        finally:
            await self.modbus.close()


def _released(polled: ControlState) -> bool:
    """42000 was read and is not on: 43000 then reads the work mode the battery follows."""
    rs485 = polled.number("rs485_control")
    return rs485 is not None and rs485 != Rs485.ON


def _mode_name(mode: WorkMode) -> str:
    names = {WorkMode.MANUAL: "Manual", WorkMode.SELF_CONSUMPTION: "Auto", WorkMode.AI: "AI"}
    return names[mode]


def _same_model(one: str, other: str) -> bool:
    family = identify(one, None).family
    return family is not Family.UNKNOWN and family is identify(other, None).family


def _outcome(status: WriteStatus, command: str, detail: str) -> WriteOutcome:
    outcome = WriteOutcome(status, command, 0 if status is WriteStatus.REJECTED else 1, detail)
    _LOG.log(logging.INFO if outcome.ok else logging.WARNING, "%s -> %s: %s", command, status.value, detail)
    return outcome
