"""How numbers read in tables and messages: one formatter, so every table shows a missing value alike."""

from __future__ import annotations


def number(value: float | None, spec: str = ".3g") -> str:
    """``value`` in ``spec``; "-" where there is none (an output that could not be compared)."""
    return "-" if value is None else format(value, spec)


def count(n: int) -> str:
    """A parameter or MAC count with a k/M/G suffix: 1.23M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
