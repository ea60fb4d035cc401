"""Element-wise ops: activations (one tensor in, one out) and binary ops with broadcasting.

Channel math: output channel c depends only on input channel c, so the output carries the input's map.
Binary ops (Add, Mul, ...) of two tracked tensors unify their groups index by index; a constant operand that
varies along the channel axis ([C,1,1] or [1,C,1,1], a PRelu slope) is sliced with the kept channels. A
removed channel's value is found by running the op itself on the per-channel constants.

Adding (or subtracting) constants shifts a channel but does not make it another one: a channel still before
its first BatchNormalization stays so (Conv -> Add(bias) -> BN, and the bias map of a model onnxprune
pruned before, ``padmap.py``): that BN scores and cuts it. A bias map stored as its factors is such a
constant; its removed channels carry no one value (nan) unless their taps are all 0.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.channels.edit import Rewrite
from onnxprune.rules.base import (
    ChannelwiseRule,
    Rule,
    as_channel_array,
    const,
    decline_node,
    float_dtype,
    rank,
    rule,
    run_node,
    tracked,
)
from onnxprune.rules.moments import silu_mean, through_unary
from onnxprune.rules.padmap import factored_map, map_channels, slice_factored_map

UNARY_OPS = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Clip", "Identity", "Dropout", "Neg", "Abs", "Exp", "Log",
    "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "ThresholdedRelu", "Shrink", "Cast",
)  # fmt: skip
BINARY_OPS = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean", "PRelu")


def channel_values(node: gs.Node, ctx: Analysis, arrays: list[np.ndarray | None], n: int) -> np.ndarray:
    """Run the node on per-channel constants; nan wherever the result is not one value per channel."""
    result = run_node(node, arrays)
    if result is None or result[0].size != n:
        return np.full(n, np.nan)
    return result[0].reshape(-1).astype(np.float64)


@rule(*UNARY_OPS)
class UnaryRule(ChannelwiseRule):
    """One tensor in (other inputs are scalar constants such as Clip's bounds), the same channels out, on
    whatever axis they are."""

    any_axis = True

    def removed_value(self, node: gs.Node, ctx: Analysis, state: TensorState) -> np.ndarray | None:
        r = max(rank(node.outputs[0]) or 4, state.axis + 1)
        value = state.removed_value
        dtype = float_dtype(node.inputs[0])
        arrays: list[np.ndarray | None] = [as_channel_array(value, r, dtype, state.axis)]
        arrays += [const(t) if not t.is_empty() else None for t in node.inputs[1:]]
        if any(a is None and not t.is_empty() for a, t in zip(arrays[1:], node.inputs[1:], strict=True)):
            return np.full(len(value), np.nan)  # a runtime bound: the constant is unknown
        return channel_values(node, ctx, arrays, len(value))

    def with_spread(self, node: gs.Node, state: TensorState, value: np.ndarray):
        """A removed channel with a spread (data-free compensation) leaves as E[op(N(value, spread²))]."""
        r = rank(node.outputs[0]) or 4
        dtype = float_dtype(node.inputs[0])
        consts = [const(t) if not t.is_empty() else None for t in node.inputs[1:]]

        def run(points: np.ndarray) -> np.ndarray | None:
            batch = points.reshape(points.shape + (1,) * max(r - 2, 0)).astype(dtype)
            result = run_node(node, [batch, *consts])
            return None if result is None else result[0]

        return through_unary(node.op, node.attrs, consts, state.removed_value, state.spread, value, run)


@rule(*BINARY_OPS)
class BinaryRule(Rule):
    """Broadcasting element-wise ops; every tracked operand is unified with the others. Channels may be on
    any axis (all tracked operands on the same one): a constant operand then varies along that axis."""

    any_axis = True

    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        ins = tracked(node, ctx)
        out = node.outputs[0]
        r = rank(out)
        if not ins:
            return
        axis = ins[0][1].axis
        if r is None or r < 2 or any(rank(node.inputs[i]) != r or s.axis != axis for i, s in ins):
            decline_node(node, ctx, f"{node.op} broadcasts a tracked tensor across the channel axis")
            return
        n = len(ins[0][1].removed_value)
        for i, tensor in enumerate(node.inputs):
            if any(i == j for j, _ in ins):
                continue
            first = _bias_map(node, tensor, r) if axis == 1 else None
            if first is not None and map_channels(first).size != n:
                decline_node(node, ctx, f"{node.op} of a bias map whose channels do not match")
                return
            if first is not None or _channel_extent(tensor, r, axis) in (1, None):
                continue
            if const(tensor) is None or _channel_extent(tensor, r, axis) != n:
                decline_node(node, ctx, f"{node.op} mixes in a tensor whose channels onnxprune cannot follow")
                return
        if not ctx.unify(node.name, [state.map for _, state in ins]):
            decline_node(node, ctx, f"{node.op} joins tensors whose channel layouts differ")
            return
        value = self._value(node, ctx, ins, r, n)
        spread = None
        if any(state.spread.any() for _, state in ins):
            value, spread = self._spread(node, ctx, ins, r, n, value)
        shift = node.op in ("Add", "Sub") and len(ins) == 1  # a constant added: still the same channel
        before = np.logical_and.reduce([state.before_first_bn for _, state in ins]) & ((value == 0) | shift)
        ctx.member(ins[0][1].map, node.name)
        ctx.set_state(out, ins[0][1].map, value, before, spread, axis=axis)

    def _spread(self, node: gs.Node, ctx: Analysis, ins: list, r: int, n: int, value: np.ndarray):
        """(value, spread) where an operand carries a spread (data-free compensation).

        SiLU written as Mul(x, Sigmoid(x)) leaves as E[x sigmoid(x)]. Ops affine in every tracked operand
        (Add, Sub, Sum, Mean; Mul and Div by constants) carry the spread, slopes found by running the op on
        value + 1 (operands assumed independent); anything else keeps the point value and drops the spread.
        """
        x = _silu_input(node, ins)
        if x is not None:
            live = x.spread > 0
            value = value.copy()
            value[live] = silu_mean(x.removed_value[live], x.spread[live])
            return value, np.zeros(n)
        affine = node.op in ("Add", "Sub", "Sum", "Mean") or (
            node.op in ("Mul", "Div") and len(ins) == 1 and (node.op == "Mul" or ins[0][0] == 0)
        )
        if not affine:
            return value, np.zeros(n)
        variance = np.zeros(n)
        for k, (i, state) in enumerate(ins):
            bumped = list(ins)
            bumped[k] = (i, replace(state, removed_value=state.removed_value + 1.0))
            slope = self._value(node, ctx, bumped, r, n) - value
            variance += (slope * state.spread) ** 2
        return value, np.nan_to_num(np.sqrt(variance), nan=0.0)

    def _value(self, node: gs.Node, ctx: Analysis, ins: list, r: int, n: int) -> np.ndarray:
        states = dict(ins)
        axis = ins[0][1].axis
        arrays: list[np.ndarray | None] = []
        adds_map = np.zeros(n, dtype=bool)
        for i, tensor in enumerate(node.inputs):
            first = _bias_map(node, tensor, r) if i not in states and axis == 1 else None
            if i in states:
                arrays.append(as_channel_array(states[i].removed_value, r, float_dtype(tensor), axis))
            elif const(tensor) is not None:
                arrays.append(const(tensor))
            elif first is not None:
                # Where the map is not 0 it varies by position: no one value (nan below).
                adds_map |= map_channels(first)
                arrays.append(np.zeros((n,) + (1,) * (r - 2), float_dtype(tensor)))
            else:
                return np.full(n, np.nan)  # a runtime operand: its value is not known here
        value = np.where(adds_map, np.nan, channel_values(node, ctx, arrays, n))
        if node.op == "Mul":
            # 0 times anything is 0, an unknown gate included (numpy says nan): a dead channel times a
            # squeeze-excite gate is still exactly 0.
            zero = np.logical_or.reduce([states[i].removed_value == 0 for i in states])
            value = np.where(zero, 0.0, value)
        return value

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        r = rank(node.outputs[0])
        keep = rw.kept(node.outputs[0])
        if keep is None or r is None:
            return
        channel_axis = rw.axis(node.outputs[0])
        for i, tensor in enumerate(node.inputs):
            first = _bias_map(node, tensor, r) if channel_axis == 1 else None
            if first is not None:
                slice_factored_map(first, rw, keep)
                continue
            values = const(tensor)
            if values is None or _channel_extent(tensor, r, channel_axis) in (1, None):
                continue
            axis = values.ndim - (r - channel_axis)
            rw.set_param(node, i, np.take(values, keep, axis=axis))


def _bias_map(node: gs.Node, tensor: gs.Tensor, out_rank: int | None) -> gs.Node | None:
    """The first MatMul of a factored bias map that this Add adds to [N, K, Ho, Wo] (``padmap.py``)."""
    if node.op != "Add" or out_rank != 4 or isinstance(tensor, gs.Constant):
        return None
    return factored_map(tensor)


def _silu_input(node: gs.Node, ins: list) -> TensorState | None:
    """The state of x when ``node`` is Mul(x, Sigmoid(x)) (either order), else None."""
    if node.op != "Mul" or len(node.inputs) != 2 or len(ins) != 2:
        return None
    states = dict(ins)
    for i, j in ((0, 1), (1, 0)):
        gate = node.inputs[j]
        source = gate.inputs[0] if gate.inputs else None
        if source is not None and source.op == "Sigmoid" and source.inputs[0] is node.inputs[i]:
            return states[i]
    return None


def _channel_extent(tensor: gs.Tensor, out_rank: int, channel_axis: int = 1) -> int | None:
    """How far an operand reaches along the output's channel axis under numpy broadcasting."""
    shape = tensor.shape
    if shape is None:
        return None
    axis = len(shape) - (out_rank - channel_axis)
    if axis < 0:
        return 1
    dim = shape[axis]
    return int(dim) if isinstance(dim, int | np.integer) else None
