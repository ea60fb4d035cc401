"""Alignment: every channel width a Conv, ConvTranspose, Gemm or MatMul sees is a multiple of --round-to.

Rounding each group's kept count is not enough: a Split cuts one group into pieces (YOLOv8's C2f, Res2Net),
a Concat lays several side by side, so a consumer may see part of a group, or parts of several. Where a
consumer sees only part of a group, the group's channels are split into *atoms* by which such parts they
belong to; rounding every pruned atom's kept count up to a multiple of N (adding back its best-scored
removed channels; all of it where it has fewer than that) makes every width a sum of multiples of N, apart
from atoms left whole whose size is not one. A group consumers only see whole (a channel shuffle permutes
it) needs nothing beyond its rounded count. Such widths cannot be aligned by keeping more: ``unaligned``
lists them, with the consumer, for --explain and the report. Grouped-conv chunks (tied groups) are aligned
by the planner already and left alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.group import ChannelGroup
from onnxprune.planning.draft import Draft

REPAIR_BUDGET = 200


@dataclass(frozen=True)
class Seen:
    """One channel width a consumer sees: node, tensor, and its pieces as (group id, start, length)."""

    node: str
    tensor: str
    pieces: tuple[tuple[int, int, int], ...]


def seen_widths(analysis: Analysis) -> list[Seen]:
    """Every channel axis a consumer reads or writes (``analysis.consumer_widths``, recorded by the walk)."""
    cached = getattr(analysis, "_seen_widths", None)
    if cached is not None:
        return cached
    seen = []
    for node, tensor in analysis.consumer_widths:
        state = analysis.states.get(tensor)
        if state is not None:
            pieces = tuple((g.id, s.start, s.length) for g, s, _ in analysis.pieces(state.map))
            seen.append(Seen(node, tensor, pieces))
    analysis._seen_widths = seen  # type: ignore[attr-defined]  # the groups do not change after analysis
    return seen


def align(analysis: Analysis, draft: Draft, step: int, down: bool = True) -> list[dict[str, object]]:
    """Round every pruned atom (see ``atoms``) of the draft to a multiple of ``step``; the widths still
    unaligned.

    Up, adding back its best removed channels; where that would pass the atom's size and ``down`` allows
    (a ratio is a budget, a threshold a promise about every channel above it), down instead.
    """
    if step <= 1:
        return []
    seen = seen_widths(analysis)
    for group in analysis.groups:
        keep = draft.kept.get(group.id)
        if keep is None or group.tie >= 0 or len(keep) >= group.size:
            continue
        for atom in atoms(analysis, seen).get(group.id, []):
            _round_atom(draft, group, atom, step, down)
    left = unaligned(analysis, seen, step, draft.kept)
    if left:
        left = _repair(analysis, draft, seen, step, down, left)
    return left


def _repair(analysis: Analysis, draft: Draft, seen: list[Seen], step: int, down: bool, left: list) -> list:
    """Atoms smaller than ``step`` (ShuffleNet halves a group at every shuffle and split) cannot be rounded
    on their own: move single atoms of a misaligned width by what it lacks (or, ``down``, has too much)
    while that leaves fewer widths misaligned."""
    found = atoms(analysis, seen)
    touching: dict[int, list[Seen]] = {}
    for width in seen:
        for gid in {gid for gid, _, _ in width.pieces}:
            touching.setdefault(gid, []).append(width)
    budget = REPAIR_BUDGET  # trial plans: bounded, so a target search calling this often stays fast
    for _ in range(2 * len(left)):
        best: tuple[int, ChannelGroup, np.ndarray] | None = None
        for group, keep in _moves(left[0], draft, found, step, down):
            if budget == 0:
                break
            budget -= 1
            near = touching[group.id]  # only the widths this group is part of can change
            before = len(unaligned(analysis, near, step, draft.kept))
            gain = before - len(unaligned(analysis, near, step, {**draft.kept, group.id: keep}))
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, group, keep)
        if best is None:
            return left
        draft.kept[best[1].id] = best[2]
        left = unaligned(analysis, seen, step, draft.kept)
        if not left:
            return left
    return left


def _moves(
    width: dict, draft: Draft, found: dict, step: int, down: bool
) -> Iterator[tuple[ChannelGroup, np.ndarray]]:
    """Kept sets that change one atom of the width's groups by its shortfall (or its excess)."""
    short, extra = (-int(width["width"])) % step, int(width["width"]) % step
    for gid in width["groups"]:
        group = draft.by_id[gid]
        if gid not in draft.kept or group.tie >= 0 or group.score is None:
            continue
        keep = np.zeros(group.size, bool)
        keep[draft.kept[gid]] = True
        score = np.asarray(group.score, dtype=np.float64)
        for atom in found.get(gid, [np.arange(group.size)]):
            removed, kept = atom[~keep[atom]], atom[keep[atom]]
            if len(removed) >= short:
                add = keep.copy()
                add[removed[np.argsort(-score[removed], kind="stable")][:short]] = True
                yield group, np.flatnonzero(add)
            free = kept[~draft.must_mask(group)[kept]]
            if down and len(kept) - extra >= 1 and len(free) >= extra:
                cut = keep.copy()
                cut[free[np.argsort(score[free], kind="stable")][:extra]] = False
                yield group, np.flatnonzero(cut)


