"""Resize (and the older Upsample), separably, one axis at a time, with ONNX's own coordinate formulas.

For every output position of an axis, ``coordinate_transformation_mode`` gives the position in the input it
samples (``half_pixel``: (x + 0.5) / scale - 0.5, ``asymmetric``: x / scale, ...). ``nearest`` then rounds
it as ``nearest_mode`` says and gathers; ``linear`` blends the two neighbours and ``cubic`` the four (Keys'
kernel with ``cubic_coeff_a``), reading the border value past either end. Gathers with computed indices are
differentiable in the values, so training passes through, and any mode/transform pair ONNX defines is the
same formula here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from onnxprune.train.ops.base import NodeCall, Tensor, axis_of, given, ints, op

_ROUND: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round_prefer_floor": lambda c: np.ceil(c - 0.5),
    "round_prefer_ceil": lambda c: np.floor(c + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}


@op("Resize", "Upsample")
def resize(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    mode = node.text("mode", "nearest")
    ctm = node.text("coordinate_transformation_mode", "half_pixel" if node.op == "Resize" else "asymmetric")
    if node.get("antialias", 0) or ctm == "tf_crop_and_resize" or mode not in ("nearest", "linear", "cubic"):
        raise node.refuse(f"mode {mode!r} with coordinate_transformation_mode {ctm!r} (or antialias)")
    if node.text("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise node.refuse("keep_aspect_ratio_policy")
    axes = [axis_of(a, x.dim()) for a in node.get("axes", [])] or list(range(x.dim()))
    sizes, scales = _sizes_and_scales(node, xs, x, axes)
    for axis, out, scale in zip(axes, sizes, scales, strict=True):
        if out != x.shape[axis] or scale != 1.0:
            x = _resize_axis(node, x, axis, out, scale, mode, ctm)
    return x


def _sizes_and_scales(
    node: NodeCall, xs: list[Any], x: Tensor, axes: list[int]
) -> tuple[list[int], list[float]]:
    if node.op == "Upsample" or node.opset < 11:
        raw = given(xs, 1)
        scales = [float(s) for s in raw.reshape(-1).tolist()] if raw is not None else list(node.get("scales"))
        return [math.floor(x.shape[a] * s) for a, s in zip(axes, scales, strict=True)], scales
    sizes = ints(given(xs, 3))
    if sizes:
        return sizes, [out / x.shape[a] for a, out in zip(axes, sizes, strict=True)]
    scales = [float(s) for s in given(xs, 2).reshape(-1).tolist()]
    return [math.floor(x.shape[a] * s) for a, s in zip(axes, scales, strict=True)], scales


def _coordinates(ctm: str, size: int, out: int, scale: float) -> np.ndarray:
    """Where each output position samples the input, in input pixels."""
    o = np.arange(out, dtype=np.float64)
    if ctm == "asymmetric":
        return o / scale
    if ctm == "align_corners":
        return o * (size - 1) / (out - 1) if out > 1 else np.zeros(out)
    if ctm == "pytorch_half_pixel" and out == 1:
        return np.zeros(out)
    if ctm == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    if ctm == "half_pixel_symmetric":
        adjustment = out / (scale * size)
        return size / 2 * (1 - adjustment) + (o + 0.5) / scale - 0.5
    return (o + 0.5) / scale - 0.5  # half_pixel, pytorch_half_pixel


def _resize_axis(node: NodeCall, x: Tensor, axis: int, out: int, scale: float, mode: str, ctm: str) -> Tensor:
    size = x.shape[axis]
    coords = _coordinates(ctm, size, out, scale)
    if mode == "nearest":
        index = _ROUND[node.text("nearest_mode", "round_prefer_floor")](coords)
        return x.index_select(axis, _long(np.clip(index, 0, size - 1), x))
    if mode == "linear":
        coords = np.clip(coords, 0, size - 1)
        low = np.floor(coords)
        taps, weights = [low, np.minimum(low + 1, size - 1)], [1 - (coords - low), coords - low]
    else:
        taps, weights = _cubic(coords, size, float(node.get("cubic_coeff_a", -0.75)),
                               bool(node.get("exclude_outside", 0)))  # fmt: skip
    shape = [1] * x.dim()
    shape[axis] = out
    total = None
    for tap, weight in zip(taps, weights, strict=True):
        w = torch.from_numpy(weight.astype(np.float32)).to(x.device).reshape(shape)
        term = x.index_select(axis, _long(np.clip(tap, 0, size - 1), x)) * w
        total = term if total is None else total + term
    assert total is not None
    return total


def _cubic(
    coords: np.ndarray, size: int, a: float, exclude: bool
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    base = np.floor(coords)
    taps = [base + k for k in (-1, 0, 1, 2)]
    weights = [_keys(np.abs(coords - tap), a) for tap in taps]
    if exclude:  # weights of taps outside the image are dropped and the rest renormalised
        weights = [np.where((tap >= 0) & (tap < size), w, 0.0) for tap, w in zip(taps, weights, strict=True)]
        total = sum(weights)
        weights = [w / total for w in weights]
    return taps, weights


def _keys(d: np.ndarray, a: float) -> np.ndarray:
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _long(index: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(index.astype(np.int64)).to(like.device)
