"""Plausible ranges of device readings, and the screen that keeps implausible ones out of the snapshots.

A rogue or glitching device can send anything: a SOC of 250 %, a lifetime counter of -1.18e18 kWh, a
wallbox power of 2 147 483 646 W. Whatever enters a snapshot reaches MQTT, the panel, the site totals and
the optimiser, and a `total_increasing` counter that went backwards or jumped corrupts Home Assistant's
long-term statistics for good. So every numeric data point declares its range in the device tables, and
each device's snapshot passes its fresh readings through one `PlausibilityGuard`: an implausible value
is dropped (the entity keeps its last good value), logged once until the point is plausible again, and
listed among the device's problems.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

# A device may refresh its counter only now and then, so the energy behind one rise can predate our
# previous read; a quarter of an hour at full power covers that (and the demo's simulated world, which runs
# a few hundred times faster than real time at most).
COUNTER_SLACK_H = 0.25
LIFETIME_KWH = 1_000_000.0  # 1 GWh: more than a house, a battery or a wallbox counts in a lifetime
COUNTER_JITTER_KWH = 0.1  # one step of the coarsest counters (HMG-50, UNITE); a smaller dip is rounding


@dataclass(frozen=True)
class Range:
    """The values a data point can physically have, in its engineering unit (None: no bound that side).

    A range with `max_rate` belongs to a lifetime counter: it never decreases (a dip within `jitter` is
    rounding and keeps the last value) and rises at most `max_rate` per hour since its last good reading.
    """

    low: float | None = None
    high: float | None = None
    max_rate: float | None = None  # counters: most the value can grow per hour (kWh per hour = kW)
    jitter: float = 0.0

    def __contains__(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def bounds(self, unit: str | None = None) -> str:
        """`0..100 %`; `any` when unbounded."""
        if self.low is None and self.high is None:
            return "any"
        low = "" if self.low is None else show(self.low)
        high = "" if self.high is None else show(self.high)
        return f"{low}..{high}{f' {unit}' if unit else ''}"

    def __str__(self) -> str:
        if self.max_rate is None:
            return self.bounds()
        return f"{self.bounds()}, never down, at most +{show(self.max_rate)}/h"


ANY = Range()  # codes and identifiers: every number is a possible value


def counter(max_kw: float, high: float = LIFETIME_KWH) -> Range:
    """A lifetime kWh counter fed by at most `max_kw`."""
    return Range(0.0, high, max_rate=max_kw, jitter=COUNTER_JITTER_KWH)


def show(number: float) -> str:
    """A raw value as it came, without the rounding of `:g` (2147483646, not 2.14748e+09)."""
    if isinstance(number, int):
        return str(number)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.10g}"


V = TypeVar("V")


@dataclass
class _Count:
    value: float
    since: float  # monotonic time the counter was first seen at this value


class PlausibilityGuard:
    """One device's memory of its implausible points and of its counters' last good readings."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._faults: dict[str, str] = {}
        self._counts: dict[str, _Count] = {}

    @property
    def problems(self) -> list[str]:
        """One line per point that is implausible now: `<key>: <raw> outside <range>`."""
        return list(self._faults.values())

    def screen(
        self,
        values: Mapping[str, V],
        ranges: Mapping[str, Range | None],
        *,
        now: float,
        label: str,
        units: Mapping[str, str | None] | None = None,
    ) -> dict[str, V | float]:
        """The values to publish: implausible numbers left out, counters held at their last good value."""
        kept: dict[str, V | float] = {}
        for key, value in values.items():
            rule = ranges.get(key)
            if rule is None or isinstance(value, bool) or not isinstance(value, int | float):
                kept[key] = value
                continue
            unit = (units or {}).get(key)
            screened = self._check(key, value, rule, now, label, unit)
            if screened is not None:
                kept[key] = screened
        return kept

    def _check(
        self, key: str, value: float, rule: Range, now: float, label: str, unit: str | None
    ) -> float | None:
        if value not in rule:
            self._fault(key, value, rule.bounds(unit), label)
            return None
        if rule.max_rate is None:
            self._clear(key, value, label)
            return value
        last = self._counts.get(key)
        if last is not None:
            allowed = rule.max_rate * (max(0.0, now - last.since) / 3600 + COUNTER_SLACK_H)
            window = Range(last.value, round(last.value + allowed, 3)).bounds(unit)
            if value < last.value - rule.jitter:
                self._fault(key, value, f"{window} (a lifetime counter never goes back)", label)
                return None
            if value - last.value > allowed:
                self._fault(key, value, f"{window} (it rose faster than the device can deliver)", label)
                return None
            if value <= last.value:
                self._clear(key, last.value, label)
                return last.value  # unchanged, or a rounding dip: never publish a decrease
        self._counts[key] = _Count(value, now)
        self._clear(key, value, label)
        return value

    def _fault(self, key: str, value: float, allowed: str, label: str) -> None:
        if key not in self._faults:
            self._log.warning(
                "%s: %s = %s is implausible, outside %s; keeping the last good value",
                label,
                key,
                show(value),
                allowed,
            )
        self._faults[key] = f"{key}: {show(value)} outside {allowed}"

    def _clear(self, key: str, value: float, label: str) -> None:
        if self._faults.pop(key, None) is not None:
            self._log.info("%s: %s is plausible again (%s)", label, key, show(value))
