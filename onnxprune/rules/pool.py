"""Pooling and reductions over spatial axes: channel c of the output comes from channel c of the input.

A constant channel stays the same constant through max pooling, global pooling and means; an average pool
that counts zero padding, a sum or an Lp norm changes it (kept as unknown unless it is 0).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.rules.base import ChannelwiseRule, const, decline_node, rank, rule

KEEPS_CONSTANT = {"MaxPool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceMin"}
REDUCES = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceProd")


def _keeps_constant(node: gs.Node) -> bool:
    if node.op == "AveragePool":
        padded = any(int(p) for p in node.attrs.get("pads", [])) or node.attrs.get(
            "auto_pad", "NOTSET"
        ) not in (
            "NOTSET",
            "VALID",
            b"NOTSET",
            b"VALID",
        )
        return not padded or not int(node.attrs.get("count_include_pad", 0))
    return node.op in KEEPS_CONSTANT


def _reduced_axes(node: gs.Node, in_rank: int) -> list[int] | None:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and not node.inputs[1].is_empty():
        axes = const(node.inputs[1])
        if axes is None:
            return None
    if axes is None or len(axes) == 0:
        return None if int(node.attrs.get("noop_with_empty_axes", 0)) == 0 else []
    return sorted(int(a) % in_rank for a in np.asarray(axes).reshape(-1))


@rule("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool", *REDUCES)
class PoolRule(ChannelwiseRule):
    # A reduction may meet channels on another axis ([N, T, C] of a TensorFlow export averaged over T);
    # pools need them on axis 1.
    any_axis = True

    def removed_value(self, node: gs.Node, ctx: Analysis, state: TensorState) -> np.ndarray | None:
        if node.op.startswith("Reduce"):
            axes = _reduced_axes(node, rank(node.inputs[0]) or 4)
            if axes is None or 0 in axes or state.axis in axes:
                decline_node(node, ctx, f"{node.op} reduces over the batch or channel axis")
                return None
        elif state.axis != 1:
            decline_node(node, ctx, f"{node.op} of a tensor whose channels are on axis {state.axis}, not 1")
            return None
        if len(node.outputs) > 1 and (node.outputs[1].outputs or node.outputs[1].name in ctx.outputs):
            decline_node(node, ctx, "MaxPool whose indices output is used")
            return None
        value = state.removed_value
        return value if _keeps_constant(node) else np.where(value == 0, 0.0, np.nan)

    def out_axis(self, node: gs.Node, state: TensorState) -> int:
        if not node.op.startswith("Reduce") or int(node.attrs.get("keepdims", 1)):
            return state.axis
        axes = _reduced_axes(node, rank(node.inputs[0]) or 4) or []
        return state.axis - sum(a < state.axis for a in axes)
