"""The Gram matrix of each layer's inputs on calibration data, from ONNX Runtime.

The model is cut down to what the chosen layers' input tensors need (``compensate.capture.subset``), those
tensors being its outputs, so an early layer's inputs cost only the layers before it; each batch's activations
are unfolded into the columns the weight's rows multiply (``pattern.Layout.to_rows``: for a Conv, im2col
patches in (r, s, c) order) and ``X^T X`` is accumulated in float64, batch by batch, so no activation
outlives its batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.compensate.capture import subset
from onnxprune.errors import UsageError, first_line
from onnxprune.runtime import ort_session
from onnxprune.sparsity.layers import SparseLayer


def grams(
    model: onnx.ModelProto, layers: Sequence[SparseLayer], feeds: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Node name → Gram of that layer's unfolded inputs, summed over ``feeds``."""
    names = [layer.node.inputs[0].name for layer in layers]
    session = ort_session(subset(model, list(dict.fromkeys(names))))
    totals: dict[str, np.ndarray] = {}
    for feed in feeds:
        try:
            values = session.run(list(dict.fromkeys(names)), dict(feed))
        except Exception as exc:  # ORT's own types: a wrong shape or dtype in the calibration data
            raise UsageError(f"calibration data do not run through the model: {first_line(exc)}") from None
        by_name = dict(zip(dict.fromkeys(names), values, strict=True))
        for layer, name in zip(layers, names, strict=True):
            gram = _gram(layer, by_name[name])
            totals[layer.name] = totals[layer.name] + gram if layer.name in totals else gram
    return totals


ROWS = 16384  # unfolded rows per product: bounds im2col's memory, which is R*S times the input's


def _gram(layer: SparseLayer, x: np.ndarray) -> np.ndarray:
    """float32 products (BLAS speed) summed in float64, over chunks of samples of about ``ROWS`` unfolded
    rows (a 3x3 layer at 56x56 with 256 channels unfolds to 29 MB a sample)."""
    per_sample = max(len(unfold(layer.node, x[:1])), 1) if layer.node.op == "Conv" else 1
    step = max(ROWS // per_sample, 1)
    total = None
    for start in range(0, len(x), step):
        cols = unfold(layer.node, x[start : start + step]).astype(np.float32, copy=False)
        gram = (cols.T @ cols).astype(np.float64)
        total = gram if total is None else total + gram
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
