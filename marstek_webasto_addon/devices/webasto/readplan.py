"""The fewest Modbus requests that read a set of registers within a model's rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .registers import FC, ModelRules, Register


@dataclass(frozen=True)
class ReadRequest:
    fc: FC
    address: int
    count: int
    registers: tuple[Register, ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    def describe(self) -> str:
        keys = ",".join(r.key for r in self.registers)
        return f"FC{int(self.fc)} {self.address}+{self.count} [{keys}]"

    def contiguous_parts(self) -> list[ReadRequest]:
        """The same registers without reading across gaps (for firmware that refuses gap reads)."""
        return build_requests(self.registers, max_gap=0, max_count=self.count)


@dataclass(frozen=True)
class ReadPlan:
    requests: tuple[ReadRequest, ...]

    @classmethod
    def for_registers(cls, registers: Iterable[Register], rules: ModelRules) -> ReadPlan:
        readable = [r for r in registers if r.readable]
        return cls(tuple(build_requests(readable, rules.max_gap, rules.max_registers_per_request)))

    def __len__(self) -> int:
        return len(self.requests)

    def describe(self) -> str:
        return "\n".join(request.describe() for request in self.requests)


def build_requests(registers: Iterable[Register], max_gap: int, max_count: int) -> list[ReadRequest]:
    """Greedy merge in address order per function code; optimal for sorted intervals under these rules."""
    by_fc: dict[FC, list[Register]] = {}
    for register in registers:
        assert register.read_fc is not None
        by_fc.setdefault(register.read_fc, []).append(register)
    requests: list[ReadRequest] = []
    for fc in sorted(by_fc):
        group: list[Register] = []
        for register in sorted(by_fc[fc], key=lambda r: r.address):
            if group:
                start, end = group[0].address, max(r.end for r in group)
                fits = register.end - start <= max_count and register.address - end <= max_gap
                if not fits:
                    requests.append(_request(fc, group))
                    group = []
            group.append(register)
        if group:
            requests.append(_request(fc, group))
    return requests


def _request(fc: FC, group: list[Register]) -> ReadRequest:
    start = group[0].address
    return ReadRequest(fc, start, max(r.end for r in group) - start, tuple(group))
