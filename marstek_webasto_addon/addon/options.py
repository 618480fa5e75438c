"""The add-on options (the JSON the Supervisor writes to /data/options.json), validated at the edge.

Every problem is reported on its own line with the key, what is wrong and what is allowed; nothing is
sent to any device until the options are valid.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from ..devices.marstek.discovery import expand_targets
from ..devices.marstek.modbus.registers import Generation
from ..jsonfile import read_json
from ..optimiser.settings import PARAMETERS
from ..optimiser.tariff import DAY_NAMES, Tariff
from .day_ahead import PriceFormula

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_TOPIC_WORD = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_NAME = re.compile(r"^[^\x00-\x1f/#+]{1,40}$")
_CLOCK = r"^([01]\d|2[0-3]):[0-5]\d$"
_DAY = "(" + "|".join(DAY_NAMES) + ")"
_DAYS = rf"^(all|{_DAY}(-{_DAY})?(,{_DAY}(-{_DAY})?)*)$"


def _host(value: str) -> str:
    value = value.strip()
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.match(value):
            raise ValueError("must be an IP address or a host name") from None
    return value


_PERIOD_NAME = r"^[a-z][a-z0-9_]{0,30}$"
# 12 hex digits, as the Local API spells them (`src` = `<model>-<ble_mac>`), or as a person copies them from
# an app or a label: in upper case, in pairs with : or -, in groups of four with . or -. One declaration for
# the Supervisor's schema and ours; `_one_spelling` turns what it lets through into the devices' spelling.
_BLE_MAC = r"^[0-9a-fA-F]{2}([:.-]?[0-9a-fA-F]{2}){5}$"

# What a value that does not match a pattern should look like, for people who do not read regexes.
_PATTERN_HELP = {
    _CLOCK: "is not a time; use HH:MM, e.g. 07:00",
    _DAYS: "is not a set of days; use e.g. mon-fri, sat,sun or all",
    _PERIOD_NAME: (
        "is not a usable name; start with a lower-case letter, then letters, digits or _, e.g. peak"
    ),
    _BLE_MAC: "is not a BLE MAC; use its 12 hexadecimal digits, e.g. 02a1b2c3d400 or 02:A1:B2:C3:D4:00",
    _NAME.pattern: "is not a usable name; use 1 to 40 characters without /, # or +",
    _TOPIC_WORD.pattern: "is not a usable MQTT topic; use letters, digits, _ and -, with / between levels",
}


@dataclass(frozen=True)
class Unit:
    """The unit of a number option, for the messages about it (pydantic and the manifest ignore it)."""

    symbol: str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BatteryOptions(_Strict):
    name: Annotated[str, Field(pattern=_NAME.pattern)]
    host: str = ""  # the Local API's address; for Modbus too unless modbus_host is set
    port: Annotated[int, Field(ge=1, le=65535)] = 30000
    ble_mac: Annotated[str | None, Field(pattern=_BLE_MAC)] = None  # optional: pins the identity
    # udp: the Local API (as before); modbus: Modbus TCP only; auto: the Local API, Modbus while it is silent
    transport: Literal["udp", "modbus", "auto"] = "udp"
    modbus_host: str = ""  # empty: `host` (the battery's own LAN port); else an RS485-to-TCP gateway
    modbus_port: Annotated[int, Field(ge=1, le=65535)] = 502
    modbus_unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    # auto: from the device name in register 31000; v12 = Venus E 1.0/2.0 and C, v3 = Venus E 3.0, A, D
    modbus_generation: Literal["auto", "v12", "v3"] = "auto"

    @field_validator("host", "modbus_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return _host(value) if value.strip() else ""

    @field_validator("ble_mac")
    @classmethod
    def _one_spelling(cls, value: str | None) -> str | None:
        # After the pattern (the only check of validity): replies are compared with this as the devices
        # write it, so AC:D9:29:12:34:56 would otherwise never match `VenusE 3.0-acd929123456`.
        return re.sub(r"[:.-]", "", value).lower() if value else None

    @model_validator(mode="after")
    def _transport_complete(self) -> BatteryOptions:
        if self.transport != "modbus" and not self.host:
            raise ValueError(
                f"batteries: {self.name}: host is required with transport {self.transport} "
                "(the address of the battery's Local API)"
            )
        if self.transport != "udp" and not (self.modbus_host or self.host):
            raise ValueError(
                f"batteries: {self.name}: transport {self.transport} needs modbus_host "
                "(the battery's LAN address or the RS485 gateway's), or host"
            )
        return self

    @property
    def modbus_address(self) -> str:
        """Where Modbus TCP is served: the gateway, or the battery itself."""
        return self.modbus_host or self.host

    @property
    def generation(self) -> Generation | None:
        """The register map chosen, or None: read it from the device name."""
        return None if self.modbus_generation == "auto" else Generation(self.modbus_generation)


class WallboxOptions(_Strict):
    name: Annotated[str, Field(pattern=_NAME.pattern)]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=255)] = 255
    model: Literal["auto", "next", "unite"] = "auto"  # auto: the box's answers tell which map it has
    # the installation's limit (fuse, cable)
    max_current: Annotated[float, Field(ge=6, le=63), Unit("A")] = 16.0

    _check_host = field_validator("host")(classmethod(lambda cls, v: _host(v)))


# Credentials are taken as written: a broker whose password ends in a space could never be reached if it
# were trimmed, while a stray space the user typed shows as a refused login they can correct.
_Verbatim = Annotated[str, StringConstraints(strip_whitespace=False)]


class MqttOptions(_Strict):
    host: str = ""  # empty: use the Supervisor's MQTT service
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: _Verbatim = ""
    password: _Verbatim = ""

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return _host(value) if value else value


class TimingOptions(_Strict):
    """Advanced: Marstek pacing. The defaults follow the reference; slow WiFi may want more."""

    request_gap: Annotated[float, Field(ge=0, le=30), Unit("s")] = 1.0
    write_gap: Annotated[float, Field(ge=0, le=60), Unit("s")] = 5.0
    timeout: Annotated[float, Field(ge=0.1, le=30), Unit("s")] = 3.0
    verify_delay: Annotated[float, Field(ge=0, le=60), Unit("s")] = 5.0


def _reading_topic(value: str) -> str:
    """A topic a reading is taken from: exactly one, since readings are matched to it by name."""
    if "+" in value or "#" in value:
        # (a wildcard made the broker connection fail at every start, or matched no reading at all)
        raise ValueError("must be one topic, without the wildcards + and #")
    if "\x00" in value or len(value.encode()) > 65535:
        raise ValueError("is not a usable MQTT topic")
    return value


def _optimiser_options() -> type[BaseModel]:
    """The optimiser's options, generated from its parameter table (one declaration for option,
    entity and validation)."""
    fields: dict[str, Any] = {}
    for parameter in PARAMETERS:
        if parameter.kind == "switch":
            fields[parameter.key] = (bool, parameter.default)
        elif parameter.kind == "time":
            fields[parameter.key] = (Annotated[str, Field(pattern=_CLOCK)], parameter.default)
        elif parameter.kind == "select":
            fields[parameter.key] = (Literal[parameter.choices], parameter.default)
        else:
            bounds = Field(ge=parameter.minimum, le=parameter.maximum)
            unit = (Unit(parameter.unit),) if parameter.unit else ()
            fields[parameter.key] = (Annotated[(float, bounds, *unit)], parameter.default)
    return create_model("OptimiserOptions", __base__=_Strict, **fields)


OptimiserOptions = _optimiser_options()


class GridSourceOptions(_Strict):
    """Where the grid power (the P1 meter, + = import) comes from."""

    type: Literal["battery", "mqtt", "entity"] = "battery"
    battery: str = ""  # battery: its CT meter (EM.GetStatus); empty = the first battery
    topic: str = ""  # mqtt: a topic with a number, or JSON with `json_key`
    json_key: str = ""
    entity_id: str = ""  # entity: a Home Assistant sensor, through the Supervisor
    unit: Literal["W", "kW"] = "W"
    invert: bool = False  # for meters that report export as positive

    _check_topic = field_validator("topic")(classmethod(lambda cls, v: _reading_topic(v)))

    @model_validator(mode="after")
    def _complete(self) -> GridSourceOptions:
        if self.type == "mqtt" and not self.topic:
            raise ValueError("grid_source.topic is required when grid_source.type is mqtt")
        if self.type == "entity" and not re.fullmatch(r"sensor\.[a-z0-9_]+", self.entity_id):
            raise ValueError(
                "grid_source.entity_id must be a sensor entity id (sensor.xxx) when type is entity"
            )
        return self


class PvPowerOptions(_Strict):
    """Where the PV power now comes from (optional): for the site's power flow and house load."""

    type: Literal["none", "mqtt", "entity"] = "none"
    topic: str = ""
    json_key: str = ""
    entity_id: str = ""
    unit: Literal["W", "kW"] = "W"

    _check_topic = field_validator("topic")(classmethod(lambda cls, v: _reading_topic(v)))

    @model_validator(mode="after")
    def _complete(self) -> PvPowerOptions:
        if self.type == "mqtt" and not self.topic:
            raise ValueError("pv_power.topic is required when pv_power.type is mqtt")
        if self.type == "entity" and not re.fullmatch(r"sensor\.[a-z0-9_]+", self.entity_id):
            raise ValueError("pv_power.entity_id must be a sensor entity id (sensor.xxx) when type is entity")
        return self


