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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_TOPIC_WORD = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_NAME = re.compile(r"^[^\x00-\x1f/#+]{1,40}$")


def _host(value: str) -> str:
    value = value.strip()
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.match(value):
            raise ValueError("must be an IP address or a host name") from None
    return value


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
        return f"{where}: has characters that are not allowed{shown}"
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
