"""Marstek Venus batteries and Webasto/Ampure wallboxes for Home Assistant."""

__version__ = "0.1.0"
