"""Shapes and data movement: Reshape and friends, Concat/Split/Slice, gathering and scattering, Pad, Cast,
and the Shape arithmetic that exporters leave around them (``Shape``, ``Gather``, ``ConstantOfShape``,
``Range``)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from onnxprune.train.ops.base import DTYPES, NodeCall, Tensor, axis_of, given, ints, op
from onnxprune.train.ops.conv import torch_pads


@op("Flatten")
def flatten(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    axis = axis_of(node.get("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), -1)


@op("Reshape")
def reshape(node: NodeCall, xs: list[Any]) -> Tensor:
    x, shape = xs[0], ints(xs[1])
    if not node.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


@op("Transpose")
def transpose(node: NodeCall, xs: list[Any]) -> Tensor:
    perm = node.get("perm") or list(reversed(range(xs[0].dim())))
    return xs[0].permute(*perm)


@op("Concat")
def concat(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.cat([x for x in xs if x is not None], dim=node.get("axis"))


@op("Split")
def split(node: NodeCall, xs: list[Any]) -> tuple[Tensor, ...]:
    x = xs[0]
    axis = axis_of(node.get("axis", 0), x.dim())
    sizes = ints(xs[1]) if given(xs, 1) is not None else list(node.get("split", []))
    if not sizes:
        count = node.get("num_outputs", node.n_outputs)
        chunk = -(-x.shape[axis] // count)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(count)]
    return tuple(torch.split(x, sizes, dim=axis))


@op("Slice")
def slice_(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    if node.opset < 10:
        starts, ends = node.get("starts"), node.get("ends")
        axes, steps = node.get("axes") or list(range(len(starts))), [1] * len(starts)
    else:
        starts, ends = ints(xs[1]), ints(xs[2])
        axes = ints(xs[3]) if given(xs, 3) is not None else list(range(len(starts)))
        steps = ints(xs[4]) if given(xs, 4) is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = axis_of(axis, x.dim())
        # Python's slice clamps out-of-range starts and ends as ONNX does, for either sign of step.
        picked = range(*slice(start, end, step).indices(x.shape[axis]))
        if step > 0:
            index: list[slice] = [slice(None)] * x.dim()
            index[axis] = slice(picked.start, picked.stop, step)
            x = x[tuple(index)]
        else:
            x = x.index_select(axis, torch.tensor(list(picked), dtype=torch.long, device=x.device))
    return x


def _axes_of(node: NodeCall, xs: list[Any], since: int) -> list[int] | None:
    if node.opset >= since:
        return ints(xs[1]) if given(xs, 1) is not None else None
    return node.get("axes")


@op("Squeeze")
def squeeze(node: NodeCall, xs: list[Any]) -> Tensor:
    x, axes = xs[0], _axes_of(node, xs, 13)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(axis_of(a, x.dim()) for a in axes))


@op("Unsqueeze")
def unsqueeze(node: NodeCall, xs: list[Any]) -> Tensor:
    x, axes = xs[0], _axes_of(node, xs, 13) or []
    rank = x.dim() + len(axes)
    for axis in sorted(axis_of(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return x


@op("Shape")
def shape(node: NodeCall, xs: list[Any]) -> Tensor:
    dims = list(xs[0].shape)[node.get("start", 0) : node.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64, device=xs[0].device)


@op("Size")
def size(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.tensor(xs[0].numel(), dtype=torch.int64, device=xs[0].device)


def _positive(index: Tensor, size: int) -> Tensor:
    index = index.long()
    return torch.where(index < 0, index + size, index)


@op("Gather")
def gather(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    axis = axis_of(node.get("axis", 0), x.dim())
    idx = _positive(xs[1], x.shape[axis])
    picked = x.index_select(axis, idx.reshape(-1))
    return picked.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1 :]))


@op("GatherElements")
def gather_elements(node: NodeCall, xs: list[Any]) -> Tensor:
    axis = axis_of(node.get("axis", 0), xs[0].dim())
    return torch.gather(xs[0], axis, _positive(xs[1], xs[0].shape[axis]))


@op("GatherND")
def gather_nd(node: NodeCall, xs: list[Any]) -> Tensor:
    x, idx = xs[0], xs[1].long()
    if node.get("batch_dims", 0):
        raise node.refuse("batch_dims")
    depth = idx.shape[-1]
    coords = [_positive(idx[..., k], x.shape[k]) for k in range(depth)]
    return x[tuple(coords)]


@op("ScatterND")
def scatter_nd(node: NodeCall, xs: list[Any]) -> Tensor:
    x, idx, updates = xs[0], xs[1].long(), xs[2]
    if node.text("reduction", "none") != "none":
        raise node.refuse("a reduction")
    coords = tuple(_positive(idx[..., k], x.shape[k]) for k in range(idx.shape[-1]))
    return x.index_put(coords, updates)


@op("ScatterElements")
def scatter_elements(node: NodeCall, xs: list[Any]) -> Tensor:
    if node.text("reduction", "none") != "none":
        raise node.refuse("a reduction")
    axis = axis_of(node.get("axis", 0), xs[0].dim())
    return xs[0].scatter(axis, _positive(xs[1], xs[0].shape[axis]), xs[2])


@op("Expand")
def expand(node: NodeCall, xs: list[Any]) -> Tensor:
    target = torch.broadcast_shapes(tuple(xs[0].shape), tuple(ints(xs[1])))
    return xs[0].expand(target)


@op("Tile")
def tile(node: NodeCall, xs: list[Any]) -> Tensor:
    return xs[0].repeat(*ints(xs[1]))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


@op("Pad")
def pad(node: NodeCall, xs: list[Any]) -> Tensor:
    x, n = xs[0], xs[0].dim()
    if node.opset < 11:
        pads, value = list(node.get("pads")), float(node.get("value", 0.0))
    else:
        pads = ints(xs[1])
        value = float(xs[2].item()) if given(xs, 2) is not None else 0.0
    axes = [axis_of(a, n) for a in ints(given(xs, 3))] or list(range(n))
    begins, ends = [0] * n, [0] * n
    for k, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[k], pads[k + len(axes)]
    mode = _PAD_MODES.get(node.text("mode", "constant"))
    if mode is None:
        raise node.refuse(f"mode {node.text('mode', '')!r}")
    flat = torch_pads(begins, ends)
    while len(flat) > 2 and flat[-2:] == [0, 0]:
        flat = flat[:-2]  # torch pads the last dims only: drop leading untouched axes
    return F.pad(x, flat, mode=mode, value=value if mode == "constant" else None)


@op("DepthToSpace")
def depth_to_space(node: NodeCall, xs: list[Any]) -> Tensor:
    x, b = xs[0], int(node.get("blocksize"))
    n, c, h, w = x.shape
    if node.text("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth")
def space_to_depth(node: NodeCall, xs: list[Any]) -> Tensor:
    x, b = xs[0], int(node.get("blocksize"))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@op("Trilu")
def trilu(node: NodeCall, xs: list[Any]) -> Tensor:
    k = int(xs[1].item()) if given(xs, 1) is not None else 0
    return torch.triu(xs[0], k) if node.get("upper", 1) else torch.tril(xs[0], k)


@op("Dropout")
def dropout(node: NodeCall, xs: list[Any]) -> Tensor:
    """Inactive at inference, as ONNX Runtime runs it; while training, the ratio the model asks for."""
    if node.n_outputs > 1:
        raise node.refuse("the mask output")
    ratio = float(xs[1].item()) if given(xs, 1) is not None else float(node.get("ratio", 0.5))
    return F.dropout(xs[0], ratio, node.training)


@op("Cast")
def cast(node: NodeCall, xs: list[Any]) -> Tensor:
    to = int(node.get("to"))
    if to not in DTYPES:
        raise node.refuse(f"a cast to ONNX type {to}")
    return xs[0].to(DTYPES[to])


@op("CastLike")
def cast_like(node: NodeCall, xs: list[Any]) -> Tensor:
    return xs[0].to(xs[1].dtype)


@op("ConstantOfShape")
def constant_of_shape(node: NodeCall, xs: list[Any]) -> Tensor:
    value = node.state.get("value")
    fill = value if value is not None else torch.zeros(1, dtype=torch.float32)
    return fill.reshape(-1)[0].expand(ints(xs[0])).clone().to(xs[0].device)


@op("Range")
def range_(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.arange(xs[0].item(), xs[1].item(), xs[2].item(), dtype=xs[0].dtype, device=xs[0].device)


@op("NonZero")
def non_zero(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.nonzero(xs[0]).t().contiguous()
