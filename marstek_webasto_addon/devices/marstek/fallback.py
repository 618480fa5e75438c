"""`transport: auto`: the Local API, with Modbus TCP while it is silent, and back when it answers again.

The switch to Modbus comes when the Local API has been silent for `silent_for` seconds: 1.5 poll intervals,
but at most half the time after which the battery counts as offline (`silence_before_switch`). Counted in
time, not in polls, so the switch lands at the same point whatever the phase of the outage in the poll
cadence: at the defaults (10 s polls, offline after 32.5 s of silence) 15 s of silence, in which an online
battery's poll has resent its first request all along, and 17.5 s left for the Modbus connection and its
first poll (about 3 s for the v3 map; up to 10 s when a v150 firmware stalls Modbus for its telemetry), so a
battery that answers over Modbus never goes unavailable in between. The UDP read of the poll in which the
silence is reached is cut at that moment (or, done early for want of time for another attempt, waits for
it), and the rest of the poll goes to Modbus. While on Modbus, the Local API is probed once every
`PROBE_EVERY_S` (5 min: often enough to come back soon, rare enough not to disturb a firmware whose API is
struggling), and at every poll while Modbus does not answer either. A working Modbus is left only when the
Local API has answered `RETURN_AFTER` probes at consecutive polls (a Modbus that does not answer, at its
first answer): on a marginal Wi-Fi that lets one probe through now and then, each return would release
RS485 control and send the running Passive over the link that had just failed, and the silence after it
would send the battery back to Modbus: it would flap between its set-point and its own mode.

Across a switch the snapshot (values, plausibility history) is handed over, so entities and the guard see
one battery; a Passive command still running is carried over with the rest of its time (on `clock`, the
clock of the battery's countdowns: the simulators' in the demo), and RS485 control is released when leaving
Modbus. Every switch is logged once, with its reason. Only the latest command is carried: any other mode
command forgets the Passive, whatever its outcome (a person's Auto that the silent Local API did not take
must not be overridden by the optimiser's Passive before it at the switch), and commands and the carrying
are serialised, so a carried Passive never goes out after the command that superseded it. Nor is a Passive
carried that was seen to end on the transport it left (`_forget_ended_passive`): a mode picked in the
Marstek app ends it (over Modbus, by ending its lease), and sending it again at the switch would override
the person's choice.

While on the Local API, Modbus is still visited for one thing: RS485 control that no command asks for is
released (`ModbusBattery.release_owed`). At the start (a run that died may have left the battery under
control; `keep_lease` would release it only at a first Modbus poll, which a start on the Local API never
makes), and after a release that failed when leaving Modbus. This runs beside the polls, and again every
`release_retry` seconds while Modbus cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..outcome import WriteOutcome, WriteStatus
from .battery_client import Transport
from .client import MarstekClient, ReadReport
from .commands import ManualSlot, ModeCommand, PassiveMode
from .datapoints import READ_METHODS, Method
from .decode import BatterySnapshot
from .firmware import Mode, PowerLimits
from .modbus.battery import Lease, ModbusBattery
from .protocol import MarstekError
from .transport import UdpEndpoint

_LOG = logging.getLogger(__name__)

SILENT_INTERVALS = 1.5  # poll intervals of silence before the switch to Modbus
PROBE_EVERY_S = 300.0
RETURN_AFTER = 3  # probes answered at consecutive polls before a working Modbus is left for the Local API
RELEASE_RETRY_S = 60.0  # a release of RS485 control owed while on the Local API: tried again this often
CLOSE_WAIT_S = 3.0  # at a stop, for a release of RS485 control under way


def silence_before_switch(poll_interval: float, offline_window: float) -> float:
    """Seconds the Local API may be silent before Modbus takes over: 1.5 poll intervals, and never more
    than half the offline window, so Modbus always has the other half for its first answer."""
    return min(SILENT_INTERVALS * poll_interval, offline_window / 2)


@dataclass(frozen=True)
class Switch:
    at: float  # time.monotonic()
    to: Transport
    reason: str


@dataclass(frozen=True)
class RunningPassive:
    """The running Passive as last sent: what a switch carries over, and what tells whether it ended."""

    power: int
    end: float  # on the fallback's `clock`
    sent_at: float  # time.monotonic() when that sending was over: a mode read after it is the battery's since
    taken: bool  # read back applied, so a later reading of another mode means it ended
    lease: Lease | None  # the Modbus lease that sending started (None: not sent over Modbus, or not taken)


class FallbackBattery:
    """Both clients of one battery; the face of the one in use."""

    def __init__(
        self,
        udp: MarstekClient,
        modbus: ModbusBattery,
        *,
        name: str = "",
        silent_for: float = silence_before_switch(10.0, 32.5),
        probe_every: float = PROBE_EVERY_S,
        release_retry: float = RELEASE_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.udp = udp
        self.modbus = modbus
        self.name = name or udp.host
        self.silent_for = silent_for
        self.probe_every = probe_every
        self.release_retry = release_retry
        self.active: MarstekClient | ModbusBattery = udp
        self.switches: list[Switch] = []
        self._clock = clock  # the countdowns' clock (a running Passive's end)
        self._udp_since = time.monotonic()  # the Local API's silence counts from here at the latest
        self._next_probe = 0.0
        self._probes_answered = 0  # in a row, while on Modbus
        self._modbus_answers = True
        self._passive: RunningPassive | None = None
        self._dod: int | None = None  # a depth of discharge asked on Modbus: the battery's own, at the return
        self._commanding = asyncio.Lock()  # one command at a time, a carried Passive included
        self._releasing: asyncio.Task[None] | None = None  # a release owed, done beside the UDP polls
        self._next_release = 0.0
        self._told_unreachable = False  # the first failed check of RS485 control is a warning, not each
        modbus.snapshot = udp.snapshot  # one plausibility history from the start

    # the face of the client in use ----------------------------------------------------------------

    @property
    def transport(self) -> Transport:
        return self.active.transport

    transports: tuple[Transport, ...] = ("udp", "modbus")

    @property
    def host(self) -> str:
        return self.active.host

    @property
    def port(self) -> int:
        return self.active.port

    @property
    def identity(self) -> str | None:
        return self.udp.identity or self.modbus.identity

    @property
    def snapshot(self) -> BatterySnapshot:
        return self.active.snapshot

    @snapshot.setter
    def snapshot(self, snapshot: BatterySnapshot) -> None:
        self.active.snapshot = snapshot

    @property
    def soc_floor(self) -> float:
        return self.udp.soc_floor

    @soc_floor.setter
    def soc_floor(self, floor: float) -> None:
        self.udp.soc_floor = self.modbus.soc_floor = floor

    @property
    def schedule(self) -> dict[int, ManualSlot]:
        return self.udp.schedule

    @schedule.setter
    def schedule(self, slots: dict[int, ManualSlot]) -> None:
        self.udp.schedule = slots

    @property
    def last_answer_at(self) -> float | None:
        times = [t for t in (self.udp.last_answer_at, self.modbus.last_answer_at) if t is not None]
        return max(times, default=None)

    @property
    def last_src(self) -> str | None:
        return self.active.last_src

    @property
    def last_round_trip(self) -> float | None:
        return self.active.last_round_trip

    @property
    def endpoint(self) -> UdpEndpoint | None:
        return self.udp.endpoint

    @property
    def limits(self) -> PowerLimits:
        return self.active.limits

    @property
    def unsupported_methods(self) -> list[Method]:
        return self.active.unsupported_methods

    @property
    def last_replies(self) -> dict[Method, dict[str, Any]]:
        return self.udp.last_replies

    def is_unsupported(self, method: Method) -> bool:
        return self.active.is_unsupported(method)

    def move_to(self, host: str) -> None:
        """The Local API was found at a new address (a search uses its port and address, whichever
        transport is in use): asked there at the next poll rather than at the next probe, minutes away."""
        self.udp.move_to(host)
        self._next_probe = 0.0

    # reading, and the switches --------------------------------------------------------------------

    async def read(
        self,
        methods: Iterable[Method] = READ_METHODS,
        *,
        deadline: float | None = None,
        persist: bool = False,
        give_up_after: int = 2,
        on_first_answer: Callable[[], None] | None = None,
    ) -> ReadReport:
        wanted = list(methods)
        options: dict[str, Any] = {
            "deadline": deadline,
            "persist": persist,
            "give_up_after": give_up_after,
            "on_first_answer": on_first_answer,
        }
        if self.active is self.udp:
            self._release_if_owed()
            heard = max(self.udp.last_answer_at or 0.0, self._udp_since)
            switch_at = heard + self.silent_for
            cut = deadline is None or switch_at < deadline
            report = await self.udp.read(wanted, **{**options, "deadline": switch_at if cut else deadline})
            if report.any_answer:
                return report
            if time.monotonic() < switch_at:
                if deadline is None or switch_at >= deadline:
                    return report  # the silence is not long enough in this poll
                # Done early (too little time left for another attempt): the switch is due within this
                # poll, not at the next one.
                await asyncio.sleep(switch_at - time.monotonic())
            why = "; ".join(str(e) for e in report.errors.values()) or "no reply"
            silent = time.monotonic() - heard
            await self._switch(self.modbus, f"no answer over UDP for {silent:.1f} s ({why})")
            if deadline is not None and deadline - time.monotonic() < 1.0:
                return report  # Modbus is asked at the next poll, which is due now
            return await self.modbus.read(wanted, **options)
        probe_due = (
            not self._modbus_answers or self._probes_answered > 0 or time.monotonic() >= self._next_probe
        )
        if probe_due:
            if await self._udp_answers(deadline):
                self._probes_answered += 1
                if not self._modbus_answers or self._probes_answered >= RETURN_AFTER:
                    await self._switch(self.udp, "the Local API answers again")
                    return await self.udp.read(wanted, **options)
            else:
                self._probes_answered = 0
        report = await self.modbus.read(wanted, **options)
        self._modbus_answers = report.any_answer
        return report

    async def _udp_answers(self, deadline: float | None) -> bool:
        """One short question over UDP, with at most half the poll's time."""
        self._next_probe = time.monotonic() + self.probe_every
        now = time.monotonic()
        probe_deadline = None if deadline is None else now + max(0.0, deadline - now) / 2
        self.udp.snapshot = self.modbus.snapshot  # what it answers continues the same history
        report = await self.udp.read([Method.ES_MODE], deadline=probe_deadline, give_up_after=1)
        return report.any_answer

    def _release_if_owed(self) -> None:
        """While on the Local API: release RS485 control left on (at the start, or a release that failed
        when leaving Modbus), beside the polls."""
        if not self.modbus.release_owed or time.monotonic() < self._next_release:
            return
        if self._releasing is not None and not self._releasing.done():
            return
        self._next_release = time.monotonic() + self.release_retry
        self._releasing = asyncio.create_task(self._release_left_control(), name=f"{self.name}: release")

    async def _release_left_control(self) -> None:
        try:
            released = await self.modbus.release_left_control()
        except Exception as exc:
            if not isinstance(exc, MarstekError):
                _LOG.exception("%s: checking RS485 control over Modbus failed unexpectedly", self.name)
                return
            level = logging.DEBUG if self._told_unreachable else logging.WARNING
            self._told_unreachable = True
            _LOG.log(
                level,
                "%s: RS485 control could not be checked over Modbus (tried again every %.0f s until Modbus "
                "answers): %s",
                self.name,
                self.release_retry,
                exc,
            )
            return
        self._told_unreachable = False
        if released is None:
            return
        if not released.ok:
            _LOG.warning("%s: RS485 control could not be released: %s", self.name, released.detail)
            return
        _LOG.info("%s: RS485 control left on the battery released over Modbus", self.name)
        # A Passive sent over the Local API while the battery was under RS485 control: sent again now that
        # the battery follows its own mode (whether it kept it through the release is not known).
        await self._carry_passive(self.udp)

    async def _releasing_done(self) -> None:
        """Before Modbus is used for anything else: a release under way ends first (its writes and the
        others' must not interleave)."""
        task = self._releasing
        if task is not None and not task.done():
            await asyncio.wait([task])

    async def _switch(self, to: MarstekClient | ModbusBattery, reason: str) -> None:
        await self._releasing_done()
        source = self.active
        if source is self.modbus:
            # Under the command lock: no command goes out over Modbus between the release and the switch
            # (its lease would be left where no poll keeps it).
            async with self._commanding:
                self._forget_ended_passive()  # (before the release ends the lease for its own reason)
                released = await self.modbus.release_control()
                if released is not None and not released.ok:
                    _LOG.warning(
                        "%s: RS485 control could not be released (tried again while on the Local API): %s",
                        self.name,
                        released.detail,
                    )
                    self._next_release = 0.0
                self._become(to, source)
        else:
            self._forget_ended_passive()
            self._become(to, source)
        self.switches.append(Switch(time.monotonic(), to.transport, reason))
        _LOG.warning("%s: now over %s (was %s): %s", self.name, to.transport, source.transport, reason)
        if to is self.udp and self._dod is not None:
            dod, self._dod = self._dod, None
            outcome = await self.udp.set_dod(dod)
            _LOG.info(
                "%s: the depth of discharge asked over Modbus, written: %s", self.name, outcome.status.value
            )
        await self._carry_passive(to)

    def _become(self, to: MarstekClient | ModbusBattery, source: MarstekClient | ModbusBattery) -> None:
        to.snapshot = source.snapshot
        self.active = to
        self._udp_since = time.monotonic()
        self._modbus_answers = True
        self._probes_answered = 0
        self._next_probe = time.monotonic() + self.probe_every

    def _forget_ended_passive(self) -> None:
        """Before leaving the transport in use: forget the running Passive if it was seen to end there with
        no command since (each replaces or forgets it), so the switch does not send it again over a mode the
        battery was put in meanwhile, most likely by a person in the Marstek app.

        Over Modbus, its lease ended: a poll saw a work mode picked outside the add-on, or its time ran out.
        Over the Local API, a reading of the mode since it was read back applied is another mode. A Passive
        that never got through is still carried (a silent Local API has read nothing since)."""
        running = self._passive
        if running is None:
            return
        if self.active is self.modbus:
            ended = running.lease is not None and self.modbus.lease is not running.lease
        else:
            snapshot = self.udp.snapshot
            read_at = snapshot.seen.get("mode")
            mode = snapshot.mode
            ended = (
                running.taken
                and read_at is not None
                and read_at > running.sent_at
                and mode not in (None, Mode.PASSIVE)
            )
        if ended:
            self._passive = None
            _LOG.info(
                "%s: Passive %+d W ended over %s (another mode was picked, in the Marstek app?): not carried "
                "over",
                self.name,
                running.power,
                self.active.transport,
            )

    async def _carry_passive(self, to: MarstekClient | ModbusBattery) -> None:
        """The running Passive, again over `to` for the rest of its time. Under the command lock, so it never
        goes out after a command that superseded it; not at all while a command is being sent (over the
        Local API, a silent one takes its retries: the polls must not wait for it): that command decides.
        A Passive that did not get through is sent again over the new transport (`set_mode`); any other
        command that did not is reported not applied, and the Passive before it has ended (its countdown,
        at most 15 minutes, ends it in the battery too)."""
        if self._commanding.locked():
            return
        async with self._commanding:
            outcome = await self._send_passive_again(to)
        if outcome is not None:
            _LOG.info(
                "%s: the running Passive carried over %s: %s", self.name, to.transport, outcome.status.value
            )

    async def _send_passive_again(self, to: MarstekClient | ModbusBattery) -> WriteOutcome | None:
        """(With the command lock held.)"""
        running = self._passive
        if running is None or to is not self.active:
            return None
        left = round(running.end - self._clock())
        if left <= 0:
            return None
        return await self._send_passive(to, PassiveMode(running.power, left), running.end)

    async def _send_passive(
        self, to: MarstekClient | ModbusBattery, command: PassiveMode, end: float | None = None
    ) -> WriteOutcome:
        """(With the command lock held.) `command` over `to`, kept as the running Passive unless refused
        (a refusal changed nothing on the battery: what ran before runs on). `end`: None, its duration from
        when it was sent."""
        before = self.modbus.lease
        outcome = await to.set_mode(command)
        if outcome.status is not WriteStatus.REJECTED:
            lease = self.modbus.lease if to is self.modbus else None
            # A lease from before it (the battery could not be reached) is not this Passive's.
            started = lease if lease is not before else None
            if end is None:
                end = self._clock() + command.duration_s
            self._passive = RunningPassive(command.power, end, time.monotonic(), outcome.ok, started)
        return outcome

    # commands: over the transport in use ----------------------------------------------------------

    async def set_mode(self, command: ModeCommand) -> WriteOutcome:
        async with self._commanding:
            via = self.active
            if not isinstance(command, PassiveMode):
                self._passive = None  # superseded, whatever comes of this command
                return await via.set_mode(command)
            outcome = await self._send_passive(via, command)
            if outcome.status is WriteStatus.REJECTED:
                return outcome
            if self.active is not via and not outcome.ok:
                # The transport changed while it was being sent (the switch left it to this command): again
                # over the new one, for the rest of its time.
                again = await self._send_passive_again(self.active)
                if again is not None:
                    _LOG.info(
                        "%s: %s sent again over %s: %s",
                        self.name,
                        command.describe(),
                        self.active.transport,
                        again.status.value,
                    )
                    return again
            return outcome

    async def clear_schedules(self, *, restore: bool = True) -> WriteOutcome:
        return await self.active.clear_schedules(restore=restore)

    async def set_dod(self, depth_percent: int) -> WriteOutcome:
        outcome = await self.active.set_dod(depth_percent)
        if outcome.ok:
            self.soc_floor = self.active.soc_floor
            self._dod = depth_percent if self.active is self.modbus else None
            if self._dod is not None:
                detail = f"{outcome.detail}; written to the battery when its Local API answers again"
                outcome = replace(outcome, detail=detail)
        return outcome

    async def set_led(self, on: bool) -> WriteOutcome:
        return await self.active.set_led(on)

    async def set_ble_advertising(self, on: bool) -> WriteOutcome:
        return await self.active.set_ble_advertising(on)

    async def close(self) -> None:
        task = self._releasing
        if task is not None and not task.done():
            # A release under way finishes (a second or two); one still waiting for an unreachable Modbus is
            # not worth the stop's time (the next start releases what is left).
            await asyncio.wait([task], timeout=CLOSE_WAIT_S)
            if not task.done():
                task.cancel()
                await asyncio.wait([task])
                _LOG.warning("%s: RS485 control could not be checked over Modbus before the stop", self.name)
        await self.modbus.close()
        await self.udp.close()
