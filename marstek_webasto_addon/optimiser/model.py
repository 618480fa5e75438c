"""What goes into an optimiser step and what comes out. Plain, immutable data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .planner import PlanStep


class Role(StrEnum):
    """What the optimiser wants a battery to do."""

    AUTO = "auto"  # the battery's own self-consumption control (the safe state)
    IDLE = "idle"  # Passive 0 W, with a countdown
    CHARGE = "charge"  # Passive, negative power, with a countdown
    DISCHARGE = "discharge"  # Passive, positive power, with a countdown


PASSIVE_ROLES = (Role.IDLE, Role.CHARGE, Role.DISCHARGE)


@dataclass(frozen=True)
class BatteryView:
    """One battery as the optimiser sees it. Power: + = discharging."""

    id: str
    name: str
    online: bool
    soc: float | None
    capacity_wh: float
    soc_floor: float = 12.0
    max_charge_w: int = 2500
    max_discharge_w: int = 2500
    ac_power: float | None = None
    mode: str | None = None  # as last read: "Auto", "Passive", "Manual", ... or None when unknown
    hold: str = ""  # a person's command holds this battery: the optimiser leaves it alone ("" = none)
    mode_changed_t: float | None = None  # t of a person's last mode change (the switch interval counts it)

    @property
    def stored_wh(self) -> float:
        return 0.0 if self.soc is None else self.capacity_wh * self.soc / 100

    @property
    def room_wh(self) -> float:
        return 0.0 if self.soc is None else self.capacity_wh * (100 - self.soc) / 100


@dataclass(frozen=True)
class Inputs:
    t: float  # seconds on a monotonic clock: durations
    now: datetime  # local wall-clock time: calendar (day/night, tariff periods, months)
    grid_power: float | None  # W at the meter, + = import
    grid_age: float | None  # seconds since the grid reading was taken
    batteries: tuple[BatteryView, ...]
    pv_forecast_tomorrow_kwh: float | None = None
    # The day that forecast is for: None for a "tomorrow" value (after midnight the day after the night's),
    # a date where the source says (a weather forecast read after midnight gives the coming day's).
    pv_forecast_day: date | None = None
    # The zone `now` is local time in; None: this process's (the add-on runs in Home Assistant's).
    zone: tzinfo | None = None
    wallbox_power: float | None = None  # W, what the car draws now (None: no wallbox or no reading)
    plan_step: PlanStep | None = None  # the planner strategy's running step (None: no plan)
    plan_problem: str = ""  # why there is no plan, when there is none


@dataclass(frozen=True)
class Command:
    """Something to send to a battery now."""

    battery_id: str
    role: Role | None  # None with clear_schedules
    power_w: int = 0  # + = discharge
    duration_s: int = 0  # the countdown of a Passive command
    clear_schedules: bool = False
    reason: str = ""

    def describe(self) -> str:
        if self.clear_schedules:
            return "clear manual schedules"
        if self.role is Role.AUTO:
            return "Auto"
        if self.role is Role.IDLE:
            return f"idle ({self.duration_s // 60} min countdown)"
        verb = "charge" if self.power_w < 0 else "discharge"
        return f"{verb} {abs(self.power_w)} W ({self.duration_s // 60} min countdown)"


@dataclass(frozen=True)
class Decision:
    at: datetime
    text: str


@dataclass(frozen=True)
class NightPlan:
    """Tonight's charging: how much energy each battery gets, and when."""

    night_of: str  # ISO date of the evening the plan was made
    deficit_wh: float
    expected_pv_wh: float
    energy_wh: dict[str, float]  # battery id -> energy to add
    power_w: dict[str, int]  # battery id -> charging power
    windows: tuple[tuple[datetime, datetime], ...]  # the cheapest quarter-hours, merged
    period: str  # the tariff period charged in
    pv_note: str = ""  # why the expected PV is not the forecast's, when it is not

    def charging_at(self, now: datetime) -> bool:
        return any(start <= now < end for start, end in self.windows)


@dataclass(frozen=True)
class Status:
    """What the optimiser is doing, for the entities and the panel."""

    enabled: bool
    hold: str  # why everything is in Auto, or "" when not holding
    strategy: str  # the strategy in force
    active_battery: str | None
    day: bool
    tariff_period: str
    quarter_average_kw: float
    month_peak_kw: float
    peak_target_kw: float
    stale_input: bool
    mismatch: str  # "" when all batteries do what they were told
    next_action: str
    night_plan: NightPlan | None
    roles: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StepResult:
    commands: tuple[Command, ...]
    decisions: tuple[Decision, ...]
    status: Status
