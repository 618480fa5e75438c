"""The result of a write to any device: what the user sees as the command's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class WriteStatus(StrEnum):
    APPLIED = "applied"  # the effect was seen (read back, or mode and power as expected)
    ACCEPTED = "accepted"  # the device took it, and offers no way to read it back
    NOT_APPLIED = "not_applied"  # no reply, or accepted but the effect did not show
    REJECTED = "rejected"  # refused by the device, or invalid: nothing was changed


@dataclass(frozen=True)
class WriteOutcome:
    status: WriteStatus
    command: str
    attempts: int
    detail: str
    clamped: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (WriteStatus.APPLIED, WriteStatus.ACCEPTED)
