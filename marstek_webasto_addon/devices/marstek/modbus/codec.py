"""Register words to engineering values and back, by the register's declaration."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .registers import ControlRegister, Register, RegType

Reading = float | str | None


class CodecError(ValueError):
    """A value that cannot be written to its register."""


def raw_number(register: Register, words: Sequence[int]) -> int:
    match register.type:
        case RegType.I16:
            return words[0] - 0x1_0000 if words[0] & 0x8000 else words[0]
        case RegType.U32 | RegType.IPV4:
            return (words[0] << 16) | words[1]
        case RegType.I32:
            number = (words[0] << 16) | words[1]
            return number - 0x1_0000_0000 if number & 0x8000_0000 else number
    return words[0]


def decode(register: Register, words: Sequence[int]) -> Reading:
    """A number in the engineering unit, a label, or text; None for empty text or an unknown label."""
    if len(words) != register.count:
        raise ValueError(f"register {register.address}: expected {register.count} words, got {len(words)}")
    if register.type is RegType.ASCII:
        text = b"".join(w.to_bytes(2, "big") for w in words).replace(b"\x00", b"")
        return text.decode("ascii", errors="replace").strip() or None
    number = raw_number(register, words)
    if register.type is RegType.IPV4:
        return None if number == 0 else ".".join(str(octet) for octet in number.to_bytes(4, "big"))
    if register.labels:
        return register.labels[number] if 0 <= number < len(register.labels) else None
    return number * register.scale


def encode(control: ControlRegister, value: float) -> int:
    """The one word a control register takes for `value` (engineering unit), checked against its range."""
    register = control.register
    if not math.isfinite(value):
        raise CodecError(f"{control.key}: {value} is not a number")
    if not control.accepts(value):
        allowed = (
            " or ".join(f"0x{v:04X}" for v in control.allowed)
            if control.allowed
            else f"{control.low:g}..{control.high:g}"
        )
        raise CodecError(f"{control.key}: {value:g} is outside {allowed}")
    number = round(value / register.scale)
    if register.type is RegType.I16 and -0x8000 <= number < 0:
        return number + 0x1_0000
    if register.type not in (RegType.U16, RegType.I16) or not 0 <= number <= 0xFFFF:
        raise CodecError(f"{control.key}: {value:g} does not fit a {register.type.value} register")
    return number
