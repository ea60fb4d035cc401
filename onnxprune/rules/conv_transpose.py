"""ConvTranspose: weight [C_in, C_out/group, k...], input channels on axis 0, output channels on axis 1.

- group 1: input channels are a reduction axis (weight rows), output channels a new group (weight columns).
  A removed input channel must carry 0: a constant c reaches each output pixel from a number of input
  pixels that varies with stride, kernel and border, so it is no per-channel bias and such channels are kept.
- depthwise (group == C_in == C_out): output channel c comes from input channel c only, so the output
  carries the input's map and ``group`` follows the kept count; a removed 0 becomes the bias.
- grouped: like a grouped Conv, input and output are cut into ``group`` tied chunks (``grouped.py``); the
  weight's rows follow the input's kept positions, its columns each group's kept output chunk.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.channels.edit import Rewrite
from onnxprune.rules.base import Rule, carry, const, decline_node, rule
from onnxprune.rules.conv import filter_norms
from onnxprune.rules.grouped import grouped_columns, tie_groups


def _filters(weight: np.ndarray, group: int) -> np.ndarray:
    """One row per output channel: the weights that produce it, [C_out, C_in/group * k...]."""
    a, b = weight.shape[0] // group, weight.shape[1]
    per_group = weight.reshape(group, a, b, -1).transpose(0, 2, 1, 3)
    return per_group.reshape(group * b, -1)


@rule("ConvTranspose")
class ConvTransposeRule(Rule):
    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is None:
            return
        weight = const(node.inputs[1])
        bias_in = node.inputs[2] if len(node.inputs) > 2 and not node.inputs[2].is_empty() else None
        group = int(node.attrs.get("group", 1))
        if weight is None or weight.ndim < 3 or (bias_in is not None and const(bias_in) is None):
            decline_node(node, ctx, "ConvTranspose whose weight or bias is computed at run time")
            return
        c_in, c_out = weight.shape[0], weight.shape[1] * group
        if c_in != len(state.removed_value) or c_in % group or state.map[0].repeat != 1:
            decline_node(node, ctx, f"ConvTranspose with {c_in} inputs in {group} groups")
            return
        ctx.member(state.map, node.name)
        if group > 1 and group == c_in == c_out:
            self._depthwise(node, ctx, state, const(bias_in) if bias_in is not None else None)
            return
        ctx.consume(node.inputs[0], node.name, foldable=False)
        out_map = tie_groups(node, ctx, state.map, group, c_out) if group > 1 else ctx.new_group(c_out)
        ctx.member(out_map, node.name, producer=True)
        bias = const(bias_in) if bias_in is not None else None
        filters = _filters(weight, group)
        ctx.add_filter_norm(out_map, lambda: filter_norms(filters, bias))
        ctx.produce(node.outputs[0], out_map, lambda: filters, bias)

    def _depthwise(self, node: gs.Node, ctx: Analysis, state: TensorState, bias: np.ndarray | None) -> None:
        b = bias.astype(np.float64) if bias is not None else np.zeros(len(state.removed_value))
        value = np.where(state.removed_value == 0, b, np.nan)
        carry(node, ctx, state, value)

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        weight = const(node.inputs[1])
        keep_in, keep_out = rw.kept(node.inputs[0]), rw.kept(node.outputs[0])
        if weight is None or (keep_in is None and keep_out is None):
            return
        group = int(node.attrs.get("group", 1))
        bias = const(node.inputs[2]) if len(node.inputs) > 2 and not node.inputs[2].is_empty() else None
        if group > 1 and group == weight.shape[0] and weight.shape[1] == 1:
            # depthwise: input and output share one map, so keep_in == keep_out
            keep = np.asarray(keep_out if keep_out is not None else keep_in)
            weight = weight[keep]
            node.attrs["group"] = len(keep)
        else:
            weight = weight[keep_in] if keep_in is not None else weight
            weight = (
                grouped_columns(weight, keep_out, group, weight.shape[1]) if keep_out is not None else weight
            )
        rw.set_param(node, 1, weight)
        if bias is not None and keep_out is not None:
            rw.set_param(node, 2, bias[keep_out])
