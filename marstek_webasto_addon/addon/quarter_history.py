"""The site's recent weeks in clock quarter-hours, for the planner's load and PV forecasts.

Per quarter the mean power (kW) of the house load (without the car), the PV and the wallbox, from readings
taken every control interval. Six weeks are kept (what the load learner looks at), in the add-on's state
under /data, so an update or a restart does not make it start learning again. A quarter nobody saw (the
add-on was stopped, the meter was silent) stays unknown (NaN) and the learner leaves it out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

_LOG = logging.getLogger(__name__)
SERIES = ("house", "pv", "wallbox")
QUARTER_S = 900
WEEKS = 6
KEPT = WEEKS * 7 * 96
MIN_COVERAGE = 0.5  # a quarter counts when readings cover at least half of it
DST_QUARTERS = 4  # the autumn's repeated hour: quarters that come round again, not a clock gone wrong
CUT_AFTER_QUARTERS = 4  # a clock set back holds this long before what was recorded ahead of it is dropped
MAX_CUT_QUARTERS = 7 * 96  # and never more than a week of history is dropped for it

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
        self._pending: list[tuple[int, dict[str, float]]] = []  # closed quarters behind `last`, held back
        self._told_behind = False
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
            if self.last - quarter <= DST_QUARTERS:
                return  # the clock went back (DST's repeated hour, a small fix): keep what is there
            self._behind(quarter, means)
            return
        self._pending = []  # past `last` again: the stretch behind it was the wrong clock
        self._extend(quarter, means)

    def _extend(self, quarter: int, means: Mapping[str, float]) -> None:
        gap = 0 if self.last is None else min(quarter - self.last - 1, KEPT)
        for key in SERIES:
            series = self.values[key]
            series.extend([math.nan] * gap)
            series.append(means.get(key, math.nan))
            del series[:-KEPT]
        self.last = quarter

    def _behind(self, quarter: int, means: Mapping[str, float]) -> None:
        """A quarter well before the last one recorded: either the clock was ahead and has been fixed (the
        quarters recorded ahead must go, or the learning stops until the clock catches up with them), or the
        clock is behind now (a board without a clock, booted before NTP). Held back until the earlier clock
        has held for CUT_AFTER_QUARTERS, and never cutting more than MAX_CUT_QUARTERS: a wrong clock for a
        few minutes must not wipe six weeks of history."""
        assert self.last is not None
        self._pending.append((quarter, dict(means)))
        first = self._pending[0][0]
        if quarter - first < CUT_AFTER_QUARTERS:
            return
        ahead = self.last - first + 1
        if ahead > MAX_CUT_QUARTERS:
            if not self._told_behind:
                self._told_behind = True
                _LOG.warning(
                    "planner history: the clock is %.1f days behind the last quarter-hour recorded; nothing "
                    "is learned until it catches up (check the system clock)",
                    ahead / 96,
                )
            self._pending = []
            return
        _LOG.warning(
            "planner history: the last %d quarter-hours were recorded while the clock was %.1f h ahead; "
            "dropped",
            ahead,
            ahead / 4,
        )
        for series in self.values.values():
            del series[max(0, len(series) - ahead) :]
        self.last = first - 1
        pending, self._pending = self._pending, []
        for held, held_means in pending:
            self._extend(held, held_means)

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
        """The history kept in state.json. A damaged value costs its quarter (unknown from then on), not the
        six weeks around it; what was dropped is logged."""
        history = cls()
        if saved is None:
            return history  # nothing learned yet
        last = saved.get("last") if isinstance(saved, dict) else None
        watts = saved.get("watts") if isinstance(saved, dict) else None
        if (
            not isinstance(saved, dict)
            or (last is not None and not _is_int(last))
            or not isinstance(watts, dict)
        ):
            _LOG.warning("planner history in state.json is damaged (%.60r); learning starts again", saved)
            return history
        if last is None:
            return history
        values: dict[str, list[float]] = {}
        dropped: dict[str, int] = {}
        for key in SERIES:
            series = watts.get(key, [])
            if not isinstance(series, list):
                _LOG.warning("planner history in state.json: the %s series is not a list; dropped", key)
                series = []
            kept = series[-KEPT:]
            values[key] = [_kw(v) for v in kept]
            bad = sum(v is not None and math.isnan(kw) for v, kw in zip(kept, values[key], strict=True))
            if bad:
                dropped[key] = bad
        if dropped:
            counts = ", ".join(f"{key}: {count}" for key, count in dropped.items())
            _LOG.warning(
                "planner history in state.json: dropped quarter-hour values that are not numbers (%s); "
                "those quarters count as unknown",
                counts,
            )
        length = max(len(v) for v in values.values())
        history.values = {key: [math.nan] * (length - len(v)) + v for key, v in values.items()}
        history.last = last
        return history


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kw(value: object) -> float:
    """A stored quarter's mean in W as kW; NaN (unknown) for null and for anything that is not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value) / 1000
    return math.nan
