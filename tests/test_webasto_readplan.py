"""The read plan: fewest requests within each model's rules, pinned per model."""

from __future__ import annotations

import pytest

from marstek_webasto_addon.devices.webasto.readplan import ReadPlan
from marstek_webasto_addon.devices.webasto.registers import FC, RULES, Cadence, WallboxModel

FAST_AND_SLOW = (Cadence.FAST, Cadence.SLOW)


def plan_for(model: WallboxModel, cadences: tuple[Cadence, ...]) -> ReadPlan:
    rules = RULES[model]
    return ReadPlan.for_registers([r for r in rules.registers if r.cadence in cadences], rules)


@pytest.mark.parametrize(
    ("model", "fast", "fast_and_slow", "static"),
    [(WallboxModel.NEXT, 14, 23, 1), (WallboxModel.UNITE, 4, 8, 6)],
)
def test_request_counts_are_pinned(model: WallboxModel, fast: int, fast_and_slow: int, static: int) -> None:
    plans = {
        "fast": plan_for(model, (Cadence.FAST,)),
        "fast+slow": plan_for(model, FAST_AND_SLOW),
        "static": plan_for(model, (Cadence.STATIC,)),
    }
    for name, plan in plans.items():
        print(f"{model.value} {name}: {len(plan)} requests\n{plan.describe()}")
    assert [len(plans["fast"]), len(plans["fast+slow"]), len(plans["static"])] == [
        fast,
        fast_and_slow,
        static,
    ]


def test_next_requests_never_span_an_undefined_address() -> None:
    rules = RULES[WallboxModel.NEXT]
    defined = {a for r in rules.registers for a in range(r.address, r.end)}
    for request in plan_for(WallboxModel.NEXT, FAST_AND_SLOW).requests:
        assert set(range(request.address, request.end)) <= defined, request.describe()


@pytest.mark.parametrize("model", list(WallboxModel))
def test_every_readable_register_is_read_once_with_its_own_function_code(model: WallboxModel) -> None:
    rules = RULES[model]
    plan = plan_for(model, FAST_AND_SLOW)
    covered = [r.key for request in plan.requests for r in request.registers]
    wanted = [r.key for r in rules.registers if r.readable and r.cadence in FAST_AND_SLOW]
    assert sorted(covered) == sorted(wanted)
    for request in plan.requests:
        assert request.count <= rules.max_registers_per_request
        assert all(r.read_fc is request.fc for r in request.registers)


def test_unite_input_registers_use_fc4_and_holding_registers_fc3() -> None:
    plan = plan_for(WallboxModel.UNITE, FAST_AND_SLOW)
    fcs = {r.key: req.fc for req in plan.requests for r in req.registers}
    assert fcs["power"] is FC.READ_INPUT
    assert fcs["failsafe_timeout"] is FC.READ_HOLDING
    assert fcs["phase_switch"] is FC.READ_HOLDING


def test_contiguous_fallback_keeps_every_register() -> None:
    request = max(plan_for(WallboxModel.UNITE, FAST_AND_SLOW).requests, key=lambda r: r.count)
    parts = request.contiguous_parts()
    assert len(parts) > 1
    assert [r.key for p in parts for r in p.registers] == [r.key for r in request.registers]
