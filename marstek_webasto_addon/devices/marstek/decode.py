"""Turn validated method results into engineering values, generated from the data-point table.

`BatterySnapshot.merged` screens every fresh reading against the table's plausible ranges before it is
kept: what a snapshot holds is what MQTT, the panel, the site totals and the optimiser may see.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..plausibility import PlausibilityGuard, Range
from .datapoints import BATTERY_POINTS, BatteryPoint, Kind, Method, Value
from .firmware import Firmware, Mode, factor, identify, parse_mode, plausible_temperature

_LOG = logging.getLogger(__name__)
_UNITS = {p.key: p.unit for p in BATTERY_POINTS}


def _convert(point: BatteryPoint, raw: Any, firmware: Firmware) -> Value:
    match point.kind:
        case Kind.TEXT:
            return str(raw)
        case Kind.BOOL:
            return bool(raw)
        case Kind.MODE:
            mode = parse_mode(raw)
            return None if mode is None else mode.value
    value = float(raw) * point.scale
    if not math.isfinite(value):
        return None
    if point.quantity is not None:
        value *= factor(firmware, point.quantity)
        if point.key == "temperature":
            value = plausible_temperature(value)
    return round(value) if point.kind is Kind.INT else value


def _decode_sources(results: Mapping[Method, Mapping[str, Any]], firmware: Firmware) -> dict[str, Value]:
    values: dict[str, Value] = {}
    for point in BATTERY_POINTS:
        if point.quantity is not None and firmware.ver is None:
            continue  # its wire unit depends on the firmware: a wrong scale now would corrupt HA's statistics
        for source in point.sources:
            result = results.get(source.method)
            if result is not None and source.field in result:
                converted = _convert(point, result[source.field], firmware)
                if converted is not None:
                    values[point.key] = converted
                break
    return values


# ES.GetMode's copies of fields EM.GetStatus carries (the CT meter's)
_CT_COPIES = frozenset(
    source.field
    for point in BATTERY_POINTS
    if any(s.method is Method.EM_STATUS for s in point.sources)
    for source in point.sources
    if source.method is Method.ES_MODE
)
# Live readings (state class "measurement"): a value of one that was not read again is an old one.
MEASUREMENTS = frozenset(p.key for p in BATTERY_POINTS if p.state_class == "measurement")


class _Reads(dict[str, Value]):
    """The values, noting which keys a derivation looked at."""

    def __init__(self, values: Mapping[str, Value]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Value:
        self.read.add(key)
        return super().__getitem__(key)


def _derive(
    values: dict[str, Value],
    fresh_sources: Mapping[str, Value],
    seen: dict[str, float] | None = None,
    now: float = 0.0,
) -> None:
    """Fill derived points, in table order, unless the firmware reported them directly this time. In
    `seen`, a derived point is as old as the oldest live reading it was made from (a PV total made from
    PV channels the transport in use cannot read is as old as they are)."""
    for point in BATTERY_POINTS:
        if point.derive is not None and point.key not in fresh_sources:
            inputs = _Reads(values)
            derived = point.derive(inputs)
            if derived is not None:
                values[point.key] = derived
                if seen is not None:
                    used = [seen.get(k, now) for k in inputs.read if k in MEASUREMENTS and k in values]
                    seen[point.key] = min(used, default=now)


def decode_values(results: Mapping[Method, Mapping[str, Any]], firmware: Firmware) -> dict[str, Value]:
    """Values for every point whose source (or derivation) is available in these results, unscreened."""
    values = _decode_sources(results, firmware)
    _derive(values, dict(values))
    return values


@functools.cache
def plausible_ranges(firmware: Firmware) -> dict[str, Range | None]:
    """Every point's range for this model; derived points follow from screened inputs and have none."""
    return {p.key: p.plausible_for(firmware) for p in BATTERY_POINTS}


def _label(values: Mapping[str, Value], firmware: Firmware) -> str:
    """Who this is in a log line, as far as the battery has told."""
    parts = [firmware.model if firmware.family.value != "unknown" else "battery"]
    parts += [str(v) for k in ("ble_mac", "ip") if (v := values.get(k))]
    return " ".join(parts)