def atoms(analysis: Analysis, seen: list[Seen]) -> dict[int, list[np.ndarray]]:
    """Per group that some consumer sees only part of: its channels split by which of those parts they are
    in. Rounding each atom aligns every part, and the whole. A group every consumer sees whole (in any
    order: a channel shuffle) has no atoms; its rounded count is aligned already. Cached on the analysis."""
    cached = getattr(analysis, "_align_atoms", None)
    if cached is not None:
        return cached
    by_id = {g.id: g for g in analysis.groups}
    parts: dict[int, list[np.ndarray]] = {}
    for width in seen:
        covered: dict[int, np.ndarray] = {}
        for gid, start, length in width.pieces:
            mask = covered.setdefault(gid, np.zeros(by_id[gid].size, bool))
            mask[start : start + length] = True
        for gid, mask in covered.items():
            if not mask.all():
                parts.setdefault(gid, []).append(mask)
    found: dict[int, list[np.ndarray]] = {}
    for gid, masks in parts.items():
        signature = np.stack(masks, axis=1)  # channel × part membership
        _, label = np.unique(signature, axis=0, return_inverse=True)
        found[gid] = [np.flatnonzero(label.reshape(-1) == k) for k in range(int(label.max()) + 1)]
    analysis._align_atoms = found  # type: ignore[attr-defined]
    return found


def _round_atom(draft: Draft, group: ChannelGroup, atom: np.ndarray, step: int, down: bool) -> None:
    keep = np.zeros(group.size, bool)
    keep[draft.kept[group.id]] = True
    kept = int(keep[atom].sum())
    if kept == len(atom) or kept % step == 0:
        return
    want = math.ceil(kept / step) * step
    must = draft.must_mask(group)[atom]
    lower = kept // step * step
    if want > len(atom) and down and lower >= max(step, int(must.sum())):
        kept_here = atom[keep[atom] & ~must]
        score = np.asarray(group.score, dtype=np.float64)
        drop = kept_here[np.argsort(score[kept_here], kind="stable")][: kept - lower]
        keep[drop] = False
    else:
        score = np.asarray(group.score if group.score is not None else np.zeros(group.size), np.float64)
        removed = atom[~keep[atom]]
        keep[removed[np.argsort(-score[removed], kind="stable")][: min(want, len(atom)) - kept]] = True
    draft.kept[group.id] = np.flatnonzero(keep)


def unaligned(
    analysis: Analysis, seen: list[Seen], step: int, kept: Mapping[int, np.ndarray]
) -> list[dict[str, object]]:
    """Widths that lost channels and are not a multiple of ``step``, with the consumer that sees them
    (``kept``: a plan's kept indices by group id)."""
    by_id = {g.id: g for g in analysis.groups}
    prefix: dict[int, np.ndarray] = {}  # kept channels before each index: a piece's count in O(1)
    found = []
    for width in seen:
        full = sum(length for _, _, length in width.pieces)
        left = 0
        for gid, start, length in width.pieces:
            if gid not in prefix:
                prefix[gid] = _kept_prefix(by_id[gid], kept.get(gid))
            left += int(prefix[gid][start + length] - prefix[gid][start])
        if left < full and left % step:
            groups = sorted({gid for gid, _, _ in width.pieces})
            found.append(
                {"node": width.node, "tensor": width.tensor, "width": left, "of": full, "groups": groups}
            )
    return found


def _kept_prefix(group: ChannelGroup, keep: np.ndarray | None) -> np.ndarray:
    mask = np.ones(group.size, np.int64)
    if keep is not None:
        mask[:] = 0
        mask[keep] = 1
    return np.concatenate([[0], np.cumsum(mask)])


def impossible(analysis: Analysis, step: int) -> list[dict[str, object]]:
    """Widths no plan can align: prunable channels next to a fixed part that is not a multiple of ``step``
    (a declined group's channels concatenated with prunable ones), whatever the prunable part keeps."""
    if step <= 1:
        return []
    by_id = {g.id: g for g in analysis.groups}
    found = []
    for width in seen_widths(analysis):
        fixed = sum(n for gid, _, n in width.pieces if not by_id[gid].prunable)
        if fixed % step and any(by_id[gid].prunable for gid, _, _ in width.pieces):
            found.append({"node": width.node, "tensor": width.tensor, "fixed": fixed})
    return found
