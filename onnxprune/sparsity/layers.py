"""Which layers can hold a 2:4 weight, and which should: eligibility per layer, as data.

A candidate is a Conv, Gemm or MatMul with a constant weight (see ``weights.resolve``). It is *eligible*
when the pattern fits (the reduction length a multiple of 4) and TensorRT would gain from it, after NVIDIA's
guidance for sparse Tensor Cores: input channels a multiple of 16 and output channels a multiple of 8, not
depthwise or grouped, and big enough: both the input side (C, counted as C*R*S for an R x S kernel, so a
3x3 kernel counts C as 9C) and the output channels K at least ``min_channels``. Every other candidate
carries the reason it was declined.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.sparsity import pattern
from onnxprune.sparsity.pattern import Layout
from onnxprune.sparsity.weights import Declined, StoredWeight, resolve

OPS = ("Conv", "Gemm", "MatMul")
INPUT_MULTIPLE = 16  # C: sparse kernels tile the reduction by 16 (FP16)
OUTPUT_MULTIPLE = 8  # K
MIN_CHANNELS = 256  # NVIDIA: smaller layers do not speed up


@dataclass
class SparseLayer:
    """One candidate layer: its weight in the layer's view, whether it already is 2:4, why not eligible."""

    node: gs.Node
    layout: Layout | None
    weight: StoredWeight | None
    macs: int
    reason: str | None = None  # None: eligible
    already: bool = False

    @property
    def eligible(self) -> bool:
        return self.reason is None

    @property
    def name(self) -> str:
        return self.node.name

    def to_dict(self, total_macs: int) -> dict[str, Any]:
        layout = self.layout
        return {
            "node": self.node.name,
            "op": self.node.op,
            "weight_shape": list(layout.shape) if layout else None,
            "input_channels": layout.reduction if layout else None,
            "kernel": layout.kernel if layout else None,
            "output_channels": layout.outputs if layout else None,
            "weight_chain": self.weight.chain if self.weight else [],
            "macs": self.macs,
            "macs_share": self.macs / total_macs if total_macs else 0.0,
            "already_24": self.already,
            "eligible": self.eligible,
            "reason": self.reason,
        }


def find_layers(
    graph: gs.Graph,
    *,
    min_channels: int = MIN_CHANNELS,
    layers: Sequence[str] = (),
    exclude: Sequence[str] = (),
    macs: Mapping[str, int] | None = None,
) -> list[SparseLayer]:
    """Every Conv/Gemm/MatMul of the graph, in graph order, each eligible or with its reason.

    ``macs``: MACs per node by first output (``measure.counter.Counts.nodes``); 0 where not given."""
    found = []
    for node in graph.nodes:
        if node.op not in OPS or len(node.inputs) < 2:
            continue
        found.append(
            _candidate(node, min_channels, layers, exclude, (macs or {}).get(node.outputs[0].name, 0))
        )
    return found


def _candidate(
    node: gs.Node, min_channels: int, layers: Sequence[str], exclude: Sequence[str], macs: int
) -> SparseLayer:
    layer = SparseLayer(node, None, None, macs)
    try:
        layer.weight = resolve(node)
        value = layer.weight.values()
        layer.layout = layout_of(node, value)
        layer.already = pattern.is_24(value, layer.layout) and bool(np.any(value))
        layer.reason = _decline(node, value, layer.layout, min_channels)
    except Declined as why:
        layer.reason = str(why)
    if layer.reason is None:
        layer.reason = _selection(node.name, layers, exclude)
    return layer


def layout_of(node: gs.Node, value: np.ndarray) -> Layout:
    shape = tuple(int(d) for d in value.shape)
    if node.op == "Conv":
        if value.ndim < 3:
            raise Declined(f"Conv weight of rank {value.ndim}")
        return Layout("conv", shape)
    if value.ndim != 2:
        raise Declined(f"{node.op} weight of rank {value.ndim} (only a 2-D weight maps to sparse kernels)")
    transposed = node.op == "Gemm" and int(node.attrs.get("transB", 0))
    return Layout("rows" if transposed else "columns", shape)


def _decline(node: gs.Node, value: np.ndarray, layout: Layout, min_channels: int) -> str | None:
    """Why this layer should not be made 2:4, or None."""
    kind = np.dtype(value.dtype)
    if kind == np.float64:
        return "float64 weight: TensorRT's sparse kernels are FP16/INT8 (convert the model to float32 first)"
    if kind.kind != "f":
        return f"{kind.name} weight without a DequantizeLinear: not a float weight to sparsify"
    group = int(node.attrs.get("group", 1)) if node.op == "Conv" else 1
    if group > 1 and layout.reduction == 1:
        return "depthwise convolution: one input channel per filter, no 2:4 pattern"
    if group > 1:
        return f"grouped convolution (group={group}): sparse Tensor Core kernels are for group=1"
    if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
        return "Gemm with transA=1"
    c, k, taps = layout.reduction, layout.outputs, layout.kernel
    if not pattern.fits(layout):
        return f"input channels C={c} not a multiple of 4: no 2:4 pattern fits"
    if c % INPUT_MULTIPLE:
        return f"input channels C={c} not a multiple of {INPUT_MULTIPLE}"
    if k % OUTPUT_MULTIPLE:
        return f"output channels K={k} not a multiple of {OUTPUT_MULTIPLE}"
    if c * taps < min_channels or k < min_channels:
        size = f"C={c}" if taps == 1 else f"C*{taps}={c * taps}"
        return f"too small to speed up: {size}, K={k} (--min-channels {min_channels})"
    return None


def _selection(name: str, layers: Sequence[str], exclude: Sequence[str]) -> str | None:
    if layers and not any(fnmatch.fnmatchcase(name, glob) for glob in layers):
        return "not selected by --layers"
    hit = next((glob for glob in exclude if fnmatch.fnmatchcase(name, glob)), None)
    return f"excluded by --exclude {hit!r}" if hit is not None else None
