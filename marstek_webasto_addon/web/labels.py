"""What a person reads for each enum value the panel shows, in English, Dutch and German, declared once.

The keys are the raw values exactly as the devices and the optimiser report them (and as commands carry
them): the page shows the label and still sends the raw value. `exposed_values()` gathers every enum
option of the device tables, so a new value without a label fails a test instead of reaching the panel
raw. A value missing here anyway (a tariff period the user named) is shown readably: underscores to spaces.
"""

from __future__ import annotations

import re

from ..bridge import controls
from ..bridge.exposes import Expose, sensor_from_point, sensor_from_register
from ..bridge.optimiser_device import STATUS_EXPOSES
from ..devices.marstek.datapoints import BATTERY_POINTS
from ..devices.marstek.firmware import Mode
from ..devices.webasto.registers import RULES
from ..optimiser.model import Role
from ..optimiser.planner import Action
from ..optimiser.settings import PARAMETERS
from ..optimiser.tariff import DEFAULT_TARIFF
from ..replay.own_history import REPORTED

LANGUAGES = ("en", "nl", "de")
DEFAULT_LANGUAGE = "en"

# fmt: off
LABELS: dict[str, dict[str, str]] = {
    # the battery's mode (Marstek)
    "Auto": {"en": "Auto", "nl": "Automatisch", "de": "Automatisch"},
    "AI": {"en": "AI", "nl": "AI", "de": "KI"},
    "Manual": {"en": "Manual", "nl": "Handmatig", "de": "Manuell"},
    "Passive": {"en": "Passive", "nl": "Passief", "de": "Passiv"},
    "UPS": {"en": "UPS (backup)", "nl": "UPS (noodstroom)", "de": "USV (Notstrom)"},
    # what the optimiser asks of a battery
    "auto": {"en": "Own control (Auto)", "nl": "Eigen regeling (Auto)", "de": "Eigene Regelung (Auto)"},
    "idle": {"en": "Idle", "nl": "Rust", "de": "Leerlauf"},
    "charge": {"en": "Charge", "nl": "Laden", "de": "Laden"},
    "discharge": {"en": "Discharge", "nl": "Ontladen", "de": "Entladen"},
    # a person's command given here, or a mode they picked in the Marstek app
    "manual hold": {"en": "Held by your choice", "nl": "Vastgehouden door uw keuze",
                    "de": "Von Ihnen festgelegt"},
    "untouched": {"en": "Untouched", "nl": "Ongemoeid", "de": "Unberührt"},
    # the plan's actions
    "self_consumption": {"en": "Self-consumption", "nl": "Eigen verbruik", "de": "Eigenverbrauch"},
    "hold": {"en": "Hold", "nl": "Vasthouden", "de": "Halten"},
    "limit_charge": {"en": "Limit charging", "nl": "Laden beperken", "de": "Laden begrenzen"},
    # the optimiser's settings
    "planner": {"en": "Planner", "nl": "Planner", "de": "Planer"},
    "rules": {"en": "Rules", "nl": "Regels", "de": "Regeln"},
    "batteries_first": {"en": "Batteries first", "nl": "Eerst de batterijen", "de": "Zuerst die Batterien"},
    "car_first": {"en": "Car first", "nl": "Eerst de auto", "de": "Zuerst das Auto"},
    "batteries_first_until_soc": {"en": "Batteries first, up to a charge level",
                                  "nl": "Eerst de batterijen, tot een laadniveau",
                                  "de": "Zuerst die Batterien, bis zu einem Ladestand"},
    # the savings report's scenarios ("rules" is above)
    "no_battery": {"en": "No battery", "nl": "Geen batterij", "de": "Keine Batterie"},
    "auto_all": {"en": "Batteries in Auto", "nl": "Batterijen op Auto", "de": "Batterien auf Auto"},
    "optimiser": {"en": "Planner", "nl": "Planner", "de": "Planer"},
    "bound": {"en": "Best possible (perfect foresight)", "nl": "Best mogelijke (perfecte voorkennis)",
              "de": "Bestmöglich (perfekte Voraussicht)"},
    # tariff periods (the default tariff's; a user's own names fall back to their readable form)
    "peak": {"en": "Peak", "nl": "Piekuren", "de": "Hochtarif"},
    "off_peak": {"en": "Off-peak", "nl": "Daluren", "de": "Niedertarif"},
    "super_off_peak": {"en": "Super off-peak", "nl": "Superdaluren", "de": "Super-Niedertarif"},
    # the wallbox: cable
    "no_cable": {"en": "No cable", "nl": "Geen kabel", "de": "Kein Kabel"},
    "cable_only": {"en": "Cable, no car", "nl": "Kabel, geen auto", "de": "Kabel, kein Auto"},
    "vehicle_connected": {"en": "Car connected", "nl": "Auto aangesloten", "de": "Auto verbunden"},
    "vehicle_locked": {"en": "Car connected, locked", "nl": "Auto aangesloten, vergrendeld",
                       "de": "Auto verbunden, verriegelt"},
    # the wallbox: charging, charge point and EVSE states (NEXT and UNITE)
    "charging": {"en": "Charging", "nl": "Laden", "de": "Lädt"},
    "no_vehicle": {"en": "No car", "nl": "Geen auto", "de": "Kein Auto"},
    "preparing": {"en": "Preparing", "nl": "Voorbereiden", "de": "Vorbereitung"},
    "paused": {"en": "Paused", "nl": "Gepauzeerd", "de": "Pausiert"},
    "error": {"en": "Error", "nl": "Fout", "de": "Fehler"},
    "reserved": {"en": "Reserved", "nl": "Gereserveerd", "de": "Reserviert"},
    "starting": {"en": "Starting", "nl": "Opstarten", "de": "Startet"},
    "running": {"en": "Running", "nl": "In bedrijf", "de": "In Betrieb"},
    "available": {"en": "Available", "nl": "Beschikbaar", "de": "Verfügbar"},
    "suspended_evse": {"en": "Paused by the wallbox", "nl": "Gepauzeerd door de laadpaal",
                       "de": "Von der Wallbox pausiert"},
    "suspended_ev": {"en": "Paused by the car", "nl": "Gepauzeerd door de auto", "de": "Vom Auto pausiert"},
    "finishing": {"en": "Finishing", "nl": "Afronden", "de": "Wird beendet"},
    "unavailable": {"en": "Unavailable", "nl": "Niet beschikbaar", "de": "Nicht verfügbar"},
    "faulted": {"en": "Fault", "nl": "Storing", "de": "Störung"},
    "initializing": {"en": "Initialising", "nl": "Initialiseren", "de": "Initialisierung"},
    "fault": {"en": "Fault", "nl": "Storing", "de": "Störung"},
    "disabled": {"en": "Disabled", "nl": "Uitgeschakeld", "de": "Deaktiviert"},
    "updating": {"en": "Updating", "nl": "Bijwerken", "de": "Aktualisierung"},
    "1": {"en": "1 phase", "nl": "1 fase", "de": "1 Phase"},
    "3": {"en": "3 phases", "nl": "3 fasen", "de": "3 Phasen"},
    # a battery's transport
    "udp": {"en": "Local API (UDP)", "nl": "Lokale API (UDP)", "de": "Lokale API (UDP)"},
    "modbus": {"en": "Modbus TCP", "nl": "Modbus TCP", "de": "Modbus TCP"},
    # the wallbox's charge mode
    "manual": {"en": "Manual (your current)", "nl": "Handmatig (uw stroom)", "de": "Manuell (Ihr Strom)"},
    "off": {"en": "Off", "nl": "Uit", "de": "Aus"},
    "now": {"en": "Now, full power", "nl": "Nu, vol vermogen", "de": "Sofort, volle Leistung"},
    "min_pv": {"en": "Minimum + PV", "nl": "Minimum + zon", "de": "Minimum + PV"},
    "pv": {"en": "PV surplus only", "nl": "Alleen zonne-overschot", "de": "Nur PV-Überschuss"},
    "plan": {"en": "By the plan", "nl": "Volgens het plan", "de": "Nach Plan"},
    # every device's connection
    "online": {"en": "online", "nl": "online", "de": "online"},
    "offline": {"en": "offline", "nl": "offline", "de": "offline"},
    # the site's grid exchange (the power flow's note)
    "importing": {"en": "importing", "nl": "afname van het net", "de": "Netzbezug"},
    "exporting": {"en": "exporting", "nl": "teruglevering", "de": "Einspeisung"},
    "balanced": {"en": "balanced", "nl": "in balans", "de": "ausgeglichen"},
}
# fmt: on


