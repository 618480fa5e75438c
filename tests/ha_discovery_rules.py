"""Home Assistant's MQTT discovery rules, written independently of the bridge from the reference
(shared/reference/ha_addon.md section 6), so the tests check the bridge against HA, not against itself."""

from __future__ import annotations

import re
from typing import Any

TOPIC = re.compile(
    r"^(?P<prefix>.+)/(?P<component>\w+)/(?P<node>[a-zA-Z0-9_-]+)/(?P<object>[a-zA-Z0-9_-]+)/config$"
)
ENERGY_UNITS: set[str | None] = {
    "J",
    "kJ",
    "MJ",
    "GJ",
    "mWh",
    "Wh",
    "kWh",
    "MWh",
    "GWh",
    "TWh",
    "cal",
    "kcal",
    "Mcal",
    "Gcal",
}
UNITS: dict[str, set[str | None]] = {
    "energy": ENERGY_UNITS,
    "energy_storage": ENERGY_UNITS,
    "power": {"mW", "W", "kW", "MW", "GW", "TW"},
    "battery": {"%"},
    "current": {"mA", "A"},
    "voltage": {"mV", "V", "kV", "µV"},
    "temperature": {"°C", "°F", "K"},
    "signal_strength": {"dB", "dBm"},
    "duration": {"d", "h", "min", "s", "ms"},
    "enum": {None},
    "timestamp": {None},
    "monetary": {"EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN"},  # ISO 4217 codes
}
STATE_CLASSES: dict[str, set[str | None]] = {
    "energy": {"total", "total_increasing"},
    "energy_storage": {"measurement", None},
    "power": {"measurement", None},
    "battery": {"measurement", None},
    "current": {"measurement", None},
    "voltage": {"measurement", None},
    "temperature": {"measurement", None},
    "signal_strength": {"measurement", None},
    "duration": {"measurement", "total", "total_increasing", None},
    "enum": {None},
    "timestamp": {None},  # a point in time has no state class in Home Assistant
    "monetary": {"total", None},  # never measurement: Home Assistant refuses that for money
}
REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "number": {"command_topic"},
    "select": {"command_topic", "options"},
    "button": {"command_topic"},
    "switch": {"command_topic"},
    "text": {"command_topic"},
}
NUMBER_DEVICE_CLASSES = {"current", "power", "duration", "voltage", "energy", "battery", "temperature", None}


def problems(topic: str, payload: dict[str, Any]) -> list[str]:
    """Everything Home Assistant would refuse or warn about in one discovery message."""
    found: list[str] = []
    match = TOPIC.match(topic)
    if not match:
        return [f"{topic}: not a valid discovery topic"]
    component = match["component"]
    if component not in REQUIRED:
        return [f"{topic}: unexpected component {component}"]
    found += [f"{topic}: missing {key}" for key in REQUIRED[component] - payload.keys()]
    if not payload.get("unique_id"):
        found.append(f"{topic}: no unique_id")
    device = payload.get("device", {})
    if not device.get("identifiers") and not device.get("connections"):
        found.append(f"{topic}: device without identifiers")
    if "object_id" in payload:
        found.append(f"{topic}: object_id was removed in HA 2026.4")
    if "availability" in payload and "availability_topic" in payload:
        found.append(f"{topic}: availability and availability_topic together")
    device_class, unit, state_class = (
        payload.get("device_class"),
        payload.get("unit_of_measurement"),
        payload.get("state_class"),
    )
    category = payload.get("entity_category")
    if category not in (None, "config", "diagnostic"):
        found.append(f"{topic}: entity_category {category!r}")
    if component in ("sensor", "binary_sensor") and category == "config":
        found.append(f"{topic}: a {component} cannot have entity_category config")
    if component == "sensor":
        if device_class is not None:
            allowed_units = UNITS.get(device_class)
            if allowed_units is None:
                found.append(f"{topic}: unknown sensor device_class {device_class}")
            elif unit not in allowed_units:
                found.append(f"{topic}: unit {unit!r} not allowed for {device_class}")
            elif state_class not in STATE_CLASSES[device_class]:
                found.append(f"{topic}: state_class {state_class!r} not allowed for {device_class}")
        if device_class == "enum" and not payload.get("options"):
            found.append(f"{topic}: enum sensor without options")
        if payload.get("options") and device_class != "enum":
            found.append(f"{topic}: options only go with device_class enum")
        if state_class not in (None, "measurement", "total", "total_increasing"):
            found.append(f"{topic}: state_class {state_class!r}")
        precision = payload.get("suggested_display_precision")
        if precision is not None and (not isinstance(precision, int) or precision < 0):
            found.append(f"{topic}: bad suggested_display_precision")
    if component == "number":
        low, high, step = payload.get("min", 1), payload.get("max", 100), payload.get("step", 1)
        if not low < high:
            found.append(f"{topic}: min {low} must be below max {high}")
        if not step >= 0.001:
            found.append(f"{topic}: step {step}")
        if device_class not in NUMBER_DEVICE_CLASSES:
            found.append(f"{topic}: number device_class {device_class}")
    if component == "text" and "pattern" in payload:
        try:
            re.compile(payload["pattern"])
        except re.error:
            found.append(f"{topic}: text pattern does not compile")
    if component == "select" and (not isinstance(payload.get("options"), list) or not payload["options"]):
        found.append(f"{topic}: select without options")
    if component == "binary_sensor" and device_class not in (
        None,
        "problem",
        "connectivity",
        "running",
        "plug",
        "battery_charging",
        "power",
    ):
        found.append(f"{topic}: binary_sensor device_class {device_class}")
    name = payload.get("name")
    device_name = device.get("name")
    if (
        isinstance(name, str)
        and isinstance(device_name, str)
        and name.lower().startswith(device_name.lower())
    ):
        found.append(f"{topic}: entity name repeats the device name")
    return found
