"""The controls each device offers, declared once. Bounds that depend on the device are filled in later."""

from __future__ import annotations

from ..devices.marstek.battery_client import TRANSPORTS
from .exposes import Component, Expose

CONFIG = "config"

# Battery. Passive power is signed like everything else here: + = discharge, - = charge.
MODE = Expose("mode", "Mode", Component.SELECT, icon="mdi:battery-sync", featured=True)
PASSIVE_POWER = Expose(
    "passive_power",
    "Passive power",
    Component.NUMBER,
    "W",
    "power",
    entity_category=CONFIG,
    minimum=-2500,
    maximum=2500,
    step=50,
    icon="mdi:flash",
    featured=True,
    stored=True,
)
PASSIVE_DURATION = Expose(
    "passive_duration",
    "Passive duration",
    Component.NUMBER,
    "min",
    "duration",
    entity_category=CONFIG,
    minimum=1,
    maximum=1440,
    step=1,
    featured=True,
    stored=True,
)
CHARGE_NOW = Expose("charge_now", "Charge now", Component.BUTTON, icon="mdi:battery-arrow-up", featured=True)
DISCHARGE_NOW = Expose(
    "discharge_now", "Discharge now", Component.BUTTON, icon="mdi:battery-arrow-down", featured=True
)
STOP = Expose("stop", "Stop", Component.BUTTON, icon="mdi:battery-off", featured=True)
CLEAR_SCHEDULES = Expose(
    "clear_schedules",
    "Clear manual schedules",
    Component.BUTTON,
    entity_category=CONFIG,
    icon="mdi:calendar-remove",
    needs="udp",  # the manual slots are the Local API's; over Modbus the battery ignores them
)
# A person's command puts the battery in a manual hold: the optimiser leaves it alone until then.
MANUAL_HOLD = Expose(
    "manual_hold",
    "Manual hold until",
    Component.SENSOR,
    device_class="timestamp",
    icon="mdi:hand-back-right",
    featured=True,
)
RESUME_OPTIMISER = Expose(
    "resume_optimiser", "Return to optimiser", Component.BUTTON, icon="mdi:robot", featured=True
)
DEPTH_OF_DISCHARGE = Expose(
    "depth_of_discharge",
    "Depth of discharge",
    Component.NUMBER,
    "%",
    entity_category=CONFIG,
    minimum=30,
    maximum=88,
    step=1,
    icon="mdi:battery-arrow-down-outline",
)
LED = Expose(
    "led", "LED", Component.SWITCH, entity_category=CONFIG, icon="mdi:led-on", write_only=True, needs="udp"
)
# Modes only the Local API sets: no work mode (43000) or control register of the Modbus maps means them.
LOCAL_API_MODES = ("UPS",)

# Wallbox
CHARGING_CURRENT = Expose(
    "charging_current",
    "Charging current",
    Component.NUMBER,
    "A",
    "current",
    minimum=0,
    maximum=32,
    step=1,
    icon="mdi:current-ac",
    featured=True,
)
FAILSAFE_CURRENT = Expose(
    "failsafe_current",
    "Fail-safe current",
    Component.NUMBER,
    "A",
    "current",
    entity_category=CONFIG,
    minimum=0,
    maximum=32,
    step=1,
)
FAILSAFE_TIMEOUT = Expose(
    "failsafe_timeout",
    "Fail-safe timeout",
    Component.NUMBER,
    "s",
    "duration",
    entity_category=CONFIG,
    minimum=6,
    maximum=600,
    step=1,
)
KEEPALIVE = Expose(
    "keepalive", "Send keepalive", Component.BUTTON, entity_category=CONFIG, icon="mdi:heart-pulse"
)
START_SESSION = Expose("start_session", "Start session", Component.BUTTON, icon="mdi:play", featured=True)
STOP_SESSION = Expose("stop_session", "Stop session", Component.BUTTON, icon="mdi:stop", featured=True)
PHASES = Expose("phases", "Phases", Component.SELECT, options=("1", "3"), icon="mdi:sine-wave")
# manual: the add-on steers nothing (a person sets the current); the others hand the current to the
# charge-mode controller (optimiser/car.py); plan: the planner places the energy wanted by the departure.
CHARGE_MODES = ("manual", "off", "now", "min_pv", "pv", "plan")
CHARGE_MODE = Expose(
    "charge_mode",
    "Charge mode",
    Component.SELECT,
    options=CHARGE_MODES,
    icon="mdi:ev-plug-type2",
    featured=True,
    stored=True,
)
CHARGE_ENERGY = Expose(
    "charge_energy",
    "Energy wanted",
    Component.NUMBER,
    "kWh",
    "energy",
    entity_category=CONFIG,
    minimum=1,
    maximum=100,
    step=1,
    icon="mdi:car-battery",
    featured=True,
    stored=True,
)
DEPARTURE = Expose(
    "departure",
    "Departure",
    Component.TEXT,
    entity_category=CONFIG,
    icon="mdi:clock-end",
    pattern=r"([01][0-9]|2[0-3]):[0-5][0-9]",
    featured=True,
    stored=True,
)
CHARGE_CONTROL = Expose(
    "charge_control", "Charge control", Component.SENSOR, icon="mdi:car-clock", featured=True
)

# On every device
PROBLEM = Expose(
    "problem", "Problem", Component.BINARY_SENSOR, device_class="problem", attributes=True, icon="mdi:alert"
)
LAST_COMMAND = Expose(
    "last_command",
    "Last command",
    Component.SENSOR,
    entity_category="diagnostic",
    icon="mdi:console",
    attributes=True,
)
CONNECTION = Expose(
    "connection",
    "Connection",
    Component.SENSOR,
    device_class="enum",
    entity_category="diagnostic",
    options=("online", "offline"),
    icon="mdi:lan-connect",
    attributes=True,
)

# On every battery: which transport its values and commands go over now (transport: auto switches)
TRANSPORT = Expose(
    "transport",
    "Transport",
    Component.SENSOR,
    device_class="enum",
    entity_category="diagnostic",
    options=TRANSPORTS,
    icon="mdi:swap-horizontal",
)
