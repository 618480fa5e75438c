"""The add-on manifest (config.yaml), generated: its `options` and `schema` come from the Options model.

The options tab, the Supervisor's validation and this add-on's own validation can then never disagree: a new
option is one field in `options.py`, and `python -m marstek_webasto_addon manifest --write` (checked by a
test) carries it into config.yaml. Supervisor schema strings are narrower than pydantic: where they cannot
say something (a negative bound, a cross-field rule), the Supervisor accepts more and `run` explains.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .. import __version__
from .options import Options, TariffOptions

ROOT = Path(__file__).resolve().parents[2]
CONFIG_PATH = ROOT / "config.yaml"
SLUG = "marstek_webasto"

# What the options tab shows filled in on a fresh install; everything else is optional ("?") and the
# model's default applies. Sections and lists must be present: the Supervisor requires them (no "?" there).
SHOWN_DEFAULTS: dict[str, Any] = {
    "batteries": [],
    "wallboxes": [],
    "mqtt": {},
    "rediscovery_targets": [],
    "grid_source": {"type": "battery"},
    "pv_forecast": {"type": "none"},
    "pv_power": {"type": "none"},
    "optimiser": {"enabled": False, "method": "planner"},
    "prices": {"type": "tariff"},
    "tariff": {"periods": [p.model_dump() for p in TariffOptions().periods]},
    "timing": {},
    "log_level": "info",
}
PASSWORDS = {("mqtt", "password")}
PORTS = {("batteries", "port"), ("batteries", "modbus_port"), ("wallboxes", "port"), ("mqtt", "port")}

HEADER: dict[str, Any] = {
    "name": "Marstek & Webasto",
    "version": __version__,
    "slug": SLUG,
    "description": "Marstek Venus batteries and Webasto/Ampure wallboxes over MQTT, with an energy optimiser",
    "url": "https://github.com/OWNER/marstek_webasto_addon",
    "arch": ["aarch64", "amd64"],
    "init": False,  # the base image's s6-overlay is PID 1
    "stage": "experimental",
    "timeout": 30,  # a clean stop puts every battery back in Auto: give it the time
    "ingress": True,
    "panel_icon": "mdi:home-battery",
    "panel_title": "Batteries",
    "homeassistant_api": True,  # the optimiser reads the P1 meter and forecasts from entities
    "host_network": True,  # UDP broadcast discovery and replies to port 30000 (see DOCS.md)
    "services": ["mqtt:want"],
}


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = float(item.ge if isinstance(item, annotated_types.Ge) else item.gt)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = float(item.le if isinstance(item, annotated_types.Le) else item.lt)  # type: ignore[arg-type]
    return low, high


def _pattern(info: FieldInfo) -> str | None:
    for item in info.metadata:
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            return pattern
    return None


def _number(kind: str, low: float | None, high: float | None) -> str:
    """`int(a,b)` / `float(a,b)`; the Supervisor's pattern takes no sign, so a negative bound is left out."""

    def text(value: float | None) -> str:
        if value is None or value < 0:
            return ""
        return str(int(value)) if kind == "int" or value.is_integer() else f"{value:g}"

    low_text, high_text = text(low), text(high)
    return f"{kind}({low_text},{high_text})" if low_text or high_text else kind


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The type inside Annotated / Optional, and whether None is allowed."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            inner, _ = _unwrap(members[0])
            return inner, True
    return annotation, False


