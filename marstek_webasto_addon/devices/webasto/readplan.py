"""The fewest Modbus requests that read a set of registers within a model's rules."""

from __future__ import annotations

from collections.abc import Collection, Iterable
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

    def single_parts(self) -> list[ReadRequest]:
        """One request per register (to find the one a refused batch stumbled on)."""
        return [_request(self.fc, [register]) for register in self.registers]


@dataclass(frozen=True)
class ReadPlan:
    requests: tuple[ReadRequest, ...]

    @classmethod
    def for_registers(
        cls, registers: Iterable[Register], rules: ModelRules, alone: Collection[str] = ()
    ) -> ReadPlan:
        """`alone`: registers the box refused inside a batch; each gets its own request, and no batch of the
        others spans them, so one refused register cannot take its neighbours' readings with it."""
        readable = [r for r in registers if r.readable]
        merged = [r for r in readable if r.key not in alone]
        lone = [(r, r.read_fc) for r in readable if r.key in alone and r.read_fc is not None]
        avoid = {(fc, a) for r, fc in lone for a in range(r.address, r.end)}
        requests = build_requests(merged, rules.max_gap, rules.max_registers_per_request, avoid)
        requests += [_request(fc, [r]) for r, fc in lone]
        return cls(tuple(sorted(requests, key=lambda q: (q.fc, q.address))))

    def __len__(self) -> int:
        return len(self.requests)

    def describe(self) -> str:
        return "\n".join(request.describe() for request in self.requests)


def build_requests(
    registers: Iterable[Register],
    max_gap: int,
    max_count: int,
    avoid: Collection[tuple[FC, int]] = (),
) -> list[ReadRequest]:
    """Greedy merge in address order per function code; optimal for sorted intervals under these rules.
    No request spans an address in `avoid` (function code, address)."""
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
                fits = (
                    register.end - start <= max_count
                    and register.address - end <= max_gap
                    and not any((fc, a) in avoid for a in range(end, register.address))
                )
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
