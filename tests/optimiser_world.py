"""A tiny, controllable world for optimiser tests: a clock, batteries that obey, and a meter."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from marstek_webasto_addon.optimiser.engine import Optimiser
from marstek_webasto_addon.optimiser.model import BatteryView, Command, Inputs, Role, StepResult
from marstek_webasto_addon.optimiser.planner import PlanStep
from marstek_webasto_addon.optimiser.settings import Settings
from marstek_webasto_addon.optimiser.tariff import DEFAULT_TARIFF, Tariff


def battery(
    name: str,
    soc: float,
    *,
    power: float = 0.0,
    mode: str | None = "Auto",
    capacity: float = 5120,
    online: bool = True,
) -> BatteryView:
    return BatteryView(
        id=name.lower(), name=name, online=online, soc=soc, capacity_wh=capacity, ac_power=power, mode=mode
    )


@dataclass
class World:
    """Feeds the optimiser and applies its commands to the battery views (mode and power follow at once,
    unless `obey` is False), so scenarios read like the seed's descriptions."""

    batteries: list[BatteryView]
    grid: float = 0.0
    now: datetime = datetime(2026, 6, 3, 12, 0)  # a Wednesday noon: day mode, peak period
    t: float = 1000.0
    settings: Settings = field(default_factory=lambda: Settings(enabled=True, method="rules"))
    tariff: Tariff = DEFAULT_TARIFF
    obey: bool = True
    pv_forecast_kwh: float | None = 0.0
    pv_forecast_day: date | None = None  # None: the forecast is for tomorrow
    grid_age: float | None = 0.0
    log: list[Command] = field(default_factory=list)
    plan_step: PlanStep | None = None  # the planner strategy's running step
    wallbox: float | None = None  # W

    def __post_init__(self) -> None:
        self.engine = Optimiser(self.settings, self.tariff)

    def step(self, seconds: float = 10.0) -> StepResult:
        self.t += seconds
        self.now += timedelta(seconds=seconds)
        inputs = Inputs(
            self.t,
            self.now,
            self.grid,
            self.grid_age,
            tuple(self.batteries),
            self.pv_forecast_kwh,
            pv_forecast_day=self.pv_forecast_day,
            wallbox_power=self.wallbox,
            plan_step=self.plan_step,
            plan_problem="" if self.plan_step else "no plan in this test",
        )
        result = self.engine.step(inputs)
        self.log.extend(result.commands)
        if self.obey:
            for command in result.commands:
                self.apply(command)
        return result

    def run(self, seconds: float, every: float = 10.0) -> list[StepResult]:
        return [self.step(every) for _ in range(int(seconds / every))]

    def apply(self, command: Command) -> None:
        for index, view in enumerate(self.batteries):
            if view.id == command.battery_id and command.role is not None:
                mode = "Auto" if command.role is Role.AUTO else "Passive"
                power = view.ac_power if command.role is Role.AUTO else float(command.power_w)
                self.batteries[index] = replace(view, mode=mode, ac_power=power)

    def set(self, name: str, **changes: object) -> None:
        index = next(i for i, b in enumerate(self.batteries) if b.name == name)
        self.batteries[index] = replace(self.batteries[index], **changes)  # type: ignore[arg-type]

    def in_auto(self) -> list[str]:
        return [b.name for b in self.batteries if b.mode == "Auto"]
