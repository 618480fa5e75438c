"""Runs the pure optimiser against the live devices: gathers its inputs, executes its commands.

The engine decides; this module only translates. Commands go to each battery's client through a small
per-battery actuator: one write at a time, the latest role command replaces a queued one, a queued
schedule clearing is never dropped. Every outcome shows on the battery's `Last command` sensor.

A person's command wins: each write takes the battery's mode lock and is dropped when the battery is in a
manual hold. Schedules are cleared one battery at a time across the site (a battery being cleared sits in
Manual at 0 W), and not at all where every slot is known to be disabled already.

The switch interval counts from a battery's last mode change, and that outlives a restart: the last change
of each battery (the Auto a stop sends included) is kept under /data as wall-clock time and given back to the
engine at the start, on its own clock.

Manual, unlike Passive, has no countdown: a battery a clearing leaves there stays idle until told
otherwise. So a clearing is marked under /data while its battery may be in Manual; a clean stop abandons a
clearing under way and sends Auto, and a start after a crash sends Auto to the batteries still marked.

A battery a person switches to Manual, AI or UPS outside the add-on (the Marstek app) is held by the engine,
which decides when that hold begins, is renewed and ends. Each such hold is kept as a manual hold of the
battery as well (`ManualHolds.hold_outside`): its end shows on the *Manual hold until* sensor and in the
panel, *Return to optimiser* ends it, and it is kept under /data and given back to the engine after a
restart with the same end, when the battery is still in the app's mode and a fresh engine would take it.

The engine works a Passive set-point out from the meter and the batteries' powers, which must show the same
moment: a meter that already shows a command beside a battery power read before it made the engine take the
command for the house (the Modbus demo's batteries flapped charge <-> discharge at every step after a start:
a Modbus write's read-back reads no power, and the polls come slower than the control steps). So each step
tells the engine which batteries' readings do not show their last write yet (`_settling`): a write queued or
under way, or no poll begun after it ended. The first poll stamped after a write may have begun before it
(a poll and a command share the connection request by request) and caught the battery on its way to the
new power: only the next one counts, and a meter reading at least as recent. A write older than three poll
intervals and 10 s (as long as a reading counts as fresh) holds nothing back any more: a power the transport
has stopped reading must not hold the set-points for good. Nor does a write queued or under way for longer,
counted from when it was submitted (or its sending began): a role waiting behind a schedule clearing over
UDP (a minute or two a battery) would otherwise hold every set-point of the site as long, the start of night
charging or peak assist among them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from ..bridge.devices import BatteryDevice
from ..bridge.holds import ManualHold
from ..devices.marstek.commands import AutoMode, PassiveMode
from ..devices.marstek.firmware import Mode
from ..devices.outcome import WriteOutcome, WriteStatus
from ..optimiser.car_sessions import CarSession, SessionPlan
from ..optimiser.engine import Optimiser
from ..optimiser.model import BatteryView, Command, Decision, Inputs, Role, Status
from ..optimiser.settings import Settings, check
from ..optimiser.tariff import CapacityTracker
from .ha_series import DayAheadPrices, DetailedPvForecast
from .inputs import GridInput, PvForecast
from .options import Options
from .planning import DayLedger, LivePlanner, MonthLedger, MonthMoney, PlanSummary
from .quarter_history import QuarterHistory

_LOG = logging.getLogger(__name__)
DEFAULT_CAPACITY_WH = 5120.0
STARTUP_GRACE_S = 30.0  # a Venus E; used until the battery reports its rated capacity
KEEP_MODE_CHANGE_S = 86400.0  # a mode change older than this is forgotten (the longest interval is 2 h)
# The engine's end of an app-change hold and the kept hold's end are the same moment on two clocks; read
# one step apart they differ by a little. A hold that moved more was renewed (by a minute at least).
OUTSIDE_END_SLACK_S = 2.0


class EngineClock(Protocol):
    """The optimiser's time: real time on real hardware, the simulators' faster clock in the demo."""

    @property
    def speed(self) -> float: ...  # engine seconds per real second

    def seconds(self) -> float: ...

    def now(self) -> datetime: ...


class RealClock:
    speed = 1.0

    def seconds(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now()


def nothing_to_clear(device: BatteryDevice) -> bool:
    """Every slot was written disabled by the add-on, and the battery is not in Manual since.

    The firmware cannot read its schedules back, so this is all that can be known; a schedule written from
    the Marstek app switches the battery to Manual, which makes it worth clearing again.
    """
    client = device.link.client
    slots = client.snapshot.firmware.manual_slots
    written = client.schedule
    cleared = all(i in written and not written[i].enabled for i in range(slots))
    return cleared and device.link.snapshot.mode is not Mode.MANUAL


def restored_mode_changes(stored: object, now: float) -> dict[str, float]:
    """How long ago (s) each battery's mode last changed, from the wall-clock times kept under /data.

    A time in the future counts as now (the clock was set back: the interval is waited out from now, not
    longer); a value that is no time at all is dropped, and so is one too old to matter.
    """
    if not isinstance(stored, dict):
        if stored is not None:
            _LOG.warning("optimiser: forgetting the stored last mode changes (not an object)")
        return {}
    ages: dict[str, float] = {}
    for battery_id, at in stored.items():
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at) or at <= 0:
            _LOG.warning(
                "optimiser: forgetting the stored last mode change of %s (%r is no time)", battery_id, at
            )
            continue
        age = max(0.0, now - at)
        if age <= KEEP_MODE_CHANGE_S:
            ages[str(battery_id)] = age
    return ages


class InManual:
    """The batteries a schedule clearing of the optimiser may have left in Manual, kept in the store.

    Every slot write puts the battery in Manual, which has no countdown, so no order of writes keeps a
    clearing's battery under a bounded fallback; restoring Auto after the clearing could put two batteries in
    Auto. Hence a mark under /data: set before the first slot is written, taken off once a mode command
    reaches the battery (or the clearing wrote nothing). A mark found at a start is a clearing a crash cut
    short, and that battery is sent Auto.
    """

    def __init__(self, store: dict[str, Any], save: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.save = save

    @property
    def ids(self) -> list[str]:
        marked = self.store.get("in_manual")
        return [i for i in marked if isinstance(i, str)] if isinstance(marked, list) else []

    def mark(self, device_id: str) -> None:
        if device_id not in self.ids:
            self.store["in_manual"] = [*self.ids, device_id]
            self.save()  # before the first slot is written: a crash may come at any write

    def unmark(self, device_id: str) -> None:
        if device_id in self.ids:
            self.store["in_manual"] = [i for i in self.ids if i != device_id]
            self.save()


class _Actuator:
    def __init__(
        self,
        device: BatteryDevice,
        report: Callable[[BatteryDevice, WriteOutcome], None],
        clearing: asyncio.Lock,
        in_manual: InManual | None = None,
    ) -> None:
        self.device = device
        self.report = report
        self.clearing = clearing  # shared by every battery of the site
        self.in_manual = in_manual or InManual({})
        self.clear = False
        self.role: Command | None = None
        self.last_role: Command | None = None
        self.sending: Command | None = None  # the role being written now
        self.unconfirmed = False  # the last role write failed: the battery may be in another mode
        self.task: asyncio.Task[None] | None = None
        self.clearing_now = False  # its slots are being written: the task may be cancelled at a stop
        self.stopping = False  # the add-on stops: no clearing starts any more
        # time.monotonic() when the last write that moved the battery (another role or power) ended, and the
        # first power reading stamped after it: the readings show that write from the next one on
        self.written_at: float | None = None
        self.read_after: float | None = None
        # time.monotonic() when the role waiting now was submitted (the first of those that replaced one
        # another), and when the one being written began to be sent
        self.queued_at = 0.0
        self.sending_at = 0.0

    def submit(self, command: Command) -> None:
        if command.clear_schedules:
            self.clear = True
        else:
            if self.role is None:
                self.queued_at = time.monotonic()
            self.role = command  # a newer role replaces one that has not been sent yet
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._work(), name=f"optimiser-{self.device.name}")

    async def _work(self) -> None:
        while self.clear or self.role is not None:
            if self.clear and (self.role is None or not self.clearing.locked()):
                # While another battery is being cleared, this one's role goes first: it may be the cover.
                self.clear = False
                async with self.clearing:
                    outcome = await self._guarded(
                        self._clear(), "clear schedules (optimiser: before night charging)"
                    )
                    if outcome is not None:
                        self.report(self.device, outcome)
                    written = outcome is not None and outcome.attempts > 0
                    if not written:
                        # Nothing written (nothing to clear, or over Modbus): a role waiting to be sent is
                        # sent next as any other, not dropped.
                        continue
                    # Clearing left it in Manual at 0 W: its role again before the next battery is cleared.
                    again, self.role = self.role or self.last_role, None
                    if again is not None and (sent := await self._send_guarded(again)) is not None:
                        self.report(self.device, sent)
                continue
            command, self.role = self.role, None
            assert command is not None
            outcome = await self._send_guarded(command)
            if outcome is not None:
                self.report(self.device, outcome)

    async def _guarded(self, write: Awaitable[WriteOutcome | None], what: str) -> WriteOutcome | None:
        """A write that raises (a socket error, a bug in a decoder) is a failed write, not the end of the
        task: the role queued behind it, the stop's Auto among them, is still sent."""
        try:
            return await write
        except Exception as exc:
            _LOG.exception("optimiser: %s: %s failed", self.device.name, what)
            # it may have reached the battery in part: counted as written (a clearing's role goes again)
            return WriteOutcome(WriteStatus.NOT_APPLIED, what, 1, f"the write failed: {exc!r}")

    async def _send_guarded(self, command: Command) -> WriteOutcome | None:
        before = None if self.unconfirmed else self.last_role  # what the battery was surely doing
        self.sending = command  # a stop sends Auto after it, whatever it was
        self.sending_at = time.monotonic()
        try:
            outcome = await self._guarded(
                self._send(command), f"{command.describe()} (optimiser: {command.reason})"
            )
        finally:
            self.sending = None
        if outcome is not None:
            self.unconfirmed = not outcome.ok
            same = before is not None and (before.role, before.power_w) == (command.role, command.power_w)
            if outcome.attempts > 0 and not same:  # a countdown refresh moves nothing
                self.written_at, self.read_after = time.monotonic(), None
        return outcome

    def shows_last_write(
        self, read_at: float | None, grid_at: float | None, now: float, window: float
    ) -> bool:
        """Whether a power reading stamped `read_at` (and the meter's, `grid_at`) show the last write that
        moved the battery: read by a poll begun after the write ended (see the module's docstring). A write
        queued or under way holds back for `window` at most, as one that ended does."""
        if self.sending is not None and now - self.sending_at <= window:
            return False  # a write under way
        if self.role is not None and now - self.queued_at <= window:
            return False  # a write queued (behind a schedule clearing, perhaps)
        written = self.written_at
        if written is None or now - written > window:
            return True
        if read_at is None or read_at < written:
            return False
        if self.read_after is None:
            self.read_after = read_at  # the first poll after the write: it may have begun before it
        return read_at > self.read_after and (grid_at is None or grid_at >= self.read_after)

    async def _clear(self) -> WriteOutcome | None:
        device = self.device
        async with device.mode_lock:
            device_id = device.device_id
            if self.stopping or device_id is None:
                return None
            if device.holds.get(device_id) is not None:
                return None  # a person took over: what they asked stays as it is
            if nothing_to_clear(device):
                return WriteOutcome(
                    WriteStatus.ACCEPTED,
                    "clear schedules (optimiser: before night charging)",
                    0,
                    "nothing to clear: every slot was cleared before and the battery is not in Manual since",
                )
            # Restoring Auto here could put two batteries in Auto: the optimiser sends each its role next.
            # Until that role reaches it, the battery is marked as possibly in Manual (see `InManual`).
            client = device.link.client
            marked = device_id in self.in_manual.ids  # a role after an earlier clearing did not reach it
            self.in_manual.mark(device_id)
            self.clearing_now = True
            try:
                outcome = await client.clear_schedules(restore=False)
            except BaseException:
                client.schedule.clear()  # cut short, or failed: which slots are disabled is not known
                raise
            finally:
                self.clearing_now = False
            if outcome.attempts == 0 and not marked:
                self.in_manual.unmark(device_id)  # nothing written: the battery's mode is untouched
            return outcome

    async def _send(self, command: Command) -> WriteOutcome | None:
        device = self.device
        async with device.mode_lock:
            if device.holds.get(device.device_id) is not None:
                return None  # a person's command wins, even over a write queued before it
            client = device.link.client
            if command.role is Role.AUTO:
                outcome = await client.set_mode(AutoMode())
            else:
                outcome = await client.set_mode(PassiveMode(command.power_w, command.duration_s))
        self.last_role = command
        if outcome.ok and device.device_id is not None:
            self.in_manual.unmark(device.device_id)  # out of Manual: Auto, or Passive with its countdown
        return WriteOutcome(
            outcome.status,
            f"{outcome.command} (optimiser: {command.reason})",
            outcome.attempts,
            outcome.detail,
            outcome.clamped,
        )

    async def abandon_clearing(self) -> None:
        """The add-on stops: a clearing under way (two passes over every slot, a minute or two) would
        outlast the stop and hold back the Auto queued behind it, so it is cancelled between two writes."""
        if self.task is not None and self.clearing_now:
            _LOG.info("optimiser: %s: schedule clearing abandoned, the add-on stops", self.device.name)
            self.task.cancel()
            await asyncio.wait({self.task})

    async def drain(self, timeout: float) -> None:
        if self.task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            pass
        except Exception:  # an earlier write's error must not cut the stop short (leases, links, state)
            _LOG.exception("optimiser: %s: the last writes failed", self.device.name)