def readable(value: str) -> str:
    """A value without a label, as a person can still read it: `suspended_ev` -> "Suspended ev"."""
    text = value.replace("_", " ")
    return text[:1].upper() + text[1:]


def label(value: str, language: str = DEFAULT_LANGUAGE) -> str:
    entry = LABELS.get(value)
    if entry is None:
        return readable(value)
    return entry.get(language) or entry[DEFAULT_LANGUAGE]


def table(language: str) -> dict[str, str]:
    """Every label in one language, as the page gets it."""
    return {value: label(value, language) for value in LABELS}


_TAG = re.compile(r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$")


def pick_language(accept_language: str | None) -> str | None:
    """The best of LANGUAGES an Accept-Language header asks for (q-values honoured); None when none is."""
    best: tuple[float, int, str] | None = None
    for index, part in enumerate((accept_language or "").split(",")[:20]):
        match = _TAG.match(part)
        if match is None:
            continue
        try:
            quality = float(match.group(2)) if match.group(2) is not None else 1.0
        except ValueError:
            continue
        language = match.group(1).lower()
        if language in LANGUAGES and quality > 0 and (best is None or (quality, -index) > best[:2]):
            best = (quality, -index, language)
    return best[2] if best is not None else None


def _table_exposes() -> list[Expose]:
    """Every expose the device tables can produce, whichever model or firmware a device turns out to be."""
    found = [sensor_from_point(p) for p in BATTERY_POINTS]
    found += [sensor_from_register(r) for rules in RULES.values() for r in rules.registers]
    found += [e for e in vars(controls).values() if isinstance(e, Expose)]
    return [*found, *STATUS_EXPOSES]


def exposed_values() -> set[str]:
    """Every enum value the panel can show: options of the tables, the modes, roles, actions and periods."""
    values = {option for e in _table_exposes() for option in e.options}
    values |= {choice for p in PARAMETERS for choice in p.choices}
    values |= {m.value for m in Mode} | {r.value for r in Role} | {a.value for a in Action}
    values |= set(DEFAULT_TARIFF.prices)
    values |= {"manual hold", "untouched"}  # the optimiser's roles besides Role (engine.py)
    values |= {"importing", "exporting", "balanced"}
    values |= set(REPORTED)  # the savings report's scenarios
    return values
