"""Does each battery do what it was told? Mode readings can be unknown or stale (the seed's session 4).

The mode reading is primary; when it is unknown, the battery's power is the fallback evidence (50 W
threshold to filter idle noise). While in doubt, actions that rely on that battery are blocked.
"""

from __future__ import annotations

from .model import PASSIVE_ROLES, BatteryView, Role

GRACE_S = 60.0  # a fresh command needs a poll or two before the reading can confirm it


def check(battery: BatteryView, role: Role | None, sent_age_s: float, threshold_w: float) -> str:
    """'' when consistent (or nothing to check yet), otherwise a sentence saying what is wrong."""
    if role is None or sent_age_s < GRACE_S or not battery.online:
        return ""
    mode, power = battery.mode, battery.ac_power
    if role is Role.AUTO:
        if mode == "Auto":
            return ""
        if mode is None:
            if power is not None and abs(power) > threshold_w:
                return ""  # unknown mode, but it is working: as good as Auto (the seed's hybrid check)
            return f"{battery.name}: mode unknown and idle ({_w(power)}), expected Auto"
        return f"{battery.name}: in {mode}, expected Auto"
    assert role in PASSIVE_ROLES
    if mode == "Passive":
        return ""
    if mode is None:
        if power is None:
            return f"{battery.name}: mode and power unknown, expected {role.value}"
        consistent = {
            Role.IDLE: abs(power) <= threshold_w,
            Role.CHARGE: power < -threshold_w,
            Role.DISCHARGE: power > threshold_w,
        }[role]
        return "" if consistent else f"{battery.name}: mode unknown and {_w(power)}, expected {role.value}"
    return f"{battery.name}: in {mode}, expected Passive ({role.value})"


def _w(power: float | None) -> str:
    return "power unknown" if power is None else f"{power:+.0f} W"
