"""The last 24 hours of the site for the panel's chart: one averaged sample per minute in a ring buffer.

The buffer lives in memory and is written to a JSON file on shutdown (the add-on's /data), so a restart or
an update does not wipe the chart. Times are the optimiser's clock: real time, or the demo's faster one.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from ..addon.state import kind, set_aside, write_atomically

_LOG = logging.getLogger(__name__)
SERIES = ("grid", "pv", "load", "battery", "wallbox")  # site powers, W


@dataclass
class Sample:
    t: float  # epoch seconds, the end of the minute
    powers: dict[str, float | None]  # SERIES -> W
    soc: dict[str, float | None]  # battery id -> %
    battery_power: dict[str, float | None]  # battery id -> W, + = discharge


@dataclass
class _Accumulator:
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            return
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0) + 1

    def mean(self, key: str, digits: int = 0) -> float | None:
        count = self.counts.get(key)
        return round(self.sums[key] / count, digits) if count else None


class History:
    def __init__(self, period_s: float = 60.0, span_s: float = 24 * 3600.0) -> None:
        self.period_s = period_s
        self.span_s = span_s
        self.samples: deque[Sample] = deque(maxlen=int(span_s / period_s) + 1)
        self._slot: int | None = None
        self._acc = _Accumulator()
        self._batteries: set[str] = set()
        self.problems: list[str] = []  # what was damaged in the saved file, one line each

    def observe(
        self,
        t: float,
        powers: Mapping[str, float | None],
        soc: Mapping[str, float | None],
        battery_power: Mapping[str, float | None],
    ) -> Sample | None:
        """Add a reading; returns the finished sample when `t` starts a new minute."""
        slot = int(t // self.period_s)
        finished = None
        if self._slot is not None and slot != self._slot:
            finished = self._close((self._slot + 1) * self.period_s)
        self._slot = slot
        for key in SERIES:
            self._acc.add(key, powers.get(key))
        for battery, value in soc.items():
            self._batteries.add(battery)
            self._acc.add(f"soc:{battery}", value)
        for battery, value in battery_power.items():
            self._batteries.add(battery)
            self._acc.add(f"power:{battery}", value)
        return finished

    def _close(self, t: float) -> Sample:
        acc = self._acc
        sample = Sample(
            t,
            {key: acc.mean(key) for key in SERIES},
            {b: acc.mean(f"soc:{b}", 1) for b in sorted(self._batteries)},
            {b: acc.mean(f"power:{b}") for b in sorted(self._batteries)},
        )
        self.samples.append(sample)
        self._acc, self._batteries = _Accumulator(), set()
        return sample

    def since(self, t: float) -> list[Sample]:
        return [s for s in self.samples if s.t > t]

    def series(self, now: float) -> dict[str, Any]:
        """Column form for the chart: compact, and what an SVG polyline wants."""
        recent = [s for s in self.samples if s.t > now - self.span_s]
        batteries = sorted({b for s in recent for b in s.soc})
        return {
            "period_s": self.period_s,
            "t": [s.t for s in recent],
            **{key: [s.powers.get(key) for s in recent] for key in SERIES},
            "soc": {b: [s.soc.get(b) for s in recent] for b in batteries},
            "battery_power": {b: [s.battery_power.get(b) for s in recent] for b in batteries},
        }

    # persistence -----------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        payload = {"version": 1, "period_s": self.period_s, "samples": [asdict(s) for s in self.samples]}
        try:
            write_atomically(path, json.dumps(payload, separators=(",", ":")))
        except OSError as exc:
            _LOG.warning("could not save the chart history to %s: %s", path, exc)

    def load(self, path: Path, now: float) -> None:
        """Samples of the last 24 h from an earlier run. A damaged file is set aside with a warning and the
        chart starts anew; a damaged sample is dropped, the others kept (and a copy of the file)."""
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"the file is {kind(data)}, not an object")
            if data.get("version") != 1 or data.get("period_s") != self.period_s:
                raise ValueError("written by another version")
            items = data.get("samples")
            if not isinstance(items, list):
                raise ValueError(f"its samples are {kind(items)}, not a list")
            dropped: list[str] = []
            for index, item in enumerate(items):
                try:
                    sample = _sample(item)
                except ValueError as exc:
                    dropped.append(f"sample {index}: {exc}")
                    continue
                if now - self.span_s < sample.t <= now:
                    self.samples.append(sample)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.samples.clear()
            self._damaged(path, str(exc), "starting a new one", whole=True)
            return
        if dropped:
            more = f" and {len(dropped) - 1} more" if len(dropped) > 1 else ""
            self._damaged(path, f"{dropped[0]}{more}", f"{len(dropped)} of {len(items)} samples dropped")

    def _damaged(self, path: Path, problem: str, outcome: str, *, whole: bool = False) -> None:
        try:
            kept = f"; the file is kept as {set_aside(path, copy=not whole).name}"
        except OSError as exc:
            kept = f"; could not keep a copy ({exc.strerror or exc})"
        _LOG.warning("chart history %s: %s; %s%s", path, problem, outcome, kept)
        self.problems.append(f"{path.name}: {problem}; {outcome}")


def _sample(item: object) -> Sample:
    """One saved sample, its shape checked: the chart and `api/history` trust what is in the buffer."""
    if not isinstance(item, dict):
        raise ValueError(f"{kind(item)}, not an object")
    t = item.get("t")
    if not _is_number(t):
        raise ValueError(f"its time is {kind(t)}, not a number")
    columns: list[dict[str, float | None]] = []
    for name in ("powers", "soc", "battery_power"):
        values = item.get(name)
        if not isinstance(values, dict):
            raise ValueError(f"its {name} are {kind(values)}, not an object")
        bad = next((k for k, v in values.items() if v is not None and not _is_number(v)), None)
        if bad is not None:
            raise ValueError(f"its {name}[{bad!r}] is {kind(values[bad])}, not a number")
        columns.append(values)
    return Sample(float(t), columns[0], columns[1], columns[2])


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
