"""ChannelGroup and Decline: the nouns the planner and the report work with."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Decline:
    """Why a group cannot be pruned, and which node causes it."""

    reason: str
    node: str

    def __str__(self) -> str:
        return f"{self.reason} (node {self.node!r})" if self.node else self.reason


@dataclass
class ChannelGroup:
    """One index space of channels that are kept or removed together.

    Every tensor that carries these channels holds them in the same order, so one list of kept indices
    serves all of them. ``tie`` names groups that must keep the same count (the groups of a grouped Conv).
    """

    id: int
    size: int
    nodes: list[str] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    declines: list[Decline] = field(default_factory=list)
    gamma: np.ndarray | None = None
    filter_norm: np.ndarray | None = None
    filter_norm_l2: np.ndarray | None = None
    must_keep: np.ndarray | None = None
    must_keep_reason: Decline | None = None
    inexact: np.ndarray | None = None
    tie: int = -1
    criterion: str = "gamma"
    score: np.ndarray | None = None
    keep: np.ndarray | None = None

    @property
    def prunable(self) -> bool:
        return not self.declines

    @property
    def kept(self) -> int:
        return self.size if self.keep is None else len(self.keep)
