"""ChannelGroup and Decline: the nouns the planner and the report work with."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# A producer's filter norms (L1, L2 per position of its output) and where they land: (norms, the group's
# channels, the positions of the producer's output that hold them).
NormSource = tuple[Callable[[], tuple[np.ndarray, np.ndarray]], slice, slice]


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
    The analysis finds a group and the scoring ranks it, both while the model is prepared; after that a
    group never changes: which channels a prune keeps is a ``Plan`` (channels/plan.py).
    """

    id: int
    size: int
    nodes: list[str] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    declines: list[Decline] = field(default_factory=list)
    gamma: np.ndarray | None = None
    norm_sources: list[NormSource] = field(default_factory=list, repr=False)
    must_keep: np.ndarray | None = None
    # Why channels must survive: each reason with the channels it holds (inspect --explain lists them).
    must_keep_why: dict[Decline, np.ndarray] = field(default_factory=dict, repr=False)
    inexact: np.ndarray | None = None
    tie: int = -1
    criterion: str = "gamma"
    score: np.ndarray | None = None

    @property
    def filter_norm(self) -> np.ndarray | None:
        """L1 norm of the filter that produces each channel (max over producers; nan where none does)."""
        return self._filter_norms[0]

    @property
    def filter_norm_l2(self) -> np.ndarray | None:
        return self._filter_norms[1]

    @functools.cached_property
    def _filter_norms(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        # Computed at first use: groups ranked by gamma never need them, and they read every filter.
        l1 = l2 = None
        for norms, channels, positions in self.norm_sources:
            a, b = norms()
            l1 = fmax_into(l1, self.size, channels, a[positions])
            l2 = fmax_into(l2, self.size, channels, b[positions])
        return l1, l2

    @property
    def must_keep_reason(self) -> Decline | None:
        """The first reason some channels must survive (``must_keep_why`` has them all)."""
        return next(iter(self.must_keep_why), None)

    @property
    def prunable(self) -> bool:
        return not self.declines


def fmax_into(current: np.ndarray | None, size: int, idx: slice, values: np.ndarray) -> np.ndarray:
    """``current`` (nan-filled of ``size`` when None) with ``values`` max-ed into ``idx``, nan ignored."""
    out = current if current is not None else np.full(size, np.nan)
    out[idx] = np.fmax(out[idx], values)
    return out
