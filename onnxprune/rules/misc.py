"""Ops that read a tracked tensor without carrying its channels on: Shape and Size read only its extent,
Softmax-like ops over a non-channel axis keep channels apart.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.rules.base import ChannelwiseRule, Rule, decline_node, rank, rule


@rule("Shape", "Size")
class ShapeRule(Rule):
    """A shape read at run time follows pruning by itself; only its consumers could hard-code C."""

    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is not None:
            ctx.member(state.map, node.name)


@rule("Softmax", "LogSoftmax", "Hardmax")
class SoftmaxRule(ChannelwiseRule):
    """Over spatial axes each channel stays apart; a constant channel becomes 1/n (LogSoftmax: -log n), n
    being the extent normalised over (opset < 13: every axis from ``axis`` on)."""

    keeps_before_first_bn = False  # a normalised channel is no longer its producer's raw output

    def removed_value(self, node: gs.Node, ctx: Analysis, state: TensorState) -> np.ndarray | None:
        r = rank(node.inputs[0])
        opset = ctx.opset
        axis = int(node.attrs.get("axis", -1 if opset >= 13 else 1)) % (r or 1)
        if r is None or axis in (0, 1):
            decline_node(node, ctx, f"{node.op} over the channel axis mixes channels")
            return None
        shape = node.inputs[0].shape
        dims = shape[axis : axis + 1] if opset >= 13 else shape[axis:]
        n = np.prod(dims) if all(isinstance(d, int | np.integer) for d in dims) else np.nan
        constant = {"Softmax": 1.0 / n, "LogSoftmax": -np.log(n)}.get(node.op, np.nan)
        return np.where(np.isfinite(state.removed_value), constant, np.nan)
