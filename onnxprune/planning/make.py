"""Make a plan: scores → kept channel indices for every prunable group.

How many channels go: ``ratio`` removes that fraction of all prunable channels ranked together (scope
``global``: one percentile over every group scored by the same criterion, as Network Slimming does), or of
each group (scope ``layer``); ``threshold`` removes every channel scoring at or below it. Then every kept
count is rounded up to a multiple of ``round_to`` (Tensor Cores want multiples of 8), never below
``min_keep``, never to zero, never above what the group has. Channels the analysis must keep (a constant
that cannot be folded) are kept first. Groups of one grouped Conv keep equal counts.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping

import numpy as np

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.group import ChannelGroup, Decline
from onnxprune.channels.plan import Plan
from onnxprune.options import PlanOptions
from onnxprune.planning.align import align
from onnxprune.planning.draft import Draft
from onnxprune.planning.replay import replay_plan


def exclude_declines(groups: list[ChannelGroup], patterns: Iterable[str]) -> dict[int, list[Decline]]:
    """The groups an ``--exclude`` glob matches (any member node), with the glob that did."""
    found: dict[int, list[Decline]] = {}
    for group in groups:
        for pattern in patterns:
            hit = next((n for n in group.nodes if fnmatch.fnmatchcase(n, pattern)), None)
            if hit is not None:
                found[group.id] = [Decline(f"excluded by --exclude {pattern!r}", hit)]
                break
    return found


def unmatched_excludes(groups: list[ChannelGroup], patterns: Iterable[str]) -> list[str]:
    """The ``--exclude`` globs that match no node of any group: a typo the user should hear about."""
    names = [n for g in groups for n in g.nodes]
    return [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]


def make_plan(
    groups: list[ChannelGroup],
    options: PlanOptions,
    analysis: Analysis | None = None,
    counts: Mapping[int, int] | None = None,
) -> Plan:
    """The kept indices of every prunable group (others keep everything), as a ``Plan``.

    How many each group keeps: ``counts`` (group id -> kept count, from an allocation; groups absent keep
    all), else the options' ratio or threshold; rounded as the options say either way.

    With the ``analysis``, no tensor is left without channels: a Split piece whose channels all scored low
    would be (its group as a whole keeps its count, but not in that piece). Its best channel is then kept
    and the plan is made again, so rounding and ties still hold. Then every width a consumer sees is
    aligned to ``round_to`` (``align.py``).
    """
    draft = Draft(groups, exclude_declines(groups, options.exclude))
    if options.replay is not None:
        return replay_plan(groups, options.replay, draft.declined)
    _decline_broken_ties(draft)
    _assign(draft, options, counts)
    if analysis is None:
        return draft.freeze()
    for _ in range(len(analysis.states)):
        emptied = _emptied_piece(analysis, draft)
        if emptied is None:
            break
        group, index = emptied
        draft.must[group.id] = draft.must_mask(group).copy()
        draft.must[group.id][index] = True
        _assign(draft, options, counts)
    # Rounding groups is not enough where a Split or Concat shows consumers parts of groups (align.py).
    left = align(analysis, draft, options.width_step, down=options.threshold is None)
    if left and options.aligned_to < options.width_step:
        # Auto's CPU block where it fits, at least the promised 8 where it does not (ShuffleNet's halves
        # of 58 cannot all reach 16).
        align(analysis, draft, options.aligned_to, down=options.threshold is None)
    return draft.freeze()


def _emptied_piece(analysis: Analysis, draft: Draft) -> tuple[ChannelGroup, int] | None:
    """A tensor the plan leaves with no channel, as (group, index) of its best-scored channel."""
    plan = draft.freeze()
    for state in analysis.states.values():
        if len(state.removed_value) == 0 or len(analysis.kept_positions(state.map, plan)) > 0:
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


def _assign(draft: Draft, options: PlanOptions, counts: Mapping[int, int] | None) -> None:
    candidates = [g for g in draft.groups if draft.prunable(g) and g.score is not None]
    if counts is not None:
        wanted = {g.id: int(counts.get(g.id, g.size)) for g in candidates}
    else:
        removals = _removal_counts(draft, candidates, options)
        wanted = {g.id: g.size - removals.get(g.id, 0) for g in candidates}
    targets = {g.id: _round(draft, g, wanted[g.id], options) for g in candidates if g.tie < 0}
    targets.update(_tie_targets(draft, candidates, wanted, options))
    draft.kept = {gid: draft.top(draft.by_id[gid], count) for gid, count in targets.items()}


def _removal_counts(draft: Draft, groups: list[ChannelGroup], options: PlanOptions) -> dict[int, int]:
    if options.threshold is not None:
        return {g.id: int(np.count_nonzero(draft.effective(g) <= options.threshold)) for g in groups}
    ratio = float(options.ratio or 0.0)
    if options.scope == "layer":
        return {g.id: min(int(math.floor(ratio * g.size)), g.size - draft.must_count(g)) for g in groups}
    counts = {g.id: 0 for g in groups}
    for criterion in {g.criterion for g in groups}:
        pool = [g for g in groups if g.criterion == criterion]
        scores = np.concatenate([draft.effective(g) for g in pool])
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


def _round(draft: Draft, group: ChannelGroup, keep: int, options: PlanOptions) -> int:
    step = options.width_step
    keep = max(keep, draft.must_count(group), min(options.min_keep, group.size), 1)
    keep = int(math.ceil(keep / step) * step)
    return min(keep, group.size)


def _ties(draft: Draft) -> dict[int, list[ChannelGroup]]:
    ties: dict[int, list[ChannelGroup]] = {}
    for g in draft.groups:
        if g.tie >= 0:
            ties.setdefault(g.tie, []).append(g)
    return ties


def _decline_broken_ties(draft: Draft) -> None:
    """A tie is pruned as a whole or not at all: one declined or unequal member declines them all."""
    for members in _ties(draft).values():
        blocked = next((g for g in members if not draft.prunable(g) or g.score is None), None)
        if blocked is None and len({g.size for g in members}) == 1:
            continue
        why = (
            "tied by a grouped Conv to a group that cannot be pruned"
            if blocked
            else "unequal grouped Conv chunks"
        )
        node = blocked.nodes[0] if blocked and blocked.nodes else ""
        for g in members:
            if draft.prunable(g):
                draft.declined.setdefault(g.id, []).append(Decline(why, node))


def _tie_targets(
    draft: Draft, groups: list[ChannelGroup], wanted: dict[int, int], options: PlanOptions
) -> dict[int, int]:
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
        keep = max(keep, floor, max(draft.must_count(g) for g in members), 1)
        keep = min(math.ceil(keep / step) * step, size)
        targets.update({g.id: keep for g in members})
    return targets
