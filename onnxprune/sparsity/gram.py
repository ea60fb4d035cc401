"""The Gram matrix of each layer's inputs on calibration data, from ONNX Runtime.

The model is cut down to what the chosen layers' input tensors need (``capture.subset``), those
tensors being its outputs, so an early layer's inputs cost only the layers before it; each batch's activations
are unfolded into the columns the weight's rows multiply (``pattern.Layout.to_rows``: for a Conv, im2col
patches in (r, s, c) order) and ``X^T X`` is accumulated in float64, batch by batch, so no activation
outlives its batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.capture import subset
from onnxprune.errors import UsageError, first_line
from onnxprune.runtime import ort_session
from onnxprune.sparsity.layers import SparseLayer


@dataclass
class LayerGrams:
    """Sums over the samples of a layer's unfolded inputs: ``ss = X^T X`` for the inputs it sees in the
    model being sparsified and, where those differ from the original model's inputs ``X_o`` (a layer behind
    layers already 2:4), ``cross = X^T X_o`` and ``oo = X_o^T X_o``: what it takes to aim the layer at its
    output in the original model rather than at its own dense output on the changed inputs."""

    ss: np.ndarray
    cross: np.ndarray | None = None
    oo: np.ndarray | None = None

    def __add__(self, other: LayerGrams) -> LayerGrams:
        def add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else a + b

        return LayerGrams(self.ss + other.ss, add(self.cross, other.cross), add(self.oo, other.oo))


def grams(
    model: onnx.ModelProto, layers: Sequence[SparseLayer], feeds: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Node name → Gram of that layer's unfolded inputs, summed over ``feeds``."""
    return {name: found.ss for name, found in paired_grams(model, layers, feeds).items()}


def paired_grams(
    model: onnx.ModelProto,
    layers: Sequence[SparseLayer],
    feeds: Iterable[Mapping[str, np.ndarray]],
    original: onnx.ModelProto | None = None,
) -> dict[str, LayerGrams]:
    """Node name → that layer's Grams in ``model``, summed over ``feeds``; with ``original`` (the same graph
    before sparsifying), also the cross and original Grams, each batch run through both."""
    names = list(dict.fromkeys(layer.node.inputs[0].name for layer in layers))
    sessions = [ort_session(subset(m, names)) for m in (model, original) if m is not None]
    totals: dict[str, LayerGrams] = {}
    for feed in feeds:
        runs = [dict(zip(names, _run(session, names, feed), strict=True)) for session in sessions]
        for layer in layers:
            tensor = layer.node.inputs[0].name
            found = _products(layer, runs[0][tensor], runs[1][tensor] if original is not None else None)
            totals[layer.name] = totals[layer.name] + found if layer.name in totals else found
    return totals


def _run(session: Any, names: list[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return list(session.run(names, dict(feed)))
    except Exception as exc:  # ORT's own types: a wrong shape or dtype in the calibration data
        raise UsageError(f"calibration data do not run through the model: {first_line(exc)}") from None


ROWS = 16384  # unfolded rows per product: bounds im2col's memory, which is R*S times the input's


def _products(layer: SparseLayer, x: np.ndarray, original: np.ndarray | None) -> LayerGrams:
    """float32 products (BLAS speed) summed in float64, over chunks of samples of about ``ROWS`` unfolded
    rows (a 3x3 layer at 56x56 with 256 channels unfolds to 29 MB a sample)."""
    per_sample = max(len(unfold(layer.node, x[:1])), 1) if layer.node.op == "Conv" else 1
    step = max(ROWS // per_sample, 1)
    total: LayerGrams | None = None
    for start in range(0, len(x), step):
        cols = unfold(layer.node, x[start : start + step]).astype(np.float32, copy=False)
        found = LayerGrams((cols.T @ cols).astype(np.float64))
        if original is not None:
            base = unfold(layer.node, original[start : start + step]).astype(np.float32, copy=False)
            found.cross, found.oo = (cols.T @ base).astype(np.float64), (base.T @ base).astype(np.float64)
        total = found if total is None else total + found
    assert total is not None
    return total


def unfold(node: gs.Node, x: np.ndarray) -> np.ndarray:
    """``[samples, reduction]``: the vectors the layer's weight rows take dot products with."""
    if node.op == "Conv":
        return _im2col(node, x)
    if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
        x = x.T
    return x.reshape(-1, x.shape[-1])


def _im2col(node: gs.Node, x: np.ndarray) -> np.ndarray:
    """2-D Conv patches ``[N*Ho*Wo, R*S*C]``, ordered (r, s, c) like the rows of its weight."""
    weight_shape = node.inputs[1].shape
    if x.ndim != 4 or weight_shape is None or len(weight_shape) != 4:
        raise UsageError(f"calibrated 2:4 supports 2-D convolutions only, not {node.name!r}")
    kernel = [int(d) for d in weight_shape[2:]]
    strides = list(node.attrs.get("strides", [1, 1]))
    dilations = list(node.attrs.get("dilations", [1, 1]))
    pads = _pads(node, x.shape[2:], kernel, strides, dilations)
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out = [(padded.shape[2 + a] - dilations[a] * (kernel[a] - 1) - 1) // strides[a] + 1 for a in range(2)]
    taps = []
    for r in range(kernel[0]):
        for s in range(kernel[1]):
            top, left = r * dilations[0], s * dilations[1]
            patch = padded[
                :,
                :,
                top : top + strides[0] * (out[0] - 1) + 1 : strides[0],
                left : left + strides[1] * (out[1] - 1) + 1 : strides[1],
            ]
            taps.append(patch)
    stacked = np.stack(taps, axis=-1)  # [N, C, Ho, Wo, R*S]
    return stacked.transpose(0, 2, 3, 4, 1).reshape(-1, len(taps) * x.shape[1])


def _pads(node: gs.Node, size: Sequence[int], kernel: list[int], strides: list, dilations: list) -> list[int]:
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("NOTSET", ""):
        return list(node.attrs.get("pads", [0, 0, 0, 0]))
    if auto == "VALID":
        return [0, 0, 0, 0]
    begin, end = [], []
    for a in range(2):
        extent = dilations[a] * (kernel[a] - 1) + 1
        total = max((-(-size[a] // strides[a]) - 1) * strides[a] + extent - size[a], 0)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end
