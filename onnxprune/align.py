"""Alignment: every channel width a Conv, ConvTranspose, Gemm or MatMul sees is a multiple of --round-to.

Rounding each group's kept count is not enough: a Split cuts one group into pieces (YOLOv8's C2f, Res2Net),
a Concat lays several side by side, so a consumer may see part of a group, or parts of several. The widths
consumers see are sums of *segments*: stretches of one group between the cuts any consumer's map makes.
Rounding every pruned segment's kept count up to a multiple of N (adding back its best-scored removed
channels; all of it where it has fewer than that) makes every width a sum of multiples of N, apart from
segments left whole whose size is not one. Such widths cannot be aligned by keeping more: ``unaligned``
lists them, with the consumer, for --explain and the report. Grouped-conv chunks (tied groups) are aligned
by the planner already and left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.group import ChannelGroup

CONSUMERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Seen:
    """One channel width a consumer sees: node, tensor, and its pieces as (group id, start, length)."""

    node: str
    tensor: str
    pieces: tuple[tuple[int, int, int], ...]


def seen_widths(analysis: Analysis) -> list[Seen]:
    """Every channel axis a consumer reads or writes (``analysis.consumers``, recorded by the walk)."""
    cached = getattr(analysis, "_seen_widths", None)
    if cached is not None:
        return cached
    seen = []
    for node, tensor in analysis.consumers:
        state = analysis.states.get(tensor)
        if state is not None:
            pieces = tuple((g.id, s.start, s.length) for g, s, _ in analysis.pieces(state.map))
            seen.append(Seen(node, tensor, pieces))
    analysis._seen_widths = seen  # type: ignore[attr-defined]  # the groups do not change after analysis
    return seen


def align(analysis: Analysis, step: int) -> list[dict[str, object]]:
    """Round every pruned segment up to a multiple of ``step``; the widths still unaligned."""
    if step <= 1:
        return []
    seen = seen_widths(analysis)
    by_id = {g.id: g for g in analysis.groups}
    cuts: dict[int, set[int]] = {}
    for width in seen:
        for gid, start, length in width.pieces:
            cuts.setdefault(gid, {0, by_id[gid].size}).update((start, start + length))
    for gid, bounds in cuts.items():
        group = by_id[gid]
        if group.keep is not None and group.tie < 0 and len(group.keep) < group.size:
            _round_segments(group, sorted(bounds), step)
    return unaligned(analysis, seen, step)


def _round_segments(group: ChannelGroup, bounds: list[int], step: int) -> None:
    keep = np.zeros(group.size, bool)
    keep[np.asarray(group.keep)] = True
    score = np.asarray(group.score if group.score is not None else np.zeros(group.size), dtype=np.float64)
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        kept = int(keep[lo:hi].sum())
        if kept == hi - lo:
            continue
        want = min(math.ceil(max(kept, 1) / step) * step, hi - lo)
        removed = np.flatnonzero(~keep[lo:hi]) + lo
        best = removed[np.argsort(-score[removed], kind="stable")][: want - kept]
        keep[best] = True
    group.keep = np.flatnonzero(keep)


def unaligned(analysis: Analysis, seen: list[Seen], step: int) -> list[dict[str, object]]:
    """Widths that lost channels and are not a multiple of ``step``, with the consumer that sees them."""
    by_id = {g.id: g for g in analysis.groups}
    found = []
    for width in seen:
        full = sum(length for _, _, length in width.pieces)
        kept = sum(_kept_in(by_id[gid], start, length) for gid, start, length in width.pieces)
        if kept < full and kept % step:
            found.append({"node": width.node, "tensor": width.tensor, "width": kept, "of": full})
    return found


def _kept_in(group: ChannelGroup, start: int, length: int) -> int:
    if group.keep is None:
        return length
    keep = np.asarray(group.keep)
    return int(np.count_nonzero((keep >= start) & (keep < start + length)))


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
