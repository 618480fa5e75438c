"""The site's energy meters for Home Assistant's Energy dashboard: grid import and export, battery charge
and discharge, in kWh, only ever increasing.

Each meter adds up increments: a device's own lifetime counter where it has one (the battery's AC energy
in and out, its CT meter's import and export), the power integrated over time otherwise. Counting
increments rather than summing counters keeps a meter from falling when a battery goes offline, and the
totals and the last counter readings are kept under /data so a restart neither loses nor repeats energy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..devices.marstek.decode import BatterySnapshot

_LOG = logging.getLogger(__name__)
MAX_GAP_S = 120.0  # power readings further apart than this are not integrated: nobody knows what flowed
_GRID = "grid:"  # the grid meter's counter baselines: "grid:<meter>:import" (once the fixed "grid:import")


@dataclass(frozen=True)
class EnergyMeter:
    key: str
    name: str
    icon: str


GRID_IMPORT = EnergyMeter("grid_import_energy", "Grid energy imported", "mdi:transmission-tower-import")
GRID_EXPORT = EnergyMeter("grid_export_energy", "Grid energy exported", "mdi:transmission-tower-export")
BATTERY_CHARGE = EnergyMeter("battery_charge_energy", "Battery energy charged", "mdi:battery-arrow-up")
BATTERY_DISCHARGE = EnergyMeter(
    "battery_discharge_energy", "Battery energy discharged", "mdi:battery-arrow-down"
)
METERS = (GRID_IMPORT, GRID_EXPORT, BATTERY_CHARGE, BATTERY_DISCHARGE)


@dataclass
class BatterySource:
    """One battery, as the energy meters read it."""

    key: str  # stable across restarts: the counters' baselines are kept under it
    snapshot: Callable[[], BatterySnapshot]
    online: Callable[[], bool]


@dataclass(frozen=True)
class CounterMeter:
    """A grid meter with lifetime counters of its own (a battery's CT)."""

    # Stable across restarts and different for every meter: the counters' baselines are kept under it, and
    # one meter's counter reading means nothing against another's.
    key: str
    counters: Callable[[], tuple[float | None, float | None]]  # kWh (import, export); None: not read


class SiteEnergy:
    """`update(t)` on every site tick (t: seconds on the add-on's clock); `totals()` for the state."""

    def __init__(
        self,
        store: dict[str, Any],
        batteries: list[BatterySource],
        grid_power: Callable[[], float | None],
        grid_meter: CounterMeter | None = None,
        hold_back: bool = False,
    ) -> None:
        self.store = store
        self.batteries = batteries
        self.grid_power = grid_power  # W, + = import; None when there is no fresh reading
        self.grid_meter = grid_meter  # None: the grid meter gives power readings only
        totals = _numbers(store.get("totals"), "totals")
        self.kwh: dict[str, float] = {m.key: totals.get(m.key, 0.0) for m in METERS}
        self.baselines: dict[str, float] = _numbers(store.get("baselines"), "counter readings")
        # Another meter's grid readings (or ones from before power readings counted the grid) are no baseline
        # for this meter: what they left out was counted elsewhere, or by another meter's counter.
        own = {self._grid_key(grid_meter, way) for way in ("import", "export")} if grid_meter else set()
        stale = [key for key in self.baselines if key.startswith(_GRID) and key not in own]
        for key in stale:
            del self.baselines[key]
        if stale:
            _LOG.info("energy meters: the grid meter changed; its counters start from their next reading")
            store["baselines"] = dict(self.baselines)
        self._last: dict[str, tuple[float, float]] = {}  # power source -> (t, W) of its last reading
        self.hold_back = hold_back
        self._shown = self.counted()

    def counted(self) -> dict[str, float]:
        """The totals counted so far, as they go to the store."""
        return {key: round(value, 3) for key, value in self.kwh.items()}

    def totals(self) -> dict[str, float]:
        """The meters as Home Assistant is shown them. With `hold_back`, the totals last `kept()` on disk:
        after a crash the meters go on from what was saved, and a total_increasing sensor must never fall
        below what it showed."""
        return dict(self._shown) if self.hold_back else self.counted()

    def kept(self, totals: Mapping[str, float]) -> None:
        """`totals` (from `counted()`) reached the disk: they may be shown."""
        self._shown = {key: max(shown, totals.get(key, shown)) for key, shown in self._shown.items()}

    def update(self, t: float) -> None:
        for battery in self.batteries:
            if not battery.online():
                self._last.pop(battery.key, None)
                continue
            snapshot = battery.snapshot()
            counted_in = self._counter(
                f"{battery.key}:in", snapshot.number("ac_input_energy"), BATTERY_CHARGE
            )
            counted_out = self._counter(
                f"{battery.key}:out", snapshot.number("ac_output_energy"), BATTERY_DISCHARGE
            )
            if not (counted_in and counted_out):
                # + = discharge, the add-on's sign everywhere
                self._integrate(battery.key, t, snapshot.ac_power, BATTERY_DISCHARGE, BATTERY_CHARGE)
        counted_import = counted_export = False
        if (meter := self.grid_meter) is not None:
            imported, exported = meter.counters()
            counted_import = self._counter(self._grid_key(meter, "import"), imported, GRID_IMPORT)
            counted_export = self._counter(self._grid_key(meter, "export"), exported, GRID_EXPORT)
        if not (counted_import and counted_export):
            self._integrate("grid", t, self.grid_power(), GRID_IMPORT, GRID_EXPORT)
        self.store["totals"] = self.counted()
        self.store["baselines"] = dict(self.baselines)

    @staticmethod
    def _grid_key(meter: CounterMeter, direction: str) -> str:
        return f"{_GRID}{meter.key}:{direction}"

    def _counter(self, key: str, value: float | None, meter: EnergyMeter) -> bool:
        """Adds what a device counter rose since the last reading; False when there is no counter."""
        if value is None:
            return False
        before = self.baselines.get(key)
        self.baselines[key] = value
        if before is not None and value > before:
            self.kwh[meter.key] += value - before
        return True  # a counter that fell (replaced device, reset) gives a new baseline, never a negative

    def _integrate(
        self, key: str, t: float, power: float | None, positive: EnergyMeter, negative: EnergyMeter
    ) -> None:
        if power is None:
            self._last.pop(key, None)
            return
        last = self._last.get(key)
        self._last[key] = (t, power)
        if last is None or not 0 < t - last[0] <= MAX_GAP_S:
            return
        # A reading holds until the next one (a left Riemann sum, as Home Assistant's own integration does).
        meter = positive if last[1] > 0 else negative
        self.kwh[meter.key] += abs(last[1]) * (t - last[0]) / 3600 / 1000


def _numbers(saved: object, what: str) -> dict[str, float]:
    """The stored totals or counter readings: a value that is not a number is dropped with a warning (its
    meter counts on from 0, or takes its next reading as a new baseline), not a reason to fail the start."""
    if saved is None:
        return {}
    if not isinstance(saved, dict):
        _LOG.warning(
            "energy meters: the %s kept in state.json are not an object (%r); starting them anew", what, saved
        )
        return {}
    numbers: dict[str, float] = {}
    for key, value in saved.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            numbers[key] = float(value)
        else:
            _LOG.warning("energy meters: %s %s in state.json is not a number (%r); dropped", what, key, value)
    return numbers
