"""Tariff periods (peak / off-peak / super-off-peak) and the Flemish capacity tariff.

The capacity tariff bills the highest clock-aligned quarter-hour average offtake of each month, summed over
the phases, with a 2.5 kW floor (reference optimiser.md section 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from .settings import parse_time

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


def quarter_start(at: datetime) -> datetime:
    return at.replace(minute=at.minute - at.minute % 15, second=0, microsecond=0)


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
            self.month, self.month_peak_kw = month, 0.0

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
        """From a snapshot; anything unreadable starts afresh (then the add-on only shaves harder)."""
        if not isinstance(data, dict):
            return cls()
        try:
            quarter = datetime.fromisoformat(data["quarter"]) if data.get("quarter") else None
            month = data.get("month")
            peaks = {
                (int(key[:4]), int(key[5:7])): float(kw) for key, kw in dict(data.get("peaks") or {}).items()
            }
            return cls(
                quarter=quarter,
                quarter_import_wh=max(0.0, float(data.get("quarter_import_wh", 0.0))),
                month=(int(month[0]), int(month[1])) if month else None,
                month_peak_kw=max(0.0, float(data.get("month_peak_kw", 0.0))),
                peaks=peaks,
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return cls()


def night_quarters(evening: date, night_start: time, day_start: time) -> list[datetime]:
    """Every quarter-hour from tonight's night start to tomorrow's day start."""
    start = datetime.combine(evening, night_start)
    end = datetime.combine(evening + timedelta(days=1), day_start)
    out = []
    while start < end:
        out.append(start)
        start += QUARTER
    return out