@dataclass
class BatterySnapshot:
    """What one battery reported, merged over the methods read so far."""

    values: dict[str, Value] = field(default_factory=dict)
    firmware: Firmware = field(default_factory=lambda: identify(None, None))
    updated_at: float = 0.0  # time.monotonic() of the last successful read
    problems: list[str] = field(default_factory=list)
    # Shared by the snapshots that follow this one: which points are implausible now, and the counters'
    # last good readings, so a warning is logged once and a counter is judged against its history.
    guard: PlausibilityGuard = field(
        default_factory=lambda: PlausibilityGuard(_LOG), repr=False, compare=False
    )
    # time.monotonic() at which each value was last read (or derived): a method the battery stopped
    # answering, or one the transport in use cannot read, leaves its values behind with their own age
    seen: dict[str, float] = field(default_factory=dict)
    answered: frozenset[Method] = frozenset()  # the read methods this battery has ever answered

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    @property
    def soc(self) -> float | None:
        return self.number("soc")

    @property
    def ac_power(self) -> float | None:
        """Battery AC port power, + = discharging."""
        return self.number("ac_power")

    @property
    def mode(self) -> Mode | None:
        return parse_mode(self.values.get("mode"))

    @property
    def ble_mac(self) -> str | None:
        value = self.values.get("ble_mac")
        return value if isinstance(value, str) and value else None

    def merged(
        self, results: Mapping[Method, Mapping[str, Any]], problems: list[str], *, label: str | None = None
    ) -> BatterySnapshot:
        """A new snapshot: plausible fresh values win, values of methods not read this time are kept.

        An implausible reading is left out (the point keeps its last good value), logged once and listed
        in `problems` for as long as the point stays implausible.
        """
        if (
            Method.EM_STATUS in self.answered
            and Method.EM_STATUS not in results
            and Method.ES_MODE in results
        ):
            # ES.GetMode's copies of the CT fields stand in only for a firmware without EM.GetStatus: on v150
            # they read zero with a live CT (Q15), and between two EM.GetStatus reads (every 6th poll) the
            # meter would blink to 0 W and "not connected". The last EM.GetStatus reading ages instead.
            mode = {k: v for k, v in results[Method.ES_MODE].items() if k not in _CT_COPIES}
            results = {**results, Method.ES_MODE: mode}
        raw_device = results.get(Method.GET_DEVICE)
        firmware = self.firmware
        if raw_device is not None and ("device" in raw_device or "ver" in raw_device):
            ver = raw_device.get("ver")
            device = raw_device.get("device") or self.values.get("model")  # keep the model if only ver came
            known_ver = int(ver) if isinstance(ver, int | float) and math.isfinite(ver) else self.firmware.ver
            firmware = identify(device if isinstance(device, str) else None, known_ver)
        snapshot = self.with_readings(_decode_sources(results, firmware), firmware, problems, label=label)
        snapshot.answered = self.answered | frozenset(results)
        return snapshot

    def with_readings(
        self,
        decoded: Mapping[str, Value],
        firmware: Firmware,
        problems: list[str],
        *,
        label: str | None = None,
    ) -> BatterySnapshot:
        """A new snapshot from values already in engineering units (the Modbus transport decodes its
        registers itself), screened, merged and derived exactly as `merged` does."""
        now = time.monotonic()
        who = label or _label({**self.values, **decoded}, firmware)
        fresh = self.guard.screen(decoded, plausible_ranges(firmware), now=now, label=who, units=_UNITS)
        values = {**self.values, **fresh}
        seen = {**self.seen, **dict.fromkeys(fresh, now)}
        _derive(values, fresh, seen, now)
        return BatterySnapshot(
            values, firmware, now, [*problems, *self.guard.problems], self.guard, seen, self.answered
        )

    def age(self, key: str, now: float | None = None) -> float | None:
        """Seconds since `key` was last read; None when it never was."""
        at = self.seen.get(key)
        return None if at is None else (time.monotonic() if now is None else now) - at
