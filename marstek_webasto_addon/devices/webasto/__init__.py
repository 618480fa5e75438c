"""Webasto/Ampure NEXT and UNITE (Vestel EVC04) wallboxes over Modbus TCP."""