class OptimiserController:
    def __init__(
        self,
        options: Options,
        batteries: Sequence[BatteryDevice],
        grid: GridInput,
        pv: PvForecast,
        store: dict[str, Any],
        save: Callable[[], None],
        on_change: Callable[[], None] = lambda: None,
        on_outcome: Callable[[BatteryDevice], None] = lambda device: None,
        clock: EngineClock | None = None,
        site: Callable[[], Mapping[str, Any]] = dict,
        pv_measured: bool = False,
        day_ahead: DayAheadPrices | None = None,
        car_sessions: Callable[[], tuple[CarSession, ...]] = tuple,
        car_planned: Callable[[], bool] = lambda: False,
    ) -> None:
        self.options = options
        self.clock: EngineClock = clock or RealClock()
        self.batteries = list(batteries)
        self.grid_input = grid
        self.pv = pv
        self.store = store
        self.save = save
        self.on_change = on_change
        self.on_outcome = on_outcome
        self.engine = Optimiser(self._settings_from(options), options.tariff.build())
        self.engine.capacity = CapacityTracker.restored(store.get("capacity"))
        self._saved_quarter = self.engine.capacity.quarter
        self._restore_mode_changes()
        self._person_changes: dict[str, tuple[float, float]] = {}  # id -> a person's change: epoch, t
        # battery id -> the manual hold kept for the engine's hold of a change made outside the add-on
        self._outside_holds: dict[str, ManualHold] = {}
        for device in batteries:
            device.holds.outside_owned = True  # the engine ends its app-change holds (see ManualHolds)
        self.interval = options.control_interval
        self._status: Status | None = None
        clearing = asyncio.Lock()
        self.in_manual = InManual(store, save)
        self._actuators = {
            id(b): _Actuator(b, self._report, clearing, self.in_manual) for b in self.batteries
        }
        self._cut_short = set(self.in_manual.ids)  # left in Manual by a clearing a crash cut short
        self._stale_logged = False
        self._started = time.monotonic()
        self._waiting_logged = False
        self.site = site  # the site's power flow (W): pv_power, wallbox_power
        self.live = LivePlanner(
            options.tariff.build(),
            history=QuarterHistory.restored(store.get("history")),
            ledger=DayLedger.restored(store.get("ledger")),
            month=MonthLedger.restored(store.get("month_ledger")),
            day_ahead=day_ahead,
            pv_detail=pv if isinstance(pv, DetailedPvForecast) else None,
            pv_measured=pv_measured,
        )
        self._planner_failed = ""
        self._last_observed: float | None = None
        self.car_sessions = car_sessions  # the wallboxes in `plan` mode with a car plugged in, or expected
        self.car_planned = car_planned  # a wallbox is in `plan` mode: its car is planned, not forecast

    # settings: the options, then changes made from Home Assistant ------------------------------------

    def _settings_from(self, options: Options) -> Settings:
        """Options win when they changed since the last start; otherwise entity changes stay in force.

        Option by option: a change made from Home Assistant goes only when its own option changed. An
        option a new version adds is no change to the others, and a stored change the parameters no
        longer accept goes alone.
        """
        configured = options.optimiser_values()
        stored = self.store.get("options")
        before: dict[str, Any] = stored if isinstance(stored, dict) else {}
        saved = self.store.get("overrides")
        overrides: dict[str, Any] = {}
        changed: list[str] = []
        for key, value in (saved if isinstance(saved, dict) else {}).items():
            if key in before and before[key] != configured.get(key):
                changed.append(key)
                continue
            try:
                overrides[key] = check(key, value)
            except ValueError as exc:
                _LOG.warning("ignoring the stored optimiser setting %s: %s", key, exc)
        if changed:
            _LOG.info(
                "optimiser settings made in Home Assistant dropped, their option changed: %s",
                ", ".join(changed),
            )
        self.store["options"], self.store["overrides"] = configured, overrides
        return Settings().with_values({**configured, **overrides})

    @property
    def settings(self) -> Settings:
        return self.engine.settings

    def change_setting(self, key: str, value: Any) -> str | None:
        try:
            checked = check(key, value)
        except ValueError as exc:
            return str(exc)
        self.engine.settings = self.engine.settings.with_values({key: checked})
        self.store.setdefault("overrides", {})[key] = checked
        self.save()
        _LOG.info("optimiser setting %s = %s (from Home Assistant)", key, checked)
        self.on_change()
        return None

    # the port the Home Assistant device reads -----------------------------------------------------------

    @property
    def status(self) -> Status | None:
        return self._status

    @property
    def decisions(self) -> Sequence[Decision]:
        return list(self.engine.decisions)

    def grid(self) -> tuple[float | None, float | None, str]:
        reading = self.grid_input.current()
        return reading.value, reading.age(), reading.source

    def pv_forecast_kwh(self) -> float | None:
        return self.pv.kwh()

    def tariff_periods(self) -> tuple[str, ...]:
        return tuple(sorted(self.engine.tariff.prices))

    def pv_forecast_detail(self) -> dict[str, Any]:
        return dict(self.pv.detail())

    # running ------------------------------------------------------------------------------------------

    def inputs(self) -> Inputs:
        real = time.monotonic()  # the links and inputs stamp their readings in real time
        reading = self.grid_input.current()
        age = reading.age(real)
        views = tuple(view for device in self.batteries if (view := self._view(device, real)) is not None)
        now = self.clock.now()
        pv_kwh, pv_day = self.pv.for_night(now)
        return Inputs(
            self.clock.seconds(),
            now,
            reading.value,
            None if age is None else age * self.clock.speed,
            views,
            pv_kwh,
            pv_forecast_day=pv_day,
        )

    def _view(self, device: BatteryDevice, now: float) -> BatteryView | None:
        device_id = device.device_id
        if device_id is None:
            return None  # never answered: nothing is known, nothing can be commanded
        link = device.link
        snapshot, client = link.snapshot, link.client
        fresh = now - snapshot.updated_at <= 3 * link.settings.poll_interval + 10
        mode = snapshot.mode
        limits = client.limits
        hold = device.holds.get(device_id)
        changed = device.holds.changed_at(device_id)
        changed_t = None if changed is None else self._person_change_t(device_id, changed)
        return BatteryView(
            id=device_id,
            name=device.name,
            online=link.online and fresh,
            soc=snapshot.soc,
            capacity_wh=snapshot.number("rated_capacity") or DEFAULT_CAPACITY_WH,
            soc_floor=client.soc_floor,
            max_charge_w=limits.charge_w,
            max_discharge_w=limits.discharge_w,
            ac_power=snapshot.ac_power if fresh else None,
            mode=mode.value if fresh and mode else None,
            # an app-change hold is the engine's own: it renews and ends it by its rules, so it is no command
            hold=hold.describe() if hold is not None and not hold.outside_mode else "",
            mode_changed_t=changed_t,
        )

    def _person_change_t(self, device_id: str, changed: float) -> float:
        """A person's mode change (epoch) on the engine's clock, converted once, when first seen: the wall
        clock may be set back later, and the engine's clock is not."""
        known = self._person_changes.get(device_id)
        if known is not None and known[0] == changed:
            return known[1]
        # a change in the future (the clock was set back) counts as now, not as a longer wait
        t = self.clock.seconds() - max(0.0, self.clock.now().timestamp() - changed)
        self._person_changes[device_id] = (changed, t)
        return t

    def plan_summary(self) -> PlanSummary | None:
        # Switched off, the plan is no longer made: the last one would show as current for hours.
        if self.settings.method != "planner" or not self.settings.enabled:
            return None
        return self.live.summary(self.clock.now())

    def planned_car(self) -> tuple[float, SessionPlan] | None:
        """The car's planned power now (kW) and what the plan gives its session; None: no plan for it."""
        plan = self.live.plan
        if plan is None or not plan.car or self.settings.method != "planner" or not self.settings.enabled:
            return None
        now = self.clock.now()
        first = plan.first
        step = first if first is not None and first.start <= now < first.end else plan.step_at(now)
        if step is None:
            return None  # a plan no longer renewed says nothing of now: the car must not wait on it for ever
        return step.car_kw, plan.car[0]

    def plan_problem(self) -> str:
        """Why the planner has no plan ("" when it has one): the rules' rotation runs meanwhile."""
        return self._planner_failed or (self.live.problem if self.live.plan is None else "")

    def month_money(self) -> MonthMoney | None:
        return self.live.month_money(self.clock.now(), self.engine.capacity.month_peak_kw)

    def plan_json(self) -> dict[str, Any]:
        if self.settings.method != "planner":
            return {"status": "the rules strategy is in force", "steps": []}
        if not self.settings.enabled:
            return {"status": "the optimiser is switched off", "steps": []}
        return self.live.as_json()

    def _observe(self, inputs: Inputs, site: Mapping[str, Any]) -> None:
        """The site's readings into the learner's history and today's ledger, whatever the strategy."""
        seconds = 0.0 if self._last_observed is None else inputs.t - self._last_observed
        self._last_observed = inputs.t
        stale = inputs.grid_age is None or inputs.grid_age > self.settings.input_stale_after
        battery = [b.ac_power for b in inputs.batteries if b.ac_power is not None]
        self.live.observe(
            inputs.now,
            min(seconds, 3 * self.interval * self.clock.speed),
            grid_w=None if stale else inputs.grid_power,
            battery_w=sum(battery),
            pv_w=site.get("pv_power"),
            wallbox_w=site.get("wallbox_power"),
        )

    def _with_plan(self, inputs: Inputs, site: Mapping[str, Any]) -> Inputs:
        settings = self.settings
        inputs = replace(inputs, wallbox_power=site.get("wallbox_power"))
        if settings.method != "planner" or not settings.enabled:
            return inputs
        try:
            step = self.live.step(
                inputs.now,
                # a battery a person holds, here or in the Marstek app, is none of the plan's
                [b for b in inputs.batteries if not b.hold and b.id not in self.engine.outside],
                self.engine.capacity,
                settings,
                inputs.pv_forecast_tomorrow_kwh,
                self.car_sessions(),
                car_planned=self.car_planned(),
            )
        except Exception as exc:  # the rules' rotation takes over; the planner is tried again next step
            if not self._planner_failed:
                _LOG.exception("optimiser: the planner failed; rotation by the rules until it works again")
            self._planner_failed = f"the planner failed: {exc}"
            return replace(inputs, plan_problem=self._planner_failed)
        if self._planner_failed and step is not None:
            _LOG.info("optimiser: the planner works again")
        self._planner_failed = ""
        return replace(inputs, plan_step=step, plan_problem=self.live.problem)

    def step(self) -> None:
        self._outside_holds_in()
        inputs = self.inputs()
        site = self.site()  # the site's totals once a step: the learner and the plan both read them
        self._observe(inputs, site)
        inputs = self._with_plan(inputs, site)
        result = self.engine.step(inputs, settling=self._settling())
        for decision in result.decisions:
            _LOG.info("optimiser: %s", decision.text)
        stale = result.status.stale_input and result.status.enabled
        if stale and not self._stale_logged:
            reading = self.grid_input.current()
            # Right after a start the meter has simply not spoken yet: that is news, not a warning.
            if reading.at is None and time.monotonic() - self._started < STARTUP_GRACE_S:
                if not self._waiting_logged:
                    _LOG.info("optimiser: waiting for the first reading from %s", reading.source)
                    self._waiting_logged = True
            else:
                _LOG.warning(
                    "optimiser holds every battery in Auto: %s (%s)",
                    result.status.hold,
                    reading.problem or reading.source,
                )
                self._stale_logged = True
        elif not stale:
            self._stale_logged = False
        status = result.status
        if inputs.plan_step is not None and not status.next_action:
            summary = self.live.summary(inputs.now)
            if summary is not None and summary.next_change:
                status = replace(status, next_action=summary.next_change)
        self._status = status
        self._outside_holds_out()
        self._dispatch(result.commands)
        self._recover()
        moved = self._keep_mode_changes()
        if self.engine.capacity.quarter != self._saved_quarter:  # once a quarter-hour, not every step
            self._save_capacity()
        elif moved:  # at most once per battery per switch interval, and when a person changes a mode
            self.save()
        self.on_change()

    def _outside_holds_in(self) -> None:
        """Before a step: an app-change hold the engine does not know (kept from before a restart) goes
        back to the engine, with its end; one a person ended here (Return to optimiser) ends there too."""
        now_t, now = self.clock.seconds(), self.clock.now().timestamp()
        for device in self.batteries:
            device_id = device.device_id
            if device_id is None:
                continue
            if device_id in device.holds.handed_back:
                device.holds.handed_back.discard(device_id)
                self.engine.hand_back(device_id)
                self._outside_holds.pop(device_id, None)
                continue
            hold = device.holds.get(device_id)
            if hold is not None and hold.outside_mode:
                if device_id not in self.engine.outside:
                    self.engine.restore_outside(device_id, hold.outside_mode, now_t + (hold.until - now))
                    _LOG.info("optimiser: %s: %s; left alone until then", device.name, hold.describe())
                self._outside_holds[device_id] = hold

    def _outside_holds_out(self) -> None:
        """After a step: each app-change hold of the engine kept as the battery's manual hold, with the
        engine's end (a renewal moves it); one the engine ended is ended there too."""
        now_t, now = self.clock.seconds(), self.clock.now().timestamp()
        by_id = {d.device_id: d for d in self.batteries if d.device_id is not None}
        for device_id, (mode, end_t) in self.engine.outside.items():
            device = by_id.get(device_id)
            if device is None:
                continue
            until = now + (end_t - now_t)
            hold = device.holds.get(device_id)
            kept = self._outside_holds.get(device_id)
            if hold is not None and not hold.outside_mode:
                continue  # a command given here replaced it: the engine lets its own hold go
            if (
                hold is not None
                and hold.outside_mode == mode
                and abs(hold.until - until) <= OUTSIDE_END_SLACK_S
            ):
                continue
            if hold is None and kept is not None and until - now <= OUTSIDE_END_SLACK_S:
                # Gone though the engine holds on: a person's command replaced it and ran out between two
                # steps (shorter than the control interval), never seen by the engine. Its end is now (or
                # past, the battery unread): not put back for that moment; the engine's next step that reads
                # the battery renews it or ends it.
                continue
            since = kept.started if kept is not None and kept.outside_mode == mode else None
            self._outside_holds[device_id] = device.holds.hold_outside(device_id, mode, until, since)
            self.on_outcome(device)  # the sensor shows the end at once, not at the next poll
        for device_id in [i for i in self._outside_holds if i not in self.engine.outside]:
            del self._outside_holds[device_id]
            device = by_id.get(device_id)
            if device is None:
                continue
            hold = device.holds.get(device_id)
            if hold is not None and hold.outside_mode:  # the engine ended it: handed back, or switched off
                device.holds.release(device_id)
                self.on_outcome(device)

    def _restore_mode_changes(self) -> None:
        """The last mode changes from before the start into the engine, on its clock."""
        now_t, now = self.clock.seconds(), self.clock.now().timestamp()
        ages = restored_mode_changes(self.store.get("mode_changes"), now)
        self.engine.restore_mode_changes({i: now_t - age for i, age in ages.items()})
        self.store["mode_changes"] = {i: round(now - age, 3) for i, age in ages.items()}
        self._kept_changes = self.engine.mode_changes()

    def _keep_mode_changes(self) -> bool:
        """Each battery's last mode change into the store as wall-clock time (the engine's clock does not
        survive a restart); True when one moved."""
        now_t = self.clock.seconds()
        changes = {i: t for i, t in self.engine.mode_changes().items() if now_t - t <= KEEP_MODE_CHANGE_S}
        kept = self._kept_changes
        # a person's change comes through the wall clock each step: its jitter (the clock slewed) is no change
        if changes.keys() == kept.keys() and all(abs(t - kept[i]) < 0.1 for i, t in changes.items()):
            return False
        now = self.clock.now().timestamp()
        self.store["mode_changes"] = {i: round(now - (now_t - t), 3) for i, t in changes.items()}
        self._kept_changes = changes
        return True

    def _save_capacity(self) -> None:
        """Once a quarter-hour, and at a stop: the capacity tariff's month, the learner's history, today's
        ledger, and each battery's last mode change."""
        self._keep_mode_changes()
        self.store["capacity"] = self.engine.capacity.snapshot()
        self.store["history"] = self.live.history.snapshot()
        self.store["ledger"] = self.live.ledger.snapshot()
        self.store["month_ledger"] = self.live.month.snapshot()
        self._saved_quarter = self.engine.capacity.quarter
        self.save()

    def _settling(self) -> frozenset[str]:
        """The batteries whose power reading does not show the optimiser's last write to them yet."""
        now = time.monotonic()
        grid_at = self.grid_input.current().at
        settling = set()
        for device in self.batteries:
            link = device.link
            window = 3 * link.settings.poll_interval + 10  # as long as a battery counts as fresh
            read_at = link.snapshot.seen.get("ac_power")
            actuator = self._actuators[id(device)]
            if device.device_id is not None and not actuator.shows_last_write(read_at, grid_at, now, window):
                settling.add(device.device_id)
        return frozenset(settling)

    def _dispatch(self, commands: Sequence[Command]) -> None:
        by_id = {b.device_id: b for b in self.batteries}
        for command in commands:
            device = by_id.get(command.battery_id)
            if device is not None:
                self._actuators[id(device)].submit(command)

    def _recover(self) -> None:
        """Auto for a battery a crash left in Manual mid-clearing, once it answers; whatever the optimiser
        does (switched off, or holding for want of a meter, it commands nobody it has not steered)."""
        for device in self.batteries:
            device_id = device.device_id
            if device_id not in self._cut_short:
                continue
            actuator = self._actuators[id(device)]
            if device_id not in self.in_manual.ids:
                self._cut_short.discard(device_id)  # a role reached it: out of Manual
            elif device.holds.get(device_id) is not None:
                self._cut_short.discard(device_id)  # a person's command is in force: theirs wins
                self.in_manual.unmark(device_id)
            elif device.link.online and (actuator.task is None or actuator.task.done()):
                device.link.client.schedule.clear()  # cut short: which slots are disabled is not known
                actuator.submit(Command(device_id, Role.AUTO, reason="a schedule clearing was cut short"))
                self.engine.mode_changed[device_id] = self.clock.seconds()  # the switch interval counts it

    def _report(self, device: BatteryDevice, outcome: WriteOutcome) -> None:
        device.record(outcome)
        if outcome.status not in (WriteStatus.APPLIED, WriteStatus.ACCEPTED):
            _LOG.warning(
                "optimiser: %s: %s -> %s (%s)",
                device.name,
                outcome.command,
                outcome.status.value,
                outcome.detail,
            )
        self.on_outcome(device)

    async def run(self) -> None:
        while True:
            try:
                self.step()
            except Exception:  # one bad step must not end the control of the batteries
                _LOG.exception("optimiser step failed")
            await asyncio.sleep(self.interval)

    async def stop(self, timeout: float = 30.0) -> None:
        """A clean shutdown: every battery the optimiser steered goes back to Auto, and so does one that a
        clearing left in Manual (one under way is abandoned: it would outlast the stop)."""
        # The engine releases the batteries whose last command was not Auto. A role still queued or being
        # written, or a write that failed, may leave a battery in Passive whatever the engine believes (a
        # countdown refresh in flight, an Auto that would never be sent): each of those gets Auto as well.
        pending: list[str] = []
        for actuator in self._actuators.values():
            device_id = actuator.device.device_id
            busy = actuator.role is not None or actuator.sending is not None or actuator.unconfirmed
            if device_id is not None and busy:
                pending.append(device_id)
            actuator.role, actuator.clear = None, False  # nothing queued may outlive the release
            actuator.stopping = True
        for actuator in self._actuators.values():
            await actuator.abandon_clearing()
        commands = self.engine.stop(self.inputs())
        released = {command.battery_id for command in commands}
        extra = [i for i in dict.fromkeys([*pending, *self.in_manual.ids]) if i not in released]
        commands += [Command(i, Role.AUTO, reason="add-on stopping") for i in extra]
        for battery_id in extra:  # a mode change like the release's: kept for the switch interval
            self.engine.mode_changed[battery_id] = self.clock.seconds()
        self._dispatch(commands)
        self._save_capacity()
        # All at once within `timeout`: a battery that does not answer must not hold back the others' Auto
        # (each write to a silent battery takes its retries), nor the rest of the stop.
        await asyncio.gather(*(actuator.drain(timeout) for actuator in self._actuators.values()))
