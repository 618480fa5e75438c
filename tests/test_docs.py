"""The generated documentation tables match the code's tables."""

from __future__ import annotations

from marstek_webasto_addon import docs
from marstek_webasto_addon.devices.marstek.datapoints import BATTERY_POINTS
from marstek_webasto_addon.devices.marstek.modbus.registers import CONTROL_REGISTERS, Generation
from marstek_webasto_addon.devices.webasto.registers import RULES, WallboxModel


def test_devices_doc_is_up_to_date() -> None:
    current = docs.DEVICES_DOC.read_text()
    assert docs.render(current) == current, "run: python -m marstek_webasto_addon docs --write"


def test_every_register_is_listed_under_its_model() -> None:
    for model in WallboxModel:
        table = docs.webasto_table(model)
        for register in RULES[model].registers:
            assert f"| `{register.key}` | {register.address} |" in table


def test_every_modbus_register_is_listed_with_its_point() -> None:
    table = docs.marstek_table()
    rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines()[2:]}
    listed = 0
    for point in BATTERY_POINTS:
        for generation in Generation:
            register = point.modbus.get(generation)
            if register is not None:
                assert f"| {docs.modbus_cell(register)} |" in rows[point.key], (point.key, generation)
                listed += 1
    assert listed >= 30  # both maps, most of the points
    soc = rows["soc"].split(" | ")
    assert soc[4:6] == ["32104 u16", "34002 u16 x0.1"]  # v12, v3: the point's unit from each map's scale
    controls = docs.marstek_control_table()
    assert all(f"`{c.key}` | {c.name} | {c.register.address}" in controls for c in CONTROL_REGISTERS)