class PvForecastOptions(_Strict):
    """Tomorrow's PV: an energy forecast entity in kWh, a weather entity's sunny hours, detailed forecast
    sensors (Solcast, Open-Meteo Solar Forecast) with the PV per quarter-hour, or the Energy dashboard's
    solar forecast (Forecast.Solar and the others; no entity to name)."""

    type: Literal["none", "entity", "weather", "detailed", "energy"] = "none"
    # detailed: one or more sensors, separated by commas (Solcast's forecast today and tomorrow)
    entity_id: str = ""

    @model_validator(mode="after")
    def _complete(self) -> PvForecastOptions:
        domain = {"entity": "sensor", "weather": "weather"}.get(self.type)
        if domain and not re.fullmatch(rf"{domain}\.[a-z0-9_]+", self.entity_id):
            raise ValueError(f"pv_forecast.entity_id must be a {domain} entity id when type is {self.type}")
        if self.type == "detailed":
            if not self.entities:
                raise ValueError("pv_forecast.entity_id must name at least one sensor when type is detailed")
            for entity in self.entities:
                if not re.fullmatch(r"sensor\.[a-z0-9_]+", entity):
                    raise ValueError(
                        f"pv_forecast.entity_id: {entity!r} is not a sensor entity id (sensor.xxx)"
                    )
        return self

    @property
    def entities(self) -> list[str]:
        return [part.strip() for part in self.entity_id.split(",") if part.strip()]


