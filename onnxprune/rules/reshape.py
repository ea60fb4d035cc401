"""Ops that move axes around: Flatten, Reshape, Squeeze, Unsqueeze, Transpose.

They are followed only where the channel axis survives as axis 1 of the output:
- kept intact ([N, C, H, W] → [N, C, H*W], Squeeze of spatial axes, a Transpose that fixes axes 0 and 1);
- or flattened with the spatial axes behind it ([N, C, H, W] → [N, C*H*W]): every channel then owns H*W
  consecutive positions, which a following Gemm slices as columns.
A Reshape that spreads the channel axis over several axes starts a regrouping chain (channel shuffle,
radix softmax; see ``shuffle.py``). Anything else (a move to NHWC, a Reshape that mixes channels with
spatial positions) is declined.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.edit import Rewrite
from onnxprune.channels.span import repeat_map
from onnxprune.rules import shuffle
from onnxprune.rules.base import Rule, const, decline_node, rank, rule


def _static(shape) -> list[int] | None:
    if shape is None or any(not isinstance(d, int | np.integer) or d < 0 for d in shape):
        return None
    return [int(d) for d in shape]


def _is_batch_of(tensor: gs.Tensor, x: gs.Tensor) -> bool:
    """``tensor`` is x's batch size read at run time: [Unsqueeze|Reshape](Gather(Shape(x), 0))."""
    node = tensor.inputs[0] if tensor.inputs else None
    if node is not None and node.op in ("Unsqueeze", "Reshape"):
        node = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
    if node is None or node.op != "Gather" or int(node.attrs.get("axis", 0)) != 0:
        return False
    index = const(node.inputs[1])
    source = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
    return (
        index is not None
        and int(np.asarray(index).reshape(-1)[0]) == 0
        and source is not None
        and source.op == "Shape"
        and source.inputs[0] is x
    )


def channel_layout(in_shape, out_shape) -> int | None:
    """How many positions each channel occupies on the output's axis 1, or None if channels get mixed.
    The batch axis may be symbolic: the same dim on both sides."""
    if in_shape is None or out_shape is None or len(in_shape) < 2 or len(out_shape) < 2:
        return None
    src, dst = _static(in_shape[1:]), _static(out_shape[1:])
    if src is None or dst is None or in_shape[0] != out_shape[0]:
        return None
    src, dst = [1, *src], [1, *dst]
    inner = int(np.prod(src[2:], dtype=np.int64))
    if dst[1] == src[1] and int(np.prod(dst[2:], dtype=np.int64)) == inner:
        return 1
    if len(dst) == 2 and dst[1] == src[1] * inner:
        return inner
    return None


class _Layout(Rule):
    """Shared by the axis-moving ops: follow channels where ``channel_layout`` says they survive."""

    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is None:
            return
        repeat = self._repeat(node)
        if repeat is None or state.map[0].repeat != 1:
            decline_node(node, ctx, f"{node.op} mixes the channel axis with others")
            return
        ctx.member(state.map, node.name)
        ctx.set_state(
            node.outputs[0],
            repeat_map(state.map, repeat),
            np.repeat(state.removed_value, repeat),
            np.repeat(state.before_first_bn, repeat),
        )

    def _repeat(self, node: gs.Node) -> int | None:
        return channel_layout(node.inputs[0].shape, node.outputs[0].shape)


@rule("Flatten")
class FlattenRule(_Layout):
    def _repeat(self, node: gs.Node) -> int | None:
        if int(node.attrs.get("axis", 1)) != 1:
            return None
        return super()._repeat(node)


def _move(node: gs.Node, ctx: Analysis, axis: int | None, why: str) -> None:
    """The output carries the input's channels, now on ``axis`` (None: declined with ``why``)."""
    state = ctx.state(node.inputs[0])
    assert state is not None
    if axis is None or axis == 0 or state.map[0].repeat != 1:
        decline_node(node, ctx, why)
        return
    ctx.member(state.map, node.name)
    value, before = state.removed_value, state.before_first_bn
    ctx.set_state(node.outputs[0], state.map, value, before, state.spread, axis=axis)


