"""Conv: a producer of new channels (weight axis 0), a consumer of its input's channels (weight axis 1).

- group 1: input channels are a reduction axis. A removed input channel that carries a constant c adds
  ``c * sum(W[:, ch])`` to every output: folded into the bias where the Conv has no padding (exact), the
  channel is kept otherwise. The output is a new group whose removed channels are 0.
- depthwise (group == C_in == C_out): channel c of the output comes from channel c of the input only, so the
  output carries the input's map; ``group`` follows the kept count.
- grouped (1 < group < C_in): input and output are cut into ``group`` tied chunks (``grouped.py``).
- a zero-padded Conv (dense or grouped) with static spatial shapes folds the constants exactly as one
  per-position bias map, an ``Add`` after it (stored as its separable factors, ``padmap.py``), in every
  compensation mode: the map is exact, no estimate.
- a zero-padded depthwise Conv turns a removed constant into a map that differs at the border: data-free
  compensation takes its interior value (an estimate, listed in the report); otherwise the channel stays,
  and the reason says so.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.channels.edit import Rewrite
from onnxprune.channels.span import ChannelMap
from onnxprune.rules.base import Rule, carry, channels, const, const_shape, decline_node, rule
from onnxprune.rules.grouped import dense_columns, grouped_columns, tie_groups
from onnxprune.rules.padmap import insert_bias_map

DYNAMIC_PADDED = "its zero padding needs a per-position bias map, which needs static spatial sizes"
PADDED_DEPTHWISE = (
    "a zero-padded depthwise Conv makes a removed channel's constant differ at the border, which nothing "
    "after it can fold exactly (--compensate bn folds its interior value, an estimate)"
)


def has_padding(node: gs.Node) -> bool:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad not in ("NOTSET", "VALID"):
        return True
    return any(int(p) != 0 for p in node.attrs.get("pads", []))


def static_spatial(node: gs.Node) -> bool:
    """Input and output spatial sizes are known numbers (what a per-position bias map needs)."""
    shapes = [node.inputs[0].shape, node.outputs[0].shape]
    return all(
        s is not None and len(s) > 2 and all(isinstance(d, int | np.integer) and d > 0 for d in s[2:])
        for s in shapes
    )


def filter_norms(rows: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """L1 and L2 of each output filter, its bias included (a zero filter with a bias is not zero)."""
    flat = rows.reshape(rows.shape[0], -1)
    # Summed at weight precision (numpy sums pairwise: ~1e-7 relative, nothing for a ranking, and a zero
    # filter still sums to exactly 0); accumulating in float64 is several times slower for no better ranking.
    l1 = np.abs(flat).sum(1).astype(np.float64)
    sq = np.einsum("ij,ij->i", flat, flat).astype(np.float64)
    extra = np.abs(bias.astype(np.float64)).reshape(-1) if bias is not None else 0.0
    return l1 + extra, np.sqrt(sq + extra**2)


@rule("Conv")
class ConvRule(Rule):
    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        shape = const_shape(node.inputs[1]) if len(node.inputs) > 1 else None
        state = ctx.state(node.inputs[0])
        c_in = channels(node.inputs[0]) or (len(state.removed_value) if state is not None else None)
        if shape is None or len(shape) < 3:
            decline_node(node, ctx, "Conv whose weight is not a constant")
            return
        if state is None or c_in is None:
            decline_node(node, ctx, "Conv whose input channels are unknown (an op before it was declined)")
            return
        if len(node.inputs) > 2 and not node.inputs[2].is_empty() and const(node.inputs[2]) is None:
            decline_node(node, ctx, "Conv whose bias is computed at run time")
            return
        group = int(node.attrs.get("group", 1))
        if group == 1:
            self._dense(node, ctx, state, shape[0])
        elif group == c_in and shape[0] == c_in:
            self._depthwise(node, ctx, state, _read(node.inputs[1]))
        else:
            self._grouped(node, ctx, state, shape, group)

    def _produce(self, node: gs.Node, ctx: Analysis, out_map: ChannelMap) -> None:
        # The weight is read only where its values are asked for (filter norms, dead filters on the
        # original-values pass): a dense Conv's analysis needs its shape alone. The tensor, not the node's
        # input slot, is held: a rewrite gives the node a new one and leaves this one as it was.
        weight_tensor = node.inputs[1]
        bias = const(node.inputs[2]) if len(node.inputs) > 2 else None
        ctx.member(out_map, node.name, producer=True)
        ctx.add_filter_norm(out_map, lambda: filter_norms(_read(weight_tensor), bias))
        ctx.produce(node.outputs[0], out_map, lambda: _read(weight_tensor), bias)

    def _dense(self, node: gs.Node, ctx: Analysis, state: TensorState, c_out: int) -> None:
        ctx.member(state.map, node.name)
        padded = has_padding(node)
        # Zero padding sees a removed constant only inside the border: with static spatial shapes that is
        # one exact per-position bias map.
        bias_map = padded and static_spatial(node)
        why = DYNAMIC_PADDED if padded and not bias_map else ""
        ctx.consume(node.inputs[0], node.name, not padded or bias_map, "bias map" if padded else "bias", why)
        self._produce(node, ctx, ctx.new_group(c_out))

    def _depthwise(self, node: gs.Node, ctx: Analysis, state: TensorState, weight: np.ndarray):
        bias = const(node.inputs[2]) if len(node.inputs) > 2 else None
        b = bias.astype(np.float64) if bias is not None else np.zeros(weight.shape[0])
        value = state.removed_value * weight.reshape(weight.shape[0], -1).sum(1) + b
        if has_padding(node) and ctx.compensating and ctx.allow_approximate and state.removed_value.any():
            # Compensation takes the interior value rather than keeping the channel (which would block
            # pruning MobileNets): approximate at the borders, and the report says where.
            ctx.approximate(node.name, "padded depthwise Conv: interior value", node.inputs[0])
        elif has_padding(node):
            # Zero padding meets a non-zero constant at the borders: the output is no longer constant.
            varies = np.isfinite(state.removed_value) & (state.removed_value != 0)
            if not ctx.original_values:
                ctx.keep_where(state.map, varies, PADDED_DEPTHWISE, node.name)
            value = np.where(state.removed_value == 0, b, np.nan)
        ctx.member(state.map, node.name)
        carry(node, ctx, state, value)

    def _grouped(self, node, ctx: Analysis, state: TensorState, shape: tuple[int, ...], group: int):
        c_in, c_out = shape[1] * group, shape[0]
        if c_out % group or c_in != len(state.removed_value) or state.map[0].repeat != 1:
            decline_node(node, ctx, f"grouped Conv with {c_in} inputs and {c_out} outputs in {group} groups")
            return
        ctx.member(state.map, node.name)
        # A removed input constant shifts only its own group's outputs: folded like a dense Conv's.
        padded = has_padding(node)
        foldable = not padded or static_spatial(node)
        why = DYNAMIC_PADDED if not foldable else ""
        ctx.consume(node.inputs[0], node.name, foldable, "bias map" if padded else "bias", why)
        self._produce(node, ctx, tie_groups(node, ctx, state.map, group, c_out))

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        keep_in, keep_out = rw.kept(node.inputs[0]), rw.kept(node.outputs[0])
        sliced = keep_in is not None or keep_out is not None
        weight = const(node.inputs[1]) if sliced else None
        if weight is None:
            return  # nothing to slice, or declined in analysis
        group = int(node.attrs.get("group", 1))
        bias = const(node.inputs[2]) if len(node.inputs) > 2 else None
        c_in = channels(node.inputs[0]) or weight.shape[1] * group
        if group == 1 and keep_in is not None:
            bias = self._fold(node, rw, weight, bias)
            rows = keep_out if keep_out is not None else np.arange(weight.shape[0])
            rebuilt = rw.rebuild(node.inputs[0])
            # One gather for both axes: two would copy every weight twice.
            kept = weight[np.ix_(rows, keep_in)]
            if rebuilt is not None:  # the removed columns, rebuilt from the kept channels
                removed, linear = rebuilt
                gone = weight[np.ix_(rows, removed)].astype(np.float64)
                moved = np.einsum("or...,rk->ok...", gone, linear)
                kept = (kept.astype(np.float64) + moved).astype(weight.dtype)
            weight = kept
            bias = bias[keep_out] if bias is not None and keep_out is not None else bias
            keep_out = None
        elif group > 1 and group == c_in and weight.shape[0] == c_in:
            if keep_out is not None:
                node.attrs["group"] = len(keep_out)
        elif group > 1 and keep_in is not None:
            bias = self._fold(node, rw, weight, bias, group)
            weight = grouped_columns(weight, keep_in, group, c_in // group)
        if keep_out is not None:
            weight = weight[keep_out]
            bias = bias[keep_out] if bias is not None else None
        if sliced:
            rw.set_param(node, 1, weight)
            self._set_bias(node, rw, bias)

    def _fold(self, node: gs.Node, rw: Rewrite, weight: np.ndarray, bias: np.ndarray | None, group: int = 1):
        gone, values = rw.removed_values(node.inputs[0])
        nonzero = values != 0
        if not nonzero.any():
            return bias
        if group == 1 and not has_padding(node):
            # Over all input channels, the kept ones weighted 0: no gather of the removed columns (a copy of
            # most of the weight); taps summed in float64 without a float64 copy of the weight.
            carried = np.zeros(weight.shape[1])
            carried[gone[nonzero]] = values[nonzero]
            shift = _tap_sums(weight) @ carried
        else:
            columns = weight[:, gone[nonzero]] if group == 1 else dense_columns(weight, gone[nonzero], group)
            if has_padding(node):
                insert_bias_map(node, rw, columns, values[nonzero])
                return bias
            shift = _tap_sums(columns) @ values[nonzero]
        base = bias.astype(np.float64) if bias is not None else np.zeros(weight.shape[0])
        return (base + shift).astype(weight.dtype)

    def _set_bias(self, node: gs.Node, rw: Rewrite, bias: np.ndarray | None) -> None:
        if bias is None:
            return
        if len(node.inputs) > 2 and not node.inputs[2].is_empty():
            rw.set_param(node, 2, bias)
        else:
            while len(node.inputs) < 2:
                node.inputs.append(gs.Variable.empty())
            if len(node.inputs) == 2:
                rw.add_param(node, f"{node.name or 'conv'}_bias", bias)
            else:
                node.inputs[2] = gs.Constant(rw.fresh_name(f"{node.name or 'conv'}_bias"), bias)


def _read(weight: gs.Tensor) -> np.ndarray:
    values = const(weight)
    if values is None:  # propagate checked that it is a constant
        raise AssertionError(f"Conv weight {weight.name!r} is not a constant")
    return values


def _tap_sums(weight: np.ndarray) -> np.ndarray:
    """[K, C] in float64: each filter's weights summed over its kernel taps."""
    return weight.reshape(weight.shape[0], weight.shape[1], -1).sum(-1, dtype=np.float64)
