"""Convolutions and normalisations.

Conv pads that differ between the two ends of an axis (and ``auto_pad``) are applied with ``F.pad`` first.
ConvTranspose runs without padding and is then cropped (or zero-extended) to ONNX's output: ``pads``,
``output_padding``, ``output_shape`` and ``auto_pad`` all become crops of that full result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F

from onnxprune.train.ops.base import NodeCall, Tensor, axis_of, given, op

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _same_pads(node: NodeCall, spatial: Sequence[int], kernel: Sequence[int]) -> list[int]:
    strides = node.get("strides", [1] * len(kernel))
    dilations = node.get("dilations", [1] * len(kernel))
    lower = node.text("auto_pad", "NOTSET") == "SAME_LOWER"
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(large if lower else small)
        ends.append(small if lower else large)
    return begins + ends


def pads_of(node: NodeCall, x: Tensor, kernel: Sequence[int]) -> list[int]:
    """ONNX ``pads`` (begins, then ends) of a conv or pool, ``auto_pad`` resolved."""
    auto = node.text("auto_pad", "NOTSET")
    n = len(kernel)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(node, list(x.shape[2:]), kernel)
    if auto == "VALID":
        return [0] * (2 * n)
    return list(node.get("pads", [0] * (2 * n)))


def padded(x: Tensor, pads: list[int], value: float = 0.0) -> tuple[Tensor, list[int]]:
    """Symmetric pads go to the op itself; asymmetric ones are applied here with F.pad first."""
    n = len(pads) // 2
    begins, ends = pads[:n], pads[n:]
    if begins == ends:
        return x, begins
    return F.pad(x, torch_pads(begins, ends), value=value), [0] * n


def torch_pads(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX per-axis (begin, end) as F.pad wants them: last axis first."""
    flat: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        flat += [b, e]
    return flat


@op("Conv")
def conv(node: NodeCall, xs: list[Any]) -> Tensor:
    x, w, b = xs[0], xs[1], given(xs, 2)
    n = w.dim() - 2
    if n not in _CONV:
        raise node.refuse(f"a {n}-d kernel")
    x, padding = padded(x, pads_of(node, x, list(w.shape[2:])))
    strides, dilations = node.get("strides", [1] * n), node.get("dilations", [1] * n)
    return _CONV[n](x, w, b, strides, padding, dilations, node.get("group", 1))


@op("ConvTranspose")
def conv_transpose(node: NodeCall, xs: list[Any]) -> Tensor:
    x, w, b = xs[0], xs[1], given(xs, 2)
    n = w.dim() - 2
    if n not in _CONV_T:
        raise node.refuse(f"a {n}-d kernel")
    strides, dilations = node.get("strides", [1] * n), node.get("dilations", [1] * n)
    full = _CONV_T[n](x, w, None, strides, 0, 0, node.get("group", 1), dilations)
    begins, ends = _transpose_crops(node, list(x.shape[2:]), list(full.shape[2:]))
    out = F.pad(full, torch_pads([-v for v in begins], [-v for v in ends]))
    return out if b is None else out + b.reshape(1, -1, *([1] * n))


def _transpose_crops(node: NodeCall, spatial: list[int], full: list[int]) -> tuple[list[int], list[int]]:
    """How much to cut from each end of each axis of the unpadded result (negative: extend with zeros)."""
    n = len(spatial)
    extra = list(node.get("output_padding", [0] * n))
    shape = list(node.get("output_shape", []))[-n:]
    auto = node.text("auto_pad", "NOTSET")
    if not shape and auto not in ("SAME_UPPER", "SAME_LOWER"):
        pads = list(node.get("pads", [0] * (2 * n))) if auto == "NOTSET" else [0] * (2 * n)
        return pads[:n], [p - e for p, e in zip(pads[n:], extra, strict=True)]
    if not shape:
        shape = [size * s for size, s in zip(spatial, node.get("strides", [1] * n), strict=True)]
    total = [f + e - s for f, e, s in zip(full, extra, shape, strict=True)]
    begins = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    return begins, [t - b - e for t, b, e in zip(total, begins, extra, strict=True)]


@op("BatchNormalization")
def batch_norm(node: NodeCall, xs: list[Any]) -> Tensor:
    """ONNX's momentum weighs the old running value; torch's weighs the new batch: 1 - m. With frozen
    statistics (``batch_statistics`` false) training normalises as inference does."""
    if node.n_outputs > 1 or node.get("training_mode", 0):
        raise node.refuse("training_mode / running-statistics outputs")
    x, scale, bias, mean, var = xs
    momentum = 1.0 - float(node.get("momentum", 0.9))
    eps = float(node.get("epsilon", 1e-5))
    return F.batch_norm(x, mean, var, scale, bias, node.training and node.batch_statistics, momentum, eps)


@op("InstanceNormalization")
def instance_norm(node: NodeCall, xs: list[Any]) -> Tensor:
    return F.instance_norm(xs[0], weight=xs[1], bias=xs[2], eps=float(node.get("epsilon", 1e-5)))


@op("LayerNormalization")
def layer_norm(node: NodeCall, xs: list[Any]) -> Tensor:
    if node.n_outputs > 1:
        raise node.refuse("mean / inverse std outputs")
    x = xs[0]
    axis = axis_of(node.get("axis", -1), x.dim())
    scale, bias = xs[1], given(xs, 2)
    shape = list(x.shape[axis:])
    scale = scale.expand(shape) if list(scale.shape) != shape else scale
    bias = bias.expand(shape) if bias is not None and list(bias.shape) != shape else bias
    return F.layer_norm(x, shape, scale, bias, float(node.get("epsilon", 1e-5)))


@op("GroupNormalization")
def group_norm(node: NodeCall, xs: list[Any]) -> Tensor:
    """Opset 21: scale and bias per channel; opset 18: per group (repeated over its channels here)."""
    x, scale, bias = xs
    groups, channels = int(node.get("num_groups")), x.shape[1]
    if scale.numel() == groups and groups != channels:
        scale, bias = (t.repeat_interleave(channels // groups) for t in (scale, bias))
    return F.group_norm(x, groups, scale, bias, float(node.get("epsilon", 1e-5)))


@op("LpNormalization")
def lp_norm(node: NodeCall, xs: list[Any]) -> Tensor:
    p = int(node.get("p", 2))
    if p not in (1, 2):
        raise node.refuse(f"p={p}")
    x = xs[0]
    norm = x.abs().sum(dim=node.get("axis", -1), keepdim=True) if p == 1 else None
    if norm is None:
        norm = x.pow(2).sum(dim=node.get("axis", -1), keepdim=True).sqrt()
    return x / norm
