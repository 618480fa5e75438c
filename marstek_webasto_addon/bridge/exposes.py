"""What each device exposes to Home Assistant, described once (the Zigbee2MQTT "exposes" idea).

One `Expose` drives the discovery payload, the validation of commands that come back, and the panel's
controls. Sensors are generated from the device tables; controls are declared in `controls.py`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from ..devices.marstek.datapoints import BatteryPoint, Kind
from ..devices.webasto.registers import Register


class Component(StrEnum):
    SENSOR = "sensor"
    BINARY_SENSOR = "binary_sensor"
    SELECT = "select"
    NUMBER = "number"
    BUTTON = "button"
    SWITCH = "switch"
    TEXT = "text"

    @property
    def commandable(self) -> bool:
        return self in (
            Component.SELECT,
            Component.NUMBER,
            Component.BUTTON,
            Component.SWITCH,
            Component.TEXT,
        )


PRESS = "PRESS"
ON, OFF = "ON", "OFF"


@dataclass(frozen=True)
class Expose:
    key: str
    name: str
    component: Component
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    entity_category: str | None = None
    icon: str | None = None
    precision: int | None = None
    enabled_by_default: bool = True
    options: tuple[str, ...] = ()  # select options, or the states of an enum sensor
    minimum: float | None = None  # number
    maximum: float | None = None
    step: float | None = None
    attributes: bool = False  # has a JSON attributes topic
    pattern: str | None = None  # text: what a valid value looks like
    featured: bool = False  # the panel shows this control on the card itself, not under "more"
    # The device takes it but cannot say it back: no state topic, so Home Assistant shows an assumed state
    # (its on/off buttons) instead of an entity that stays `unknown` forever.
    write_only: bool = False
    # The one transport that carries it ("udp": the Local API; the battery's Modbus map has no such
    # register), None: any. Not offered by a battery that never uses that transport.
    needs: str | None = None
    # The add-on's own setting (nothing is sent to the device): taken, and available in Home Assistant,
    # while the device is offline, so a person can still change what happens when it is back.
    stored: bool = False

    def validate(self, payload: bytes | str) -> str | float | bool:
        """The command value, or CommandRejected with a message that says what is allowed."""
        text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else payload
        text = text.strip()
        match self.component:
            case Component.BUTTON:
                if text != PRESS:
                    raise CommandRejected(f"{self.name}: expected {PRESS!r}, got {text[:40]!r}")
                return True
            case Component.SWITCH:
                if text not in (ON, OFF):
                    raise CommandRejected(f"{self.name}: expected 'ON' or 'OFF', got {text[:40]!r}")
                return text == ON
            case Component.SELECT:
                if text not in self.options:
                    raise CommandRejected(
                        f"{self.name}: {text[:40]!r} is not one of {', '.join(self.options)}"
                    )
                return text
            case Component.NUMBER:
                return self._number(text)
            case Component.TEXT:
                if self.pattern is not None and not re.fullmatch(self.pattern, text):
                    raise CommandRejected(f"{self.name}: {text[:40]!r} is not a valid value ({self.pattern})")
                return text
        raise CommandRejected(f"{self.name} cannot be commanded")

    def _number(self, text: str) -> float:
        assert self.minimum is not None
        assert self.maximum is not None
        try:
            value = _number_between(self.minimum, self.maximum).validate_python(text)
        except ValidationError:
            unit = f" {self.unit}" if self.unit else ""
            allowed = f"between {self.minimum:g} and {self.maximum:g}{unit}"
            try:
                given = float(text)
            except ValueError:
                given = math.nan
            in_range = self.minimum <= given <= self.maximum  # float() also reads other scripts' digits
            if math.isfinite(given) and not in_range:  # a number, only not one this control takes
                raise CommandRejected(
                    f"{self.name}: {given:g} is out of range: it must be {allowed}"
                ) from None
            raise CommandRejected(f"{self.name}: {text[:40]!r} is not a number; send one {allowed}") from None
        if self.step:
            value = round(round(value / self.step) * self.step, 6)
        return value


@functools.lru_cache(maxsize=256)
def _number_between(minimum: float, maximum: float) -> TypeAdapter[float]:
    # Building an adapter costs ~0.2 ms; validating with one a few us. A command flood must stay cheap.
    return TypeAdapter(Annotated[float, Field(ge=minimum, le=maximum, allow_inf_nan=False)])


class CommandRejected(ValueError):
    """A command payload that fails validation: nothing is sent to the device."""


def sensor_from_point(point: BatteryPoint) -> Expose:
    component = Component.BINARY_SENSOR if point.kind is Kind.BOOL else Component.SENSOR
    return Expose(
        point.key,
        point.name,
        component,
        point.unit,
        point.device_class,
        point.state_class,
        point.entity_category,
        point.icon,
        point.precision,
        point.enabled_by_default,
        point.options,
    )


def sensor_from_register(register: Register) -> Expose:
    options = tuple(dict.fromkeys(register.enum.values())) if register.device_class == "enum" else ()
    precision = 2 if register.scale < 1 else None
    return Expose(
        register.key,
        register.name,
        Component.SENSOR,
        register.unit,
        register.device_class,
        register.state_class,
        "diagnostic" if register.entity_category == "config" else register.entity_category,
        register.icon,
        precision,
        register.enabled_by_default,
        options,
    )


def bounded(expose: Expose, minimum: float, maximum: float) -> Expose:
    """The same control with device-specific limits."""
    if not (math.isfinite(minimum) and math.isfinite(maximum) and minimum < maximum):
        raise ValueError(f"{expose.key}: invalid bounds {minimum}..{maximum}")
    return replace(expose, minimum=minimum, maximum=maximum)


def by_key(exposes: Iterable[Expose]) -> dict[str, Expose]:
    return {e.key: e for e in exposes}


def state_value(expose: Expose, value: Any) -> Any:
    """How a value appears in a device's state JSON (booleans as ON/OFF, as HA's defaults expect).

    A number is kept inside the range its discovery announces: Home Assistant logs an error for every
    state outside it. Clamping shows what the device does with it (e.g. a stored 1000 W on an 800 W
    model: the client clamps the set-point to 800 W when the setting is used).
    """
    if value is None:
        return None
    if expose.component in (Component.BINARY_SENSOR, Component.SWITCH):
        return ON if value else OFF
    if (
        expose.component is Component.NUMBER
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and expose.minimum is not None
        and expose.maximum is not None
    ):
        if not math.isfinite(value):
            return None
        return min(max(value, expose.minimum), expose.maximum)
    if isinstance(value, float) and expose.precision is not None:
        # Scaled readings carry float noise (0.011800000000000001): send what the data point can say.
        return round(value, expose.precision) if expose.precision > 0 else round(value)
    return value
