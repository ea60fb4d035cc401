"""Activation-aware importance (``--criterion activation``): how much each channel moves its consumers'
outputs on the calibration data.

Score of channel c = sum over its consumers (Conv/Gemm/MatMul reading it) of ``||W[:, c]|| * ||a_c - mean
a_c||``: the norm of the weights that read the channel times the norm of the channel's centred activation
over the samples (every position of every sample). Centred, because pruning with calibration folds a removed
channel's mean into the consumers' biases: what is lost is only its variation. A channel that is constant
on the data (gamma = 0) scores 0 whatever its constant. Channels of a Flatten feeding a Gemm sum over their
H*W columns.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.capture import Runner
from onnxprune.channels.analysis import Analysis
from onnxprune.consumers import CONSUMERS, input_norms


def activation_scores(
    model: onnx.ModelProto,
    graph: gs.Graph,
    analysis: Analysis,
    samples: dict[str, np.ndarray],
    static_batch: int | None,
) -> None:
    """Set ``score`` and ``criterion = "activation"`` on every prunable group that some consumer reads.

    ``graph``: the normalised graph that ``analysis`` was built on (its tensor names are the analysis').
    """
    known = {name for node in model.graph.node for name in node.output} | {v.name for v in model.graph.input}
    consumers = [
        (node, node.inputs[0].name, norms)
        for node in graph.nodes
        if node.op in CONSUMERS and node.inputs and node.inputs[0].name in analysis.states
        if node.inputs[0].name in known and (norms := input_norms(node)) is not None
    ]
    if not consumers:
        return
    spread = _centred_norms(model, sorted({name for _, name, _ in consumers}), samples, static_batch)
    scores: dict[int, np.ndarray] = {}
    for _, name, norms in consumers:
        if len(norms) != len(spread[name]):
            continue
        _add_to_groups(analysis, name, norms * spread[name], scores)
    for group in analysis.groups:
        if group.prunable and group.id in scores:
            group.score, group.criterion = scores[group.id], "activation"


def _centred_norms(
    model: onnx.ModelProto, names: list[str], samples: dict[str, np.ndarray], static_batch: int | None
) -> dict[str, np.ndarray]:
    """sqrt(sum (a - mean)^2) per channel position of each tensor, over all samples and positions."""
    sums: dict[str, list[np.ndarray]] = {}
    for _, _, values in Runner(model, names, static_batch).run(samples):
        for name, value in values.items():
            rows = _rows(value)
            acc = sums.setdefault(name, [np.zeros(rows.shape[1]), np.zeros(rows.shape[1]), np.zeros(1)])
            acc[0] += rows.sum(axis=0)
            acc[1] += (rows**2).sum(axis=0)
            acc[2] += rows.shape[0]
    return {name: np.sqrt(np.maximum(sq - s**2 / n, 0.0)) for name, (s, sq, n) in sums.items()}


def _rows(value: np.ndarray) -> np.ndarray:
    """[positions, channels]: channel axis 1 for rank >= 3 (NCHW) and 2-d [N, C]."""
    value = value.astype(np.float64)
    if value.ndim >= 3:
        return np.moveaxis(value, 1, -1).reshape(-1, value.shape[1])
    return value.reshape(-1, value.shape[-1])


def _add_to_groups(analysis: Analysis, tensor: str, per_position: np.ndarray, scores: dict) -> None:
    for group, span, offset in analysis.pieces(analysis.states[tensor].map):
        if not group.prunable:
            continue
        block = per_position[offset : offset + span.width].reshape(span.length, span.repeat).sum(axis=1)
        score = scores.setdefault(group.id, np.zeros(group.size))
        score[span.start : span.start + span.length] += block
