"""Steers a wallbox by its charge mode: the pure `CarController` on live readings, its current written out.

`manual` (the default) leaves the wallbox alone: the add-on bridges it and steers nothing, as before. The
other modes (`off`, `now`, `min_pv`, `pv`) hand its charging current to the controller. A person's own
charging-current command puts the wallbox back in `manual`: a person's command wins. The mode is kept
under /data per wallbox. The wallbox's keepalive and fail-safe stay as they are: when the add-on stops, the
box falls back to its fail-safe current.

Whatever the mode, the car's stays are logged there too (plugged in, out, what it took; the last
STAYS_KEPT): in `plan` mode they give the planner the stay the car usually makes
(`car_sessions.expected_session`) before it is there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from time import monotonic
from typing import Any, Protocol

from ..bridge.controls import CHARGE_MODES
from ..bridge.devices import BatteryDevice, WallboxDevice, weighted_soc
from ..devices.outcome import WriteOutcome, WriteStatus
from ..optimiser.car import (
    CarController,
    CarDecision,
    CarInputs,
    CarSettings,
    ChargeMode,
    HomeBatteries,
    QuarterBudget,
    WallboxLimits,
)
from ..optimiser.car_sessions import (
    CarSession,
    PastSession,
    SessionPlan,
    departure_floor_kwh,
    expected_session,
    has_slack,
    next_departure,
    wallbox_minutes,
)
from ..optimiser.tariff import quarter_end
from .inputs import GridInput

_LOG = logging.getLogger(__name__)
MANUAL = "manual"
MODES = CHARGE_MODES
DEFAULT_ENERGY_KWH = 20.0
VOLTS = 230.0
PLUGGED = frozenset({"vehicle_connected", "vehicle_locked"})
DONE = frozenset({"suspended_ev", "finishing"})  # the car stopped taking energy (UNITE states)
# The states that show a car taking energy again, or none there (suspended_evse does not: it only says the box
# offers nothing, which is what it says after the control paused a full car).
TAKING = frozenset({"available", "no_vehicle", "charging"})
GRID_FRESH_S = 30.0
CAR_STOP_RETRY_S = 1800.0  # a car that stopped itself is offered current again this often
# plan mode: the planner gives a car just plugged in its plan at its next step, and one that failed tries
# again at its next; a plan missing this long (at least three control intervals) means none: charging as `now`
PLAN_WAIT_S = 60.0
PHASE_RETRY_S = 60.0  # a phase switch the box refused is not asked again sooner (one warning a minute)
STAYS_KEPT = 100  # about two months of a car that comes home every evening and at noon
# The car's phases are read only while it clearly charges (the UNITE shows a few watts with no car at all);
# a phase carries its charging above PHASE_ON_A (a phase it does not use reads about 0 A).
CHARGING_W = 1000.0
PHASE_ON_A = 1.0
PHASES_CONFIRM_S = 20.0
PHASES_CONFIRM_READINGS = 3
PHASE_SETTLE_S = 60.0


class Clock(Protocol):
    def seconds(self) -> float: ...

    def now(self) -> Any: ...


@dataclass
class CarStatus:
    mode: str
    decision: CarDecision | None = None
    last_outcome: str = ""


def store_key(host: str, port: int, unit_id: int) -> str:
    """Where a wallbox's mode, target and stays are kept under /data."""
    return f"{host}:{port}/{unit_id}"


