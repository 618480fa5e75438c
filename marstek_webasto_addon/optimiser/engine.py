"""The optimiser: one `step(inputs)` at a time, decisions out, no I/O.

Strategies (each switchable, defaults from the seed):
- rotation: one battery in Auto; on surplus the emptiest is the active one, on consumption the fullest;
  2 min hysteresis, 5 min between switches, make-before-break handover (never two in Auto);
- day/night: no rotation at night; night charging in the cheapest quarter-hours;
- overflow: a second battery charges in Passive with the surplus the active one cannot take;
- all full: every battery >= 95 % and exporting stops rotation; sustained consumption restarts it;
- peak assist: keeps the quarter-hour average offtake under the target (capacity tariff);
- mismatch detector: actions relying on a battery whose mode is in doubt are blocked;
- manual hold: a battery a person commanded is left alone until the hold ends (a person's command wins);
  one a person switched to Manual or AI outside the add-on (the Marstek app) is held the same way.

Safety: set-points within each battery's limits and SOC window; at most one Auto<->Passive change per battery
per minimum switch interval, counted from the last change by anyone, the Auto of a release or a stop included,
and across a restart (the controller keeps `mode_changes()` and gives them back with `restore_mode_changes`);
every Passive command carries a countdown of at most 15 minutes and is refreshed before it runs out, so a
battery falls back by itself when the add-on dies; stale grid input or the master switch off means Auto.

Consistent readings: a Passive set-point is worked out from the meter and the batteries' powers together (the
house is the grid plus the batteries). The meter shows a command at once, a battery's reading only at a poll
after it: worked out in between, a charge reads back as a load to cover, the next step's discharge as none,
and the batteries flap charge <-> idle <-> discharge at every step. So while a battery's reading does not
show its last command yet (`settling`, given by the controller, which sees the writes and the polls), no
Passive battery's role or power changes on what the readings say: not even towards less (right after a
larger set-point the stale total asks for less, right after a smaller one for more: a reduction let through
at once brings the flapping back, a power swinging by a kilowatt at every other poll). What does not come
from the readings still goes at once: the set-point kept is held within the battery's SOC window and limits
of now (a discharge at its floor, a charge at full, go to 0 W at once, and a countdown refresh never renews
a set-point outside them), and a stop the battery's SOC asks for (`_Want.soc_stop`: empty, full, charged to
its night goal) goes as it is. Nor is such a battery's mode, read before the command, taken for the battery
leaving it (the command is not sent again for that).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from . import mismatch
from .model import PASSIVE_ROLES, BatteryView, Command, Decision, Inputs, NightPlan, Role, Status, StepResult
from .night import evening_of, plan_night, target_soc
from .planner import Headroom, setpoint, split_power
from .settings import Settings
from .tariff import CapacityTracker, Tariff

HANDOVER_S = 15.0  # the new battery holds the old one's power in Passive this long before it goes Auto
POWER_DEADBAND_W = 100
LESS_IMPORT_DEADBAND_W = 20  # the planner's shares move towards less import for this little
POWER_UPDATE_S = (
    30.0  # Passive set-point updates at most this often (the Marstek wants >= 5 s between writes)
)
REPAIR_S = 60.0  # a battery that left its commanded mode on its own is told again at most this often
SOC_MARGIN = 2.0  # % above the floor / below full before a battery counts as able to discharge / charge
PEAK_RELEASE_KW = 0.2
OVERFLOW_STOP_S = 60.0  # consumption must last this long before overflow charging stops
# Modes the optimiser never sends: a battery it commands is found in one only by a person's choice (the
# Marstek app) or another controller's, never by itself (unlike Passive -> Auto when a countdown runs out).
OUTSIDE_MODES = ("Manual", "AI", "UPS")
# The optimiser's own schedule clearing leaves a battery in Manual until its role reaches it again (a
# minute or two per battery, one battery at a time): that Manual is no person's choice, for this long at most.
CLEARING_S = 15 * 60.0


def _headroom(battery: BatteryView) -> Headroom:
    capacity_kwh = battery.capacity_wh / 1000
    return Headroom(
        stored_kwh=capacity_kwh * (battery.soc or 0.0) / 100,
        min_kwh=capacity_kwh * battery.soc_floor / 100,
        max_kwh=capacity_kwh,
        max_charge_kw=battery.max_charge_w / 1000,
        max_discharge_kw=battery.max_discharge_w / 1000,
    )


def _soc(battery: BatteryView, unknown: float) -> float:
    """The SOC, or `unknown` when there is none: 0 % is an empty battery, not a missing reading."""
    return unknown if battery.soc is None else battery.soc


def _passive(power: int) -> tuple[Role, int]:
    """The Passive role for a share of a total, however small."""
    if power == 0:
        return Role.IDLE, 0
    return (Role.DISCHARGE if power > 0 else Role.CHARGE), power


def _holding(power: int) -> tuple[Role, int]:
    """The Passive role that delivers `power` (+ discharge): a new active battery takes over the old one's."""
    if abs(power) < POWER_DEADBAND_W:
        return Role.IDLE, 0
    return (Role.DISCHARGE if power > 0 else Role.CHARGE), power


@dataclass
class _Sent:
    role: Role
    power: int
    at: float  # t of the last send (a refresh counts)


@dataclass(frozen=True)
class _Want:
    role: Role
    power: int = 0
    reason: str = ""
    # One of a group whose total moved by the deadband: sent even if its own share moved less (three
    # batteries each 80 W off are 240 W at the meter).
    exact: bool = False
    # A stop the battery's own SOC asks for (empty, full, charged to its night goal), not worked out from the
    # meter: it goes at once while the readings settle (see the module's *Consistent readings*).
    soc_stop: bool = False


