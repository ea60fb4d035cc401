"""Split and Slice on the channel axis: each output carries a sub-range of the input's map.

After pruning, Split sizes become the kept counts of each range and Slice bounds move to the kept positions
before and inside the range. On other axes the channels pass through unchanged. Non-unit channel steps and
bounds computed at run time are declined.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.edit import Rewrite
from onnxprune.channels.span import slice_map
from onnxprune.rules.base import Rule, const, decline_node, rank, rule


def _split_sizes(node: gs.Node, total: int) -> list[int] | None:
    if len(node.inputs) > 1 and not node.inputs[1].is_empty():
        sizes = const(node.inputs[1])
        return None if sizes is None else [int(s) for s in sizes.reshape(-1)]
    if "split" in node.attrs:
        return [int(s) for s in node.attrs["split"]]
    parts = int(node.attrs.get("num_outputs", len(node.outputs)))
    step = -(-total // parts)  # opset 18: the last chunk may be smaller
    return [min(step, total - k * step) for k in range(parts)]


@rule("Split")
class SplitRule(Rule):
    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        r = rank(node.inputs[0])
        if state is None or r is None:
            return
        axis = int(node.attrs.get("axis", 0)) % r
        ctx.member(state.map, node.name)
        if axis != 1:
            for out in node.outputs:
                ctx.set_state(out, state.map, state.removed_value, state.before_first_bn)
            return
        sizes = _split_sizes(node, len(state.removed_value))
        if sizes is None or sum(sizes) != len(state.removed_value) or state.map[0].repeat != 1:
            decline_node(node, ctx, "Split of the channel axis with run-time sizes")
            return
        offset = 0
        for out, size in zip(node.outputs, sizes, strict=True):
            cut = slice(offset, offset + size)
            ctx.set_state(
                out,
                slice_map(state.map, offset, offset + size),
                state.removed_value[cut],
                state.before_first_bn[cut],
            )
            offset += size

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        r = rank(node.inputs[0])
        if r is None or int(node.attrs.get("axis", 0)) % r != 1 or rw.kept(node.inputs[0]) is None:
            return
        sizes = [_kept_count(rw, out) for out in node.outputs]
        if len(node.inputs) > 1 and not node.inputs[1].is_empty():
            rw.set_param(node, 1, np.array(sizes, dtype=np.int64))
        elif "split" in node.attrs or len(set(sizes)) > 1:  # an implicit even split stays implicit
            node.attrs.pop("num_outputs", None)
            node.attrs.pop("split", None)
            hint = f"{node.name or 'split'}_sizes"
            if rw.opset < 13:
                node.attrs["split"] = sizes
            elif len(node.inputs) > 1:  # an empty optional input holds the place
                node.inputs[1] = gs.Constant(rw.fresh_name(hint), np.array(sizes, dtype=np.int64))
            else:
                rw.add_param(node, hint, np.array(sizes, dtype=np.int64))


def _kept_count(rw: Rewrite, tensor: gs.Tensor) -> int:
    keep = rw.kept(tensor)
    return _width(rw, tensor) if keep is None else len(keep)


def _width(rw: Rewrite, tensor: gs.Tensor) -> int:
    return rw.width(tensor)


def _slice_params(node: gs.Node, r: int) -> tuple[list[np.ndarray], bool] | None:
    """starts, ends, axes, steps as arrays (opset 10+ inputs or opset 1 attributes)."""
    if "starts" in node.attrs:
        first, last = np.array(node.attrs["starts"]), np.array(node.attrs["ends"])
        on = np.array(node.attrs.get("axes", range(len(first))))
        return [first, last, on, np.ones_like(first)], True
    values = [
        const(t) if i < len(node.inputs) and not t.is_empty() else None for i, t in enumerate(node.inputs)
    ]
    values += [None] * (5 - len(values))
    starts, ends, axes, steps = values[1:5]
    if (
        starts is None
        or ends is None
        or (len(node.inputs) > 3 and axes is None and not node.inputs[3].is_empty())
    ):
        return None
    axes = axes if axes is not None else np.arange(len(starts))
    steps = steps if steps is not None else np.ones_like(starts)
    return [starts.reshape(-1), ends.reshape(-1), axes.reshape(-1) % r, steps.reshape(-1)], False


def _spatial_only(node: gs.Node, r: int) -> bool:
    """Run-time bounds are harmless on constant axes that leave the channel axis out."""
    axes = const(node.inputs[3]) if len(node.inputs) > 3 and not node.inputs[3].is_empty() else None
    return axes is not None and all(int(a) % r != 1 for a in axes.reshape(-1))


@rule("Slice")
class SliceRule(Rule):
    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        r = rank(node.inputs[0])
        if state is None or r is None:
            return
        params = _slice_params(node, r)
        if params is None and _spatial_only(node, r):
            ctx.member(state.map, node.name)
            ctx.set_state(node.outputs[0], state.map, state.removed_value, state.before_first_bn)
            return
        if params is None:
            decline_node(node, ctx, "Slice with bounds computed at run time")
            return
        (starts, ends, axes, steps), _ = params
        ctx.member(state.map, node.name)
        hit = [k for k, a in enumerate(axes) if int(a) % r == 1]
        if not hit:
            ctx.set_state(node.outputs[0], state.map, state.removed_value, state.before_first_bn)
            return
        k = hit[0]
        if int(steps[k]) != 1 or state.map[0].repeat != 1:
            decline_node(node, ctx, "Slice of the channel axis with a step other than 1")
            return
        lo, hi, _ = slice(int(starts[k]), int(ends[k])).indices(len(state.removed_value))
        hi = max(lo, hi)
        cmap = slice_map(state.map, lo, hi)
        ctx.set_state(node.outputs[0], cmap, state.removed_value[lo:hi], state.before_first_bn[lo:hi])

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        keep = rw.kept(node.inputs[0])
        r = rank(node.inputs[0])
        if keep is None or r is None:
            return
        params = _slice_params(node, r)
        hit = [i for i, a in enumerate(params[0][2]) if int(a) % r == 1] if params else []
        if params is None or not hit:
            return
        (starts, ends, axes, _), in_attrs = params
        k = hit[0]
        lo, hi, _ = slice(int(starts[k]), int(ends[k])).indices(_width(rw, node.inputs[0]))
        new_starts, new_ends = starts.copy(), ends.copy()
        new_starts[k] = int((keep < lo).sum())
        new_ends[k] = int((keep < max(lo, hi)).sum())
        if in_attrs:
            node.attrs["starts"], node.attrs["ends"] = new_starts.tolist(), new_ends.tolist()
        else:
            rw.set_param(node, 1, new_starts.astype(np.int64))
            rw.set_param(node, 2, new_ends.astype(np.int64))
