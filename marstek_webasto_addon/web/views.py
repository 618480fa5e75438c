"""The panel's JSON, generated from the same exposes that drive MQTT discovery: nothing is described twice."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..bridge.devices import BatteryDevice, BridgedDevice, WallboxDevice
from ..bridge.exposes import Expose

if TYPE_CHECKING:
    from ..addon.runtime import Runtime

# Keys the API adds next to a device's state values; a state key must never take one of these names.
META_KEYS = frozenset({"id", "kind", "name", "available", "attributes", "roles", "manual_hold_outside_mode"})


def expose_json(expose: Expose) -> dict[str, Any]:
    data = {k: v for k, v in asdict(expose).items() if v not in (None, (), False) or k == "component"}
    data["component"] = expose.component.value
    data["commandable"] = expose.component.commandable
    if expose.options:
        data["options"] = list(expose.options)
    return data


def device_meta(device: BridgedDevice) -> dict[str, Any]:
    return {
        "id": device.device_id,
        "kind": device.kind,
        "name": device.name,
        "exposes": [expose_json(e) for e in device.exposes()],
    }


def device_state(device: BridgedDevice) -> dict[str, Any]:
    values = device.state()
    clash = META_KEYS & values.keys()
    if clash:  # a table row named like a meta key would silently shadow it
        raise ValueError(f"{device.name}: state keys {sorted(clash)} are reserved by the panel API")
    data = {
        **values,
        "id": device.device_id,
        "kind": device.kind,
        "name": device.name,
        "available": device.available,
        "attributes": device.attributes(),
    }
    if isinstance(device, BatteryDevice):
        data["manual_hold_outside_mode"] = hold_outside_mode(device, values)
    return data


def hold_outside_mode(device: BatteryDevice, values: dict[str, Any]) -> str | None:
    """The mode a person switched the battery to in the Marstek app, while the optimiser holds it for that
    (an app-change hold, `ManualHolds.hold_outside`); None: no hold, or one a command given here set. Only
    with the hold the state's `manual_hold` shows: the panel never reads an origin without an end."""
    if values.get("manual_hold") is None:
        return None
    hold = device.holds.get(device.device_id)
    return (hold.outside_mode or None) if hold is not None else None


def waiting(device: BridgedDevice, reason: str | None) -> dict[str, Any]:
    """A configured device that has not answered yet: what its greyed card shows."""
    address = address_of(device)
    return {
        "name": device.name,
        "kind": device.kind,
        "address": address,
        "reason": reason or f"has not answered yet at {address}",
    }


def address_of(device: BridgedDevice) -> str:
    if isinstance(device, BatteryDevice):
        return f"{device.link.client.host}:{device.link.client.port}"
    if isinstance(device, WallboxDevice):
        return f"{device.link.client.config.host}:{device.link.client.config.port}"
    return ""


def meta(runtime: Runtime) -> dict[str, Any]:
    devices = [device_meta(d) for d in runtime.devices if d.device_id is not None]
    return {"devices": devices, "signature": signature(devices)}


def signature(devices: list[dict[str, Any]]) -> str:
    """Changes when a device appears or its exposes change: the page then fetches api/devices again."""
    text = json.dumps(devices, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def state(runtime: Runtime, problems: list[dict[str, str]], now: str) -> dict[str, Any]:
    def of_kind(kind: str) -> list[dict[str, Any]]:
        return [device_state(d) for d in runtime.devices if d.kind == kind and d.device_id is not None]

    named = [d for d in (*runtime.batteries, *runtime.wallboxes) if d.device_id is None]
    reasons = {p["source"]: p["text"] for p in problems}
    optimiser = runtime.optimiser_device
    optimiser_state = device_state(optimiser) if optimiser is not None else None
    if optimiser_state is not None and runtime.optimiser is not None:
        status = runtime.optimiser.status
        optimiser_state["roles"] = dict(status.roles) if status is not None else {}
    return {
        "time": now,
        "batteries": of_kind("battery"),
        "wallboxes": of_kind("wallbox"),
        "site": device_state(runtime.site) if runtime.site is not None else None,
        "optimiser": optimiser_state,
        "bridge": runtime.bridge_device.state(),
        # configured but never answered: no id yet, still worth showing
        "waiting": [waiting(d, reasons.get(d.name)) for d in named],
        "mqtt": runtime.mqtt.status() if runtime.mqtt is not None else {},
        "problems": problems,
    }
