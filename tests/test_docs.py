"""The generated documentation tables match the code's tables."""

from __future__ import annotations

from marstek_webasto_addon import docs
from marstek_webasto_addon.devices.webasto.registers import RULES, WallboxModel


def test_devices_doc_is_up_to_date() -> None:
    current = docs.DEVICES_DOC.read_text()
    assert docs.render(current) == current, "run: python -m marstek_webasto_addon docs --write"


def test_every_register_is_listed_under_its_model() -> None:
    for model in WallboxModel:
        table = docs.webasto_table(model)
        for register in RULES[model].registers:
            assert f"| `{register.key}` | {register.address} |" in table
