"""The per-position bias map of a zero-padded Conv whose removed input channels carry constants.

A removed channel j carrying the constant c_j adds to output (k, p) the sum of c_j W[k, j, taps] over the taps
that land inside the input at p (the padding is 0, not c_j). Per spatial axis a tap is inside or not on its
own, so the map is separable: ``map[k, h, w] = sum_{r,s} A[k, r, s] * rows[h, r] * cols[s, w]`` with
``A = sum_j c_j W[:, j]`` and 0/1 masks ``rows`` [Ho, R], ``cols`` [S, Wo].

Stored dense, a map is K * Ho * Wo numbers: on a detector at 640x640 that is more than the Conv's weight
(YOLOv8n at --ratio 0.5 grew to 1.41x the original's parameters). Stored as its factors it is
K*R*S + Ho*R + S*Wo numbers, and two MatMuls of constants rebuild it; ONNX Runtime and TensorRT fold
constant subgraphs when they load the model, so it costs nothing per inference once folded.

A model pruned again keeps its maps factored: ``factored_map`` recognises ``rows @ taps @ cols`` (loading
does not fold it, graph.py), the Add of a map slices ``taps`` along K with the Conv's kept channels, and a
Conv that needs a map where it has one gets its taps summed into that one (one map Add per padded Conv,
however often a model is pruned).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.edit import Rewrite
from onnxprune.rules.base import const


def padded_bias_map(
    columns: np.ndarray, values: np.ndarray, attrs: dict, in_size: list[int], out_size: list[int]
) -> np.ndarray:
    """What removed input channels carrying constants ``values`` add to a zero-padded Conv's outputs.

    That is the Conv of an image equal to the constants inside and 0 in the padding. Returns [K, *out_size]
    in float64.
    """
    result, masks = bias_map_factors(columns, values, attrs, in_size, out_size)
    for inside in masks:
        result = np.tensordot(result, inside, axes=([1], [1]))  # this kernel axis becomes the last
    return result


def bias_map_factors(
    columns: np.ndarray, values: np.ndarray, attrs: dict, in_size: list[int], out_size: list[int]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``A`` [K, *taps] (float64) and per spatial axis the 0/1 mask [out, taps] of taps inside the input:
    a kernel tap contributes at output position p where ``p * stride - pad_begin + tap * dilation`` falls
    inside the input."""
    kernel = np.tensordot(columns.astype(np.float64), values.astype(np.float64), axes=([1], [0]))
    n = len(in_size)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    masks = []
    for axis in range(n):
        taps = kernel.shape[1 + axis]
        begin = _pad_begin(attrs, axis, in_size[axis], out_size[axis], taps, strides[axis], dilations[axis])
        where = np.arange(out_size[axis])[:, None] * strides[axis] - begin
        where = where + np.arange(taps)[None, :] * dilations[axis]
        masks.append(((where >= 0) & (where < in_size[axis])).astype(np.float64))
    return kernel, masks


def bias_map_size(channels: int, taps: list[int], out_size: list[int]) -> int:
    """Numbers stored for one map: its factors where ``stores_factors``, else the dense map."""
    dense = channels * int(np.prod(out_size, dtype=np.int64))
    if len(taps) != 2:
        return dense
    return min(dense, channels * taps[0] * taps[1] + out_size[0] * taps[0] + taps[1] * out_size[1])


def stores_factors(channels: int, taps: list[int], out_size: list[int]) -> bool:
    """A 2-D map whose factors (K*R*S + Ho*R + S*Wo numbers) are fewer than its K*Ho*Wo."""
    return bias_map_size(channels, taps, out_size) < channels * int(np.prod(out_size, dtype=np.int64))


def insert_bias_map(node: gs.Node, rw: Rewrite, columns: np.ndarray, values: np.ndarray) -> None:
    """Add the map after ``node`` (its kept output channels only); the Add takes over the output's name.
    Where an earlier prune left a factored map there, the new taps are added to its taps instead: one Add
    per Conv however often a model is pruned (each one costs a pass over the feature map at run time)."""
    in_shape, out_shape = node.inputs[0].shape, node.outputs[0].shape
    assert in_shape is not None and out_shape is not None
    in_size, out_size = [int(d) for d in in_shape[2:]], [int(d) for d in out_shape[2:]]
    kernel, masks = bias_map_factors(columns, values, node.attrs, in_size, out_size)
    earlier = _map_after(node, kernel.shape, masks)
    if earlier is not None:
        summed = np.asarray(const(earlier.inputs[1]))
        # Both over all of the Conv's output channels: the map's Add slices the sum by the kept ones.
        rw.set_param(earlier, 1, (summed.astype(np.float64) + kernel).astype(summed.dtype))
        return
    keep_out = rw.kept(node.outputs[0])
    if keep_out is not None:
        kernel = kernel[keep_out]
    prefix = node.name or "conv"
    dtype = columns.dtype
    taps = list(kernel.shape[1:])
    if stores_factors(kernel.shape[0], taps, out_size):
        bias_map = _factored(
            rw, prefix, kernel.astype(dtype), masks[0].astype(dtype), masks[1].T.astype(dtype)
        )
    else:
        for inside in masks:
            kernel = np.tensordot(kernel, inside, axes=([1], [1]))
        bias_map = gs.Constant(rw.fresh_name(f"{prefix}_bias_map"), kernel[None].astype(dtype))
    out = node.outputs[0]
    inner = gs.Variable(rw.fresh_name(out.name + "_nomap"), dtype=out.dtype)
    node.outputs[0] = inner
    rw.add_node(gs.Node("Add", rw.fresh_name(f"{prefix}_map"), inputs=[inner, bias_map], outputs=[out]))