class _PriceSource(_Strict):
    type: Literal["tariff", "entity"] = "tariff"
    entity_id: str = ""


class PricesOptions(PriceFormula, _PriceSource):  # the source first on the options tab, then the formula
    """Where the energy prices come from: the tariff's periods, or a day-ahead price entity with the
    formula that turns its spot price into what you pay and get (the tariff's capacity price stays)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    @model_validator(mode="after")
    def _complete(self) -> PricesOptions:
        if self.type == "entity" and not re.fullmatch(r"sensor\.[a-z0-9_]+", self.entity_id):
            raise ValueError("prices.entity_id must be a sensor entity id (sensor.xxx) when type is entity")
        return self

    def formula(self) -> PriceFormula:
        return PriceFormula(**{name: getattr(self, name) for name in PriceFormula.model_fields})


class TariffPeriodOptions(_Strict):
    name: Annotated[str, Field(pattern=_PERIOD_NAME)]
    price: Annotated[float, Field(ge=-1, le=5), Unit("EUR/kWh")]  # all-in
    days: Annotated[str, Field(pattern=_DAYS)]
    start: Annotated[str, Field(pattern=_CLOCK)]
    end: Annotated[str, Field(pattern=_CLOCK)]


class TariffOptions(_Strict):
    default_period: Annotated[str, Field(pattern=_PERIOD_NAME)] = "off_peak"
    default_price: Annotated[float, Field(ge=-1, le=5), Unit("EUR/kWh")] = 0.236
    periods: list[TariffPeriodOptions] = [
        TariffPeriodOptions(name="peak", price=0.279, days="mon-fri", start="07:00", end="22:00"),
        TariffPeriodOptions(name="super_off_peak", price=0.208, days="all", start="01:00", end="07:00"),
    ]
    injection_price: Annotated[float, Field(ge=-1, le=5), Unit("EUR/kWh")] = 0.02
    capacity_price: Annotated[float, Field(ge=0, le=1000), Unit("EUR/kW a year")] = 52.37
    capacity_floor: Annotated[float, Field(ge=0, le=50), Unit("kW")] = 2.5

    @model_validator(mode="after")
    def _one_price_per_period(self) -> TariffOptions:
        prices: dict[str, float] = {self.default_period: self.default_price}
        for period in self.periods:
            if prices.setdefault(period.name, period.price) != period.price:
                raise ValueError(f"tariff.periods: the period {period.name!r} has two different prices")
        return self

    def build(self) -> Tariff:
        prices = {self.default_period: self.default_price} | {p.name: p.price for p in self.periods}
        rules = [{"period": p.name, "days": p.days, "start": p.start, "end": p.end} for p in self.periods]
        return Tariff.from_rules(
            rules,
            prices,
            self.default_period,
            injection_price=self.injection_price,
            capacity_price=self.capacity_price,
            capacity_floor_kw=self.capacity_floor,
        )


class Options(_Strict):
    batteries: list[BatteryOptions] = []
    wallboxes: list[WallboxOptions] = []
    mqtt: MqttOptions = MqttOptions()
    discovery_prefix: Annotated[str, Field(pattern=_TOPIC_WORD.pattern)] = "homeassistant"
    base_topic: Annotated[str, Field(pattern=_TOPIC_WORD.pattern)] = "marstek_webasto"
    battery_poll_interval: Annotated[float, Field(ge=1, le=3600), Unit("s")] = 10.0
    wallbox_poll_interval: Annotated[float, Field(ge=1, le=3600), Unit("s")] = 5.0
    state_refresh_interval: Annotated[float, Field(ge=10, le=86400), Unit("s")] = 300.0
    offline_after: Annotated[int, Field(ge=1, le=100)] = 3
    marstek_bind: str = "0.0.0.0"
    rediscovery_targets: list[str] = []  # empty: broadcast; addresses or blocks otherwise
    timing: TimingOptions = TimingOptions()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    optimiser: OptimiserOptions = OptimiserOptions()  # type: ignore[valid-type]
    grid_source: GridSourceOptions = GridSourceOptions()
    pv_forecast: PvForecastOptions = PvForecastOptions()
    pv_power: PvPowerOptions = PvPowerOptions()
    tariff: TariffOptions = TariffOptions()
    prices: PricesOptions = PricesOptions()
    control_interval: Annotated[float, Field(ge=1, le=300), Unit("s")] = 10.0
    notifications: bool = True  # Home Assistant persistent notifications for problems that need a person

    def optimiser_values(self) -> dict[str, Any]:
        """The optimiser section as plain values (its model is generated, so typed access goes here)."""
        section: BaseModel = self.optimiser
        return section.model_dump()

    @field_validator("marstek_bind")
    @classmethod
    def _bind_address(cls, value: str) -> str:
        value = value.strip()
        try:
            if ipaddress.ip_address(value).version != 4:
                raise ValueError
        except ValueError:
            raise ValueError(
                "must be an IPv4 address of this host (0.0.0.0: all of them), e.g. 192.168.1.10"
            ) from None
        return value

    @field_validator("rediscovery_targets")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        targets = [spec.strip() for spec in value]
        for spec in targets:
            try:
                found = expand_targets([spec], 1)
                if any(
                    ipaddress.ip_address(host).version != 4 or not 0 < port < 65536 for host, port in found
                ):
                    raise ValueError("IPv4 addresses and ports 1-65535 only")
            except ValueError as exc:
                raise ValueError(
                    f"{spec!r} is not an address, ADDRESS:PORT or a block such as 192.168.1.0/24 ({exc})"
                ) from None
        return targets

    @model_validator(mode="after")
    def _refresh_in_time(self) -> Options:
        # A Passive command is renewed at a control step: with fewer than two steps in a countdown it runs
        # out between them, and the battery goes to Auto and back to Passive at every step.
        countdown_s = float(self.optimiser_values()["passive_countdown"]) * 60
        if self.control_interval * 2 > countdown_s:
            raise ValueError(
                f"control_interval ({self.control_interval:g} s) must be at most half of the "
                f"optimiser's passive_countdown ({countdown_s / 60:g} min), or the countdown runs out "
                "between two control steps"
            )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Options:
        for kind, items in (("batteries", self.batteries), ("wallboxes", self.wallboxes)):
            names = [item.name for item in items]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind}: names must be unique; repeated: {', '.join(duplicates)}")
            addresses = [address for item in items for address in _addresses(item)]
            if len(set(addresses)) != len(addresses):
                raise ValueError(f"{kind}: two entries point at the same host and port")
        # Two entries for one battery would have it polled and commanded twice under one identity.
        macs = [b.ble_mac for b in self.batteries if b.ble_mac]  # in one spelling already
        repeated = sorted({mac for mac in macs if macs.count(mac) > 1})
        if repeated:
            raise ValueError(
                f"batteries: each ble_mac belongs to one battery; repeated: {', '.join(repeated)}"
            )
        return self

    @model_validator(mode="after")
    def _meter_battery_readable(self) -> Options:
        source = self.grid_source
        if source.type != "battery" or not self.batteries:
            return self
        names = [b.name for b in self.batteries]
        if source.battery and source.battery not in names:
            raise ValueError(
                f"grid_source.battery: no battery is named {source.battery!r} (the batteries: "
                f"{', '.join(names)}); leave it empty for the first battery"
            )
        meter = next((b for b in self.batteries if b.name == source.battery), self.batteries[0])
        # (switched on later from Home Assistant, the optimiser holds the batteries in Auto for want of a
        # reading, and says so)
        if meter.transport == "modbus" and getattr(self.optimiser, "enabled", False):
            raise ValueError(
                f"grid_source: {meter.name} is on transport modbus, which cannot read the battery's CT "
                "meter; use your P1 meter (grid_source type mqtt or entity) or a battery on the Local API"
            )
        return self


def _addresses(item: BatteryOptions | WallboxOptions) -> list[tuple[str, str, int]]:
    """The (protocol, host, port) a device is reached at: no two devices may share one."""
    # Host names are case-insensitive (DNS, mDNS): Venus.local and venus.local are one device.
    if isinstance(item, WallboxOptions):
        return [("tcp", item.host.lower(), item.port)]
    udp = [("udp", item.host.lower(), item.port)] if item.transport != "modbus" else []
    tcp = [("tcp", item.modbus_address.lower(), item.modbus_port)] if item.transport != "udp" else []
    return udp + tcp


class OptionsError(Exception):
    """Invalid options: `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


MQTT_HOST_REQUIRED = (
    "mqtt.host: required when not running as a Home Assistant add-on (set it to your MQTT broker's address)"
)
_ROOT = "options"


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or _ROOT


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The options model a field holds, directly, in a list or as an optional."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union, types.UnionType):
        for member in get_args(annotation):
            found = _model_in(member)
            if found is not None:
                return found
    return None


def _walk(loc: tuple[int | str, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model that holds the option at `loc`, and that option's field (None where there is none)."""
    model: type[BaseModel] | None = Options
    info: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if info is not None:
            model = _model_in(info.annotation)
        info = model.model_fields.get(part) if model is not None else None
        if info is None:
            return model, None
    return model, info


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _shown(value: Any) -> str:
    """The value as the user wrote it, in JSON's words where Python's differ."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a group of options"
    text = str(value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _allowed_range(info: FieldInfo | None) -> str | None:
    """'between 6 and 63 A', 'more than 0 and at most 30 s', 'at least 1', from the field's bounds."""
    if info is None:
        return None
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"at least {_number(item.ge)}"  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Gt):
            low = f"more than {_number(item.gt)}"  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Le):
            high = f"at most {_number(item.le)}"  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Lt):
            high = f"less than {_number(item.lt)}"  # type: ignore[arg-type]
    unit = next((f" {item.symbol}" for item in info.metadata if isinstance(item, Unit)), "")
    if low and high:
        if low.startswith("at least") and high.startswith("at most"):
            return f"between {low.removeprefix('at least ')} and {high.removeprefix('at most ')}{unit}"
        return f"{low} and {high}{unit}"
    return f"{low or high}{unit}" if low or high else None


def _explain(error: Any) -> str:
    """One pydantic error as a sentence: where, the value given and what is allowed."""
    loc = tuple(p for p in error["loc"] if p != "function-after")
    where = _location(loc)
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    model, info = _walk(loc)
    value = _shown(given)
    allowed = _allowed_range(info)
    within = f"; it must be {allowed}" if allowed else ""
    if kind == "extra_forbidden":
        known = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        return f"{where}: unknown option; " + (f"did you mean {close[0]}?" if close else "check the spelling")
    if kind == "missing":
        return f"{where}: missing; this option is required"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if not loc:
            return f"{_ROOT}: the file must hold one JSON object ({{...}}), not {value}"
        return f"{where}: must be a group of options ({{...}}), not {value}"
    if kind == "list_type":
        return f"{where}: must be a list ([...]), not {value}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{where}: {value} is not a whole number{within}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{where}: {value} is not a number{within}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{where}: {value} is not true or false"
    if kind == "string_type":
        return f"{where}: must be text (in quotes), not {value}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{where}: {value} is out of range: it must be {allowed or error['msg']}"
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "")
        return f"{where}: {value} is not one of the choices: {choices}"
    if kind == "string_pattern_mismatch":
        help_text = _PATTERN_HELP.get(str(ctx.get("pattern")), "has characters that are not allowed here")
        return f"{where}: {value} {help_text}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error" and isinstance(given, dict):
        return message  # a rule across options: its message names them
    message = message.replace("Input should be", "must be")
    if kind == "value_error" and isinstance(given, list):
        return f"{where}: {message}"  # its message names the entry: "a list" says nothing more
    return f"{where}: {message} (got {value})"


def _broker_missing(data: object, errors: list[Any]) -> bool:
    """No mqtt.host in `data`, and no other problem already said about it or the file's shape."""
    if not isinstance(data, dict) or not isinstance(data.get("mqtt", {}), dict):
        return False
    if any(tuple(error["loc"][:2]) == ("mqtt", "host") for error in errors):
        return False
    host = data.get("mqtt", {}).get("host", "")
    return not (isinstance(host, str) and host.strip())


def parse_options(data: object, *, broker_elsewhere: bool = True) -> Options:
    """Validates `data`; every problem, each on its own line, or the options.

    `broker_elsewhere`: whether a broker can come from outside the options (in the add-on the Supervisor
    has one); without it `mqtt.host` is required, since the bridge cannot work without a broker.
    """
    errors: list[Any] = []
    options: Options | None = None
    try:
        options = Options.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    problems = [_explain(error) for error in errors]
    if not broker_elsewhere and _broker_missing(data, errors):
        problems.append(MQTT_HOST_REQUIRED)
    if problems or options is None:
        raise OptionsError(problems)
    return options


def load_options(path: Path, *, broker_elsewhere: bool = True) -> Options:
    try:
        data = read_json(path)
    except ValueError as exc:
        raise OptionsError([str(exc)]) from None
    return parse_options(data, broker_elsewhere=broker_elsewhere)


_DEVICE_LISTS = ("batteries", "wallboxes")


def load_options_sparing(path: Path, *, broker_elsewhere: bool = True) -> tuple[Options, list[str]]:
    """The options, with the battery and wallbox entries that are invalid on their own left out, and the
    problems (each bad entry's, then which entries were left out).

    A typo in one battery's entry must not leave every other device unmanaged: the rest run, the panel
    and the log say what was left out. Any other problem (a rule across entries, a bad optimiser option, a
    damaged file), or nothing left to run, raises OptionsError as `load_options` does.
    """
    try:
        data = read_json(path)
    except ValueError as exc:
        raise OptionsError([str(exc)]) from None
    try:
        return parse_options(data, broker_elsewhere=broker_elsewhere), []
    except OptionsError as exc:
        problems = exc.problems
        bad = _bad_entries(data)
        if not bad or not isinstance(data, dict):
            raise
    spared = dict(data)
    for key in _DEVICE_LISTS:
        if isinstance(entries := data.get(key), list):
            spared[key] = [entry for i, entry in enumerate(entries) if (key, i) not in bad]
    if not any(spared.get(key) for key in _DEVICE_LISTS):
        raise OptionsError(problems)
    source = data.get("grid_source") or {}  # the default: the first battery's CT
    first_meter = isinstance(source, dict) and source.get("type", "battery") == "battery"
    first_meter = first_meter and not source.get("battery")
    if ("batteries", 0) in bad and first_meter:
        # "the first battery's meter" would quietly become another battery's, which may have no CT
        raise OptionsError(problems)
    try:
        options = parse_options(spared, broker_elsewhere=broker_elsewhere)
    except OptionsError:
        raise OptionsError(problems) from None  # not the entries alone: nothing runs, as before
    left_out = ", ".join(f"{key}[{i}]" for key, i in sorted(bad))
    return options, [*problems, f"left out until corrected: {left_out}; the other devices run"]


def _bad_entries(data: object) -> set[tuple[str, int]]:
    """The device entries with a problem of their own; empty when any problem lies elsewhere."""
    try:
        Options.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    else:
        return set()
    bad: set[tuple[str, int]] = set()
    for error in errors:
        loc = tuple(error["loc"])
        if len(loc) < 2 or loc[0] not in _DEVICE_LISTS or not isinstance(loc[1], int):
            return set()
        bad.add((str(loc[0]), loc[1]))
    return bad