class CarControl:
    def __init__(
        self,
        wallbox: WallboxDevice,
        grid: GridInput,
        batteries: Sequence[BatteryDevice],
        store: dict[str, Any],
        save: Callable[[], None],
        *,
        settings: Callable[[], CarSettings] = CarSettings,
        budget: Callable[[], QuarterBudget | None] = lambda: None,
        clock: Clock,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.wallbox = wallbox
        self.grid = grid
        self.batteries = list(batteries)
        self.store = store
        self.save = save
        self.settings = settings
        self.budget = budget
        self.clock = clock
        self.on_change = on_change
        self.controller = CarController()
        saved = store.get(self.key)
        if isinstance(saved, str):  # stored by an earlier version: the mode alone
            saved = {"mode": saved}
        saved = saved if isinstance(saved, dict) else {}
        mode, departure = saved.get("mode"), saved.get("departure")
        self.status = CarStatus(mode if isinstance(mode, str) and mode in MODES else MANUAL)
        self._energy_kwh = _number(saved.get("energy_kwh"), DEFAULT_ENERGY_KWH, 1, 100)
        self._departure: str = departure if isinstance(departure, str) and _is_clock(departure) else "07:30"
        self.planned: Callable[[], tuple[float, SessionPlan] | None] = lambda: None  # the planner's car
        self.plan_wait_s = PLAN_WAIT_S
        self._plan: tuple[float, SessionPlan] | None = None  # the plan in force (the last one, for a while)
        self._plan_missing_since: float | None = None
        self._plan_wait_left: float | None = None  # no plan yet: how long the car still waits for one
        self._writing: asyncio.Task[None] | None = None
        self._phase_retry_at = 0.0
        self.stays: list[PastSession] = _stays(saved.get("stays"))
        self._plugged_since: datetime | None = _time(saved.get("plugged_since"))  # the stay under way
        self._car_here: bool | None = None  # None: the wallbox not read yet
        self._car_stopped_at: float | None = None  # when the car itself stopped taking energy (monotonic)
        meter = saved.get("meter_at_plug")  # the wallbox's energy meter at the plug-in (kWh)
        self._meter_at_plug: float | None = _number(meter, math.nan, 0, 1e9)
        if math.isnan(self._meter_at_plug):
            self._meter_at_plug = None
        self._stay_kwh = 0.0
        # the most phases the car was seen to draw on in the stay under way; None: not seen charging yet
        seen = saved.get("phases_seen")
        self._phases_seen: int | None = seen if type(seen) is int and 1 <= seen <= 3 else None
        # fewer than three phases seen, not yet held: (since, count, readings)
        self._fewer_phases: tuple[float, int, int] | None = None
        self._phases_asked_at: float | None = None  # the last phase switch the add-on asked for (clock)

    @property
    def key(self) -> str:
        cfg = self.wallbox.link.client.config
        return store_key(cfg.host, cfg.port, cfg.unit_id)

    @property
    def mode(self) -> str:
        return self.status.mode

    def set_mode(self, mode: str, why: str = "") -> str | None:
        """None, or why the mode was refused."""
        if mode not in MODES:
            return f"charge mode must be one of {', '.join(MODES)}"
        if mode != self.status.mode:
            _LOG.info("%s: charge mode %s%s", self.wallbox.name, mode, f" ({why})" if why else "")
        if self.status.mode == MANUAL and mode != MANUAL:
            # The control did not steer meanwhile, a person did: what it remembers (a session it was
            # charging, its timers) is not the box's. Carried on, pv chosen again without surplus held the
            # remembered session at the minimum current for the stop delay, from the grid.
            self.controller = CarController()
        link = self.wallbox.link
        if mode != MANUAL and not (link.online and link.client.connected):
            # The current the client re-sends when the box is back was the old mode's: `off` wants 0 at
            # once; any other mode decides on the box's first reading.
            link.client.current_setpoint = 0 if mode == ChargeMode.OFF.value else None
        self.status.mode = mode
        self.status.decision = None
        self._plan = self._plan_missing_since = self._plan_wait_left = None
        self._car_stopped_at = None  # a person's choice: offer the car current again
        self._store()
        return None

    @property
    def energy_kwh(self) -> float:
        return self._energy_kwh

    @property
    def departure(self) -> str:
        return self._departure

    def set_target(self, *, energy_kwh: float | None = None, departure: str | None = None) -> None:
        """The plan mode's target: the energy wanted and the departure time (the entities validated them)."""
        if energy_kwh is not None:
            self._energy_kwh = _number(energy_kwh, self._energy_kwh, 1, 100)
        if departure is not None and _is_clock(departure):
            self._departure = departure
        self._store()

    def _store(self) -> None:
        self.store[self.key] = {
            "mode": self.status.mode,
            "energy_kwh": self._energy_kwh,
            "departure": self._departure,
            "stays": [
                [s.arrival.isoformat(), s.departure.isoformat(), round(s.energy_kwh, 3)] for s in self.stays
            ],
            "plugged_since": None if self._plugged_since is None else self._plugged_since.isoformat(),
            "meter_at_plug": self._meter_at_plug,
            "phases_seen": self._phases_seen,
        }
        self.save()
        self.on_change()

    def session(self, now: datetime) -> CarSession | None:
        """In `plan` mode with a car plugged in that wants energy: what it still needs by its departure."""
        link = self.wallbox.link
        if self.status.mode != ChargeMode.PLAN.value or not link.online:
            return None
        values = link.snapshot.values
        if not self._plugged_in(values) or self._car_took_stop(values):
            return None
        charged = max(self._stay_kwh, self.stay_kwh() or 0.0)  # (never less for a reading that failed)
        departure = next_departure(self._departure_time(), now, self._plugged_since)
        min_kw, max_kw = self._power_limits_kw()
        return CarSession(now, departure, max(0.0, self._energy_kwh - charged), max_kw, min_kw)

    def observe_stay(self, now: datetime) -> None:
        """Logs the car's stays from the cable state, whatever the mode. Only a stay seen from its plug-in
        to its plug-out is logged (across a restart of the add-on, from /data); a car already there when
        the add-on first reads the wallbox came at an unknown time. A wallbox that does not answer ends no
        stay: the car is taken to be there until the wallbox says otherwise."""
        link = self.wallbox.link
        state = link.snapshot.values.get("cable_state") if link.online else None
        if state is None:
            return
        if state in PLUGGED:
            meter = link.snapshot.number("energy_total")
            if self._car_here is False:
                self._plugged_since, self._stay_kwh, self._meter_at_plug = now, 0.0, meter
                self._phases_seen = self._fewer_phases = None  # another car, maybe
                self._store()
            elif self._plugged_since is not None and meter is not None:
                base = self._meter_at_plug
                if base is None or meter < base + self._stay_kwh - 0.001:
                    # no reading at the plug-in, or the meter went back (a reset): counted on from here
                    self._meter_at_plug = meter - self._stay_kwh
                    self._store()
            self._car_here = True
            self._stay_kwh = max(self._stay_kwh, self.stay_kwh() or 0.0)
            self._see_phases()
            return
        arrival = self._plugged_since
        if self._car_here and arrival is not None and now > arrival:
            self.stays = [*self.stays, PastSession(arrival, now, self._stay_kwh)][-STAYS_KEPT:]
        self._car_here = False
        if arrival is not None or self._phases_seen is not None:
            self._plugged_since = self._meter_at_plug = self._phases_seen = self._fewer_phases = None
            self._store()

    def _see_phases(self) -> None:
        """Counts the phases the car draws on from the box's per-phase currents. Only a box on three phases
        tells (on one, every car draws on one), and not for PHASE_SETTLE_S after a switch the add-on asked
        for (a box may keep the car on one phase a while after reporting three). Three are final for the
        stay. Fewer count only once the same count held PHASES_CONFIRM_S over PHASES_CONFIRM_READINGS
        readings, and a count never goes down: a car ramping its current up, or a reading from around a
        switch, shows fewer phases than it uses, and a three-phase car taken for one would be given three
        times the power the capacity cap allows."""
        snapshot = self.wallbox.link.snapshot
        t = self.clock.seconds()
        client = self.wallbox.link.client
        settled = client.phase_setpoint in (None, "3") and (
            self._phases_asked_at is None or t - self._phases_asked_at >= PHASE_SETTLE_S
        )
        if self._phases() != 3 or not settled or (snapshot.number("power") or 0.0) < CHARGING_W:
            self._fewer_phases = None
            return
        seen = 0
        for key in ("current_l1", "current_l2", "current_l3"):
            amps = snapshot.number(key)
            if amps is None:
                self._fewer_phases = None
                return  # a phase not read: the count would be too low
            seen += amps > PHASE_ON_A
        if seen == 0 or self._phases_seen == 3 or seen <= (self._phases_seen or 0):
            return  # no phase carries the power (a reading out of step), or nothing new
        if seen < 3 and self._phases_seen is None:
            since, count, readings = self._fewer_phases or (t, seen, 0)
            if count != seen:
                since, readings = t, 0
            self._fewer_phases = (since, seen, readings + 1)
            if t - since < PHASES_CONFIRM_S or readings + 1 < PHASES_CONFIRM_READINGS:
                return
        self._fewer_phases = None
        self._phases_seen = seen
        _LOG.info("%s: the car charges on %d phase%s", self.wallbox.name, seen, "s" if seen > 1 else "")
        self._store()

    def stay_kwh(self) -> float | None:
        """What the car took since it was plugged in: the wallbox's energy meter since the plug-in, else the
        UNITE's session energy. (The NEXT's register 1502 holds the last session's energy, 0 while one runs:
        it says nothing about this stay.) None: not known, the car was there before the add-on."""
        snapshot = self.wallbox.link.snapshot
        meter = snapshot.number("energy_total")
        if meter is not None and self._meter_at_plug is not None and 0 <= meter - self._meter_at_plug <= 200:
            return meter - self._meter_at_plug
        return snapshot.number("session_energy")

    def expected(self, now: datetime) -> CarSession | None:
        """In `plan` mode with no car plugged in: the stay the car usually makes next (see
        `car_sessions.expected_session`), until the user's departure time; None when there is no habit yet."""
        if self.status.mode != ChargeMode.PLAN.value or self._car_here is not False:
            return None
        if not self.wallbox.link.online:
            return None
        min_kw, max_kw = self._power_limits_kw()
        return expected_session(
            self.stays, now, max_kw=max_kw, min_kw=min_kw, departure=self._departure_time()
        )

    def _departure_time(self) -> time:
        hours, minutes = (int(part) for part in self._departure.split(":"))
        return time(hours, minutes)

    def _power_limits_kw(self) -> tuple[float, float]:
        """The wallbox's lowest and highest charging power on its phases now (kW); none when the installation
        allows less than the box's minimum."""
        minimum, maximum = self.wallbox.link.client.current_limits()
        if maximum < minimum:
            return 0.0, 0.0
        per_amp = self._car_phases() * VOLTS / 1000
        return minimum * per_amp, maximum * per_amp

    def _can_switch_phases(self) -> bool:
        # A single-phase installation (register 404) has no three phases to switch to; after a switch the
        # box refused, the controller works with the phases it has until the retry (a car paused for a
        # switch down that never comes would wait for ever).
        # A car seen charging on one phase gains nothing from three: the box stays as it is for the stay
        # (switched for such a car, it would go back and forth). A two-phase car's minimum is lower on one.
        link = self.wallbox.link
        return (
            link.client.supports("phase_switch")
            and link.snapshot.values.get("phases_installed") != "1"
            and monotonic() >= self._phase_retry_at
            and self._phases_seen != 1
        )

    def _plugged_in(self, values: Mapping[str, object]) -> bool | None:
        """A failed read of the cable state (a Modbus exception) says nothing: the car is taken to be as it
        was, so one transient error is not a stop and a start. None: never read."""
        cable = values.get("cable_state")
        return self._car_here if cable is None else cable in PLUGGED

    def _car_took_stop(self, values: Mapping[str, object]) -> bool:
        """The car itself stopped taking energy, and nothing since says otherwise. After the control has
        paused such a car, the UNITE reports suspended_evse (it offers nothing): taken for a car that wants
        energy, it would be offered current again, stop again, and so on every step. A car that stopped on
        its own timer, or only paused while waking up, can ask again only when it is offered current: it
        is, every CAR_STOP_RETRY_S."""
        state, now = values.get("charge_point_state"), monotonic()
        if state in DONE:
            if self._car_stopped_at is None:
                self._car_stopped_at = now
        elif state in TAKING or values.get("cable_state") not in (*PLUGGED, None):
            self._car_stopped_at = None
        if self._car_stopped_at is not None and now - self._car_stopped_at >= CAR_STOP_RETRY_S:
            self._car_stopped_at = None  # offered once more; a car still full stops again at once
        return self._car_stopped_at is not None

    def _phases(self) -> int:
        """The box's phases: what a phase switch is decided against."""
        values = self.wallbox.link.snapshot.values
        return 1 if values.get("phase_switch") == "1" or values.get("phases_installed") == "1" else 3

    def _car_phases(self) -> int:
        """The phases the car's power comes from: the box's, or fewer once the car was seen charging on fewer
        (a single-phase on-board charger on a three-phase box draws a third of the box's power)."""
        box = self._phases()
        return box if self._phases_seen is None else min(box, self._phases_seen)

    # one control interval -----------------------------------------------------------------------------

    def inputs(self) -> CarInputs | None:
        link = self.wallbox.link
        if self.status.mode == MANUAL or not link.online:
            return None
        values = link.snapshot.values
        plugged_in = self._plugged_in(values)
        if plugged_in is None:
            if self.status.mode != ChargeMode.OFF.value:
                return None  # the cable state was never read: nothing to steer by yet
            plugged_in = False  # off wants 0 A whether a car is there or not
        client = link.client
        minimum, maximum = client.current_limits()
        reading = self.grid.current()
        age = reading.age()
        fresh = reading.value is not None and age is not None and age <= GRID_FRESH_S
        # The controller's phases turn its watts into amperes (the plan's power, the surplus, the capacity
        # cap): the car's where the box does not switch. Where it does, they are also the phases asked of
        # the box and stay the box's (a two-phase car is then worked out on three: less than it could take).
        switchable = self._can_switch_phases()
        phases = self._phases() if switchable else self._car_phases()
        mode = ChargeMode(self.status.mode)
        planned, no_plan = self._plan_in_force(plugged_in) if mode is ChargeMode.PLAN else (None, False)
        now = self.clock.now()
        # The plan's session, as the plan saw it: the energy still needed when it was made (a little more
        # than now, never less) by the departure (`next_departure`).
        session = planned[1].session if planned is not None else None
        hours_left = 0.0 if session is None else (session.departure - now).total_seconds() / 3600
        slack = session is None or has_slack(session.energy_kwh, hours_left, session.max_kw)
        floor_w = None
        live = self.session(now) if session is not None and not slack else None
        if session is not None and live is not None:
            # From what the car still needs now (the plan's figure is from the quarter's start), over the
            # rest of this quarter or up to the departure if that comes first.
            rest_h = max(1.0, (min(quarter_end(now), session.departure) - now).total_seconds()) / 3600
            due = departure_floor_kwh(live.energy_kwh, hours_left, rest_h, live.max_kw)
            floor_w = due / rest_h * 1000
        return CarInputs(
            t=self.clock.seconds(),
            now=now,
            mode=mode,
            grid_power=reading.value if fresh else None,
            car_power=link.snapshot.number("power") or 0.0,
            plugged_in=plugged_in,
            wants_energy=not self._car_took_stop(values),
            limits=WallboxLimits(
                minimum,
                maximum,
                phases,
                can_switch_phases=switchable,
            ),
            batteries=self._home_batteries(),
            settings=self.settings(),
            quarter=self.budget(),
            # no plan at all: as `now` (None), so the car is ready by its departure whatever the planner does
            planned_power_w=(
                self._planned_now(planned, now) * 1000 if planned is not None else None if no_plan else 0.0
            ),
            plan_slack=slack,
            plan_floor_w=floor_w,
        )

    def _plan_in_force(self, plugged_in: bool) -> tuple[tuple[float, SessionPlan] | None, bool]:
        """The plan the car follows, and whether it has none at all (the optimiser off, the rules in force,
        or the planner failing for PLAN_WAIT_S). A plan missing for less keeps the last one in force, or, for
        a car just plugged in, has it wait: taken at once for none, a car plugged in at the evening's prices
        was switched on at the maximum and off again when its plan came a control step later."""
        self._plan_wait_left = None
        if not plugged_in:
            self._plan = self._plan_missing_since = None  # the next car waits for a plan of its own
            return None, False
        t, plan = self.clock.seconds(), self.planned()
        if plan is not None:
            self._plan, self._plan_missing_since = plan, None
            return plan, False
        if self._plan_missing_since is None:
            self._plan_missing_since = t
        left = self.plan_wait_s - (t - self._plan_missing_since)
        if left <= 0:
            self._plan = None
            return None, True
        if self._plan is None:
            self._plan_wait_left = left
        return self._plan, False

    @staticmethod
    def _planned_now(planned: tuple[float, SessionPlan], now: datetime) -> float:
        """The plan's car power for this minute: a quarter planned below the wallbox's minimum is charged
        at the minimum for the minutes that give its energy, then paused (as the replay does it)."""
        kw, session_plan = planned
        return wallbox_minutes(kw, session_plan.session)[now.minute % 15]

    def _home_batteries(self) -> HomeBatteries:
        online = [b for b in self.batteries if b.available]
        power = sum(b.link.snapshot.ac_power or 0.0 for b in online)
        room = 0.0
        for battery in online:
            snapshot = battery.link.snapshot
            if snapshot.soc is not None and snapshot.soc < 99:
                # what it could take on top of what it takes now (ac_power is negative while charging)
                room += battery.link.client.limits.charge_w + min(0.0, snapshot.ac_power or 0.0)
        return HomeBatteries(power, room, weighted_soc(online))

    def step(self) -> CarDecision | None:
        self.observe_stay(self.clock.now())
        inputs = self.inputs()
        if inputs is None:
            return None
        decision = self.controller.step(inputs)
        if self.status.decision is None or decision.reason != self.status.decision.reason:
            _LOG.debug("%s: %s", self.wallbox.name, decision.reason)
        self.status.decision = decision
        wanted = decision.current_a if decision.charge else 0
        client = self.wallbox.link.client
        box_phases = self._phases()
        # switched for a charge, not while the wallbox waits (a waiting decision's phases mean nothing yet)
        switch = decision.charge and self._can_switch_phases() and decision.phases != box_phases
        phases = decision.phases if switch else None
        if phases is not None and phases < box_phases:
            # A current meant for one phase would draw three times the power on three: the car pauses
            # until the box reports the switch (it interrupts the charge to switch anyway).
            wanted = 0
        busy = self._writing is not None and not self._writing.done()
        if not busy and (phases is not None or wanted != client.current_setpoint):
            self._writing = asyncio.create_task(self._apply(phases, wanted, decision.reason))
        return decision

    async def _apply(self, phases: int | None, amps: int, reason: str) -> None:
        """Down to fewer phases: pause first, then switch (the next step sets the current for them). Up to
        more: switch first; a current meant for three phases draws less on one, so it follows even if the
        switch fails."""
        client = self.wallbox.link.client
        if phases is not None and amps == 0 and client.current_setpoint != 0:
            await self._write(0, reason)
        if phases is not None and self.status.mode != MANUAL:
            self._phases_asked_at = self.clock.seconds()
            outcome = await client.set_phases(phases)
            self._record(outcome, reason)
            if outcome.status not in (WriteStatus.APPLIED, WriteStatus.ACCEPTED):
                self._phase_retry_at = monotonic() + PHASE_RETRY_S
        if amps != client.current_setpoint:
            await self._write(amps, reason)

    async def _write(self, amps: int, reason: str) -> None:
        if self.status.mode == MANUAL:
            # A person's current came between the decision and this write: theirs wins. (No await lies
            # between this check and the request going out, so the person's write always comes after.)
            return
        outcome = await self.wallbox.link.client.set_charging_current(amps)
        self._record(outcome, reason)

    def _record(self, outcome: WriteOutcome, reason: str) -> None:
        recorded = WriteOutcome(
            outcome.status,
            f"{outcome.command} (charge mode {self.status.mode}: {reason})",
            outcome.attempts,
            outcome.detail,
            outcome.clamped,
        )
        self.wallbox.record(recorded)
        self.status.last_outcome = recorded.command
        if outcome.status not in (WriteStatus.APPLIED, WriteStatus.ACCEPTED):
            _LOG.warning(
                "%s: %s -> %s (%s)", self.wallbox.name, recorded.command, outcome.status, outcome.detail
            )
        self.on_change()

    async def run(self, interval: float) -> None:
        # the planner steps as often as this control: a plan may come a few intervals late
        self.plan_wait_s = max(PLAN_WAIT_S, 3 * interval)
        while True:
            try:
                self.step()
            except Exception:  # one bad step must not end the control of the wallbox
                _LOG.exception("%s: charge control step failed", self.wallbox.name)
            await asyncio.sleep(interval)

    def describe(self) -> str:
        decision = self.status.decision
        if self.status.mode == MANUAL:
            return "manual: the add-on does not steer this wallbox"
        if decision is None:
            return "waiting for the wallbox and the meter"
        if self.status.mode == ChargeMode.PLAN.value:
            planned = self._plan
            if self._car_here is False:
                expected = self.expected(self.clock.now())
                if expected is None:
                    return decision.reason  # (no car plugged in)
                return (
                    f"no car plugged in; expected about {expected.arrival:%H:%M} for "
                    f"{expected.energy_kwh:.1f} kWh (its usual stay): the plan keeps room for it"
                )
            if planned is None and self._plan_wait_left is not None:
                left = self._plan_wait_left
                return f"waiting for the plan (charging now in {left:.0f} s if none comes); {decision.reason}"
            if planned is None:
                why, reason = "the planner is off or has none", decision.reason.removeprefix("no plan: ")
                return f"no plan for the car ({why}): charging now; {reason}"
            session = planned[1]
            car = self._fewer_phases_note()
            if not session.met:
                return (
                    f"the plan misses {session.missing_kwh:.1f} kWh by {session.session.departure:%H:%M}"
                    f"{car}; {decision.reason}"
                )
            by = f"{session.session.departure:%H:%M}"
            return f"{session.planned_kwh:.1f} kWh planned by {by}{car}; {decision.reason}"
        return decision.reason

    def _fewer_phases_note(self) -> str:
        """Why a car is planned at less than the wallbox gives, when it is: it charges on fewer phases."""
        if self._phases_seen is None or self._phases_seen >= self._phases():
            return ""
        _, max_kw = self._power_limits_kw()
        n = self._phases_seen
        return f" (the car charges on {n} phase{'s' if n > 1 else ''}: {max_kw:.1f} kW at most)"


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    # The add-on's clock is local and naive; a time with an offset (a hand-edited file) is made so, since
    # comparing the two would fail.
    return moment if moment.tzinfo is None else moment.astimezone().replace(tzinfo=None)


def _stays(saved: object) -> list[PastSession]:
    """The stays logged under /data; an entry that does not read (a hand-edited file) is left out."""
    out: list[PastSession] = []
    for entry in saved if isinstance(saved, list) else []:
        if not isinstance(entry, list) or len(entry) != 3:
            continue
        arrival, departure, kwh = _time(entry[0]), _time(entry[1]), entry[2]
        if arrival is None or departure is None or departure < arrival:
            continue
        if isinstance(kwh, bool) or not isinstance(kwh, int | float) or not 0 <= kwh <= 200:
            continue
        out.append(PastSession(arrival, departure, float(kwh)))
    return out[-STAYS_KEPT:]


def _number(value: object, default: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return float(min(high, max(low, value)))


def _is_clock(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value) is not None
