"""What compensation did, per consumer of removed channels: the report's ``compensation`` section."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.plan import Plan


def compensation_report(analysis: Analysis, plan: Plan, mode: str) -> dict[str, Any]:
    """Per consumer (Conv, Gemm, MatMul) that lost input channels: how their constants were folded.

    ``applied``: "bias" (an unpadded consumer's bias, exact), "bias map" (a zero-padded Conv's per-position
    Add, exact), "none" (every removed channel carries 0: nothing to fold). ``exact``: whether the pruned
    model equals the original at this layer's input, i.e. every removed channel carried exactly the folded
    constant (gamma = 0); otherwise the constants are data-free estimates (None: not checked, as with
    ``--compensate none --ratio``, which skips the original-values pass).
    """
    layers = []
    for name, node, how in analysis.consumers:
        state = analysis.states[name]
        removed = analysis.removed_positions(name, plan)
        if removed.size == 0:
            continue
        values = state.removed_value[removed]
        carrying = values != 0
        layers.append(
            {
                "node": node,
                "input": name,
                "removed": int(removed.size),
                "carrying": int(carrying.sum()),
                "applied": how if carrying.any() else "none",
                "exact": not _inexact(analysis, state.map, removed).any()
                if analysis.exactness_known
                else None,
                "estimate": [float(f"{v:.6g}") for v in values[carrying]],
            }
        )
    disabled = sum(int(_removed_at(analysis, plan, n, cut).sum()) for n, cut in analysis.disabled.items())
    approximations = [
        {"node": node, "why": why}
        for node, why, name in dict.fromkeys(analysis.approximations)
        if (analysis.states[name].removed_value[_removed_at(analysis, plan, name, None)] != 0).any()
    ]
    return {"mode": mode, "layers": layers, "approximations": approximations, "fell_back_to_zero": disabled}


def _inexact(analysis: Analysis, cmap, positions: np.ndarray) -> np.ndarray:
    """Per position: removal changes the original's value there (the analysis' second pass says so)."""
    flags = np.zeros(sum(s.width for s in analysis.resolve(cmap)), dtype=bool)
    for group, span, offset in analysis.pieces(cmap):
        if group.inexact is None:
            continue
        local = np.repeat(group.inexact[span.start : span.start + span.length], span.repeat)
        flags[offset : offset + span.width] = local
    return flags[positions]


def _removed_at(analysis: Analysis, plan: Plan, name: str, among: np.ndarray | None) -> np.ndarray:
    """Per position of a tensor: removed by the plan (and in ``among``)."""
    removed = analysis.removed_mask(name, plan)
    return removed if among is None else removed & among
