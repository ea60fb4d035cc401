"""Redundancy-aware importance (``--criterion rebuild``): keep first the channels from which the rest are
best rebuilt, on the calibration data.

With calibration, a removed channel is rebuilt at its consumers from the kept channels of the same tensor
(compensate/rebuild.py): what a cut loses is only the part of the removed channels that the kept ones do not
predict. A channel that another one copies costs nothing to remove, however large its gamma or its
activation; a channel nothing else predicts costs its whole variation. So the order is chosen on the data:
greedy forward selection, each step keeping the channel that explains most of what is left of the
consumers' input, weighted by the consumers' weights (``M = sum over consumers and taps of W^T W``):

    gain(k) = (S M S)[k, k] / S[k, k],   then   S <- S - S[:, k] S[k, :] / S[k, k]

with ``S`` the channels' covariance given the channels kept so far. Summed over the tensors that carry the
group, each relative to the consumer's output energy ``tr(M Cov)``; a tensor without a covariance (a
depthwise or pooled consumer, where the rebuild is the mean alone) adds its channels' ``M[c, c] var(c)``.
Forward selection is nested: the first k channels are its choice for every k, so a group's ranking serves
every width the planner tries. A channel constant on the data scores 0 (calibration folds its constant).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis
from onnxprune.compensate.blas import one_blas_thread
from onnxprune.compensate.rebuild import ROWS_PER_UNKNOWN, Moments
from onnxprune.consumers import input_gram

# Conditional variances below this fraction of the largest are numerically zero: nothing left to explain.
VANISHING = 1e-10


@dataclass(frozen=True)
class Block:
    """One tensor's positions of a group, one per channel: their covariance, the consumers' ``W^T W`` on
    them, and the consumers' output energy that the gains are relative to."""

    channels: np.ndarray
    covariance: np.ndarray
    weight: np.ndarray
    energy: float


