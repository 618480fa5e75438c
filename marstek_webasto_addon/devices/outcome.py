"""The result of a write to any device: what the user sees as the command's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class WriteStatus(StrEnum):
    APPLIED = "applied"
    NOT_APPLIED = "not_applied"
    REJECTED = "rejected"


@dataclass(frozen=True)
class WriteOutcome:
    status: WriteStatus
    command: str
    attempts: int
    detail: str
    clamped: str = ""

    @property
    def ok(self) -> bool:
        return self.status is WriteStatus.APPLIED
