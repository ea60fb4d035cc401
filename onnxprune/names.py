"""Fresh names for tensors and nodes that a rewrite adds."""

from __future__ import annotations

from collections.abc import Iterable


class FreshNames:
    """Hands out names that collide with nothing used so far: ``base``, then ``base_1``, ``base_2``, ..."""

    def __init__(self, used: Iterable[str]) -> None:
        self.used = set(used)

    def make(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name