@rule("Squeeze", "Unsqueeze")
class SqueezeRule(_Layout):
    """Axes of size 1 come and go (the 1-D convolutions of TensorFlow exports: Unsqueeze, Conv2D, Squeeze):
    the channel axis moves by the axes inserted or removed before it."""

    any_axis = True

    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is None:
            return
        axes = self._axes(node)
        if axes is None:
            if state.axis == 1:
                super().propagate(node, ctx)
            else:
                decline_node(node, ctx, f"{node.op} without constant axes of channels on axis {state.axis}")
            return
        if node.op == "Squeeze":
            moved = None if state.axis in axes else state.axis - sum(a < state.axis for a in axes)
        else:
            kept = [a for a in range(len(axes) + (rank(node.inputs[0]) or 0)) if a not in axes]
            moved = kept[state.axis] if state.axis < len(kept) else None
        _move(node, ctx, moved, f"{node.op} mixes the channel axis with others")

    def _axes(self, node: gs.Node) -> list[int] | None:
        """The axes squeezed (of the input) or inserted (of the output), non-negative; None if unknown."""
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1:
            axes = const(node.inputs[1])
        size = rank(node.outputs[0] if node.op == "Unsqueeze" else node.inputs[0])
        if axes is None or size is None:
            return None
        return sorted(int(a) % size for a in np.asarray(axes).reshape(-1))


@rule("Transpose")
class TransposeRule(_Layout):
    """A Transpose that keeps the batch axis first moves the channel axis where ``perm`` says (NCHW to NHWC
    and back in TensorFlow exports); the ops between follow channels on that axis or decline."""

    any_axis = True

    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is None:
            return
        size = rank(node.inputs[0])
        perm = [int(p) for p in node.attrs.get("perm", range((size or 0) - 1, -1, -1))]
        moved = perm.index(state.axis) if state.axis in perm and perm[:1] == [0] else None
        _move(node, ctx, moved, "Transpose moves the batch axis")


@rule("Reshape")
class ReshapeRule(_Layout):
    """The target shape may spell out the channel count: it is rewritten with the kept count."""

    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is not None and self._repeat(node) is None and state.map[0].repeat == 1:
            chain = shuffle.match(node, ctx.opset)
            if isinstance(chain, str):
                decline_node(node, ctx, chain)
                return
            if chain is not None:
                shuffle.propagate(chain, ctx, state)
                return
        super().propagate(node, ctx)

    def _repeat(self, node: gs.Node) -> int | None:
        if const(node.inputs[1]) is None:
            return self._batch_flatten(node)
        return super()._repeat(node)

    def _batch_flatten(self, node: gs.Node) -> int | None:
        """``x.view(x.size(0), -1)`` with a dynamic batch: the target is Concat(Shape(x)[0], [-1]), computed
        at run time. It flattens each sample, so every channel owns H*W positions, and after pruning the
        same run-time target is still right."""
        x, shape = node.inputs[0], node.inputs[1]
        spatial = _static(x.shape[2:]) if x.shape is not None and len(x.shape) >= 2 else None
        if (
            spatial is None
            or not shape.inputs
            or shape.inputs[0].op != "Concat"
            or len(shape.inputs[0].inputs) != 2
        ):
            return None
        batch, rest = shape.inputs[0].inputs
        if not np.array_equal(np.asarray(const(rest)).reshape(-1), [-1]) or not _is_batch_of(batch, x):
            return None
        inner = int(np.prod(spatial, dtype=np.int64))
        if node.outputs[0].shape is None and isinstance(x.shape[1], int):
            node.outputs[0].shape = [x.shape[0], x.shape[1] * inner]  # what inference could not see
        return inner

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        keep_in = rw.kept(node.inputs[0])
        if keep_in is None or const(node.inputs[1]) is None:
            return
        if not rw.tracked(node.outputs[0]):
            chain = shuffle.match(node, rw.opset)
            if isinstance(chain, shuffle.Chain):
                shuffle.apply(chain, rw, keep_in)
            return
        shape = np.array(const(node.inputs[1]), dtype=np.int64).reshape(-1)
        old_out = rw.width(node.outputs[0])
        keep_out = rw.kept(node.outputs[0])
        if keep_out is not None and len(shape) > 1 and shape[1] == old_out:
            shape[1] = len(keep_out)  # 0 and -1 entries follow the input by themselves
            rw.set_param(node, 1, shape)
