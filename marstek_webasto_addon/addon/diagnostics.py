"""What a maintainer asks for in a bug report, in one JSON document: versions, the options with secrets
redacted, each device's profile, its last errors and problems, and the optimiser's last decisions.

Served by the panel (`api/diagnostics`, the "Download diagnostics" link) and fetched by the
`diagnostics` command; it never contains a password or a token.
"""

from __future__ import annotations

import platform
import sys
from datetime import datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    from .runtime import Runtime

REDACTED = "**REDACTED**"
_SECRET_WORDS = ("password", "token", "secret", "username")
_LIBRARIES = ("aiomqtt", "pymodbus", "pydantic", "aiohttp", "paho-mqtt", "ifaddr")


def redact(value: Any) -> Any:
    """A copy with every value under a secret-sounding key replaced (empty ones stay empty: that is news)."""
    if isinstance(value, dict):
        return {
            key: (
                REDACTED if value[key] and any(w in str(key).lower() for w in _SECRET_WORDS) else redact(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def versions() -> dict[str, str]:
    found = {"add-on": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for name in _LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def collect(runtime: Runtime | None, problems: list[dict[str, str]]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": versions(),
        "problems": problems,
    }
    if runtime is None:
        return report
    report["options"] = redact(runtime.options.model_dump(mode="json"))
    report["mqtt"] = runtime.mqtt.status() if runtime.mqtt is not None else None
    report["batteries"] = [_battery(device) for device in runtime.batteries]
    report["wallboxes"] = [_wallbox(device) for device in runtime.wallboxes]
    optimiser = runtime.optimiser
    if optimiser is not None:
        status = optimiser.status
        report["optimiser"] = {
            "settings": optimiser.settings.as_dict(),
            "status": None if status is None else {**status.__dict__, "night_plan": repr(status.night_plan)},
            "decisions": [
                {"at": d.at.isoformat(timespec="seconds"), "text": d.text} for d in optimiser.decisions[-30:]
            ],
        }
    report["manual_holds"] = {
        device.name: hold.describe()
        for device in runtime.batteries
        if (hold := runtime.holds.get(device.device_id)) is not None
    }
    return report


def _battery(device: Any) -> dict[str, Any]:
    link, client = device.link, device.link.client
    firmware = link.snapshot.firmware
    return {
        "name": device.name,
        "id": device.device_id,
        "address": f"{client.host}:{client.port}",
        "online": link.online,
        "profile": {
            "family": firmware.family.value,
            "model": firmware.model,
            "firmware": firmware.ver,
            "limits": {"charge_w": client.limits.charge_w, "discharge_w": client.limits.discharge_w},
            "manual_slots": firmware.manual_slots,
        },
        "last_error": link.last_error or None,
        "unsupported_methods": [m.value for m in client.unsupported_methods],
        "problems": link.snapshot.problems[-20:],
        "last_reply_from": client.last_src,
        "last_round_trip_s": client.last_round_trip,
        "values": link.snapshot.values,
        "last_replies": {method.value: reply for method, reply in client.last_replies.items()},
        "last_command": device.last_outcome.__dict__ if device.last_outcome else None,
    }


def _wallbox(device: Any) -> dict[str, Any]:
    link, config = device.link, device.link.client.config
    return {
        "name": device.name,
        "id": device.device_id,
        "address": f"{config.host}:{config.port}",
        "unit_id": config.unit_id,
        "model": config.model.value,
        "online": link.online,
        "last_error": link.last_error or None,
        "problems": link.snapshot.problems[-20:],
        "values": link.snapshot.values,
        "last_registers": dict(device.link.client.last_words),
        "last_command": device.last_outcome.__dict__ if device.last_outcome else None,
    }
