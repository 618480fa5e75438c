"""Tariff periods (peak / off-peak / super-off-peak) and the Flemish capacity tariff.

The capacity tariff bills the highest clock-aligned quarter-hour average offtake of each month, summed over
the phases, with a 2.5 kW floor (reference optimiser.md section 4.1).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from .settings import parse_time

_LOG = logging.getLogger(__name__)

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
QUARTER = timedelta(minutes=15)


def parse_days(text: str) -> frozenset[int]:
    """'mon-fri', 'sat,sun', 'all' -> weekday numbers (Monday = 0)."""
    text = text.strip().lower()
    if text in ("all", "*", "daily"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            first, last = (DAY_NAMES.index(p.strip()[:3]) for p in part.split("-", 1))
            days.update(range(first, last + 1) if first <= last else [*range(first, 7), *range(last + 1)])
        else:
            days.add(DAY_NAMES.index(part[:3]))
    return frozenset(days)


@dataclass(frozen=True)
class PeriodRule:
    period: str
    days: frozenset[int]
    start: time
    end: time  # exclusive; a window may wrap past midnight; 00:00 as the end means midnight

    def covers(self, at: datetime) -> bool:
        clock = at.time()
        if self.start < self.end:
            return at.weekday() in self.days and self.start <= clock < self.end
        # wraps: the part after midnight belongs to the day the window started
        if clock >= self.start:
            return at.weekday() in self.days
        return clock < self.end and (at.weekday() - 1) % 7 in self.days


@dataclass(frozen=True)
class Tariff:
    prices: dict[str, float]  # EUR per kWh of offtake, all-in, per period
    rules: tuple[PeriodRule, ...]  # first match wins
    default_period: str
    injection_price: float = 0.02  # EUR per kWh injected
    capacity_price: float = 52.37  # EUR per kW per year (Fluvius Antwerpen 2026, incl. VAT)
    capacity_floor_kw: float = 2.5

    def period_at(self, at: datetime) -> str:
        for rule in self.rules:
            if rule.covers(at):
                return rule.period
        return self.default_period

    def price_at(self, at: datetime) -> float:
        return self.prices[self.period_at(at)]

    @classmethod
    def from_rules(
        cls, rules: list[dict[str, str]], prices: dict[str, float], default: str, **kw: float
    ) -> Tariff:
        parsed = tuple(
            PeriodRule(r["period"], parse_days(r["days"]), parse_time(r["start"]), parse_time(r["end"]))
            for r in rules
        )
        unknown = {r.period for r in parsed} - prices.keys() | ({default} - prices.keys())
        if unknown:
            raise ValueError(f"no price for tariff period(s): {', '.join(sorted(unknown))}")
        return cls(dict(prices), parsed, default, **kw)


# Energy prices of ENGIE's three-period contract (Nov 2025, incl. VAT) plus ~12 c/kWh of network and taxes.
# The exact Flextime hours are not public: these windows are an assumption the user sets in the options.
DEFAULT_PERIOD_RULES = [
    {"period": "peak", "days": "mon-fri", "start": "07:00", "end": "22:00"},
    {"period": "super_off_peak", "days": "all", "start": "01:00", "end": "07:00"},
]
DEFAULT_PRICES = {"peak": 0.279, "off_peak": 0.236, "super_off_peak": 0.208}
DEFAULT_TARIFF = Tariff.from_rules(DEFAULT_PERIOD_RULES, DEFAULT_PRICES, "off_peak")


KEPT_MONTHS = 13  # a year back, for the monthly peaks the capacity tariff averages
# A home's connection carries at most about 60 kW (the grid input's bound, addon/inputs.py); what it would
# have drawn without its batteries adds a few kW. A larger stored peak comes from a damaged file, and as
# the month's peak it would switch peak shaving off for the rest of the month.
MAX_PEAK_KW = 100.0
_MONTH_KEY = re.compile(r"([0-9]{4})-([0-9]{2})")


def quarter_start(at: datetime) -> datetime:
    """The clock quarter-hour `at` is in: the meter's (and the capacity tariff's), and the plan's step."""
    return at.replace(minute=at.minute - at.minute % 15, second=0, microsecond=0)


def quarter_end(at: datetime) -> datetime:
    return quarter_start(at) + QUARTER