class Optimiser:
    def __init__(self, settings: Settings, tariff: Tariff, history: int = 50) -> None:
        self.settings = settings
        self.tariff = tariff
        self.capacity = CapacityTracker()
        self.decisions: deque[Decision] = deque(maxlen=history)
        self.sent: dict[str, _Sent] = {}
        # t of each battery's last Auto <-> Passive change by the optimiser (or from before a restart): kept
        # when `sent` is forgotten (a release, a person's hold), so the switch interval still counts it
        self.mode_changed: dict[str, float] = {}
        self._person_changed: dict[str, float] = {}  # t of a person's last mode change, as last seen
        self.active: str | None = None
        self.last_switch = -1e18
        self.surplus_since: float | None = None
        self.consumption_since: float | None = None
        self.all_full = False
        self.overflow: str | None = None
        self.overflow_until = 0.0
        self.overflow_power = 0
        self.overflow_import_since: float | None = None
        self.support: str | None = None
        self.at_night = False
        self.support_power = 0
        self.peak_since: float | None = None
        self.peak_assist_on = False
        self.plan_capped = False  # a scarce plan step holds back the batteries (the setpoint's hysteresis)
        self.plan: NightPlan | None = None
        self.plan_soc: dict[str, float] = {}
        self.plan_without_pv = False  # tonight's plan was made with no PV forecast at hand
        self.cleared_for = ""
        self.uncleared: set[str] = set()  # batteries whose schedules still wait to be cleared tonight
        self.held: set[str] = set()  # batteries in a person's manual hold
        # battery id -> (the mode a person chose outside the add-on, t its hold ends): held as in `held`
        self.outside: dict[str, tuple[str, float]] = {}
        self.last_mode: dict[str, str] = {}  # each battery's last known mode: a change shows against it
        self.prior: dict[str, str] = {}  # the mode a battery was in when the optimiser last sent it Passive
        # battery id -> (t the optimiser cleared its schedules, read in Manual since): its Manual is ours
        self.clearing: dict[str, tuple[float, bool]] = {}
        self.handover: tuple[str, float, int] | None = None  # new active battery, since, power taken over
        self.last_t: float | None = None
        self.step_s = 0.0  # the time between the last two steps
        self.last_grid: float | None = None
        self.was_enabled = settings.enabled  # nothing to release when it starts switched off
        self.settling: frozenset[str] = frozenset()  # this step's batteries whose reading predates a command
        self.strategy = "starting"
        self.next_action = ""
        self._new: list[Decision] = []

    # entry point ------------------------------------------------------------------------------------

    def step(self, inputs: Inputs, settling: Collection[str] = ()) -> StepResult:
        """`settling`: the batteries whose power reading does not show their last command yet (a write under
        way, or no poll since it ended): set-points wait for them (see the module's *Consistent readings*)."""
        s = self.settings
        self._new = []
        self.settling = frozenset(settling)
        self._account(inputs)
        inputs = self._outside_changes(inputs)
        self._track_holds(inputs)
        self._person_changed = {
            b.id: b.mode_changed_t for b in inputs.batteries if b.mode_changed_t is not None
        }
        shown = inputs
        # A battery in a person's hold does not exist for the strategies, the safety hold included.
        if any(b.hold for b in inputs.batteries):
            inputs = replace(inputs, batteries=tuple(b for b in inputs.batteries if not b.hold))
        stale = inputs.grid_power is None or inputs.grid_age is None or inputs.grid_age > s.input_stale_after
        batteries = {b.id: b for b in inputs.batteries}
        commands: list[Command] = []
        doubts = {
            b.id: mismatch.check(
                b,
                self.sent[b.id].role if b.id in self.sent else None,
                inputs.t - self.sent[b.id].at if b.id in self.sent else 0.0,
                s.mismatch_power,
            )
            for b in inputs.batteries
        }
        hold = ""
        if not s.enabled:
            hold = "optimiser switched off"
            if self.was_enabled:
                self._decide(inputs.now, "Optimiser switched off: batteries back to Auto")
                commands += self._release(inputs, "optimiser switched off")
            self.was_enabled = False
            return self._result(shown, commands, hold, stale, doubts)
        if not self.was_enabled:
            self._decide(inputs.now, "Optimiser switched on")
            self.was_enabled = True
        if stale:
            hold = (
                "no grid input"
                if inputs.grid_power is None or inputs.grid_age is None
                else "grid input stale"
            )
            if self.strategy != "hold":
                self._decide(inputs.now, f"Safe hold: {hold}; every battery back to its own Auto control")
            self.strategy = "hold"
            self.active = None
            commands += self._apply(
                inputs, {i: _Want(Role.AUTO, reason=hold) for i in batteries}, safety=True
            )
            return self._result(shown, commands, hold, stale, doubts)
        wants = self._wants(inputs, batteries, doubts)
        roles = self._apply(inputs, wants)
        # A clearing goes before the same step's role: the battery then ends in its role, not in Manual.
        commands += self._night_clearing(inputs, wants) + roles
        return self._result(shown, commands, hold, stale, doubts)

    def stop(self, inputs: Inputs) -> list[Command]:
        """A clean shutdown: every battery the optimiser steered goes back to Auto."""
        self._decide(inputs.now, "Stopping: batteries back to Auto")
        return self._release(inputs, "add-on stopping")

    def restore_mode_changes(self, changes: Mapping[str, float]) -> None:
        """The last mode change of each battery from before a restart, as t on this engine's clock: the
        first mode change after the start waits out the switch interval from it."""
        for battery_id, t in changes.items():
            if math.isfinite(t):
                self.mode_changed[battery_id] = max(t, self.mode_changed.get(battery_id, t))

    def restore_outside(self, battery_id: str, mode: str, until: float) -> None:
        """A hold of a battery a person put in `mode` outside the add-on, kept from before a restart, that
        ends at `until` (t on this engine's clock). The battery is still in that mode: without the hold, a
        fresh engine would take it for one of its own and command it. Said when it began, not again."""
        if math.isfinite(until):
            self.outside[battery_id] = (mode, until)
            self.held.add(battery_id)

    def hand_back(self, battery_id: str) -> None:
        """A person ended the hold of a change made outside the add-on (Return to optimiser): the
        optimiser takes the battery back at its next step, and says so."""
        self.outside.pop(battery_id, None)

    def mode_changes(self) -> dict[str, float]:
        """The last Auto <-> Passive change of each battery by anyone (t), to be kept across a restart."""
        known = sorted(set(self.mode_changed) | set(self._person_changed))
        return {i: since for i in known if (since := self._last_change(i)) is not None}

    # strategies -----------------------------------------------------------------------------------------

    def _wants(
        self, inputs: Inputs, batteries: dict[str, BatteryView], doubts: dict[str, str]
    ) -> dict[str, _Want]:
        s = self.settings
        assert inputs.grid_power is not None
        grid = inputs.grid_power
        usable = {i: b for i, b in batteries.items() if b.online and b.soc is not None}
        wants: dict[str, _Want] = {i: _Want(Role.IDLE, reason="standing by") for i in usable}
        if not usable:
            self.strategy = "no battery online"
            return {}
        if s.method == "planner" and inputs.plan_step is not None:
            self.plan = None  # the rules' night plan: the planner plans the night itself
            self.at_night = False
            self._planned(inputs, usable, wants, doubts, grid)
            return wants
        self.plan_capped = False  # no plan step carried out: a later one starts afresh
        if s.method == "planner":
            # No plan yet, or the solver failed: the rules' rotation by day, proven and safe, until there is
            # one (night charging stays the planner's: no grid energy is bought without a plan).
            self.plan = None
            self.at_night = False
            if self.active not in usable:
                self._pick_active(inputs, usable, doubts, reason="no active battery online")
            self._day(inputs, usable, wants, doubts, grid)
            self.strategy = f"no plan ({inputs.plan_problem or 'not made yet'}): {self.strategy}"
            return wants
        if not s.rotation:
            self.strategy = "rotation off: every battery on its own Auto control"
            self.active = None
            return {i: _Want(Role.AUTO, reason="rotation is off") for i in usable}
        if self.all_full and not s.all_full_stop:
            # Switched off while stopped: nothing else would restart the rotation before the night.
            self.all_full = False
            self._decide(inputs.now, "Stop when all full switched off: rotation restarts")
        evening = evening_of(inputs.now, s.night_start_time, s.day_start_time)
        # A doubtful active battery stays active (its Auto command is repeated when its reading says
        # otherwise): switching away on unreliable readings could leave two batteries told to be in Auto.
        if self.active not in usable and not self.all_full:
            self._pick_active(inputs, usable, doubts, reason="no active battery online")
        if evening is not None:
            self._night(inputs, usable, wants, evening, doubts)
        else:
            self.plan = None
            self._day(inputs, usable, wants, doubts, grid)
        self.at_night = evening is not None
        if s.peak_assist and not doubts.get(self.active or ""):
            self._peak_assist(inputs, usable, wants, grid)
        return wants

    def _planned(
        self,
        inputs: Inputs,
        usable: dict[str, BatteryView],
        wants: dict[str, _Want],
        doubts: dict[str, str],
        grid: float,
    ) -> None:
        """Carry out the plan's running step: self-consumption by rotation (one battery in Auto, the
        others helping as the rules do), anything else in Passive at the total the step asks for now,
        worked out from the meter and shared so the batteries' SOCs stay together."""
        step = inputs.plan_step
        assert step is not None
        s = self.settings
        battery_kw = sum(b.ac_power or 0.0 for b in usable.values()) / 1000
        wallbox_kw = (inputs.wallbox_power or 0.0) / 1000
        target = setpoint(step, grid / 1000, battery_kw, wallbox_kw, capped=self.plan_capped)
        self.plan_capped = target.capped
        # A car the batteries may not feed: what they give beyond the house goes into it.
        car = wallbox_kw > 0 and not step.feed_car
        action = step.action.value.replace("_", " ")
        if target.auto:
            if not s.rotation:
                self.strategy = f"plan: {action}, every battery on its own Auto control"
                self.active = None
                wants.update({i: _Want(Role.AUTO, reason=f"plan: {action}") for i in usable})
                return
            if self.active not in usable:
                self._pick_active(inputs, usable, doubts, reason="the plan asks for self-consumption")
            self._rotate(inputs, usable, wants, doubts, grid, night=False, helpers=False)
            self.strategy = f"plan: {action}"
            # The others follow in Passive at their share of what the house needs, the active one in Auto
            # covers the rest: the SOCs stay together and a load above one battery's power is covered at
            # once (several in Auto on one meter would charge one another).
            house_kw = grid / 1000 + battery_kw - (0.0 if step.feed_car else wallbox_kw)
            batteries = list(usable.values())
            shares = split_power(house_kw, [_headroom(b) for b in batteries])
            followers = [
                (b, kw)
                for b, kw in zip(batteries, shares, strict=True)
                if wants[b.id].role is Role.IDLE and not doubts.get(b.id)
            ]
            self._share(
                [b for b, _ in followers],
                sum(kw for _, kw in followers),
                wants,
                f"plan: {action}, its share of the house",
                car=car,
            )
            return
        self.handover = None
        self.overflow = self.support = None
        # A battery that went Auto less than a switch interval ago stays there: the others make up the rest.
        staying = [
            b
            for b in usable.values()
            if (sent := self.sent.get(b.id)) is not None
            and sent.role is Role.AUTO
            and not self._may_change_mode(b.id, inputs.t)
        ]
        self.active = staying[0].id if staying else None
        movable = [b for b in usable.values() if b not in staying]
        rest_kw = target.battery_kw - sum(b.ac_power or 0.0 for b in staying) / 1000
        self._share(movable, rest_kw, wants, f"plan: {action} ({target.reason})", car=car)
        for battery in staying:
            wants[battery.id] = _Want(Role.AUTO, reason="plan: stays in Auto until the switch interval ends")
        verb = "discharge" if target.battery_kw > 0 else "charge"
        self.strategy = f"plan: {action}, {verb} {abs(target.battery_kw):.2f} kW in total"
        self.next_action = (
            f"{staying[0].name} joins in after the switch interval" if staying else self.next_action
        )

    def _share(
        self,
        batteries: list[BatteryView],
        total_kw: float,
        wants: dict[str, _Want],
        reason: str,
        *,
        car: bool = False,
    ) -> None:
        """A total in Passive shared over batteries (SOCs kept together). The deadband applies to the
        total: while it moves less, each keeps what it was sent; once it moves more, every share is sent.
        Towards less import (more discharge, less charge) it is only a few watts: a planned grid flow sits
        just under the month's capacity peak, and 90 W too much for a quarter-hour is a new peak.

        `car`: a car charges that the batteries may not feed. Whatever they discharge beyond the total (the
        house's need) would go into the car: no deadband keeps a discharge above the total, and discharge
        shares are rounded down (a few watts more import, never a watt into the car)."""
        sent = [self.sent.get(b.id) for b in batteries]
        current = [s.power for s in sent if s is not None and s.role in PASSIVE_ROLES]
        moved = total_kw * 1000 - sum(current)
        feeds_car = car and sum(current) > max(0.0, total_kw * 1000)
        if (
            len(current) == len(batteries)
            and -POWER_DEADBAND_W < moved < LESS_IMPORT_DEADBAND_W
            and not feeds_car
        ):
            for battery, power in zip(batteries, current, strict=True):
                wants[battery.id] = _Want(*_passive(power), reason=reason)
            return
        shares = split_power(total_kw, [_headroom(b) for b in batteries])
        for battery, kw in zip(batteries, shares, strict=True):
            # rounded towards less import; with the car, towards zero (less discharge, less charge)
            watts = int(kw * 100) * 10 if car else math.ceil(kw * 100) * 10
            # No per-battery deadband: 240 W shared by three is 80 W each, not nothing each.
            wants[battery.id] = _Want(*_passive(watts), reason=reason, exact=True)

    def _pick_active(
        self, inputs: Inputs, usable: dict[str, BatteryView], doubts: dict[str, str], reason: str
    ) -> None:
        candidates = [b for b in usable.values() if not doubts.get(b.id)]
        if not candidates:
            self.active = None
            return
        # One that may be in Auto now covers the home at once; one still in its switch interval would
        # leave nobody in Auto until the interval ends. Only when none may, the best of the others waits.
        ready = [b for b in candidates if self._may_be_auto(b, inputs.t)]
        pool = ready or candidates
        surplus = inputs.grid_power is not None and inputs.grid_power < 0
        chosen = min(pool, key=lambda b: b.soc or 0) if surplus else max(pool, key=lambda b: b.soc or 0)
        if chosen.id != self.active:
            self._decide(inputs.now, f"{chosen.name} becomes the active battery ({reason})")
        self.active = chosen.id
        self.last_switch = inputs.t

    def _day(
        self,
        inputs: Inputs,
        usable: dict[str, BatteryView],
        wants: dict[str, _Want],
        doubts: dict[str, str],
        grid: float,
    ) -> None:
        s = self.settings
        self._track_grid(inputs.t, grid)
        if s.all_full_stop and self._all_full(inputs, usable, grid):
            self.strategy = "all full: surplus goes to the grid"
            self.overflow = self.support = None
            for i in usable:
                wants[i] = _Want(Role.IDLE, reason="all batteries full", soc_stop=True)
            self.next_action = (
                f"restart after {s.hysteresis:g} min of consumption with a battery above {s.restart_soc:g} %"
            )
            return
        self.strategy = "rotation"
        self._rotate(inputs, usable, wants, doubts, grid, night=False)

    def _track_grid(self, t: float, grid: float) -> None:
        s = self.settings
        self.surplus_since = (self.surplus_since or t) if grid < -s.surplus_threshold else None
        self.consumption_since = (self.consumption_since or t) if grid > s.consumption_threshold else None

    def _rotate(
        self,
        inputs: Inputs,
        usable: dict[str, BatteryView],
        wants: dict[str, _Want],
        doubts: dict[str, str],
        grid: float,
        *,
        night: bool,
        helpers: bool = True,
    ) -> None:
        """The active battery in Auto, the handover when another should take over, and its helpers.

        At night only an empty active battery hands over (no rotation for its own sake); by day the rules
        of the seed apply, with a SOC margin so equal batteries do not take turns every few minutes.
        """
        s = self.settings
        t = inputs.t
        active = usable.get(self.active or "")
        if self.handover is not None and active is not None:
            if inputs.t - self.handover[1] < HANDOVER_S:
                wants[active.id] = _Want(
                    *_holding(self.handover[2]), reason="taking over (make-before-break)"
                )
                return
            self.handover = None
        candidate, why = self._candidate(t, active, usable, doubts, grid, night=night)
        if active is not None and doubts.get(active.id):
            candidate = None
            self.next_action = f"waiting: {doubts[active.id]}"
        if active is not None and candidate is not None and candidate.id != active.id:
            interval_over = t - self.last_switch >= s.min_switch_interval * 60
            # both must be allowed to change mode now, or the handover would stall half-way
            if (
                interval_over
                and self._may_change_mode(active.id, t)
                and self._may_change_mode(candidate.id, t)
            ):
                kind = "emptiest" if grid < 0 else "fullest"
                self._decide(
                    inputs.now,
                    f"Rotation: {candidate.name} takes over from {active.name} on {why}: {kind} battery "
                    f"({candidate.soc:.0f} % vs {active.soc:.0f} %)",
                )
                taken_over = round(active.ac_power or 0)
                self.handover = (candidate.id, t, taken_over)
                self.active, self.last_switch = candidate.id, t
                if self.overflow == candidate.id:
                    self.overflow = None
                if self.support == candidate.id:
                    self.support = None
                wants[candidate.id] = _Want(*_holding(taken_over), reason="taking over (make-before-break)")
                return
            wait = s.min_switch_interval * 60 - (t - self.last_switch)
            self.next_action = f"switch to {candidate.name} in {wait / 60:.1f} min ({why})"
        elif active is not None and not doubts.get(active.id):
            self.next_action = ""
        if active is None:
            return
        wants[active.id] = _Want(Role.AUTO, reason="covers the night load" if night else "active battery")
        if not helpers:
            self.overflow = self.support = None
            return
        if s.overflow_charging and not night and not doubts.get(active.id):
            self._overflow(inputs, usable, wants, active, grid, doubts)
        else:
            self.overflow = None
        if s.load_support and not doubts.get(active.id):
            self._support(inputs, usable, wants, active, grid, doubts)
        else:
            self.support = None

    def _may_be_auto(self, battery: BatteryView, t: float) -> bool:
        """In Auto already (as commanded, or as found when nothing was sent), or free to change mode now."""
        sent = self.sent.get(battery.id)
        in_auto = sent.role is Role.AUTO if sent is not None else battery.mode == "Auto"
        return in_auto or self._may_change_mode(battery.id, t)

    def _may_change_mode(self, battery_id: str, t: float) -> bool:
        since = self._last_change(battery_id)
        return since is None or t - since >= self.settings.min_switch_interval * 60

    def _last_change(self, battery_id: str) -> float | None:
        """The last Auto <-> Passive change by anyone: the optimiser (before a restart too), or a person."""
        moments = [m.get(battery_id) for m in (self.mode_changed, self._person_changed)]
        return max((m for m in moments if m is not None), default=None)

    def _outside_changes(self, inputs: Inputs) -> Inputs:
        """A battery the optimiser commands that changes to a mode it never sends was switched by a person
        outside the add-on (the Marstek app): a person's command wins, so it is held like one given without
        a duration, for the manual hold time, said once per period. The inputs come back with that hold."""
        s = self.settings
        minutes = s.manual_hold
        views: list[BatteryView] = []
        for battery in inputs.batteries:
            before = self.last_mode.get(battery.id)
            if battery.mode is not None:
                self.last_mode[battery.id] = battery.mode
            ours = self._clearing_manual(battery, inputs.t)
            if battery.hold:  # a command from Home Assistant or the panel: its own hold governs
                if self.outside.pop(battery.id, None) is not None:
                    self.held.discard(battery.id)  # so that hold is said, as any other
                views.append(battery)
                continue
            outside = self.outside.get(battery.id)
            mode = battery.mode
            if outside is not None and inputs.t >= outside[1]:
                if mode in OUTSIDE_MODES and s.enabled:
                    outside = (mode, inputs.t + minutes * 60)
                    self._decide(
                        inputs.now,
                        f"{battery.name} is still in {mode}, set outside the add-on: left alone for "
                        f"another {minutes:g} min",
                    )
                elif mode is not None:  # handed back (or switched off): `_track_holds` says it ended
                    outside = None
                # unknown mode (offline): still held until a reading says what the person left it in
            elif (
                outside is None
                and mode in OUTSIDE_MODES
                and battery.id in self.sent
                # a change seen: a battery found in AI when the optimiser took it over is not one
                and before is not None
                and before not in OUTSIDE_MODES
                and not ours
                # a Passive whose countdown ran out (a link outage, a refresh that did not arrive) takes the
                # battery back to the mode it had before it: Manual after a clearing, AI if it was in AI
                and mode != self.prior.get(battery.id)
            ):
                outside = (mode, inputs.t + minutes * 60)
                self._decide(
                    inputs.now,
                    f"{battery.name} was put in {mode} outside the add-on (the Marstek app?): left alone "
                    f"for {minutes:g} min",
                )
            if outside is None:
                self.outside.pop(battery.id, None)
                views.append(battery)
                continue
            self.outside[battery.id] = outside
            self.held.add(battery.id)  # said above: `_track_holds` only forgets what was sent
            views.append(replace(battery, hold=f"put in {outside[0]} outside the add-on"))
        return replace(inputs, batteries=tuple(views))

    def _clearing_manual(self, battery: BatteryView, t: float) -> bool:
        """Whether the battery's Manual is the optimiser's own schedule clearing: from the clearing until
        the battery is read out of Manual again after it (or CLEARING_S, when it never showed Manual)."""
        clearing = self.clearing.get(battery.id)
        if clearing is None:
            return False
        since, seen = clearing
        if t - since > CLEARING_S or (seen and battery.mode not in (None, "Manual")):
            del self.clearing[battery.id]
            return False
        if battery.mode == "Manual":
            self.clearing[battery.id] = (since, True)
            return True
        return False

    def _track_holds(self, inputs: Inputs) -> None:
        """A person's command wins: forget what was sent to a held battery, and say so once."""
        held = {b.id: b for b in inputs.batteries if b.hold}
        for battery_id, battery in held.items():
            if battery_id not in self.held:
                self._decide(inputs.now, f"{battery.name}: {battery.hold}; the optimiser leaves it alone")
            self.sent.pop(battery_id, None)
            if self.active == battery_id:
                self.active = None
            if self.handover is not None and self.handover[0] == battery_id:
                self.handover = None
            if self.overflow == battery_id:
                self.overflow = None
            if self.support == battery_id:
                self.support = None
        names = {b.id: b.name for b in inputs.batteries}
        for battery_id in sorted(self.held - held.keys()):
            name = names.get(battery_id, battery_id)
            self._decide(inputs.now, f"{name}: manual hold ended; the optimiser takes it back")
        self.held = set(held)

    def _candidate(
        self,
        t: float,
        active: BatteryView | None,
        usable: dict[str, BatteryView],
        doubts: dict[str, str],
        grid: float,
        *,
        night: bool,
    ) -> tuple[BatteryView | None, str]:
        """Which battery should be active instead, and why (None when the present one should stay)."""
        s = self.settings
        hysteresis = s.hysteresis * 60
        if active is None:
            return None, ""
        ready = [b for b in usable.values() if not doubts.get(b.id)]
        margin = s.rotation_soc_margin
        surplus = self.surplus_since is not None and t - self.surplus_since >= hysteresis
        consumption = self.consumption_since is not None and t - self.consumption_since >= hysteresis
        if surplus and not night:
            room = [b for b in ready if (b.soc or 0) < s.all_full_soc]
            emptiest = min(room, key=lambda b: b.soc or 0) if room else None
            active_full = (active.soc or 0) >= s.all_full_soc - SOC_MARGIN
            if emptiest is not None and (active_full or (emptiest.soc or 0) + margin <= (active.soc or 0)):
                return emptiest, f"solar surplus ({-grid:.0f} W)"
        if consumption:
            charged = [b for b in ready if (b.soc or 0) > b.soc_floor + SOC_MARGIN]
            fullest = max(charged, key=lambda b: b.soc or 0) if charged else None
            active_empty = (active.soc or 0) <= active.soc_floor + SOC_MARGIN
            fuller = fullest is not None and (fullest.soc or 0) >= (active.soc or 0) + margin
            if fullest is not None and (active_empty or (fuller and not night)):
                return fullest, f"consumption ({grid:.0f} W)"
        return None, ""

    def _all_full(self, inputs: Inputs, usable: dict[str, BatteryView], grid: float) -> bool:
        s = self.settings
        full = all((b.soc or 0) >= s.all_full_soc for b in usable.values())
        if not self.all_full and full and grid < -s.surplus_threshold:
            self.all_full = True
            self.active = None
            self._decide(
                inputs.now,
                f"All batteries >= {s.all_full_soc:g} % and exporting {-grid:.0f} W: "
                "rotation stopped, the surplus goes to the grid",
            )
        elif self.all_full:
            sustained = (
                self.consumption_since is not None and inputs.t - self.consumption_since >= s.hysteresis * 60
            )
            if sustained and any((b.soc or 0) > s.restart_soc for b in usable.values()):
                self.all_full = False
                self._decide(
                    inputs.now, f"Consumption of {grid:.0f} W for {s.hysteresis:g} min: rotation restarts"
                )
                self.active = None
                self._pick_active(inputs, usable, {}, reason="restart after all full")
        return self.all_full

    def _overflow(
        self,
        inputs: Inputs,
        usable: dict[str, BatteryView],
        wants: dict[str, _Want],
        active: BatteryView,
        grid: float,
        doubts: dict[str, str],
    ) -> None:
        """A second battery takes the surplus the active one cannot: only what exceeds the active battery's
        own maximum charge, so the two never pass energy back and forth."""
        s = self.settings
        t = inputs.t
        importing = grid > s.overflow_stop_import
        self.overflow_import_since = (self.overflow_import_since or t) if importing else None
        export = max(0.0, -grid)
        headroom = max(
            0.0, active.max_charge_w - max(0.0, -(active.ac_power or 0.0))
        )  # what the active could add
        current = usable.get(self.overflow or "")
        if current is not None:
            consumption = (
                self.overflow_import_since is not None and t - self.overflow_import_since >= OVERFLOW_STOP_S
            )
            wanted = int(self.overflow_power + export - headroom)
            why = (
                "consumption"
                if consumption
                else "the time is up"
                if t >= self.overflow_until
                else "it is full"
                if (current.soc or 0) >= s.all_full_soc
                else "the active battery can take the surplus again"
                if wanted < 100
                else ""
            )
            if why:
                self._decide(inputs.now, f"Overflow charging of {current.name} stops: {why}")
                self.overflow = None
                if (current.soc or 0) >= s.all_full_soc and wants[current.id].role is Role.IDLE:
                    wants[current.id] = _Want(
                        Role.IDLE, reason="overflow charging: it is full", soc_stop=True
                    )
                return
            self.overflow_power = max(100, min(int(s.overflow_max_power), current.max_charge_w, wanted))
            wants[current.id] = _Want(Role.CHARGE, -self.overflow_power, reason="overflow charging")
            return
        sustained = self.surplus_since is not None and t - self.surplus_since >= s.hysteresis * 60
        saturated = headroom < 0.1 * active.max_charge_w
        # `usable` batteries have a SOC; 0 % is a SOC too (not a missing one to be read as full)
        if sustained and saturated and _soc(active, 100.0) < s.overflow_max_soc:
            others = [
                b
                for b in usable.values()
                if b.id != active.id and not doubts.get(b.id) and _soc(b, 100.0) < s.all_full_soc
            ]
            if others:
                second = min(others, key=lambda b: b.soc or 0)
                power = max(100, min(int(s.overflow_max_power), second.max_charge_w, int(export)))
                self.overflow, self.overflow_power = second.id, power
                self.overflow_until = t + s.overflow_duration * 60
                self._decide(
                    inputs.now,
                    f"Overflow: {active.name} ({active.soc:.0f} %) charges at its maximum and {export:.0f} W "
                    f"still go to the grid; {second.name} charges {power} W for {s.overflow_duration:g} min",
                )
                wants[second.id] = _Want(Role.CHARGE, -power, reason="overflow charging")

    def _support(
        self,
        inputs: Inputs,
        usable: dict[str, BatteryView],
        wants: dict[str, _Want],
        active: BatteryView,
        grid: float,
        doubts: dict[str, str],
    ) -> None:
        """A second battery covers the load the active one cannot: it discharges at its maximum and the grid
        still delivers. Only the excess, so the two never pass energy back and forth."""
        s = self.settings
        t = inputs.t
        imported = max(0.0, grid)
        headroom = max(0.0, active.max_discharge_w - max(0.0, active.ac_power or 0.0))
        current = usable.get(self.support or "")
        if current is not None:
            wanted = int(self.support_power + imported - headroom)
            why = (
                "the active battery covers the load again"
                if wanted < 100
                else "it is empty"
                if (current.soc or 0) <= current.soc_floor + SOC_MARGIN
                else ""
            )
            if why or wants[current.id].role is not Role.IDLE:
                if why:
                    self._decide(inputs.now, f"Load support by {current.name} stops: {why}")
                self.support = None
                empty = (current.soc or 0) <= current.soc_floor + SOC_MARGIN
                if empty and wants[current.id].role is Role.IDLE:
                    wants[current.id] = _Want(Role.IDLE, reason="load support: it is empty", soc_stop=True)
                return
            self.support_power = max(100, min(current.max_discharge_w, wanted))
            wants[current.id] = _Want(Role.DISCHARGE, self.support_power, reason="load support")
            return
        sustained = self.consumption_since is not None and t - self.consumption_since >= s.hysteresis * 60
        saturated = headroom < 0.1 * active.max_discharge_w
        if sustained and saturated:
            others = [
                b
                for b in usable.values()
                if b.id != active.id
                and not doubts.get(b.id)
                and wants[b.id].role is Role.IDLE
                and (b.soc or 0) > b.soc_floor + SOC_MARGIN
            ]
            if others:
                second = max(others, key=lambda b: b.soc or 0)
                power = max(100, min(second.max_discharge_w, int(imported)))
                self.support, self.support_power = second.id, power
                self._decide(
                    inputs.now,
                    f"Load support: {active.name} discharges at its maximum and {imported:.0f} W "
                    f"still come from the grid; {second.name} adds {power} W",
                )
                wants[second.id] = _Want(Role.DISCHARGE, power, reason="load support")

    def _night(
        self,
        inputs: Inputs,
        usable: dict[str, BatteryView],
        wants: dict[str, _Want],
        evening: Any,
        doubts: dict[str, str],
    ) -> None:
        s = self.settings
        if not self.at_night:  # dusk: the day's helpers stop
            self.overflow, self.all_full = None, False
        forecast = inputs.pv_forecast_tomorrow_kwh
        # A plan made blind (Home Assistant restarting at night start) assumed no PV: made again once the
        # forecast is there, from the SOCs of now, or the grid energy it buys would be exported tomorrow.
        late_forecast = self.plan is not None and self.plan_without_pv and forecast is not None
        if s.night_charging and (
            self.plan is None or self.plan.night_of != evening.isoformat() or late_forecast
        ):
            if late_forecast:
                self._decide(
                    inputs.now, f"PV forecast for tomorrow arrived ({forecast:.1f} kWh): new night plan"
                )
            self.plan_without_pv = forecast is None
            expected_pv = 1000 * (forecast or 0.0)
            self.plan = plan_night(
                evening,
                tuple(usable.values()),
                s.desired_total_capacity * 1000,
                expected_pv,
                self.tariff,
                s.night_start_time,
                s.day_start_time,
                inputs.now,
                pv_day=inputs.pv_forecast_day,
                zone=inputs.zone,
            )
            self.plan_soc = {i: b.soc or 0.0 for i, b in usable.items()}
            self._decide(inputs.now, self._describe_plan(self.plan, usable))
        plan = self.plan if s.night_charging else None
        if plan is not None and plan.energy_wh and plan.charging_at(inputs.now):
            self.strategy = f"night charging ({plan.period})"
            for i, battery in usable.items():
                goal = target_soc(plan, battery, self.plan_soc.get(i, battery.soc or 0))
                if i in plan.power_w and (battery.soc or 0) < goal - 0.5:
                    wants[i] = _Want(Role.CHARGE, -plan.power_w[i], reason=f"night charging to {goal:.0f} %")
                else:
                    wants[i] = _Want(Role.IDLE, reason="night charging: this battery is done", soc_stop=True)
            self.next_action = ""
            return
        self.strategy = "night: no rotation"
        self._track_grid(inputs.t, inputs.grid_power or 0.0)
        self._rotate(inputs, usable, wants, doubts, inputs.grid_power or 0.0, night=True)
        if plan is not None and plan.energy_wh and plan.windows:
            start = next((a for a, _ in plan.windows if a > inputs.now), None)
            self.next_action = f"night charging from {start:%H:%M}" if start else ""

    def _describe_plan(self, plan: NightPlan, usable: dict[str, BatteryView]) -> str:
        pv_kwh = plan.expected_pv_wh / 1000
        pv = f"expected PV {pv_kwh:.1f} kWh" + (f", {plan.pv_note}" if plan.pv_note else "")
        if not plan.energy_wh:
            stored_kwh = sum(b.stored_wh for b in usable.values()) / 1000
            return f"Night plan: no charging needed (stored {stored_kwh:.1f} kWh + {pv})"
        parts = ", ".join(
            f"{usable[i].name} {e / 1000:.1f} kWh at {plan.power_w[i]} W" for i, e in plan.energy_wh.items()
        )
        first = plan.windows[0][0] if plan.windows else None
        return f"Night plan: deficit {plan.deficit_wh / 1000:.1f} kWh ({pv}): {parts}, in {plan.period}" + (
            f" from {first:%H:%M}" if first else ""
        )

    def _night_clearing(self, inputs: Inputs, wants: dict[str, _Want]) -> list[Command]:
        """Old manual schedules are cleared before night charging (they caused double charging).

        Clearing leaves a battery in Manual at 0 W for a while, so the battery covering the home (in Auto)
        is cleared only once it has handed over; the executor clears one battery at a time.
        """
        plan = self.plan
        if plan is None or not plan.energy_wh or not self.settings.clear_schedules_before_night_charging:
            return []
        if self.cleared_for != plan.night_of:
            self.cleared_for = plan.night_of
            self.uncleared = {b.id for b in inputs.batteries if b.online}
            self._decide(
                inputs.now,
                "Clearing old manual schedules before night charging, one battery at a time, "
                "never the one covering the home",
            )
        due = [
            b.id
            for b in inputs.batteries
            if b.id in self.uncleared
            and b.online
            and b.id in wants
            and wants[b.id].role is not Role.AUTO
            and b.id in self.sent
            and self.sent[b.id].role is not Role.AUTO
        ]
        self.uncleared.difference_update(due)
        self.clearing.update(dict.fromkeys(due, (inputs.t, False)))
        return [Command(i, None, clear_schedules=True, reason="before night charging") for i in due]

    def _peak_assist(
        self, inputs: Inputs, usable: dict[str, BatteryView], wants: dict[str, _Want], grid: float
    ) -> None:
        s = self.settings
        target = self.peak_target()
        projected = self.capacity.projected_kw(inputs.now, grid)
        over = projected > target
        self.peak_since = (self.peak_since or inputs.t) if over else None
        if self.peak_assist_on and projected < target - PEAK_RELEASE_KW and not over:
            self.peak_assist_on = False
            self._decide(inputs.now, f"Peak assist ends: quarter-hour heading for {projected:.2f} kW")
        if (
            over
            and not self.peak_assist_on
            and self.peak_since is not None
            and (inputs.t - self.peak_since >= s.peak_assist_delay)
        ):
            self.peak_assist_on = True
            self._decide(
                inputs.now,
                f"Peak assist: this quarter-hour heads for {projected:.2f} kW, above the "
                f"{target:.2f} kW target; discharging the other batteries",
            )
        if not self.peak_assist_on:
            return
        remaining_h = max(self.capacity.remaining_s(inputs.now), 30.0) / 3600
        allowed_w = max(0.0, (target * 250 - self.capacity.quarter_import_wh) / remaining_h)
        charging = [b for b in usable.values() if wants[b.id].role is Role.CHARGE]
        if charging:
            # Charging is what lifts the peak: charge slower, rather than discharge one battery into another.
            # The meter already carries what they draw now (slowed a step ago, perhaps): the house is the
            # rest, and the charging gets what the target leaves of it, never more than it asks for.
            drawn = sum(max(0.0, -(b.ac_power or 0.0)) for b in charging)
            budget = max(0.0, allowed_w - (grid - drawn))
            total = sum(-wants[b.id].power for b in charging)
            scale = min(1.0, budget / total) if total else 0.0
            for battery in charging:
                power = int(-wants[battery.id].power * scale) // 50 * 50
                wants[battery.id] = _Want(
                    Role.CHARGE, -power, reason=f"charging slowed by peak assist ({target:.2f} kW)"
                )
            self.strategy = f"{self.strategy} + peak assist"
            return
        helpers = [
            b
            for b in usable.values()
            if wants[b.id].role is not Role.AUTO
            and wants[b.id].role is not Role.CHARGE
            and (b.soc or 0) > b.soc_floor + SOC_MARGIN
        ]
        # what they already deliver stays; the rest of the excess is shared
        present = sum(max(0.0, b.ac_power or 0.0) for b in helpers)
        needed = max(0.0, grid - allowed_w) + present
        if not helpers:
            self.next_action = "peak assist: no battery left to discharge"
            return
        share = needed / len(helpers)
        for battery in helpers:
            power = int(min(battery.max_discharge_w, max(0.0, share)) // 50 * 50)
            if power >= 100:
                wants[battery.id] = _Want(
                    Role.DISCHARGE, power, reason=f"peak assist (target {target:.2f} kW)"
                )
        self.strategy = f"{self.strategy} + peak assist"

    def peak_target(self) -> float:
        s = self.settings
        return max(s.peak_target, self.capacity.month_peak_kw) if s.peak_follow_month else s.peak_target

    # commands ------------------------------------------------------------------------------------------

    def _apply(self, inputs: Inputs, wants: dict[str, _Want], *, safety: bool = False) -> list[Command]:
        s = self.settings
        commands: list[Command] = []
        countdown = int(s.passive_countdown * 60)
        batteries = {b.id: b for b in inputs.batteries}
        # A reading of these batteries predates a command: the total worked out from the meter is off by that
        # command, so the Passive set-points sent stay until the readings show it, a smaller power as a
        # larger one (a mode change has its own switch interval; a safety fallback goes at once). They stay
        # within the SOC window and limits of now, and a stop the SOC asks for goes (*Consistent readings*).
        waiting = not safety and not self.settling.isdisjoint(wants)
        # Auto last: a battery leaves Auto before another one enters it (never two in Auto together)
        for battery_id in sorted(wants, key=lambda i: wants[i].role is Role.AUTO):
            want, battery = wants[battery_id], batteries[battery_id]
            power = self._clamp(battery, want)
            sent = self.sent.get(battery_id)
            t = inputs.t
            if sent is None:
                # Nothing sent yet (a start, a hold just ended): a change only if the battery is in another
                # mode. A battery still in the Passive of a run before a restart gets its refresh at once,
                # not after the restored switch interval, by which time its countdown may have run out.
                mode_change = battery.mode != ("Auto" if want.role is Role.AUTO else "Passive")
                if not mode_change:
                    # when its last change is not known, the interval counts from now, as after a change
                    self.mode_changed.setdefault(battery_id, t)
            else:
                mode_change = (sent.role is Role.AUTO) != (want.role is Role.AUTO)
            since = self._last_change(battery_id)
            if mode_change and not safety and since is not None and t - since < s.min_switch_interval * 60:
                continue  # at most one Auto <-> Passive change per battery per switch interval, by anyone
            reason = want.reason
            repair = False
            if not mode_change and sent is not None:
                shown = battery_id not in self.settling  # a mode read before the last command says nothing
                if want.role in PASSIVE_ROLES:
                    moved = abs(power - sent.power) >= (1 if want.exact else POWER_DEADBAND_W)
                    changed = want.role is not sent.role or moved
                    if changed and waiting and not want.soc_stop:
                        # the set-point sent stays, as the SOC window and the limits allow it now
                        want = replace(want, role=sent.role)
                        power = self._clamp(battery, replace(want, power=sent.power))
                        changed = power != sent.power
                        reason = "kept within its SOC window and limits while the readings settle"
                    # two thirds in, or earlier when the next step may come too late (a countdown set
                    # short from Home Assistant, long control steps): never a gap between two commands
                    refresh = t - sent.at >= min(countdown * 2 / 3, countdown - 2 * self.step_s)
                    left = shown and battery.mode not in (None, "Passive") and t - sent.at >= REPAIR_S
                    if changed and t - sent.at < POWER_UPDATE_S and want.role is sent.role:
                        continue
                    if not (changed or refresh or left):
                        continue
                    if left:
                        reason = f"{battery.name} left Passive on its own ({battery.mode}): sent again"
                        repair = True
                    elif refresh and not changed:
                        reason = "countdown refresh"
                else:
                    left = shown and battery.mode not in (None, "Auto") and t - sent.at >= REPAIR_S
                    if not left:
                        continue
                    reason = f"{battery.name} is in {battery.mode}, not Auto: sent again"
                    repair = True
            command = Command(
                battery_id,
                want.role,
                power if want.role in PASSIVE_ROLES else 0,
                countdown if want.role in PASSIVE_ROLES else 0,
                reason=reason,
            )
            if mode_change or repair:  # a repair switches the battery's mode too: the interval counts it
                self.mode_changed[battery_id] = t
            if want.role in PASSIVE_ROLES and battery.mode not in (None, "Passive"):
                self.prior[battery_id] = battery.mode  # where its countdown, run out, will take it back
            self.sent[battery_id] = _Sent(want.role, command.power_w, t)
            commands.append(command)
        return commands

    def _clamp(self, battery: BatteryView, want: _Want) -> int:
        """Within the battery's limits and its SOC window."""
        if want.role is Role.CHARGE:
            if _soc(battery, 100.0) >= 100:
                return 0
            return max(-battery.max_charge_w, min(0, want.power))
        if want.role is Role.DISCHARGE:
            if (battery.soc or 0) <= battery.soc_floor:
                return 0
            return min(battery.max_discharge_w, max(0, want.power))
        return 0

    def _release(self, inputs: Inputs, reason: str) -> list[Command]:
        commands = [
            Command(i, Role.AUTO, reason=reason)
            for i, sent in self.sent.items()
            if sent.role is not Role.AUTO
        ]
        for command in commands:  # a mode change like any other: switched on again, Passive waits for it
            self.mode_changed[command.battery_id] = inputs.t
        self.sent.clear()
        self.active = None
        return commands

    # bookkeeping ----------------------------------------------------------------------------------------

    def _account(self, inputs: Inputs) -> None:
        if self.last_t is not None and self.last_grid is not None:
            self.capacity.add(inputs.now, max(0.0, inputs.t - self.last_t), self.last_grid)
        elif self.capacity.quarter is None or self.capacity.month != (inputs.now.year, inputs.now.month):
            # Started (or restarted into a new month) without a meter reading: the month's peak is this
            # month's from the first step, not last month's until the meter speaks again.
            self.capacity.add(inputs.now, 0.0, 0.0)
        if self.last_t is not None:
            self.step_s = max(0.0, inputs.t - self.last_t)
        self.last_t = inputs.t
        fresh = inputs.grid_age is not None and inputs.grid_age <= self.settings.input_stale_after
        self.last_grid = inputs.grid_power if fresh else None

    def _decide(self, at: datetime, text: str) -> None:
        decision = Decision(at, text)
        self.decisions.append(decision)
        self._new.append(decision)

    def _result(
        self, inputs: Inputs, commands: list[Command], hold: str, stale: bool, doubts: dict[str, str]
    ) -> StepResult:
        s = self.settings
        evening = evening_of(inputs.now, s.night_start_time, s.day_start_time)
        active = next((b.name for b in inputs.batteries if b.id == self.active), None)
        status = Status(
            enabled=s.enabled,
            hold=hold,
            strategy=self.strategy if not hold else "hold",
            active_battery=active,
            day=evening is None,
            tariff_period=self.tariff.period_at(inputs.now),
            quarter_average_kw=round(self.capacity.average_so_far_kw(inputs.now), 3),
            month_peak_kw=round(self.capacity.month_peak_kw, 3),
            peak_target_kw=round(self.peak_target(), 3),
            stale_input=stale,
            mismatch="; ".join(d for d in doubts.values() if d),
            next_action=self.next_action,
            night_plan=self.plan,
            roles={
                b.name: "manual hold"
                if b.hold
                else (self.sent[b.id].role.value if b.id in self.sent else "untouched")
                for b in inputs.batteries
            },
        )
        return StepResult(tuple(commands), tuple(self._new), status)
