"""Devices -> MQTT -> Home Assistant, and commands back through one validated path."""
