"""The optimiser as a Home Assistant device: every parameter an entity, its status as sensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from .. import __version__
from ..devices.outcome import WriteOutcome, WriteStatus
from ..optimiser.model import Decision, NightPlan, Status
from ..optimiser.planner import Action
from ..optimiser.settings import PARAMETERS, Parameter, Settings
from .devices import BridgedDevice
from .exposes import Component, Expose

CONFIG, DIAG = "config", "diagnostic"
CLOCK_PATTERN = r"([01][0-9]|2[0-3]):[0-5][0-9]"


class OptimiserPort(Protocol):
    """What the device needs from the running optimiser (the controller provides it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def status(self) -> Status | None: ...

    @property
    def decisions(self) -> Sequence[Decision]: ...

    def grid(self) -> tuple[float | None, float | None, str]: ...  # value W, age s, source

    def pv_forecast_kwh(self) -> float | None: ...

    def pv_forecast_detail(self) -> dict[str, Any]: ...  # source, problem and how the figure was made

    def change_setting(self, key: str, value: Any) -> str | None: ...  # None, or why it was refused

    def tariff_periods(self) -> tuple[str, ...]: ...

    def plan_summary(self) -> PlanSummaryLike | None: ...  # None: no plan (rules, or none made yet)

    def month_money(self) -> MonthMoneyLike | None: ...  # None: nothing measured this month yet


class MonthMoneyLike(Protocol):
    @property
    def capacity_eur(self) -> float: ...
    @property
    def saving_eur(self) -> float: ...


class PlanSummaryLike(Protocol):
    @property
    def action(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def next_change(self) -> str: ...
    @property
    def next_change_at(self) -> datetime | None: ...
    @property
    def cost_today_eur(self) -> float: ...
    @property
    def cost_tomorrow_eur(self) -> float | None: ...
    @property
    def saving_today_eur(self) -> float: ...
    @property
    def month_peak_target_kw(self) -> float | None: ...


def _parameter_expose(p: Parameter) -> Expose:
    category = None if p.key == "enabled" else CONFIG
    if p.kind == "switch":
        return Expose(
            p.key, p.name, Component.SWITCH, entity_category=category, icon=p.icon, featured=p.featured
        )
    if p.kind == "select":
        return Expose(
            p.key,
            p.name,
            Component.SELECT,
            entity_category=category,
            icon=p.icon,
            options=p.choices,
            featured=p.featured,
        )
    if p.kind == "time":
        return Expose(
            p.key, p.name, Component.TEXT, entity_category=category, icon=p.icon, pattern=CLOCK_PATTERN
        )
    device_class = {"W": "power", "kW": "power", "min": "duration", "s": "duration", "kWh": "energy"}.get(
        p.unit or ""
    )
    if device_class == "energy":
        device_class = None  # a number entity with class energy is fine, but the unit says enough
    return Expose(
        p.key,
        p.name,
        Component.NUMBER,
        p.unit,
        device_class,
        entity_category=category,
        icon=p.icon,
        minimum=p.minimum,
        maximum=p.maximum,
        step=p.step,
        featured=p.featured,
    )


STATUS_EXPOSES = (
    Expose("strategy", "Strategy", Component.SENSOR, icon="mdi:strategy"),
    Expose("active_battery", "Active battery", Component.SENSOR, icon="mdi:battery-sync"),
    Expose("next_action", "Next action", Component.SENSOR, icon="mdi:calendar-clock"),
    Expose(
        "last_decision", "Last decision", Component.SENSOR, icon="mdi:comment-text-outline", attributes=True
    ),
    Expose("tariff_period", "Tariff period", Component.SENSOR, icon="mdi:cash-clock"),
    Expose("grid_power", "Grid power", Component.SENSOR, "W", "power", "measurement", precision=0),
    Expose(
        "quarter_average", "Quarter-hour average", Component.SENSOR, "kW", "power", "measurement", precision=2
    ),
    Expose("month_peak", "Month peak", Component.SENSOR, "kW", "power", "measurement", precision=2),
    Expose("peak_target_in_force", "Peak target in force", Component.SENSOR, "kW", "power", precision=2),
    Expose(
        "pv_forecast_tomorrow",
        "PV forecast tomorrow",
        Component.SENSOR,
        "kWh",
        precision=1,
        icon="mdi:solar-power",
        attributes=True,
    ),
    Expose("night_plan", "Night plan", Component.SENSOR, icon="mdi:weather-night", attributes=True),
    Expose(
        "input_stale", "Grid input stale", Component.BINARY_SENSOR, device_class="problem", attributes=True
    ),
    # the planner's plan (unknown while the rules are in force)
    Expose(
        "plan_action",
        "Planned action",
        Component.SENSOR,
        device_class="enum",
        options=tuple(a.value for a in Action),
        icon="mdi:timeline-clock-outline",
        attributes=True,
    ),
    Expose("plan_next_change", "Plan: next change", Component.SENSOR, icon="mdi:calendar-arrow-right"),
    Expose("plan_next_change_at", "Plan: next change at", Component.SENSOR, device_class="timestamp"),
    Expose("plan_cost_today", "Expected cost today", Component.SENSOR, "EUR", "monetary", precision=2),
    Expose("plan_cost_tomorrow", "Expected cost tomorrow", Component.SENSOR, "EUR", "monetary", precision=2),
    Expose("plan_saving_today", "Saving today", Component.SENSOR, "EUR", "monetary", precision=2),
    Expose("plan_peak_target", "Planned month peak", Component.SENSOR, "kW", "power", precision=2),
    # this month so far, whatever the method: the capacity tariff's share and the saving against no battery
    Expose(
        "month_capacity_cost", "Capacity cost this month", Component.SENSOR, "EUR", "monetary", precision=2
    ),
    Expose("month_saving", "Saving this month", Component.SENSOR, "EUR", "monetary", precision=2),
    Expose(
        "mode_mismatch",
        "Battery mode mismatch",
        Component.BINARY_SENSOR,
        device_class="problem",
        attributes=True,
    ),
)


class OptimiserDevice(BridgedDevice):
    kind = "optimiser"

    def __init__(self, port: OptimiserPort) -> None:
        super().__init__()
        self.port = port
        self.name = "Energy optimiser"

    @property
    def device_id(self) -> str:
        return "optimiser"

    def device_info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "manufacturer": "marstek_webasto_addon",
            "model": "Optimiser v1",
            "sw_version": __version__,
        }

    def exposes(self) -> list[Expose]:
        # The tariff's periods are known: an enum, so automations and the dashboard see fixed states.
        periods = self.port.tariff_periods()
        status = [
            replace(e, device_class="enum", options=periods) if e.key == "tariff_period" else e
            for e in STATUS_EXPOSES
        ]
        return [*(_parameter_expose(p) for p in PARAMETERS), *status, self.common_exposes()[0]]

    def values(self) -> Mapping[str, Any]:
        status = self.port.status
        grid, _, _ = self.port.grid()
        values: dict[str, Any] = dict(self.port.settings.as_dict())
        decisions = self.port.decisions
        values.update(
            {
                "grid_power": grid,
                "pv_forecast_tomorrow": self.port.pv_forecast_kwh(),
                "last_decision": decisions[-1].text[:250] if decisions else None,
            }
        )
        money = self.port.month_money()
        values["month_capacity_cost"] = money.capacity_eur if money else None
        values["month_saving"] = money.saving_eur if money else None
        plan = self.port.plan_summary()
        values.update(
            {
                "plan_action": plan.action if plan else None,
                "plan_next_change": (plan.next_change or "none") if plan else None,
                "plan_next_change_at": plan.next_change_at.astimezone().isoformat()
                if plan and plan.next_change_at
                else None,
                "plan_cost_today": plan.cost_today_eur if plan else None,
                "plan_cost_tomorrow": plan.cost_tomorrow_eur if plan else None,
                "plan_saving_today": plan.saving_today_eur if plan else None,
                "plan_peak_target": plan.month_peak_target_kw if plan else None,
            }
        )
        if status is not None:
            values.update(
                {
                    "strategy": status.strategy,
                    "active_battery": status.active_battery,
                    "next_action": status.next_action or "none",
                    "tariff_period": status.tariff_period,
                    "quarter_average": status.quarter_average_kw,
                    "month_peak": status.month_peak_kw,
                    "peak_target_in_force": status.peak_target_kw,
                    "night_plan": _plan_summary(status.night_plan),
                    "input_stale": status.stale_input,
                    "mode_mismatch": bool(status.mismatch),
                }
            )
        return values

    def attributes(self) -> dict[str, dict[str, Any]]:
        status = self.port.status
        _, age, source = self.port.grid()
        plan = status.night_plan if status else None
        return {
            "last_command": super().attributes().get("last_command", {}),
            "last_decision": {
                "decisions": [
                    {"at": d.at.isoformat(timespec="seconds"), "text": d.text}
                    for d in list(self.port.decisions)[-10:]
                ]
            },
            "night_plan": {}
            if plan is None
            else {
                "night_of": plan.night_of,
                "deficit_kwh": round(plan.deficit_wh / 1000, 2),
                "expected_pv_kwh": round(plan.expected_pv_wh / 1000, 2),
                "period": plan.period,
                "energy_kwh": {k: round(v / 1000, 2) for k, v in plan.energy_wh.items()},
                "power_w": plan.power_w,
                "windows": [f"{a:%H:%M}-{b:%H:%M}" for a, b in plan.windows],
            },
            "input_stale": {
                "source": source,
                "age_s": None if age is None else round(age, 1),
                "limit_s": self.port.settings.input_stale_after,
                "hold": status.hold if status else "",
            },
            "mode_mismatch": {"detail": status.mismatch if status else ""},
            "plan_action": {"reason": plan_now.reason} if (plan_now := self.port.plan_summary()) else {},
            "pv_forecast_tomorrow": self.port.pv_forecast_detail(),
        }

    async def execute(self, key: str, value: Any, source: str = "mqtt") -> WriteOutcome:
        refused = self.port.change_setting(key, value)
        if refused:
            return WriteOutcome(WriteStatus.REJECTED, f"{key} = {value}", 1, refused)
        return WriteOutcome(WriteStatus.APPLIED, f"{key} = {value}", 1, "in force from the next step; stored")

    def state(self) -> dict[str, Any]:
        state = super().state()
        state.pop("connection", None)
        return state


def _plan_summary(plan: NightPlan | None) -> str:
    if plan is None:
        return "none"
    if not plan.energy_wh:
        return "no charging needed"
    start = plan.windows[0][0] if plan.windows else None
    return f"{sum(plan.energy_wh.values()) / 1000:.1f} kWh" + (f" from {start:%H:%M}" if start else "")
