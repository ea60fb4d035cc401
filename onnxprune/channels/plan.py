"""Plan: which channels of every group survive a prune, as a value.

Planning returns a plan; rewriting, estimating, compensating and verifying take one. The groups of the
analysis never change after the model is prepared, so one analysis serves any number of plans (a target
search, a sweep, a sensitivity scan). A plan refers to the groups of one analysis by id:

- ``kept``: group id -> sorted kept indices; a group absent keeps every channel;
- ``declined``: the declines planning added (an ``--exclude`` glob, a grouped Conv's tie that cannot be kept,
  a group whose pruning broke the rewritten model), beside those the analysis found.

``records`` and ``plan.load``/``replay`` carry it to and from JSON by member node names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from onnxprune.channels.group import ChannelGroup, Decline


@dataclass(frozen=True)
class Plan:
    """Kept indices per group id, and the declines made while planning."""

    kept: Mapping[int, np.ndarray] = field(default_factory=dict)
    declined: Mapping[int, tuple[Decline, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kept = {int(gid): _frozen(keep) for gid, keep in self.kept.items()}
        object.__setattr__(self, "kept", MappingProxyType(kept))
        declined = {int(gid): tuple(found) for gid, found in self.declined.items()}
        object.__setattr__(self, "declined", MappingProxyType(declined))

    def __reduce__(self) -> tuple[Any, ...]:
        # The read-only views do not pickle; a plan travels to a search's workers as its two dicts.
        return (Plan, (dict(self.kept), dict(self.declined)))

    def keep(self, group: ChannelGroup) -> np.ndarray | None:
        """The group's kept indices, or None where the plan does not touch it."""
        return self.kept.get(group.id)

    def kept_count(self, group: ChannelGroup) -> int:
        keep = self.kept.get(group.id)
        return group.size if keep is None else len(keep)

    def prunable(self, group: ChannelGroup) -> bool:
        """Declined neither by the analysis nor by planning."""
        return group.prunable and group.id not in self.declined

    def declines(self, group: ChannelGroup) -> list[Decline]:
        return list(group.declines) + list(self.declined.get(group.id, ()))

    def cuts(self, groups: Iterable[ChannelGroup]) -> dict[int, np.ndarray]:
        """Only the groups that lose channels (a group planned at full width changes nothing)."""
        return {g.id: self.kept[g.id] for g in groups if g.id in self.kept and len(self.kept[g.id]) < g.size}

    def with_kept(self, kept: Mapping[int, np.ndarray]) -> Plan:
        return Plan(kept, self.declined)

    def with_declines(self, declines: Mapping[int, Iterable[Decline]]) -> Plan:
        """This plan with more declines; a declined group keeps all its channels."""
        merged = {gid: tuple(found) for gid, found in self.declined.items()}
        for gid, found in declines.items():
            merged[gid] = merged.get(gid, ()) + tuple(found)
        return Plan({g: k for g, k in self.kept.items() if g not in declines}, merged)

    def records(self, groups: Iterable[ChannelGroup]) -> list[dict[str, Any]]:
        """The JSON form of every planned group (what ``--replay`` reads back)."""
        return [group_record(g, self.kept[g.id]) for g in groups if g.id in self.kept and self.prunable(g)]


def group_record(group: ChannelGroup, keep: np.ndarray) -> dict[str, Any]:
    return {
        "id": group.id,
        "nodes": group.nodes,
        "producers": group.producers,
        "criterion": group.criterion,
        "channels_before": group.size,
        "channels_after": int(len(keep)),
        # Channels no plan can remove (a constant no consumer folds): inspect --explain says why.
        "must_keep": int(group.must_keep.sum()) if group.must_keep is not None else 0,
        "kept": [int(i) for i in keep],
    }


def _frozen(keep: object) -> np.ndarray:
    array = np.array(keep, dtype=np.int64).reshape(-1)
    array.flags.writeable = False
    return array


EMPTY = Plan()
