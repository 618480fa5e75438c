"""Physical model behind the simulated batteries: pack, household, meter and simulated time.

Assumptions (the reference has no sourced figure for these): one-way efficiency 0.95 each way, 3 W standby
drain, charge taper above 95 % SOC and discharge taper within 3 % of the SOC floor.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class SimClock:
    """Simulated time running `speed` times faster than the monotonic clock."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._speed = speed
        self._start = start or datetime.now().replace(microsecond=0)
        self._real0 = time.monotonic()
        self._sim0 = 0.0

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        if value <= 0:
            raise ValueError("speed must be positive")
        self._sim0 = self.seconds()
        self._real0 = time.monotonic()
        self._speed = value

    def seconds(self) -> float:
        """Simulated seconds since the start."""
        return self._sim0 + (time.monotonic() - self._real0) * self._speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.seconds())


@dataclass
class BatteryPhysics:
    """An LFP pack behind an AC inverter. `ac_power` is + = discharging (delivering to the house)."""

    capacity_wh: float
    max_charge_w: float
    max_discharge_w: float
    soc: float = 50.0
    dod: int = 88
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    standby_w: float = 3.0
    ac_power: float = 0.0
    pv_w: list[float] = field(default_factory=list)  # per MPPT channel (Venus A/D)
    temperature_c: float = 22.0
    ac_in_wh: float = 0.0
    ac_out_wh: float = 0.0
    pv_wh: float = 0.0

    @property
    def soc_floor(self) -> float:
        return 100.0 - self.dod

    @property
    def pv_total(self) -> float:
        return sum(self.pv_w)

    @property
    def dc_power(self) -> float:
        """Battery-side power, + = discharging."""
        return self.ac_power - self.pv_total

    @property
    def remaining_wh(self) -> float:
        return self.capacity_wh * self.soc / 100

    @property
    def can_charge(self) -> bool:
        return self.soc < 100.0

    @property
    def can_discharge(self) -> bool:
        return self.soc > self.soc_floor

    def feasible(self, target_ac: float) -> float:
        """The AC power the pack can actually deliver for this target, given SOC and limits."""
        return self._feasible(target_ac, self.pv_total)

    def _feasible(self, target_ac: float, pv: float) -> float:
        soc = self.soc
        charge_taper = 1.0 if soc < 95 else max(0.0, (100.0 - soc) / 5)
        margin = soc - self.soc_floor
        discharge_taper = 1.0 if margin >= 3 else max(0.0, margin / 3)
        dc = target_ac - pv
        dc = max(-self.max_charge_w * charge_taper, min(self.max_discharge_w * discharge_taper, dc))
        return max(-self.max_charge_w, min(self.max_discharge_w, dc + pv))

    def step(self, seconds: float, target_ac: float) -> None:
        # A year's replay steps each pack twice a simulated minute: the PV sum is taken once per step.
        pv = sum(self.pv_w)
        self.ac_power = self._feasible(target_ac, pv)
        hours = seconds / 3600
        dc = self.ac_power - pv
        stored = -dc * self.charge_efficiency if dc < 0 else -dc / self.discharge_efficiency
        if self.soc <= self.soc_floor and dc >= 0:
            # At the floor the inverter's standby comes from the AC side, not from the cells (an assumption:
            # the BMS keeps the pack above its floor; the grid sees a few watts).
            self.ac_power -= self.standby_w
        else:
            stored -= self.standby_w
        self.soc = max(0.0, min(100.0, self.soc + stored * hours / self.capacity_wh * 100))
        if self.ac_power >= 0:
            self.ac_out_wh += self.ac_power * hours
        else:
            self.ac_in_wh -= self.ac_power * hours
        self.pv_wh += pv * hours
        heat_target = 22.0 + 8.0 * abs(dc) / max(self.max_discharge_w, 1.0)
        self.temperature_c += (heat_target - self.temperature_c) * (1 - math.exp(-seconds / 1800))


PhaseTriple = tuple[float, float, float]


@dataclass
class Household:
    """A deterministic synthetic home: base load, appliance spikes and rooftop PV, per phase.

    Good enough for the live simulator and the demo; the optimiser replay uses measured profiles instead.
    """

    pv_kwp: float = 4.0
    base_w: float = 180.0
    seed: int = 1

    def load_w(self, at: datetime) -> PhaseTriple:
        hour = at.hour + at.minute / 60
        morning = 900 * math.exp(-(((hour - 7.5) / 0.8) ** 2))
        evening = 1400 * math.exp(-(((hour - 19.0) / 1.5) ** 2))
        # Appliance spikes: deterministic per 5-minute slot so every run of the same day looks the same.
        slot = int(at.timestamp() // 300)
        rng = random.Random(self.seed * 1_000_003 + slot)
        spike = rng.choice((0, 0, 0, 0, 0, 0, 300, 1200, 2000)) if 6 <= hour <= 23 else 0
        fridge = 90 if (at.minute // 10) % 3 == 0 else 0
        return (self.base_w / 3 + fridge + spike, self.base_w / 3 + morning, self.base_w / 3 + evening)

    def pv_w(self, at: datetime) -> PhaseTriple:
        day = at.timetuple().tm_yday
        hour = at.hour + at.minute / 60 + at.second / 3600
        half_length = 4.2 + 3.6 * math.sin(2 * math.pi * (day - 80) / 365)  # ~8 h winter, ~16 h summer
        if abs(hour - 13.5) >= half_length:
            return (0.0, 0.0, 0.0)
        shape = math.cos(math.pi / 2 * (hour - 13.5) / half_length) ** 1.5
        peak = self.pv_kwp * 1000 * (0.55 + 0.25 * math.sin(2 * math.pi * (day - 80) / 365))
        cloud = 0.75 + 0.25 * math.sin(at.timestamp() / 1700) * math.sin(at.timestamp() / 310)
        per_phase = peak * shape * cloud / 3
        return (per_phase, per_phase, per_phase)


BatteryOnPhase = tuple[int, Callable[[], float]]  # phase index 0..2, AC power getter (+ = discharging)


class Site:
    """The household's grid connection as a three-phase meter sees it: + = import, - = export."""

    def __init__(self, household: Household | None = None) -> None:
        self.household = household or Household()
        self.batteries: list[BatteryOnPhase] = []
        # per phase, the batteries' power getters in the order they were attached (the meter is read every
        # simulated second of a year's replay: each phase sums only its own)
        self._on_phase: tuple[list[Callable[[], float]], ...] = ([], [], [])
        self.load: PhaseTriple = (0.0, 0.0, 0.0)
        self.pv: PhaseTriple = (0.0, 0.0, 0.0)
        self.extra: PhaseTriple = (0.0, 0.0, 0.0)  # other loads, e.g. a wallbox, set from outside
        self.import_wh = 0.0
        self.export_wh = 0.0

    def attach(self, phase: int, ac_power: Callable[[], float]) -> None:
        self.batteries.append((phase % 3, ac_power))
        self._on_phase[phase % 3].append(ac_power)

    def update(self, at: datetime) -> None:
        self.load = self.household.load_w(at)
        self.pv = self.household.pv_w(at)

    def phase_power(self, phase: int) -> float:
        battery = 0.0
        for power in self._on_phase[phase]:
            battery += power()
        return self.load[phase] + self.extra[phase] - self.pv[phase] - battery

    def total_power(self) -> float:
        return self.phase_power(0) + self.phase_power(1) + self.phase_power(2)

    def integrate(self, seconds: float) -> None:
        total = self.total_power()
        if total >= 0:
            self.import_wh += total * seconds / 3600
        else:
            self.export_wh -= total * seconds / 3600
