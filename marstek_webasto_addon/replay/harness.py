"""Run the optimiser, and the baselines, over a household year against simulated Venus batteries.

The batteries are the simulator's own (physics and EMS: Auto regulation, Passive with countdown, schedules),
commanded through their JSON-RPC handler exactly as on the wire. Every minute: the engine sees the meter and
the batteries, its commands are applied, the batteries step, and the grid flow is billed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..devices.marstek.simulator.device import SimulatedBattery, ticking_order
from ..devices.marstek.simulator.physics import BatteryPhysics, PhaseTriple, Site
from ..devices.marstek.simulator.profiles import PROFILES
from ..optimiser.engine import Optimiser
from ..optimiser.model import BatteryView, Command, Inputs, Role
from ..optimiser.settings import Settings
from ..optimiser.tariff import CapacityTracker, Tariff
from .data import QUARTERS, HouseholdYear

SCENARIOS = ("optimiser", "no_battery", "auto_one", "auto_all")
SETTLE_S = 5


class DataHousehold:
    """The simulator's Household interface, fed from a data year (the meter sums the phases)."""

    def __init__(self, year: HouseholdYear, pv_kwp: float) -> None:
        self.year = year
        self.pv_kwp = pv_kwp
        self.quarter = 0

    def load_w(self, at: datetime) -> PhaseTriple:
        third = self.year.load_w[self.quarter] / 3
        return (third, third, third)

    def pv_w(self, at: datetime) -> PhaseTriple:
        third = self.year.pv_w[self.quarter] / 3
        return (third, third, third)


@dataclass
class Trace:
    """Minute samples for the plot."""

    at: list[datetime] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    pv: list[float] = field(default_factory=list)
    grid: list[float] = field(default_factory=list)
    battery_power: dict[str, list[float]] = field(default_factory=dict)
    soc: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Totals:
    import_wh: float = 0.0
    export_wh: float = 0.0
    energy_cost: float = 0.0
    load_wh: float = 0.0
    pv_wh: float = 0.0
    switches: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (battery, hour)
    two_in_auto_minutes: int = 0
    limit_violations: int = 0
    soc_violations: int = 0
    decisions: int = 0


@dataclass(frozen=True)
class ReplaySetup:
    batteries: int = 3
    profile: str = "venus_e3_v150"
    start_soc: float = 50.0
    step_s: int = 60
    settings: Settings = field(default_factory=lambda: Settings(enabled=True))


def _config(command: Command) -> dict[str, Any]:
    if command.role is Role.AUTO:
        return {"mode": "Auto", "auto_cfg": {"enable": 1}}
    return {"mode": "Passive", "passive_cfg": {"power": command.power_w, "cd_time": command.duration_s}}


def _send(battery: SimulatedBattery, config: dict[str, Any], now_s: float) -> None:
    request = {"id": 1, "method": "ES.SetMode", "params": {"id": 0, "config": config}}
    battery.handle(json.dumps(request).encode(), ("127.0.0.1", 1), now_s)


def _execute(battery: SimulatedBattery, command: Command, now_s: float) -> None:
    if command.clear_schedules:
        before = battery.mode
        for slot in range(10):
            config = {
                "mode": "Manual",
                "manual_cfg": {
                    "time_num": slot,
                    "start_time": "00:00",
                    "end_time": "00:00",
                    "week_set": 0,
                    "power": 0,
                    "enable": 0,
                },
            }
            _send(battery, config, now_s)
        # As the controller does: clearing must not leave the battery idle, so its role goes out again.
        if before in ("Auto", "AI"):
            _send(battery, {"mode": before, f"{before.lower()}_cfg": {"enable": 1}}, now_s)
        elif before == "Passive" and battery.passive_until > now_s:
            left = int(battery.passive_until - now_s)
            _send(
                battery,
                {"mode": "Passive", "passive_cfg": {"power": battery.passive_power, "cd_time": left}},
                now_s,
            )
        return
    _send(battery, _config(command), now_s)


def _view(battery: SimulatedBattery, index: int) -> BatteryView:
    p = battery.physics
    return BatteryView(
        id=battery.ble_mac,
        name=f"B{index + 1}",
        online=True,
        soc=float(round(p.soc)),
        capacity_wh=p.capacity_wh,
        soc_floor=p.soc_floor,
        max_charge_w=int(p.max_charge_w),
        max_discharge_w=int(p.max_discharge_w),
        ac_power=p.ac_power,
        mode=battery.mode,
    )


