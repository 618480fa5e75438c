"""Every optimiser parameter, declared once: option key, entity name, unit, range and the seed's default.

The add-on options, the Home Assistant entities (number / switch / text), their validation and the panel's
settings are generated from `PARAMETERS`. Defaults follow the users' own setup (seeds/marstek-roadmap-nl.txt).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import time
from typing import Any


@dataclass(frozen=True)
class Parameter:
    key: str
    name: str
    kind: str  # "switch", "number", "time" or "select"
    default: Any
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    icon: str | None = None
    featured: bool = False  # up front on the panel; the rest sit under "all settings"
    choices: tuple[str, ...] = ()  # a select's options


FEATURED = {
    "enabled",
    "method",
    "rotation",
    "night_charging",
    "overflow_charging",
    "peak_assist",
    "desired_total_capacity",
    "pv_per_sunny_hour",
    "peak_target",
}


def _sw(key: str, name: str, default: bool, icon: str | None = None) -> Parameter:
    return Parameter(key, name, "switch", default, icon=icon, featured=key in FEATURED)


def _num(
    key: str, name: str, default: float, unit: str | None, lo: float, hi: float, step: float
) -> Parameter:
    return Parameter(key, name, "number", default, unit, lo, hi, step, featured=key in FEATURED)


def _time(key: str, name: str, default: str) -> Parameter:
    return Parameter(key, name, "time", default, icon="mdi:clock-outline")


def _select(key: str, name: str, default: str, choices: tuple[str, ...], icon: str) -> Parameter:
    return Parameter(key, name, "select", default, icon=icon, featured=key in FEATURED, choices=choices)


METHODS = ("planner", "rules")
CAR_PRIORITIES = ("batteries_first", "car_first", "batteries_first_until_soc")


# fmt: off
PARAMETERS: tuple[Parameter, ...] = (
    # Off until the user switches it on: the add-on never takes over batteries by surprise.
    _sw("enabled", "Optimiser", False, "mdi:robot"),
    # planner: the cost-optimal plan over the next day and a half; rules: the seed's strategies below
    _select("method", "Optimisation method", "planner", METHODS, "mdi:strategy"),
    # the planner: whether the home batteries may empty themselves into the car (off: the car charges from
    # PV and the grid), and a cost per kWh discharged that keeps them from cycling for a few cents
    _sw("batteries_feed_car", "Batteries may charge the car", False, "mdi:car-electric"),
    _num("wear_cost", "Battery wear cost", 0.0, "EUR/kWh", 0, 0.5, 0.005),
    # the car's PV modes: who gets the surplus first (the batteries up to a SOC, then the car)
    _select("car_priority", "PV surplus first to", "batteries_first", CAR_PRIORITIES, "mdi:car-battery"),
    _num("car_priority_soc", "Batteries first up to SOC", 80, "%", 0, 100, 1),
    # strategies
    _sw("rotation", "Battery rotation", True, "mdi:rotate-3d-variant"),
    _sw("night_charging", "Night charging", True, "mdi:weather-night"),
    _sw("clear_schedules_before_night_charging", "Clear schedules before night charging", True, "mdi:calendar-remove"),
    _sw("overflow_charging", "Overflow charging", True, "mdi:solar-power"),
    _sw("load_support", "Load support", True, "mdi:home-lightning-bolt"),
    _sw("all_full_stop", "Stop rotation when all full", True, "mdi:battery-check"),
    _sw("peak_assist", "Peak assist", True, "mdi:chart-bell-curve"),
    # rotation (seed session 3/4: 200 W, 2 min hysteresis, 5 min between switches)
    _num("surplus_threshold", "Surplus threshold", 200, "W", 0, 5000, 10),
    _num("consumption_threshold", "Consumption threshold", 200, "W", 0, 5000, 10),
    _num("hysteresis", "Hysteresis delay", 2, "min", 0, 60, 0.5),
    _num("min_switch_interval", "Minimum time between switches", 5, "min", 1, 120, 1),
    _num("rotation_soc_margin", "Rotation SOC margin", 10, "%", 0, 50, 1),
    # day / night
    _time("day_start", "Day mode start", "07:00"),
    _time("night_start", "Night mode start", "22:00"),
    # night charging (input_number.desired_total_capacity, pv_production_per_sunny_hour)
    _num("desired_total_capacity", "Desired stored energy at dawn", 10.0, "kWh", 0, 200, 0.5),
    _num("pv_per_sunny_hour", "PV per sunny hour", 600, "Wh", 0, 20000, 50),
    # overflow (input_number.overflow_power 100-2500 W, overflow_duration 5-60 min; below 85 %, stop at +100 W)
    _num("overflow_max_soc", "Overflow below SOC", 85, "%", 10, 100, 1),
    _num("overflow_max_power", "Overflow maximum power", 2500, "W", 100, 2500, 50),
    _num("overflow_duration", "Overflow duration", 15, "min", 5, 60, 1),
    _num("overflow_stop_import", "Overflow stops at import", 100, "W", 0, 5000, 10),
    # all full (>= 95 % and exporting; restart above 20 % after 2 min of consumption)
    _num("all_full_soc", "All full at SOC", 95, "%", 50, 100, 1),
    _num("restart_soc", "Restart above SOC", 20, "%", 0, 100, 1),
    # mismatch detector (50 W)
    _num("mismatch_power", "Mode check power", 50, "W", 0, 1000, 5),
    # peak assist (capacity tariff; the seed triggered after 20 s)
    _num("peak_target", "Peak target", 2.5, "kW", 0, 50, 0.1),
    _sw("peak_follow_month", "Follow this month's peak", True, "mdi:chart-line"),
    _num("peak_assist_delay", "Peak assist delay", 20, "s", 0, 600, 5),
    # safety
    _num("input_stale_after", "Grid input stale after", 60, "s", 10, 3600, 5),
    _num("passive_countdown", "Passive countdown", 15, "min", 2, 15, 1),  # at most 15: the add-on's promise
    # a person's command without a duration of its own keeps the optimiser away from that battery this long
    _num("manual_hold", "Manual hold", 30, "min", 1, 1440, 1),
)
# fmt: on

BY_KEY = {p.key: p for p in PARAMETERS}


@dataclass(frozen=True)
class Settings:
    """The values in force (options, then changes made from Home Assistant)."""

    enabled: bool = False
    method: str = "planner"
    batteries_feed_car: bool = False
    wear_cost: float = 0.0
    car_priority: str = "batteries_first"
    car_priority_soc: float = 80
    rotation: bool = True
    night_charging: bool = True
    clear_schedules_before_night_charging: bool = True
    overflow_charging: bool = True
    load_support: bool = True
    all_full_stop: bool = True
    peak_assist: bool = True
    surplus_threshold: float = 200
    consumption_threshold: float = 200
    hysteresis: float = 2
    min_switch_interval: float = 5
    rotation_soc_margin: float = 10
    day_start: str = "07:00"
    night_start: str = "22:00"
    desired_total_capacity: float = 10.0
    pv_per_sunny_hour: float = 600
    overflow_max_soc: float = 85
    overflow_max_power: float = 2500
    overflow_duration: float = 15
    overflow_stop_import: float = 100
    all_full_soc: float = 95
    restart_soc: float = 20
    mismatch_power: float = 50
    peak_target: float = 2.5
    peak_follow_month: bool = True
    peak_assist_delay: float = 20
    input_stale_after: float = 60
    passive_countdown: float = 15
    manual_hold: float = 30

    @property
    def day_start_time(self) -> time:
        return parse_time(self.day_start)

    @property
    def night_start_time(self) -> time:
        return parse_time(self.night_start)

    def with_values(self, values: dict[str, Any]) -> Settings:
        """A copy with some values replaced, each checked against its parameter."""
        checked = {key: check(key, value) for key, value in values.items()}
        return Settings(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **checked})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def check(key: str, value: Any) -> Any:
    """The value, converted to the parameter's type; ValueError with what is allowed otherwise."""
    parameter = BY_KEY.get(key)
    if parameter is None:
        raise ValueError(f"unknown optimiser parameter {key!r}")
    if parameter.kind == "switch":
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        return value
    if parameter.kind == "select":
        if value not in parameter.choices:
            raise ValueError(f"{key} must be one of {', '.join(parameter.choices)}")
        return str(value)
    if parameter.kind == "time":
        try:
            parse_time(str(value))
        except ValueError:
            raise ValueError(f"{key} must be a time HH:MM") from None
        text = str(value)
        return f"{int(text.split(':')[0]):02d}:{int(text.split(':')[1]):02d}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    assert parameter.minimum is not None
    assert parameter.maximum is not None
    if not parameter.minimum <= value <= parameter.maximum:
        raise ValueError(
            f"{key} must be between {parameter.minimum:g} and {parameter.maximum:g} {parameter.unit or ''}"
        )
    return float(value)
