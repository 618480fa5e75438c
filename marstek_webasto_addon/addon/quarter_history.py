"""The site's recent weeks in clock quarter-hours, for the planner's load and PV forecasts.

Per quarter the mean power (kW) of the house load (without the car), the PV and the wallbox, from readings
taken every control interval. Six weeks are kept (what the load learner looks at), in the add-on's state
under /data, so an update or a restart does not make it start learning again. A quarter nobody saw (the
add-on was stopped, the meter was silent) stays unknown (NaN) and the learner leaves it out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

SERIES = ("house", "pv", "wallbox")
QUARTER_S = 900
WEEKS = 6
KEPT = WEEKS * 7 * 96
MIN_COVERAGE = 0.5  # a quarter counts when readings cover at least half of it

FloatArray = npt.NDArray[np.float64]


def quarter_index(at: datetime) -> int:
    """The clock quarter of a local wall-clock time, counted on its own calendar (DST needs no special case:
    a quarter-hour of the wall clock is what the learner compares from day to day)."""
    days = at.toordinal()
    return days * 96 + at.hour * 4 + at.minute // 15


class QuarterHistory:
    def __init__(self) -> None:
        self.last: int | None = None  # the last closed quarter
        self.values: dict[str, list[float]] = {key: [] for key in SERIES}  # ends with `last`
        self._quarter: int | None = None  # the running quarter
        self._sums: dict[str, float] = {}
        self._seconds: dict[str, float] = {}

    # recording ---------------------------------------------------------------------------------------

    def observe(self, at: datetime, seconds: float, watts: Mapping[str, float | None]) -> None:
        """Readings (W) that held for the `seconds` before `at`."""
        quarter = quarter_index(at)
        if self._quarter is not None and quarter != self._quarter:
            self._close()
        self._quarter = quarter
        seconds = min(max(0.0, seconds), QUARTER_S)
        for key in SERIES:
            value = watts.get(key)
            if value is None or not math.isfinite(value) or seconds <= 0:
                continue
            self._sums[key] = self._sums.get(key, 0.0) + value * seconds
            self._seconds[key] = self._seconds.get(key, 0.0) + seconds

    def _close(self) -> None:
        assert self._quarter is not None
        means = {
            key: self._sums[key] / self._seconds[key] / 1000
            if self._seconds.get(key, 0.0) >= MIN_COVERAGE * QUARTER_S
            else math.nan
            for key in SERIES
        }
        self._append(self._quarter, means)  # quarters skipped since are filled with NaN by the next one
        self._sums, self._seconds = {}, {}

    def _append(self, quarter: int, means: Mapping[str, float]) -> None:
        if self.last is not None and quarter <= self.last:
            return  # the clock went back (DST's repeated hour, a clock fix): keep what is there
        gap = 0 if self.last is None else min(quarter - self.last - 1, KEPT)
        for key in SERIES:
            series = self.values[key]
            series.extend([math.nan] * gap)
            series.append(means.get(key, math.nan))
            del series[:-KEPT]
        self.last = quarter

    # reading -----------------------------------------------------------------------------------------

    def series(self, key: str, until: datetime) -> FloatArray:
        """The quarters up to the one before `until`'s (NaN where unknown), for the learner."""
        values = np.asarray(self.values[key], dtype=np.float64)
        if self.last is None:
            return values
        missing = min(max(0, quarter_index(until) - 1 - self.last), KEPT)
        padded = np.concatenate([values, np.full(missing, math.nan)])
        return padded[-KEPT:]

    def known_quarters(self, key: str) -> int:
        return int(np.sum(~np.isnan(np.asarray(self.values[key], dtype=np.float64))))

    # the state under /data ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "last": self.last,
            # JSON has no NaN: null stands for an unknown quarter; watts as integers keep the file small
            "watts": {
                key: [None if math.isnan(v) else round(v * 1000) for v in values]
                for key, values in self.values.items()
            },
        }

    @classmethod
    def restored(cls, saved: object) -> QuarterHistory:
        history = cls()
        if not isinstance(saved, dict) or not isinstance(saved.get("last"), int):
            return history
        watts = saved.get("watts")
        if not isinstance(watts, dict):
            return history
        try:
            values = {
                key: [math.nan if v is None else float(v) / 1000 for v in watts.get(key, [])][-KEPT:]
                for key in SERIES
            }
        except (TypeError, ValueError):
            return history  # a damaged file costs the history, not the start
        length = max(len(v) for v in values.values())
        history.values = {key: [math.nan] * (length - len(v)) + v for key, v in values.items()}
        history.last = saved["last"]
        return history
