"""Rebuild: removed channels replaced, at every consumer, by their least-squares estimate from the kept
channels of the same tensor, ``x_removed ~ mean_removed + A (x_kept - mean_kept)``, from channel statistics
on calibration data (``--compensate calib``).

For a 1x1 consumer this is exactly what a least-squares refit of its weights reaches; for a kxk one, a
refit that may use only the same position. Unlike a refit it has few unknowns per removed channel (the
kept channels, not the kernel's every tap) estimated from every position of every sample, so it does not
overfit, and it is the same computation the search evaluates plans with (search/evaluate.py): what the
sensitivity scan measured is what the written model does. The constant part is folded as any removed
channel's constant (biases, or bias maps at zero-padded borders); ``A``'s columns are added to the kept
weights (rules/conv.py, rules/gemm.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.capture import Runner
from onnxprune.channels import Analysis, Plan
from onnxprune.channels.rebuild import Rebuilt
from onnxprune.data import Samples, static_batch
from onnxprune.rewrite import LINEAR_MAX_WIDTH, reference_with_cut_inputs

# Ridge of the estimate, relative to the mean variance of the kept positions.
RIDGE = 1e-3
# The linear estimate needs this many rows (samples x positions) per kept channel, as a refit does
# (compensate/calibrate.ROWS_PER_UNKNOWN), or the removed channels carry their mean alone.
ROWS_PER_UNKNOWN = 2
# Samples the channel statistics are measured on: a covariance of a few hundred channels is settled by
# then, and every sample is one more capture of every cut tensor.
MOMENT_SAMPLES = 128


@dataclass(frozen=True)
class Moments:
    """A cut tensor's channel statistics over samples (every axis but the channel axis): the mean of each
    position, and their covariance where a linear rebuild is possible."""

    mean: np.ndarray
    covariance: np.ndarray | None = None
    rows: int = 0  # samples times positions: what the estimate rests on
    variance: np.ndarray | None = None  # of each position (importance: redundancy.py)


def channel_moments(
    model: onnx.ModelProto, graph: gs.Graph, analysis: Analysis, samples: Samples, covariance: bool = True
) -> dict[str, Moments]:
    """Per cut tensor (a consumer's channel input), the mean of each position of its channel axis over
    the samples and every other axis, and with ``covariance`` their covariance (for axes that can be
    rebuilt: see ``linear_ready``)."""
    _, points = reference_with_cut_inputs(graph.copy(), analysis)
    names = [p.tensor for p in points]
    wide = linear_ready(graph, analysis) if covariance else set()
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    products: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    for _, _, values in Runner(model, names, static_batch(model)).run(samples):
        for name in names:
            value = values[name]
            flat = np.moveaxis(value, 1, -1).reshape(-1, value.shape[1]).astype(np.float64)
            sums[name] = sums.get(name, 0.0) + flat.sum(axis=0)
            squares[name] = squares.get(name, 0.0) + (flat**2).sum(axis=0)
            rows[name] = rows.get(name, 0) + len(flat)
            if name in wide:
                products[name] = products.get(name, 0.0) + flat.T @ flat
    found = {}
    for name in names:
        mean = sums[name] / max(rows[name], 1)
        cov = products[name] / max(rows[name], 1) - np.outer(mean, mean) if name in products else None
        variance = np.maximum(squares[name] / max(rows[name], 1) - mean**2, 0.0)
        found[name] = Moments(mean, cov, rows[name], variance)
    return found


def linear_ready(graph: gs.Graph, analysis: Analysis) -> set[str]:
    """Cut tensors every consumer of which can take rebuilt columns: a dense Conv (group 1), a Gemm, a
    MatMul of a 2-D input; and narrow enough for a covariance (not a Flatten's C*H*W positions)."""
    nodes = {node.name: node for node in graph.nodes}
    readers: dict[str, list[gs.Node | None]] = {}
    for tensor, name, _ in analysis.consumers:
        readers.setdefault(tensor, []).append(nodes.get(name))
    ready = set()
    for tensor, users in readers.items():
        width = len(analysis.states[tensor].removed_value)
        if width <= LINEAR_MAX_WIDTH and all(_takes_columns(node) for node in users):
            ready.add(tensor)
    return ready


def _takes_columns(node: gs.Node | None) -> bool:
    if node is None:
        return False
    if node.op == "Conv":
        return int(node.attrs.get("group", 1)) == 1
    if node.op == "MatMul":
        shape = node.inputs[0].shape
        return shape is not None and len(shape) == 2
    return node.op == "Gemm"


def rebuild(analysis: Analysis, plan: Plan, moments: Mapping[str, Moments]) -> dict[str, Rebuilt]:
    """Per cut tensor that ``plan`` removes positions from: the removed positions' estimate. The mean alone
    where no covariance was measured; nothing where a consumer cannot fold a constant (a padded Conv of
    dynamic size: the analysis cut such channels to 0, and they stay so)."""
    unfoldable = {tensor for tensor, _, how in analysis.consumers if how == "none"}
    found = {}
    for name, stats in moments.items():
        if name in unfoldable:
            continue
        removed = analysis.removed_mask(name, plan)
        if not removed.any():
            continue
        gone, kept = np.flatnonzero(removed), np.flatnonzero(~removed)
        # An estimate from few rows (a pooled tensor: one per sample) would fit noise: the mean alone.
        if stats.covariance is None or not len(kept) or stats.rows < ROWS_PER_UNKNOWN * (len(kept) + 1):
            found[name] = Rebuilt(gone, kept, stats.mean[gone])
            continue
        linear, constant = _estimate(stats, removed)
        found[name] = Rebuilt(gone, kept, constant, linear)
    return found


def _estimate(stats: Moments, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``A`` (removed x kept) by ridge least squares from the covariance, and the constant
    ``mean_removed - A mean_kept``."""
    assert stats.covariance is not None
    kept = ~removed
    cov, mean = stats.covariance, stats.mean
    gram = cov[np.ix_(kept, kept)]
    ridge = RIDGE * max(float(np.mean(np.diag(gram))), 1e-12)
    linear = np.linalg.solve(gram + ridge * np.eye(len(gram)), cov[np.ix_(kept, removed)]).T
    return linear, mean[removed] - linear @ mean[kept]