def _map_after(node: gs.Node, taps_shape: tuple[int, ...], masks: list[np.ndarray]) -> gs.Node | None:
    """The first MatMul of the factored map that an Add alone after ``node`` adds to its output, where that
    map has this Conv's geometry (the same masks, taps of ``taps_shape``); else None."""
    readers = node.outputs[0].outputs
    if len(masks) != 2 or len(readers) != 1 or readers[0].op != "Add" or len(readers[0].inputs) != 2:
        return None
    add = readers[0]
    other = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
    first = factored_map(other) if other is not node.outputs[0] else None
    if first is None:
        return None
    rows, taps, cols = const(first.inputs[0]), const(first.inputs[1]), const(other.inputs[0].inputs[1])
    assert rows is not None and taps is not None and cols is not None  # factored_map checked them
    same = taps.shape == taps_shape and rows.shape == masks[0].shape and cols.shape == masks[1].T.shape
    return first if same and np.array_equal(rows, masks[0]) and np.array_equal(cols, masks[1].T) else None


def _factored(
    rw: Rewrite, prefix: str, kernel: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> gs.Variable:
    """rows [Ho, R] @ kernel [K, R, S] -> [K, Ho, S]; @ cols [S, Wo] -> [K, Ho, Wo] (broadcast by the Add)."""
    names = {part: rw.fresh_name(f"{prefix}_bias_map_{part}") for part in ("rows", "taps", "cols")}
    half = gs.Variable(rw.fresh_name(f"{prefix}_bias_map_half"), dtype=kernel.dtype)
    full = gs.Variable(rw.fresh_name(f"{prefix}_bias_map"), dtype=kernel.dtype)
    first = gs.Node(
        "MatMul", rw.fresh_name(f"{prefix}_bias_map_rows"),
        inputs=[gs.Constant(names["rows"], rows), gs.Constant(names["taps"], kernel)], outputs=[half],
    )  # fmt: skip
    second = gs.Node(
        "MatMul", rw.fresh_name(f"{prefix}_bias_map_cols"),
        inputs=[half, gs.Constant(names["cols"], cols)], outputs=[full],
    )  # fmt: skip
    rw.add_node(first)
    rw.add_node(second)
    return full


def _pad_begin(attrs: dict, axis: int, size: int, out: int, taps: int, stride: int, dilation: int) -> int:
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = max((out - 1) * stride + (taps - 1) * dilation + 1 - size, 0)
        return total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    if auto_pad == "VALID":
        return 0
    pads = list(attrs.get("pads", [0] * (2 * len(attrs.get("kernel_shape", [])) or 2 * (axis + 1))))
    return int(pads[axis]) if pads else 0


def factored_map(tensor: gs.Tensor) -> gs.Node | None:
    """The MatMul ``rows @ taps`` of a map stored as its factors, ``tensor = rows @ taps @ cols`` as
    ``insert_bias_map`` writes it (0/1 masks ``rows`` [Ho, R] and ``cols`` [S, Wo], ``taps`` [K, R, S]);
    None for anything else."""
    second = _single_matmul(tensor)
    if second is None or not isinstance(second.inputs[1], gs.Constant):
        return None
    half = second.inputs[0]
    first = _single_matmul(half)
    if first is None or len(half.outputs) != 1:
        return None  # the product is read elsewhere too: not only a map
    rows, taps, cols = const(first.inputs[0]), const(first.inputs[1]), const(second.inputs[1])
    if rows is None or taps is None or cols is None or (rows.ndim, taps.ndim, cols.ndim) != (2, 3, 2):
        return None
    if rows.shape[1] != taps.shape[1] or taps.shape[2] != cols.shape[0]:
        return None
    return first if _is_mask(rows) and _is_mask(cols) else None


def map_channels(first: gs.Node) -> np.ndarray:
    """Per output channel of a factored map (``first`` as ``factored_map`` found it): whether it adds
    anything (a row of zero taps adds 0 everywhere)."""
    taps = const(first.inputs[1])
    assert taps is not None
    return np.asarray(taps.reshape(taps.shape[0], -1).any(axis=1))


def slice_factored_map(first: gs.Node, rw: Rewrite, keep: np.ndarray) -> None:
    """Keep only the map's channels ``keep``: its taps along K (rows and cols do not depend on K)."""
    rw.set_param(first, 1, np.asarray(const(first.inputs[1]))[keep])


def is_map_factor(node: gs.Node) -> bool:
    """One of the two MatMuls of a factored map that an Add reads: loading must not fold them into a dense
    map (K*Ho*Wo numbers where the factors are K*R*S + Ho*R + S*Wo)."""
    if node.op != "MatMul" or len(node.outputs) != 1:
        return False
    product = node.outputs[0]
    readers = product.outputs
    if len(readers) == 1 and readers[0].op == "MatMul" and readers[0].inputs[0] is product:
        product = readers[0].outputs[0]  # ``node`` is rows @ taps
    return any(reader.op == "Add" for reader in product.outputs) and factored_map(product) is not None


def _single_matmul(tensor: gs.Tensor) -> gs.Node | None:
    """The MatMul that produces ``tensor``, if that is what produces it."""
    if not isinstance(tensor, gs.Variable) or len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    return node if node.op == "MatMul" and len(node.inputs) == 2 else None


def _is_mask(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0, 1)).all())