def forward_order(size: int, blocks: list[Block], fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(channels in the order greedy forward selection keeps them, the gain of each when chosen).

    ``fixed``: per channel, a gain that does not depend on the others (tensors without a covariance)."""
    selections = [_Selection(block) for block in blocks]
    remaining = np.ones(size, dtype=bool)
    order, gains = np.zeros(size, np.int64), np.zeros(size)
    for step in range(size):
        gain = fixed.astype(np.float64).copy()
        for selection in selections:
            np.add.at(gain, selection.block.channels, selection.gains())
        gain[~remaining] = -np.inf
        chosen = int(np.argmax(gain))
        order[step], gains[step] = chosen, gain[chosen]
        remaining[chosen] = False
        for selection in selections:
            selection.keep(np.flatnonzero(selection.block.channels == chosen))
    return order, gains


class _Selection:
    """One block's forward selection, kept as the Cholesky factor ``L`` of what the kept positions explain
    (``S = Cov - L L^T``) and the diagonals of ``S`` and ``S M S``: each step is two matrix-vector products,
    not a rank-one update of two dense matrices."""

    def __init__(self, block: Block) -> None:
        self.block = block
        self.cov = block.covariance.astype(np.float64)
        self.weight = block.weight.astype(np.float64)
        width = len(self.cov)
        self.factor = np.zeros((width, width))
        self.kept = 0
        self.variance = np.diag(self.cov).copy()  # diag(S)
        self.explained = np.sum((self.cov @ self.weight) * self.cov, axis=1)  # diag(S M S)
        self.floor = VANISHING * max(float(np.max(self.variance, initial=0.0)), 1e-300)

    def gains(self) -> np.ndarray:
        """Per position: the consumers' output energy keeping it would explain, relative to the total."""
        live = self.variance > self.floor
        return np.where(live, self.explained / np.where(live, self.variance, 1.0), 0.0) / self.block.energy

    def keep(self, at: np.ndarray) -> None:
        """Condition on the position ``at`` (none: the chosen channel is not in this block)."""
        if not len(at) or self.variance[at[0]] <= self.floor:
            return
        # The factor is stored by rows (one per kept position) so that its used part is contiguous:
        # numpy copies a strided column slice on every product.
        j, done = int(at[0]), self.factor[: self.kept]
        pivot = self.variance[j]
        column = self.cov[j] - done.T @ done[:, j]  # S[:, j] (Cov is symmetric: its row j)
        towards = self.weight @ column
        q = self.cov @ towards - done.T @ (done @ towards)  # (S M S)[:, j]
        self.explained += -2.0 * q * column / pivot + column**2 * (q[j] / pivot**2)
        self.variance -= column**2 / pivot
        self.factor[self.kept] = column / np.sqrt(pivot)
        self.kept += 1


def scores_from_order(order: np.ndarray, gains: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """One score per channel, higher for channels kept earlier (strictly, so the ranking is the order);
    0 for channels constant on the data."""
    size = len(order)
    floor = np.minimum.accumulate(np.maximum(gains, 0.0))
    top = max(float(floor[0]) if size else 0.0, 1e-30)
    ranked = floor + top * 1e-9 * (size - np.arange(size)) / max(size, 1)
    score = np.zeros(size)
    score[order] = ranked
    return np.where(constant, 0.0, score)


@dataclass
class _Evidence:
    """What the measured tensors say of one group: blocks with a covariance, per-channel fixed gains from
    the rest, and which channels vary at all."""

    blocks: list[Block]
    fixed: np.ndarray
    varies: np.ndarray

    @classmethod
    def empty(cls, size: int) -> _Evidence:
        return cls([], np.zeros(size), np.zeros(size, dtype=bool))


@one_blas_thread  # matrix-vector products: a second thread only waits on memory, or on a busy core
def redundancy_scores(graph: gs.Graph, analysis: Analysis, moments: Mapping[str, Moments]) -> None:
    """Set ``score`` and ``criterion = "rebuild"`` on every prunable group some measured tensor carries.

    ``moments``: per cut tensor, from ``compensate.rebuild.channel_moments`` on the fitting samples."""
    weights = _consumer_weights(graph, analysis)
    evidence: dict[int, _Evidence] = {}
    for name, stats in moments.items():
        if name not in analysis.states or stats.variance is None:
            continue
        weight = weights.get(name)
        diag = np.diag(weight) if weight is not None else np.ones(len(stats.mean))
        energy = _energy(stats, weight, diag)
        if energy <= 0:
            continue
        for group, positions, channels in _group_positions(analysis, name):
            found = evidence.setdefault(group.id, _Evidence.empty(group.size))
            np.logical_or.at(found.varies, channels, stats.variance[positions] > 0)
            linear = _linear(stats, weight, positions, channels)
            if linear is not None:
                found.blocks.append(Block(channels, *linear, energy))
            else:
                np.add.at(found.fixed, channels, diag[positions] * stats.variance[positions] / energy)
    for group in analysis.groups:
        if group.prunable and group.id in evidence:
            found = evidence[group.id]
            order, gains = forward_order(group.size, found.blocks, found.fixed)
            score = scores_from_order(order, gains, ~found.varies)
            if group.inexact is not None:
                # As importance.score_groups: exactly 0 promises the channel changes nothing (--threshold 0).
                score = np.where((score == 0) & group.inexact, np.nextafter(0.0, 1.0), score)
            group.score, group.criterion = score, "rebuild"


def _energy(stats: Moments, weight: np.ndarray | None, diag: np.ndarray) -> float:
    """The consumers' output energy from the tensor's variation, ``tr(M Cov)``: what gains are relative to
    (the diagonal alone without a covariance or known weights)."""
    if weight is not None and stats.covariance is not None:
        return float(np.sum(weight * stats.covariance))  # the trace of a product of symmetric matrices
    assert stats.variance is not None
    return float(np.sum(diag * stats.variance))


def _linear(
    stats: Moments, weight: np.ndarray | None, positions: np.ndarray, channels: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The group's block of covariance and ``W^T W`` where the rebuild is linear there: a covariance, known
    weights, one position per channel, and rows enough for an estimate from the whole group."""
    if stats.covariance is None or weight is None or len(np.unique(channels)) != len(channels):
        return None
    if stats.rows < ROWS_PER_UNKNOWN * (len(positions) + 1):
        return None
    index = np.ix_(positions, positions)
    return stats.covariance[index], weight[index]


def _group_positions(analysis: Analysis, name: str) -> Iterable[tuple]:
    """(group, positions on the tensor's axis, the group channel at each) for every prunable group."""
    found: dict[int, tuple] = {}
    for group, span, offset in analysis.pieces(analysis.states[name].map):
        if not group.prunable:
            continue
        positions = offset + np.arange(span.width)
        channels = span.start + np.repeat(np.arange(span.length), span.repeat)
        if group.id in found:
            _, old_pos, old_ch = found[group.id]
            positions, channels = np.concatenate([old_pos, positions]), np.concatenate([old_ch, channels])
        found[group.id] = (group, positions, channels)
    return found.values()


def _consumer_weights(graph: gs.Graph, analysis: Analysis) -> dict[str, np.ndarray]:
    """Per cut tensor, ``sum over its consumers of W^T W`` on its channel positions, where every consumer
    that reduces over the channels has a constant weight."""
    nodes = {node.name: node for node in graph.nodes}
    found: dict[str, np.ndarray] = {}
    unknown: set[str] = set()
    for tensor, name, _ in analysis.consumers:
        node = nodes.get(name)
        gram = None
        if node is not None and node.inputs and node.inputs[0].name == tensor:
            gram = input_gram(node)
        if gram is None or (tensor in found and found[tensor].shape != gram.shape):
            unknown.add(tensor)
            continue
        found[tensor] = found.get(tensor, 0.0) + gram
    return {name: gram for name, gram in found.items() if name not in unknown}
