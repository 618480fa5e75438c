"""The fewest reads that fetch a generation's registers without touching an address the device lacks.

The Venus's address space is sparse, and a read that crosses an unused address is answered with an
exception, one of more than 32 registers not at all (docs/marstek-modbus.md §6). So a request only
joins registers that follow each other without a gap, up to the generation's limit, and a value of two
registers is always read from its first one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..datapoints import BATTERY_POINTS, Group
from .registers import RULES, Generation, Register, control_registers


@dataclass(frozen=True)
class Field:
    """One value in a read: a data point's or a control register's key, and its register."""

    key: str
    register: Register
    control: bool = False  # a control register (its key is in CONTROL_BY_KEY), not a data point


@dataclass(frozen=True)
class ReadRequest:
    address: int
    count: int
    fields: tuple[Field, ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    def describe(self) -> str:
        return f"{self.address}+{self.count} [{','.join(f.key for f in self.fields)}]"


@dataclass(frozen=True)
class ReadPlan:
    requests: tuple[ReadRequest, ...]

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def registers(self) -> int:
        return sum(r.count for r in self.requests)

    def describe(self) -> str:
        return "\n".join(request.describe() for request in self.requests)


def point_fields(generation: Generation, *, identity: bool) -> list[Field]:
    """The data points this map offers: the identity (read once a connection) or the live ones."""
    fields = []
    for point in BATTERY_POINTS:
        register = point.modbus.get(generation)
        if register is not None and (point.group is Group.DEVICE) == identity:
            fields.append(Field(point.key, register))
    return fields


def control_fields(generation: Generation) -> list[Field]:
    return [Field(c.key, c.register, control=True) for c in control_registers(generation)]


def build(fields: Iterable[Field], max_count: int) -> ReadPlan:
    """Greedy in address order: optimal for intervals that may only join when they touch."""
    requests: list[ReadRequest] = []
    group: list[Field] = []
    for field in sorted(fields, key=lambda f: (f.register.address, f.key)):
        register = field.register
        if register.count > max_count:
            raise ValueError(f"{field.key}: {register.count} registers exceed a read of {max_count}")
        if group:
            start, end = group[0].register.address, max(f.register.end for f in group)
            # Registers may be shared (43000 is the mode point and the work-mode control register).
            fits = register.address <= end and max(end, register.end) - start <= max_count
            if not fits:
                requests.append(_request(group))
                group = []
        group.append(field)
    if group:
        requests.append(_request(group))
    return ReadPlan(tuple(requests))


def _request(group: list[Field]) -> ReadRequest:
    start = group[0].register.address
    return ReadRequest(start, max(f.register.end for f in group) - start, tuple(group))


def identity_plan(generation: Generation) -> ReadPlan:
    return build(point_fields(generation, identity=True), RULES[generation].max_registers_per_read)


def poll_plan(generation: Generation) -> ReadPlan:
    """Every live data point and every control register: what one poll reads."""
    fields = point_fields(generation, identity=False) + control_fields(generation)
    return build(fields, RULES[generation].max_registers_per_read)


def control_plan(generation: Generation) -> ReadPlan:
    """The control registers alone: a write's read-back."""
    return build(control_fields(generation), RULES[generation].max_registers_per_read)
