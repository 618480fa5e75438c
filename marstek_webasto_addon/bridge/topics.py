"""Every MQTT topic the bridge uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from .exposes import Component


@dataclass(frozen=True)
class Topics:
    base: str  # e.g. marstek_webasto
    prefix: str  # Home Assistant's discovery prefix, e.g. homeassistant

    @property
    def namespace(self) -> str:
        """Start of our node ids and unique ids: the base topic made topic-segment safe."""
        return self.base.replace("/", "_")

    @property
    def bridge_status(self) -> str:
        return f"{self.base}/status"

    @property
    def ha_status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def command_filter(self) -> str:
        return f"{self.base}/+/+/set"

    @property
    def discovery_filter(self) -> str:
        return f"{self.prefix}/+/+/+/config"

    def node_id(self, device_id: str) -> str:
        return f"{self.namespace}_{device_id}"

    def discovery(self, component: Component, device_id: str, key: str) -> str:
        return f"{self.prefix}/{component.value}/{self.node_id(device_id)}/{key}/config"

    def state(self, device_id: str) -> str:
        return f"{self.base}/{device_id}/state"

    def availability(self, device_id: str) -> str:
        return f"{self.base}/{device_id}/availability"

    def attributes(self, device_id: str, key: str) -> str:
        return f"{self.base}/{device_id}/{key}/attributes"

    def command(self, device_id: str, key: str) -> str:
        return f"{self.base}/{device_id}/{key}/set"

    def parse_command(self, topic: str) -> tuple[str, str] | None:
        """(device id, key) of a command topic, or None."""
        head = f"{self.base}/"
        if not topic.startswith(head) or not topic.endswith("/set"):
            return None
        parts = topic[len(head) : -len("/set")].split("/")
        return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None

    def parse_discovery(self, topic: str) -> tuple[str, str] | None:
        """(node id, key) of one of our discovery topics, or None for anyone else's."""
        parts = topic.split("/")
        if len(parts) < 4 or parts[-1] != "config" or not topic.startswith(f"{self.prefix}/"):
            return None
        node, key = parts[-3], parts[-2]
        return (node, key) if node.startswith(f"{self.namespace}_") else None
