"""Draft: a plan being made. The planner and the aligner change its kept indices and the channels that must
survive freely; ``freeze`` turns it into the ``Plan`` value the later stages take. The groups never change."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from onnxprune.channels.group import ChannelGroup, Decline
from onnxprune.channels.plan import Plan


class Draft:
    """A plan being made: kept indices and the channels that must survive, per group, changed freely by the
    planner and the aligner (align.py), then frozen into a ``Plan``. The groups themselves never change."""

    def __init__(
        self, groups: list[ChannelGroup], declined: Mapping[int, list[Decline]] | None = None
    ) -> None:
        self.groups = groups
        self.by_id = {g.id: g for g in groups}
        self.declined: dict[int, list[Decline]] = {gid: list(d) for gid, d in (declined or {}).items()}
        self.kept: dict[int, np.ndarray] = {}
        self.must: dict[int, np.ndarray] = {
            g.id: g.must_keep.copy() for g in groups if g.must_keep is not None
        }

    def prunable(self, group: ChannelGroup) -> bool:
        return group.prunable and group.id not in self.declined

    def must_count(self, group: ChannelGroup) -> int:
        must = self.must.get(group.id)
        return int(must.sum()) if must is not None else 0

    def must_mask(self, group: ChannelGroup) -> np.ndarray:
        must = self.must.get(group.id)
        return must if must is not None else np.zeros(group.size, bool)

    def effective(self, group: ChannelGroup) -> np.ndarray:
        """Scores with the channels that must survive ranked above everything."""
        score = np.asarray(group.score, dtype=np.float64).copy()
        must = self.must.get(group.id)
        if must is not None:
            score[must] = np.inf
        return score

    def top(self, group: ChannelGroup, count: int) -> np.ndarray:
        """The ``count`` best channels, those that must survive first, in index order."""
        order = np.argsort(-self.effective(group), kind="stable")[:count]
        return np.sort(order)

    def kept_count(self, group: ChannelGroup) -> int:
        keep = self.kept.get(group.id)
        return group.size if keep is None else len(keep)

    def freeze(self) -> Plan:
        return Plan(dict(self.kept), {gid: tuple(d) for gid, d in self.declined.items()})