@dataclass
class CapacityTracker:
    """Offtake of the running quarter-hour and the month's peak, as the digital meter counts them."""

    quarter: datetime | None = None
    quarter_import_wh: float = 0.0
    month: tuple[int, int] | None = None
    month_peak_kw: float = 0.0
    peaks: dict[tuple[int, int], float] = field(default_factory=dict)  # every month seen

    def add(self, at: datetime, seconds: float, grid_w: float) -> None:
        """Account `seconds` of grid power ending at `at` (only offtake counts), split at quarter boundaries
        so each quarter gets exactly its own energy."""
        begin = at - timedelta(seconds=seconds)
        while True:
            quarter = quarter_start(begin) if seconds > 0 else quarter_start(at)
            if self.quarter != quarter:
                self._enter(quarter)
            end = min(at, quarter + QUARTER)
            self.quarter_import_wh += max(0.0, grid_w) * (end - begin).total_seconds() / 3600
            if end >= at:
                if end == quarter + QUARTER and seconds > 0:
                    self._enter(end)  # `at` sits exactly on a boundary: the next quarter has begun
                return
            begin = end

    def _enter(self, quarter: datetime) -> None:
        self._close_quarter()
        self.quarter, self.quarter_import_wh = quarter, 0.0
        month = (quarter.year, quarter.month)
        if self.month != month:
            # A month seen before (the clock went back, or only the peaks were readable) keeps its peak.
            self.month, self.month_peak_kw = month, self.peaks.get(month, 0.0)

    def _close_quarter(self) -> None:
        if self.quarter is None or self.month is None:
            return
        average_kw = self.quarter_import_wh / 250  # Wh per 0.25 h -> kW
        self.month_peak_kw = max(self.month_peak_kw, average_kw)
        key = (self.quarter.year, self.quarter.month)
        self.peaks[key] = max(self.peaks.get(key, 0.0), average_kw)

    def average_so_far_kw(self, at: datetime) -> float:
        """What the meter's running average (P1 1.4.0) shows: energy so far over the time elapsed."""
        if self.quarter is None:
            return 0.0
        elapsed_h = max((at - self.quarter).total_seconds(), 1.0) / 3600
        return self.quarter_import_wh / 1000 / elapsed_h

    def projected_kw(self, at: datetime, grid_w: float) -> float:
        """The quarter's average if the present offtake continued to its end."""
        if self.quarter is None:
            return max(0.0, grid_w) / 1000
        remaining_h = max(0.0, (self.quarter + QUARTER - at).total_seconds()) / 3600
        return (self.quarter_import_wh + max(0.0, grid_w) * remaining_h) / 250

    def remaining_s(self, at: datetime) -> float:
        return 900.0 if self.quarter is None else max(0.0, (self.quarter + QUARTER - at).total_seconds())

    # A restart must not forget the month's peak: the capacity tariff bills it whatever the add-on did.

    def snapshot(self) -> dict[str, Any]:
        recent = sorted(self.peaks.items())[-KEPT_MONTHS:]
        return {
            "quarter": self.quarter.isoformat() if self.quarter is not None else None,
            "quarter_import_wh": round(self.quarter_import_wh, 3),
            "month": list(self.month) if self.month is not None else None,
            "month_peak_kw": round(self.month_peak_kw, 4),
            "peaks": {f"{year}-{month:02d}": round(kw, 4) for (year, month), kw in recent},
        }

    @classmethod
    def restored(cls, data: object) -> CapacityTracker:
        """From a snapshot, field by field and month by month: what is unreadable or not a plausible power
        is dropped with a warning and the rest kept (a peak forgotten only makes the add-on shave harder)."""
        tracker = cls()
        if data is None:
            return tracker
        if not isinstance(data, dict):
            _LOG.warning("capacity tariff: the stored peaks are not readable (%.40r); starting afresh", data)
            return tracker
        peaks = data.get("peaks")
        if isinstance(peaks, dict):
            for key, kw in peaks.items():
                month = _month_of_key(key)
                value = _plausible(kw, MAX_PEAK_KW)
                if month is None or value is None:
                    _LOG.warning(
                        "capacity tariff: dropping the stored peak %.40r: %.40r (not a month's kW)", key, kw
                    )
                else:
                    tracker.peaks[month] = value
        elif peaks is not None:
            _LOG.warning("capacity tariff: the stored monthly peaks are not readable (%.40r)", peaks)
        if data.get("quarter") is not None:
            tracker.quarter = _quarter_of(data["quarter"])
            if tracker.quarter is None:
                _LOG.warning("capacity tariff: the stored quarter %.40r is not a time", data["quarter"])
        if tracker.quarter is not None:
            wh = _plausible(data.get("quarter_import_wh", 0.0), MAX_PEAK_KW * 250)
            if wh is None:
                _LOG.warning(
                    "capacity tariff: the quarter's stored offtake %.40r is not plausible; counted from 0",
                    data.get("quarter_import_wh"),
                )
            tracker.quarter_import_wh = wh or 0.0
        if data.get("month") is not None:
            tracker.month = _month_of_pair(data["month"])
            if tracker.month is None:
                _LOG.warning("capacity tariff: the stored month %.40r is not a month", data["month"])
        if tracker.month is None and tracker.quarter is not None:
            tracker.month = (tracker.quarter.year, tracker.quarter.month)  # the month always is the quarter's
        if tracker.month is not None:
            peak = _plausible(data.get("month_peak_kw", 0.0), MAX_PEAK_KW)
            if peak is None:
                _LOG.warning(
                    "capacity tariff: the stored month peak %.40r is not a plausible power; taking %s's",
                    data.get("month_peak_kw"),
                    f"{tracker.month[0]}-{tracker.month[1]:02d}",
                )
                peak = tracker.peaks.get(tracker.month, 0.0)
            tracker.month_peak_kw = peak
        return tracker


def _plausible(value: object, maximum: float) -> float | None:
    """A stored number between 0 and `maximum`, else None (Infinity, NaN, text, null, a negative)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0.0 <= number <= maximum else None


def _month_of_key(key: object) -> tuple[int, int] | None:
    match = _MONTH_KEY.fullmatch(key) if isinstance(key, str) else None
    return _month_of_pair([int(match[1]), int(match[2])]) if match else None


def _month_of_pair(value: object) -> tuple[int, int] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    year, month = value
    if type(year) is not int or type(month) is not int:  # neither a bool nor a float
        return None
    return (year, month) if 1 <= month <= 12 else None


def _quarter_of(value: object) -> datetime | None:
    try:
        quarter = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    # The add-on counts on its local clock: an aware time cannot be compared with it.
    return quarter if quarter is not None and quarter.tzinfo is None else None
