"""Reference tables for the documentation, generated from the data-point tables.

`python -m marstek_webasto_addon docs --write` refreshes the generated blocks in docs/devices.md; a test
fails when the committed file and the tables disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .devices.marstek.datapoints import BATTERY_POINTS
from .devices.marstek.modbus.registers import CONTROL_REGISTERS, Generation, Register, RegType
from .devices.webasto.registers import RULES, WallboxModel

DEVICES_DOC = Path(__file__).resolve().parent.parent / "docs" / "devices.md"


def modbus_cell(register: Register | None) -> str:
    """`34002 u16 x0.1`: the register, its type, and the scale to the point's unit (negative: sign turned)."""
    if register is None:
        return ""
    kind = f"ascii x{register.length}" if register.type is RegType.ASCII else register.type.value
    scale = f" x{register.scale:g}" if register.scale != 1 else ""
    return f"{register.address} {kind}{scale}"


def marstek_table() -> str:
    rows = [
        "| key | name | unit | from (method.field, first present wins) | Modbus v12 | Modbus v3 | plausible "
        "| Home Assistant |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in BATTERY_POINTS:
        sources = ", ".join(f"`{s.method.value}.{s.field}`" for s in p.sources)
        if p.derive is not None:
            sources = f"{sources}, else derived" if sources else "derived"
        ha = ", ".join(x for x in (p.device_class, p.state_class, p.entity_category) if x)
        plausible = "" if p.plausible is None else str(p.plausible)
        v12, v3 = (modbus_cell(p.modbus.get(g)) for g in (Generation.V12, Generation.V3))
        rows.append(
            f"| `{p.key}` | {p.name} | {p.unit or ''} | {sources} | {v12} | {v3} | {plausible} | {ha} |"
        )
    return "\n".join(rows)


def marstek_control_table() -> str:
    rows = [
        "| key | name | register | range | maps | stored |",
        "|---|---|---|---|---|---|",
    ]
    for c in CONTROL_REGISTERS:
        accepted = (
            ", ".join(f"{v} (0x{v:04X})" for v in c.allowed) if c.allowed else f"{c.low:g} to {c.high:g}"
        )
        maps = ", ".join(g.value for g in Generation if g in c.generations)
        stored = "EEPROM: written only on change" if c.eeprom else "RAM"
        rows.append(f"| `{c.key}` | {c.name} | {modbus_cell(c.register)} | {accepted} | {maps} | {stored} |")
    return "\n".join(rows)


def webasto_table(model: WallboxModel) -> str:
    rows = [
        "| key | address | regs | read | write | type | unit (scale) | read when | values | plausible |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in RULES[model].registers:
        read = f"FC{int(r.read_fc)}" if r.read_fc else "write-only"
        write = f"FC{int(r.write_fc)}" if r.write_fc else ""
        unit = f"{r.unit or ''}{f' (x{r.scale:g})' if r.scale != 1 else ''}"
        gate = f", firmware >= {'.'.join(map(str, r.min_firmware))}" if r.min_firmware else ""
        values = ", ".join(f"{k}={v}" for k, v in r.enum.items()) if r.enum else ""
        rows.append(
            f"| `{r.key}` | {r.address} | {r.count} | {read} | {write} | {r.type.value} | {unit} | "
            f"{r.cadence.value}{gate} | {values} | {'' if r.plausible is None else r.plausible} |"
        )
    return "\n".join(rows)


def blocks() -> dict[str, str]:
    return {
        "marstek": marstek_table(),
        "marstek-control": marstek_control_table(),
        "webasto-next": webasto_table(WallboxModel.NEXT),
        "webasto-unite": webasto_table(WallboxModel.UNITE),
    }


def _filler(table: str) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) + table + "\n" + match.group(2)


def render(text: str) -> str:
    """The document with every generated block replaced by its current table."""
    for name, table in blocks().items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- end:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"docs/devices.md has no generated block {name!r}")
        text = pattern.sub(_filler(table), text)
    return text


def write() -> bool:
    """Refresh docs/devices.md; True when it changed."""
    old = DEVICES_DOC.read_text()
    new = render(old)
    if new != old:
        DEVICES_DOC.write_text(new)
    return new != old
