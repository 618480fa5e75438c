"""How the commands say things to a person."""

from __future__ import annotations


def counted(count: int, singular: str, plural: str) -> str:
    """`1 battery`, `3 batteries`: how many of something, in words a person writes."""
    return f"{count} {singular if count == 1 else plural}"
