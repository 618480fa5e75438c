"""Steers a wallbox by its charge mode: the pure `CarController` on live readings, its current written out.

`manual` (the default) leaves the wallbox alone: the add-on bridges it and steers nothing, as before. The
other modes (`off`, `now`, `min_pv`, `pv`) hand its charging current to the controller. A person's own
charging-current command puts the wallbox back in `manual`: a person's command wins. The mode is kept
under /data per wallbox. The wallbox's keepalive and fail-safe stay as they are: when the add-on stops, the
box falls back to its fail-safe current.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..bridge.controls import CHARGE_MODES
from ..bridge.devices import BatteryDevice, WallboxDevice
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
from .inputs import GridInput

_LOG = logging.getLogger(__name__)
MANUAL = "manual"
MODES = CHARGE_MODES
PLUGGED = frozenset({"vehicle_connected", "vehicle_locked"})
DONE = frozenset({"suspended_ev", "finishing"})  # the car stopped taking energy (UNITE states)
GRID_FRESH_S = 30.0


class Clock(Protocol):
    def seconds(self) -> float: ...

    def now(self) -> Any: ...


@dataclass
class CarStatus:
    mode: str
    decision: CarDecision | None = None
    last_outcome: str = ""


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
        self.status = CarStatus(saved if saved in MODES else MANUAL)
        self._writing: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        cfg = self.wallbox.link.client.config
        return f"{cfg.host}:{cfg.port}/{cfg.unit_id}"

    @property
    def mode(self) -> str:
        return self.status.mode

    def set_mode(self, mode: str, why: str = "") -> str | None:
        """None, or why the mode was refused."""
        if mode not in MODES:
            return f"charge mode must be one of {', '.join(MODES)}"
        if mode != self.status.mode:
            _LOG.info("%s: charge mode %s%s", self.wallbox.name, mode, f" ({why})" if why else "")
        self.status.mode = mode
        self.status.decision = None
        self.store[self.key] = mode
        self.save()
        self.on_change()
        return None

    # one control interval -----------------------------------------------------------------------------

    def inputs(self) -> CarInputs | None:
        link = self.wallbox.link
        if self.status.mode == MANUAL or not link.online:
            return None
        values = link.snapshot.values
        client = link.client
        minimum, maximum = client.current_limits()
        reading = self.grid.current()
        age = reading.age()
        fresh = reading.value is not None and age is not None and age <= GRID_FRESH_S
        phases = 1 if values.get("phase_switch") == "1" or values.get("phases_installed") == "1" else 3
        return CarInputs(
            t=self.clock.seconds(),
            now=self.clock.now(),
            mode=ChargeMode(self.status.mode),
            grid_power=reading.value if fresh else None,
            car_power=link.snapshot.number("power") or 0.0,
            plugged_in=values.get("cable_state") in PLUGGED,
            wants_energy=values.get("charge_point_state") not in DONE,
            limits=WallboxLimits(minimum, maximum, phases, can_switch_phases=client.supports("phase_switch")),
            batteries=self._home_batteries(),
            settings=self.settings(),
            quarter=self.budget(),
        )

    def _home_batteries(self) -> HomeBatteries:
        online = [b for b in self.batteries if b.available]
        power = sum(b.link.snapshot.ac_power or 0.0 for b in online)
        room = 0.0
        for battery in online:
            snapshot = battery.link.snapshot
            if snapshot.soc is not None and snapshot.soc < 99:
                # what it could take on top of what it takes now (ac_power is negative while charging)
                room += battery.link.client.limits.charge_w + min(0.0, snapshot.ac_power or 0.0)
        socs = [(b.link.snapshot.soc, b.link.snapshot.number("rated_capacity") or 1.0) for b in online]
        known = [(soc, cap) for soc, cap in socs if soc is not None]
        weight = sum(cap for _, cap in known)
        soc = sum(soc * cap for soc, cap in known) / weight if known and weight else None
        return HomeBatteries(power, room, soc)

    def step(self) -> CarDecision | None:
        inputs = self.inputs()
        if inputs is None:
            return None
        decision = self.controller.step(inputs)
        if self.status.decision is None or decision.reason != self.status.decision.reason:
            _LOG.debug("%s: %s", self.wallbox.name, decision.reason)
        self.status.decision = decision
        wanted = decision.current_a if decision.charge else 0
        client = self.wallbox.link.client
        if wanted != client.current_setpoint and (self._writing is None or self._writing.done()):
            self._writing = asyncio.create_task(self._write(wanted, decision.reason))
        return decision

    async def _write(self, amps: int, reason: str) -> None:
        outcome = await self.wallbox.link.client.set_charging_current(amps)
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
        return decision.reason
