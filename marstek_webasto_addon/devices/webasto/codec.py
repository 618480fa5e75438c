"""Registers to values and back, driven by the register table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

from .registers import Register, RegType

Value = float | int | str | None


class CodecError(ValueError):
    """A value that cannot be written to a register."""


def raw_number(register: Register, words: Sequence[int]) -> int:
    if register.type in (RegType.U32, RegType.HHMMSS, RegType.YYMMDD):
        return (words[0] << 16) | words[1]  # big-endian, high word first
    return words[0]


def decode(register: Register, words: Sequence[int]) -> Value:
    """The engineering value: a number in the table's unit, an enum label, text, or None when unset."""
    if len(words) != register.count:
        raise ValueError(f"{register.key}: expected {register.count} registers, got {len(words)}")
    match register.type:
        case RegType.STR_ASCII:
            raw = b"".join(w.to_bytes(2, "big") for w in words)
            return raw.replace(b"\x00", b"").decode("ascii", errors="replace").strip() or None
        case RegType.STR_UTF16:
            return "".join(chr(w) for w in words if w).strip() or None
        case RegType.HHMMSS:
            n = raw_number(register, words)
            if n == 0 or problem(register, words):
                return None
            return f"{n // 10000:02d}:{n // 100 % 100:02d}:{n % 100:02d}"
        case RegType.YYMMDD:
            n = raw_number(register, words)
            if n == 0 or problem(register, words):
                return None
            return f"20{n // 10000:02d}-{n // 100 % 100:02d}-{n % 100:02d}"
    number = raw_number(register, words)
    if register.enum:
        return register.enum.get(number, f"unknown ({number})")
    if register.scale == 1.0:
        return number
    return round(number * register.scale, 6)


def problem(register: Register, words: Sequence[int]) -> str | None:
    """Why the registers hold no valid time or date (they decode as unknown then), or None. Times and dates
    have no numeric range to screen: a glitch such as 0xFFFFFFFF would show as "429496:72:95"."""
    if register.type not in (RegType.HHMMSS, RegType.YYMMDD) or len(words) != register.count:
        return None
    n = raw_number(register, words)
    if n == 0:
        return None
    if register.type is RegType.HHMMSS:
        if n // 10000 < 24 and n // 100 % 100 < 60 and n % 100 < 60:
            return None
        return f"{n} is not a time of day (hhmmss)"
    try:
        date(2000 + n // 10000, n // 100 % 100, n % 100)
    except ValueError:
        return f"{n} is not a date (yymmdd)"
    return None


def encode(register: Register, value: float | int | str) -> list[int]:
    """Registers for a value in the table's unit (enum labels are accepted too)."""
    if register.enum and isinstance(value, str):
        for number, label in register.enum.items():
            if label == value:
                value = number
                break
        else:
            raise CodecError(f"{register.key}: {value!r} is not one of {sorted(register.enum.values())}")
    if isinstance(value, str):
        raise CodecError(f"{register.key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise CodecError(f"{register.key}: {value} is not a number")
    number = round(value / register.scale)
    limit = 0xFFFF if register.type is RegType.U16 else 0xFFFF_FFFF
    if register.type not in (RegType.U16, RegType.U32) or not 0 <= number <= limit:
        raise CodecError(f"{register.key}: {value} does not fit a {register.type.value} register")
    if register.type is RegType.U32:
        return [number >> 16, number & 0xFFFF]
    return [number]
