"""What a Modbus exception reply means, shared by every device spoken to over Modbus TCP."""

from __future__ import annotations

from typing import ClassVar

# The Modbus application protocol's exception codes that devices send back (pymodbus keeps the number only).
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
}


class ModbusExceptionReply(Exception):
    """The device answered a request with a Modbus exception; mixed into each device's own error family."""

    NAMES: ClassVar[dict[int, str]] = EXCEPTION_NAMES

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what}: exception {code} ({self.NAMES.get(code, 'unknown')})")
        self.code = code
