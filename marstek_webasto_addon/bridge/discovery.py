"""Home Assistant MQTT discovery payloads, generated from the exposes. Pure functions, no I/O.

Per-entity topics (`<prefix>/<component>/<node>/<key>/config`) with full key names, so every Home
Assistant release from 2023 on understands them. No `object_id` (removed in 2026.4) and no
`default_entity_id` (2025.10+): entity ids follow from the device and entity names on every release.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from .devices import BatteryDevice, BridgedDevice
from .exposes import Component, Expose
from .topics import Topics

ORIGIN = {
    "name": "Marstek & Webasto add-on",
    "sw_version": __version__,
    "support_url": "https://github.com/marstek-webasto-addon/marstek-webasto-addon",
}


def device_block(device: BridgedDevice, topics: Topics) -> dict[str, Any]:
    assert device.device_id is not None
    block = {key: value for key, value in device.device_info().items() if value not in (None, "", [])}
    block["identifiers"] = [topics.node_id(device.device_id)]
    if device.kind != "bridge":
        block["via_device"] = topics.node_id("bridge")
    return block


def entity_config(device: BridgedDevice, expose: Expose, topics: Topics) -> dict[str, Any]:
    device_id = device.device_id
    assert device_id is not None
    node = topics.node_id(device_id)
    config: dict[str, Any] = {
        "name": expose.name,
        "unique_id": f"{node}_{expose.key}",
        "device": device_block(device, topics),
        "origin": ORIGIN,
        "availability": [{"topic": topics.bridge_status}],
    }
    if device.kind in ("battery", "wallbox") and not expose.stored:
        config["availability"].append({"topic": topics.availability(device_id)})
        config["availability_mode"] = "all"
    if expose.component is not Component.BUTTON and not expose.write_only:
        config["state_topic"] = topics.state(device_id)
        config["value_template"] = f"{{{{ value_json.{expose.key} }}}}"
    if expose.component.commandable:
        config["command_topic"] = topics.command(device_id, expose.key)
    optional = {
        "unit_of_measurement": expose.unit,
        "device_class": expose.device_class,
        "state_class": expose.state_class,
        "entity_category": expose.entity_category,
        "icon": expose.icon,
        "suggested_display_precision": expose.precision if expose.component is Component.SENSOR else None,
    }
    config.update({k: v for k, v in optional.items() if v is not None})
    if not expose.enabled_by_default:
        config["enabled_by_default"] = False
    if expose.options and (expose.component is Component.SELECT or expose.device_class == "enum"):
        config["options"] = list(expose.options)
    if expose.component is Component.NUMBER:
        config.update({"min": expose.minimum, "max": expose.maximum, "step": expose.step or 1, "mode": "box"})
    if expose.component is Component.TEXT and expose.pattern:
        config["pattern"] = expose.pattern
    if expose.attributes:
        config["json_attributes_topic"] = topics.attributes(device_id, expose.key)
    return config


def announceable(device: BridgedDevice) -> bool:
    """Known well enough to announce: its identity, and for a battery its model.

    A battery's identity can be known before it answers (configured, or remembered from the last run),
    but its power range, modes and sensors follow from its model: announced before, the number's range
    would be the generic model's and the state that follows (e.g. a stored 1000 W) outside it, which
    Home Assistant logs as an error on every start.
    """
    if device.device_id is None:
        return False
    return not isinstance(device, BatteryDevice) or device.announce_ready


def discovery_messages(device: BridgedDevice, topics: Topics) -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) for every entity of a device that can be announced."""
    if device.device_id is None or not announceable(device):
        return []
    return [
        (topics.discovery(e.component, device.device_id, e.key), entity_config(device, e, topics))
        for e in device.exposes()
    ]