def run(
    scenario: str,
    year: HouseholdYear,
    tariff: Tariff,
    *,
    start_quarter: int = 0,
    quarters: int = QUARTERS,
    setup: ReplaySetup | None = None,
    trace_quarters: range | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Replay one scenario; returns its figures (and a trace when asked)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    setup = setup or ReplaySetup()
    profile = PROFILES[setup.profile]
    count = {"no_battery": 0, "auto_one": 1}.get(scenario, setup.batteries)
    household = DataHousehold(year, year.kwp)
    site = Site(household)  # type: ignore[arg-type]
    batteries = [
        SimulatedBattery(
            profile,
            BatteryPhysics(
                profile.capacity_wh, profile.max_charge_w, profile.max_discharge_w, soc=setup.start_soc
            ),
            site,
            ble_mac=f"{0xA00000000000 + i:012x}",
            ip=f"10.0.0.{i + 1}",
            phase=i,
        )
        for i in range(count)
    ]
    engine = Optimiser(setup.settings, tariff) if scenario == "optimiser" else None
    daily_pv_kwh = _daily_pv(year)
    billing = CapacityTracker()
    totals = Totals()
    trace = Trace(battery_power={b.ble_mac: [] for b in batteries}, soc={b.ble_mac: [] for b in batteries})
    steps_per_quarter = 900 // setup.step_s
    t = 0.0
    last_modes = {b.ble_mac: b.mode for b in batteries}
    first_local = year.local_time(start_quarter)
    for quarter in range(start_quarter, min(QUARTERS, start_quarter + quarters)):
        household.quarter = quarter
        base = year.local_time(quarter)
        for step in range(steps_per_quarter):
            now = base.replace(minute=base.minute + step * setup.step_s // 60)
            site.update(now)
            # The meter is read a few seconds after the load changed, once Auto has reacted (as a P1 reading
            # every few seconds would show it); the rest of the minute follows the engine's commands.
            _advance(batteries, SETTLE_S, t, now, totals, billing, site, tariff, last_modes)
            t += SETTLE_S
            if engine is not None:
                result = engine.step(
                    Inputs(
                        t=t,
                        now=now,
                        grid_power=site.total_power(),
                        grid_age=0.0,
                        batteries=tuple(_view(b, i) for i, b in enumerate(batteries)),
                        pv_forecast_tomorrow_kwh=daily_pv_kwh.get((now.date().toordinal() + 1), 0.0),
                    )
                )
                by_id = {b.ble_mac: b for b in batteries}
                for command in result.commands:
                    _execute(by_id[command.battery_id], command, t)
                totals.decisions += len(result.decisions)
            _advance(batteries, setup.step_s - SETTLE_S, t, now, totals, billing, site, tariff, last_modes)
            t += setup.step_s - SETTLE_S
            if trace_quarters is not None and quarter in trace_quarters:
                trace.at.append(now)
                trace.load.append(sum(site.load))
                trace.pv.append(sum(site.pv))
                trace.grid.append(site.total_power())
                for battery in batteries:
                    trace.battery_power[battery.ble_mac].append(battery.physics.ac_power)
                    trace.soc[battery.ble_mac].append(battery.physics.soc)
        if progress is not None:
            progress(1)
    billing.add(
        year.local_time(min(QUARTERS - 1, start_quarter + quarters)), 0.0, 0.0
    )  # closes the last quarter
    return _figures(
        scenario, totals, billing, batteries, tariff, first_local, year, start_quarter, quarters, trace
    )


def _advance(
    batteries: list[SimulatedBattery],
    seconds: int,
    t: float,
    now: datetime,
    totals: Totals,
    billing: CapacityTracker,
    site: Site,
    tariff: Tariff,
    last_modes: dict[str, str],
) -> None:
    for battery in ticking_order(batteries):
        battery.tick(seconds, t, now)
    _account(totals, billing, site, batteries, tariff, now, seconds, last_modes)


def _daily_pv(year: HouseholdYear) -> dict[int, float]:
    days: dict[int, float] = defaultdict(float)
    for quarter, watts in enumerate(year.pv_w):
        days[year.local_time(quarter).date().toordinal()] += watts / 4000
    return days


def _account(
    totals: Totals,
    billing: CapacityTracker,
    site: Site,
    batteries: list[SimulatedBattery],
    tariff: Tariff,
    now: datetime,
    seconds: int,
    last_modes: dict[str, str],
) -> None:
    grid = site.total_power()
    hours = seconds / 3600
    if grid >= 0:
        totals.import_wh += grid * hours
        totals.energy_cost += grid * hours / 1000 * tariff.price_at(now)
    else:
        totals.export_wh -= grid * hours
        totals.energy_cost += grid * hours / 1000 * tariff.injection_price
    totals.load_wh += sum(site.load) * hours
    totals.pv_wh += sum(site.pv) * hours
    billing.add(now, seconds, grid)
    in_auto = 0
    for battery in batteries:
        p = battery.physics
        if abs(p.ac_power) > max(p.max_charge_w, p.max_discharge_w) + 1:
            totals.limit_violations += 1
        if p.soc < p.soc_floor - 1 or p.soc > 100.0:
            totals.soc_violations += 1
        if battery.mode != last_modes[battery.ble_mac]:
            totals.switches[(battery.ble_mac, now.strftime("%Y-%m-%d %H"))] += 1
            last_modes[battery.ble_mac] = battery.mode
        in_auto += battery.mode == "Auto"
    if in_auto > 1:
        totals.two_in_auto_minutes += 1


def _figures(
    scenario: str,
    totals: Totals,
    billing: CapacityTracker,
    batteries: list[SimulatedBattery],
    tariff: Tariff,
    first: datetime,
    year: HouseholdYear,
    start: int,
    quarters: int,
    trace: Trace,
) -> dict[str, Any]:
    covered = _month_fractions(year, start, quarters)
    peaks = {f"{y}-{m:02d}": round(billing.peaks.get((y, m), 0.0), 3) for (y, m) in covered}
    capacity = sum(
        tariff.capacity_price / 12 * max(tariff.capacity_floor_kw, billing.peaks.get(month, 0.0)) * share
        for month, share in covered.items()
    )
    capacity_wh = sum(b.physics.capacity_wh for b in batteries)
    discharged = sum(b.physics.ac_out_wh for b in batteries)
    charged = sum(b.physics.ac_in_wh for b in batteries)
    stored_change = sum((b.physics.soc - 50.0) / 100 * b.physics.capacity_wh for b in batteries)
    pv = totals.pv_wh
    balance = totals.load_wh - pv - discharged + charged - (totals.import_wh - totals.export_wh)
    return {
        "scenario": scenario,
        "bill_eur": round(totals.energy_cost + capacity, 2),
        "energy_cost_eur": round(totals.energy_cost, 2),
        "capacity_cost_eur": round(capacity, 2),
        "import_kwh": round(totals.import_wh / 1000, 1),
        "export_kwh": round(totals.export_wh / 1000, 1),
        "self_consumption": round((pv - totals.export_wh) / pv, 4) if pv else 0.0,
        "mean_monthly_peak_kw": round(sum(peaks.values()) / len(peaks), 3) if peaks else 0.0,
        "monthly_peaks_kw": peaks,
        "battery_cycles": round(discharged / capacity_wh, 1) if capacity_wh else 0.0,
        "max_switches_per_hour": max(totals.switches.values(), default=0),
        "minutes_with_two_in_auto": totals.two_in_auto_minutes,
        "limit_violations": totals.limit_violations,
        "soc_violations": totals.soc_violations,
        "energy_balance_error_kwh": round(balance / 1000, 6),
        "battery_loss_kwh": round((charged - discharged - stored_change) / 1000, 1),
        "load_kwh": round(totals.load_wh / 1000, 1),
        "pv_kwh": round(pv / 1000, 1),
        "decisions": totals.decisions,
        "from": first.isoformat(timespec="minutes"),
        "trace": trace if trace.at else None,
    }


def _month_fractions(year: HouseholdYear, start: int, quarters: int) -> dict[tuple[int, int], float]:
    """How much of each calendar month the replay covers (a partial month pays its share of the tariff)."""
    counts: dict[tuple[int, int], int] = defaultdict(int)
    totals: dict[tuple[int, int], int] = defaultdict(int)
    for quarter in range(QUARTERS):
        local = year.local_time(quarter)
        totals[(local.year, local.month)] += 1
        if start <= quarter < start + quarters:
            counts[(local.year, local.month)] += 1
    return {month: counts[month] / totals[month] for month in counts if counts[month]}


def _isclose(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
