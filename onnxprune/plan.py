"""Plan: scores → kept channel indices for every prunable group.

How many channels go: ``ratio`` removes that fraction of all prunable channels ranked together (scope
``global``: one percentile over every group scored by the same criterion, as Network Slimming does), or of
each group (scope ``layer``); ``threshold`` removes every channel scoring at or below it. Then every kept
count is rounded up to a multiple of ``round_to`` (Tensor Cores want multiples of 8), never below
``min_keep``, never to zero, never above what the group has. Channels the analysis must keep (a constant
that cannot be folded) are kept first. Groups of one grouped Conv keep equal counts.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.align import align
from onnxprune.channels.analysis import Analysis
from onnxprune.channels.group import ChannelGroup, Decline
from onnxprune.errors import UsageError, first_line
from onnxprune.options import PlanOptions

__all__ = ["PlanOptions", "exclude_groups", "load_plan", "make_plan", "replay_plan"]


def exclude_groups(groups: list[ChannelGroup], patterns: Iterable[str]) -> None:
    for group in groups:
        for pattern in patterns:
            hit = next((n for n in group.nodes if fnmatch.fnmatchcase(n, pattern)), None)
            if hit is not None:
                group.declines.append(Decline(f"excluded by --exclude {pattern!r}", hit))
                break


def unmatched_excludes(groups: list[ChannelGroup], patterns: Iterable[str]) -> list[str]:
    """The ``--exclude`` globs that match no node of any group: a typo the user should hear about."""
    names = [n for g in groups for n in g.nodes]
    return [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]


def make_plan(groups: list[ChannelGroup], options: PlanOptions, analysis: Analysis | None = None) -> None:
    """Set ``group.keep`` (sorted kept indices) on every prunable group; others keep everything.

    With the ``analysis``, no tensor is left without channels: a Split piece whose channels all scored low
    would be (its group as a whole keeps its count, but not in that piece). Its best channel is then kept
    and the plan is made again, so rounding and ties still hold. Then every width a consumer sees is
    aligned to ``round_to`` (``align.py``).
    """
    exclude_groups(groups, options.exclude)
    if options.replay is not None:
        replay_plan(groups, options.replay)
        return
    _decline_broken_ties(groups)
    _assign(groups, options)
    if analysis is None:
        return
    for _ in range(len(analysis.states)):
        emptied = _emptied_piece(analysis)
        if emptied is None:
            break
        group, index = emptied
        group.must_keep = group.must_keep if group.must_keep is not None else np.zeros(group.size, bool)
        group.must_keep[index] = True
        _assign(groups, options)
    # Rounding groups is not enough where a Split or Concat shows consumers parts of groups (align.py).
    left = align(analysis, options.width_step, down=options.threshold is None)
    if left and options.aligned_to < options.width_step:
        # Auto's CPU block where it fits, at least the promised 8 where it does not (ShuffleNet's halves of
        # 58 at --ratio 0.5: 22 widths off 16 after the first pass, 7 off 8 after this one, as with 8 alone).
        align(analysis, options.aligned_to, down=options.threshold is None)


def _emptied_piece(analysis: Analysis) -> tuple[ChannelGroup, int] | None:
    """A tensor the plan leaves with no channel, as (group, index) of its best-scored channel."""
    for state in analysis.states.values():
        if len(state.removed_value) == 0 or len(analysis.kept_positions(state.map)) > 0:
            continue
        candidates = [
            (float(np.max(group.score[span.start : span.start + span.length])), group, span)
            for group, span, _ in analysis.pieces(state.map)
            if group.score is not None
        ]
        if not candidates:
            return None
        _, group, span = max(candidates, key=lambda c: c[0])
        local = np.asarray(group.score)[span.start : span.start + span.length]
        return group, span.start + int(np.argmax(local))
    return None


def _assign(groups: list[ChannelGroup], options: PlanOptions) -> None:
    candidates = [g for g in groups if g.prunable and g.score is not None]
    removals = _removal_counts(candidates, options)
    wanted = {g.id: g.size - removals[g.id] for g in candidates}
    targets = {g.id: _round(g, wanted[g.id], options) for g in candidates if g.tie < 0}
    targets.update(_tie_targets(candidates, wanted, options))
    for group in groups:
        group.keep = _top(group, targets[group.id]) if group.id in targets else None


def _removal_counts(groups: list[ChannelGroup], options: PlanOptions) -> dict[int, int]:
    if options.threshold is not None:
        return {g.id: int(np.count_nonzero(_effective(g) <= options.threshold)) for g in groups}
    ratio = float(options.ratio or 0.0)
    if options.scope == "layer":
        return {g.id: min(int(math.floor(ratio * g.size)), g.size - _must(g)) for g in groups}
    counts = {g.id: 0 for g in groups}
    for criterion in {g.criterion for g in groups}:
        pool = [g for g in groups if g.criterion == criterion]
        scores = np.concatenate([_effective(g) for g in pool])
        owners = np.concatenate([np.full(g.size, g.id) for g in pool])
        order = np.argsort(scores, kind="stable")
        wanted = int(math.floor(ratio * len(scores)))
        caps = {g.id: int(math.floor(options.max_group_ratio * g.size)) for g in pool}
        counts.update(_capped(owners[order], wanted, caps))
    return counts


def _capped(owners: np.ndarray, wanted: int, caps: dict[int, int]) -> dict[int, int]:
    """Removals per group taking channels in rank order, skipping groups at their cap."""
    counts: dict[int, int] = {}
    if all(cap >= len(owners) for cap in caps.values()):
        ids, n = np.unique(owners[:wanted], return_counts=True)
        return {int(g): int(c) for g, c in zip(ids, n, strict=True)}
    taken = 0
    for gid in owners.tolist():
        if taken == wanted:
            break
        if counts.get(gid, 0) < caps[gid]:
            counts[gid] = counts.get(gid, 0) + 1
            taken += 1
    return counts


def _effective(group: ChannelGroup) -> np.ndarray:
    """Scores with the channels the analysis must keep ranked above everything."""
    score = np.asarray(group.score, dtype=np.float64).copy()
    if group.must_keep is not None:
        score[group.must_keep] = np.inf
    return score


def _must(group: ChannelGroup) -> int:
    return int(group.must_keep.sum()) if group.must_keep is not None else 0


def _round(group: ChannelGroup, keep: int, options: PlanOptions, step: int | None = None) -> int:
    step = step or options.width_step
    keep = max(keep, _must(group), min(options.min_keep, group.size), 1)
    keep = int(math.ceil(keep / step) * step)
    return min(keep, group.size)


def _decline_broken_ties(groups: list[ChannelGroup]) -> None:
    """A tie is pruned as a whole or not at all: one declined or unequal member declines them all."""
    ties: dict[int, list[ChannelGroup]] = {}
    for g in groups:
        if g.tie >= 0:
            ties.setdefault(g.tie, []).append(g)
    for members in ties.values():
        blocked = next((g for g in members if not g.prunable or g.score is None), None)
        if blocked is None and len({g.size for g in members}) == 1:
            continue
        why = (
            "tied by a grouped Conv to a group that cannot be pruned"
            if blocked
            else "unequal grouped Conv chunks"
        )
        for g in members:
            if g.prunable:
                g.declines.append(Decline(why, blocked.nodes[0] if blocked and blocked.nodes else ""))


def _tie_targets(groups: list[ChannelGroup], wanted: dict[int, int], options: PlanOptions) -> dict[int, int]:
    """The chunks of one grouped Conv keep one count, rounded up so that their total (what the GPU kernel
    sees) is a multiple of options.aligned_to and at least min_keep. A threshold is a promise about every
    channel above it, so the chunk that wants most sets the count; a ratio is a budget, so the mean does."""
    ties: dict[int, list[ChannelGroup]] = {}
    for g in groups:
        if g.tie >= 0:
            ties.setdefault(g.tie, []).append(g)
    targets = {}
    for members in ties.values():
        n, size = len(members), min(g.size for g in members)
        step = options.aligned_to // math.gcd(options.aligned_to, n)
        counts = [wanted[g.id] for g in members]
        keep = max(counts) if options.threshold is not None else round(sum(counts) / n)
        floor = math.ceil(min(options.min_keep, size * n) / n)
        keep = max(keep, floor, max(_must(g) for g in members), 1)
        keep = min(math.ceil(keep / step) * step, size)
        targets.update({g.id: keep for g in members})
    return targets


def _top(group: ChannelGroup, count: int) -> np.ndarray:
    """The ``count`` best channels, those the analysis must keep first, in index order."""
    order = np.argsort(-_effective(group), kind="stable")[:count]
    return np.sort(order)


def replay_plan(groups: list[ChannelGroup], saved: Mapping[str, Any]) -> None:
    """Apply the kept indices of an earlier report (``prune --report``) to the same model, group by group.

    Groups are matched by their member node names, so a plan made on one export replays on another export
    of the same network with the same node names. Anything that does not match is a UsageError.
    """
    by_nodes = {tuple(g.nodes): g for g in groups}
    for group in groups:
        group.keep = None
    for record in saved.get("groups", []):
        found = by_nodes.get(tuple(sorted(record.get("nodes", []))))
        where = ", ".join(record.get("producers") or record.get("nodes", [])[:2])
        if found is None:
            raise UsageError(
                f"the saved plan does not fit this model: it prunes the group of {where}, "
                "which this model does not have (groups are matched by their node names)"
            )
        group = found
        keep = np.asarray(record.get("kept", []), dtype=np.int64)
        if group.size != record.get("channels_before"):
            raise UsageError(
                f"the saved plan does not fit this model: the group of {where} has "
                f"{record.get('channels_before')} channels in the plan, {group.size} in this model"
            )
        if not _valid_indices(keep, group.size):
            raise UsageError(
                f"the saved plan does not fit this model: the group of {where} keeps {len(keep)} indices, "
                f"expected sorted distinct indices below {group.size}"
            )
        if not group.prunable:
            raise UsageError(f"the saved plan prunes a group this model declines: {group.declines[0]}")
        group.keep = keep


def _valid_indices(keep: np.ndarray, size: int) -> bool:
    return bool(keep.size) and bool(np.all(np.diff(keep) > 0)) and keep[0] >= 0 and keep[-1] < size


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read a report written by ``prune --report`` (its ``groups`` hold the kept indices)."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read a saved plan ({first_line(exc)})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("groups"), list):
        raise UsageError(f"{path}: not an onnxprune report (no 'groups' list)")
    return saved
