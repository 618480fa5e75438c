"""The add-on options (the JSON the Supervisor writes to /data/options.json), validated at the edge.

Every problem is reported on its own line with the key, what is wrong and what is allowed; nothing is
sent to any device until the options are valid.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ..optimiser.settings import PARAMETERS
from ..optimiser.tariff import DAY_NAMES, Tariff

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


_PATTERN_HELP = {
    _CLOCK: "must be a time HH:MM (00:00..23:59)",
    _DAYS: "must be days such as mon-fri, sat,sun or all",
    r"^[a-z][a-z0-9_]{0,30}$": "must be a short name in lower case: letters, digits and _",
    r"^[0-9a-fA-F]{12}$": "must be 12 hexadecimal digits (the BLE MAC without separators)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BatteryOptions(_Strict):
    name: Annotated[str, Field(pattern=_NAME.pattern)]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 30000
    ble_mac: Annotated[str | None, Field(pattern=r"^[0-9a-fA-F]{12}$")] = None  # optional: pins the identity

    _check_host = field_validator("host")(classmethod(lambda cls, v: _host(v)))


class WallboxOptions(_Strict):
    name: Annotated[str, Field(pattern=_NAME.pattern)]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=255)] = 255
    model: Literal["next", "unite"]
    max_current: Annotated[float, Field(ge=6, le=63)] = 16.0  # the installation's limit (fuse, cable)

    _check_host = field_validator("host")(classmethod(lambda cls, v: _host(v)))


class MqttOptions(_Strict):
    host: str = ""  # empty: use the Supervisor's MQTT service
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str = ""
    password: str = ""

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return _host(value) if value else value


class TimingOptions(_Strict):
    """Advanced: Marstek pacing. The defaults follow the reference; slow WiFi may want more."""

    request_gap: Annotated[float, Field(ge=0, le=30)] = 1.0
    write_gap: Annotated[float, Field(ge=0, le=60)] = 5.0
    timeout: Annotated[float, Field(gt=0, le=30)] = 3.0
    verify_delay: Annotated[float, Field(ge=0, le=60)] = 5.0


def _optimiser_options() -> type[BaseModel]:
    """The optimiser's options, generated from its parameter table (one declaration for option,
    entity and validation)."""
    fields: dict[str, Any] = {}
    for parameter in PARAMETERS:
        if parameter.kind == "switch":
            fields[parameter.key] = (bool, parameter.default)
        elif parameter.kind == "time":
            fields[parameter.key] = (Annotated[str, Field(pattern=_CLOCK)], parameter.default)
        else:
            bounds = Field(ge=parameter.minimum, le=parameter.maximum)
            fields[parameter.key] = (Annotated[float, bounds], parameter.default)
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

    @model_validator(mode="after")
    def _complete(self) -> PvPowerOptions:
        if self.type == "mqtt" and not self.topic:
            raise ValueError("pv_power.topic is required when pv_power.type is mqtt")
        if self.type == "entity" and not re.fullmatch(r"sensor\.[a-z0-9_]+", self.entity_id):
            raise ValueError("pv_power.entity_id must be a sensor entity id (sensor.xxx) when type is entity")
        return self


class PvForecastOptions(_Strict):
    """Tomorrow's PV: an energy forecast entity in kWh, or a weather entity's sunny hours."""

    type: Literal["none", "entity", "weather"] = "none"
    entity_id: str = ""

    @model_validator(mode="after")
    def _complete(self) -> PvForecastOptions:
        domain = {"entity": "sensor", "weather": "weather"}.get(self.type)
        if domain and not re.fullmatch(rf"{domain}\.[a-z0-9_]+", self.entity_id):
            raise ValueError(f"pv_forecast.entity_id must be a {domain} entity id when type is {self.type}")
        return self


class TariffPeriodOptions(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")]
    price: Annotated[float, Field(ge=-1, le=5)]  # EUR per kWh, all-in
    days: Annotated[str, Field(pattern=_DAYS)]
    start: Annotated[str, Field(pattern=_CLOCK)]
    end: Annotated[str, Field(pattern=_CLOCK)]


class TariffOptions(_Strict):
    default_period: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")] = "off_peak"
    default_price: Annotated[float, Field(ge=-1, le=5)] = 0.236
    periods: list[TariffPeriodOptions] = [
        TariffPeriodOptions(name="peak", price=0.279, days="mon-fri", start="07:00", end="22:00"),
        TariffPeriodOptions(name="super_off_peak", price=0.208, days="all", start="01:00", end="07:00"),
    ]
    injection_price: Annotated[float, Field(ge=-1, le=5)] = 0.02
    capacity_price: Annotated[float, Field(ge=0, le=1000)] = 52.37  # EUR per kW per year
    capacity_floor: Annotated[float, Field(ge=0, le=50)] = 2.5

    @model_validator(mode="after")
    def _one_price_per_period(self) -> TariffOptions:
        prices: dict[str, float] = {self.default_period: self.default_price}
        for period in self.periods:
            if prices.setdefault(period.name, period.price) != period.price:
                raise ValueError(f"tariff period {period.name!r} has two different prices")
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
    battery_poll_interval: Annotated[float, Field(ge=1, le=3600)] = 10.0
    wallbox_poll_interval: Annotated[float, Field(ge=1, le=3600)] = 5.0
    state_refresh_interval: Annotated[float, Field(ge=10, le=86400)] = 300.0
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
    control_interval: Annotated[float, Field(ge=1, le=300)] = 10.0

    def optimiser_values(self) -> dict[str, Any]:
        """The optimiser section as plain values (its model is generated, so typed access goes here)."""
        section: BaseModel = self.optimiser
        return section.model_dump()

    @model_validator(mode="after")
    def _unique_names(self) -> Options:
        for kind, items in (("batteries", self.batteries), ("wallboxes", self.wallboxes)):
            names = [item.name for item in items]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind}: names must be unique; repeated: {', '.join(duplicates)}")
            addresses = [(item.host, item.port) for item in items]
            if len(set(addresses)) != len(addresses):
                raise ValueError(f"{kind}: two entries point at the same host and port")
        return self


class OptionsError(Exception):
    """Invalid options: `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(options)"


def _explain(error: Any) -> str:
    where = _location(tuple(p for p in error["loc"] if p not in ("function-after",)))
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    if kind == "extra_forbidden":
        return f"{where}: unknown option; check the spelling"
    if kind == "missing":
        return f"{where}: required"
    if kind == "literal_error":
        return f"{where}: must be one of {ctx.get('expected')}{shown}"
    if kind == "string_pattern_mismatch":
        expected = _PATTERN_HELP.get(str(ctx.get("pattern")), "has characters that are not allowed")
        return f"{where}: {expected}{shown}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}[
            kind
        ]
        return f"{where}: must be {bound} {next(iter(ctx.values()))}{shown}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}{shown}"


def parse_options(data: object) -> Options:
    try:
        return Options.model_validate(data)
    except ValidationError as exc:
        raise OptionsError([_explain(error) for error in exc.errors()]) from None


def load_options(path: Path) -> Options:
    try:
        text = path.read_text()
    except OSError as exc:
        raise OptionsError([f"cannot read {path}: {exc.strerror}"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OptionsError(
            [f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
        ) from None
    return parse_options(data)