def _element(path: tuple[str, ...], info: FieldInfo) -> Any:
    annotation, _ = _unwrap(info.annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return schema_of(annotation, path)
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        item, _ = _unwrap(item)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return [schema_of(item, path)]
        return ["str"]
    if get_origin(annotation) is Literal:
        return f"list({'|'.join(str(v) for v in get_args(annotation))})"
    if path[-2:] in PASSWORDS or path in PASSWORDS:
        return "password"
    if path[-2:] in PORTS:
        return "port"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return _number("int", *_bounds(info))
    if annotation is float:
        return _number("float", *_bounds(info))
    pattern = _pattern(info)
    return f"match({pattern})" if pattern else "str"


def schema_of(model: type[BaseModel], path: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        element = _element((*path, name), info)
        # A field with a default may be left out ("?"), unless the tab shows it filled in. Dicts and lists
        # of dicts cannot carry "?": the Supervisor requires them, so SHOWN_DEFAULTS holds them all.
        optional = not info.is_required() and not (not path and name in SHOWN_DEFAULTS)
        if isinstance(element, str) and optional:
            element += "?"
        elif isinstance(element, list) and isinstance(element[0], str) and optional:
            element = [element[0] + "?"]
        schema[name] = element
    return schema


def manifest() -> dict[str, Any]:
    return {**HEADER, "options": SHOWN_DEFAULTS, "schema": schema_of(Options)}


_NOTE = (
    "# Generated from marstek_webasto_addon/addon/manifest.py (the options come from addon/options.py).\n"
    "# Change those, then run: python -m marstek_webasto_addon manifest --write\n"
)


def render() -> str:
    import yaml

    text = yaml.safe_dump(manifest(), sort_keys=False, allow_unicode=True, width=120)
    # The reference asks for a quoted version: "1.10" must never become the number 1.1.
    text = text.replace(f"\nversion: {__version__}\n", f'\nversion: "{__version__}"\n', 1)
    return _NOTE + text


def write() -> bool:
    text = render()
    if CONFIG_PATH.exists() and CONFIG_PATH.read_text() == text:
        return False
    CONFIG_PATH.write_text(text)
    return True


# DOCS.md: the options table, from the schema, the English option names and the model's defaults --------

DOCS_PATH = ROOT / "DOCS.md"
TRANSLATIONS = ROOT / "translations"
BEGIN = "<!-- options:begin (generated by `python -m marstek_webasto_addon manifest --write`) -->"
END = "<!-- options:end -->"


# An en dash reads as "nothing" in the rendered table; a hyphen would look like a typo.
NO_DEFAULT = "\u2013"


def _default_text(value: Any) -> str:
    if value is None or value == "" or value == []:
        return NO_DEFAULT
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, list):
        return f"{len(value)} entries"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _rows(
    model: type[BaseModel], labels: dict[str, Any], prefix: str, item: bool = False
) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for name, info in model.model_fields.items():
        label = labels.get(name, {})
        text = label.get("name", name)
        if label.get("description"):
            text += f": {label['description']}"
        annotation, _ = _unwrap(info.annotation)
        inner = get_args(annotation)[0] if get_origin(annotation) is list else annotation
        nested = isinstance(inner, type) and issubclass(inner, BaseModel)
        initial = info.get_default(call_default_factory=True)
        default = "required" if info.is_required() else _default_text(initial)
        if nested and isinstance(initial, BaseModel):
            default = NO_DEFAULT
        key = f"{prefix}{name}" + ("[]" if get_origin(annotation) is list and nested else "")
        rows.append((f"`{key}`", default, text.replace("|", "\\|")))
        if nested:
            rows += _rows(inner, label.get("fields", {}), f"{key}.", item=get_origin(annotation) is list)
    return rows


def options_table() -> str:
    import yaml

    labels = yaml.safe_load((TRANSLATIONS / "en.yaml").read_text())["configuration"]
    lines = ["| Option | Default | Meaning |", "|---|---|---|"]
    lines += [f"| {key} | {default} | {text} |" for key, default, text in _rows(Options, labels, "")]
    return "\n".join(lines)


def render_docs(current: str) -> str:
    head, _, rest = current.partition(BEGIN)
    _, found, tail = rest.partition(END)
    if not found:
        raise ValueError(f"DOCS.md lacks the {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n{options_table()}\n{END}{tail}"


def write_docs() -> bool:
    current = DOCS_PATH.read_text()
    text = render_docs(current)
    if text == current:
        return False
    DOCS_PATH.write_text(text)
    return True
