"""Evaluate plans without rewriting: how far a plan moves the model's outputs on samples.

One ONNX Runtime session of the original with a mask and a fill input at every consumer a plan can cut
(rewrite.reference_with_cut_inputs) computes what the pruned model of any plan computes: a plan's
evaluation is one run over the samples with that plan's masks and fills fed, no rewrite, no new session.
What a removed channel carries (the fill) is the compensation's: the analysis' data-free estimate (modes
none and bn), or its mean on calibration data (mode calib, which folds exactly that into the consumers'
biases before refitting them). An evaluation is a pure function of (model, plan, samples), so a pool of
processes or a cluster can run them unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.capture import Runner
from onnxprune.channels import Plan
from onnxprune.data import Samples, count, static_batch
from onnxprune.fidelity import OutputFidelity, measure_all, total_damage
from onnxprune.pipeline import Prepared
from onnxprune.rewrite import LINEAR_MAX_WIDTH, reference_with_cut_inputs
from onnxprune.runtime import ort_session

# Samples per ONNX Runtime call where the batch is free.
EVAL_BATCH = 8
# Ridge of the linear rebuild, relative to the mean variance of the kept positions.
RIDGE = 1e-3


@dataclass(frozen=True)
class Moments:
    """A cut tensor's channel statistics over samples (every axis but the channel axis): the mean of each
    position, and their covariance where a linear rebuild is wanted."""

    mean: np.ndarray
    covariance: np.ndarray | None = None
    positions: int = 1  # per sample: what a refit of the consumer samples rows from


# A refit needs this many rows per unknown, or calibration gives the consumer only a bias shift (as
# compensate/calibrate.ROWS_PER_UNKNOWN): the search must not foresee a rebuild calibration will not do.
ROWS_PER_UNKNOWN = 2


class PlanEvaluator:
    """Outputs, fidelity and damage of any plan of one prepared model on fixed samples."""

    def __init__(
        self,
        prepared: Prepared,
        samples: Samples,
        moments: Mapping[str, Moments] | None = None,
        threads: int = 2,
        run: bool = True,
        refit_samples: int = 0,
    ) -> None:
        """``moments``: per cut tensor, calibration statistics: a removed position carries its mean, and,
        where the covariance is given, its linear least-squares estimate from the kept positions (what
        calibration's refit of the consumers recovers, where ``refit_samples`` give it the rows it needs);
        None: the analysis' data-free values. ``run=False``: no session, only ``model_for`` (a score
        command runs the models)."""
        linear = moments is not None and any(m.covariance is not None for m in moments.values())
        graph = prepared.graph.copy()
        self.model, self.points = reference_with_cut_inputs(graph, prepared.analysis, linear=linear)
        self.analysis = prepared.analysis
        self.samples = samples
        self.moments = moments or {}
        self.refit_samples = refit_samples
        self.taps = _consumer_taps(prepared)
        self.batch = static_batch(prepared.model) or EVAL_BATCH
        if run:
            self.session = ort_session(self.model, threads=threads, spin=False)
            self.names = [o.name for o in self.session.get_outputs()]
            self.reference = self.outputs(Plan())

    def outputs(self, plan: Plan) -> dict[str, np.ndarray]:
        """Every output on every sample, stacked on axis 0, with ``plan``'s removed channels cut."""
        cuts = self._cut_inputs(plan)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        for feed in _chunks(self.samples, self.batch):
            for name, value in zip(self.names, self.session.run(self.names, {**feed, **cuts}), strict=True):
                parts[name].append(value)
        return {name: np.concatenate(values) for name, values in parts.items()}

    def model_for(self, plan: Plan) -> onnx.ModelProto:
        """A model with the original's inputs computing what ``plan``'s pruned model does: the plan's
        masks and fills as constants (the same size as the original: for scoring, not for deployment)."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        cuts = self._cut_inputs(plan)
        kept = [v for v in model.graph.input if v.name not in cuts]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        model.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in cuts.items())
        return model

    def fidelity(self, plan: Plan) -> dict[str, OutputFidelity]:
        return measure_all(self.reference, self.outputs(plan))

    def damage(self, plan: Plan) -> float:
        return total_damage(self.fidelity(plan))

    def _cut_inputs(self, plan: Plan) -> dict[str, np.ndarray]:
        feed: dict[str, np.ndarray] = {}
        for point in self.points:
            removed = self.analysis.removed_mask(point.tensor, plan)
            moments = self.moments.get(point.tensor)
            weight = None
            if moments is None:
                fill = np.nan_to_num(self.analysis.states[point.tensor].removed_value, nan=0.0)
            elif point.weight is not None and removed.any() and self._refits(point.tensor, moments, removed):
                weight, fill = _linear_rebuild(moments, removed)
            else:
                fill = moments.mean
            feed[point.mask] = (~removed).astype(np.float32).reshape(point.shape)
            feed[point.fill] = np.where(removed, fill, 0.0).astype(np.float32).reshape(point.shape)
            if point.weight is not None:
                matrix = weight if weight is not None else np.zeros(point.weight_shape[:2])
                # A MatMul computes x @ W: the map transposed; a Conv takes [out, in, 1...].
                matrix = matrix.T if len(point.weight_shape) == 2 else matrix
                feed[point.weight] = matrix.astype(np.float32).reshape(point.weight_shape)
        return feed

    def _refits(self, tensor: str, moments: Moments, removed: np.ndarray) -> bool:
        """Whether calibration would refit the consumers: enough sampled rows for their unknowns."""
        if moments.covariance is None:
            return False
        unknowns = self.taps.get(tensor, 1) * int((~removed).sum()) + 1
        return self.refit_samples * moments.positions >= ROWS_PER_UNKNOWN * unknowns


def _consumer_taps(prepared: Prepared) -> dict[str, int]:
    """Per cut tensor, the kernel taps of its widest consumer (a 3x3 Conv reads 9 positions a channel)."""
    nodes = {node.name: node for node in prepared.graph.nodes}
    taps: dict[str, int] = {}
    for tensor, name, _ in prepared.analysis.consumers:
        node = nodes.get(name)
        weight = node.inputs[1] if node is not None and len(node.inputs) > 1 else None
        shape = getattr(weight, "shape", None)
        found = int(np.prod(shape[2:])) if node is not None and node.op == "Conv" and shape else 1
        taps[tensor] = max(taps.get(tensor, 1), found)
    return taps


def _linear_rebuild(moments: Moments, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares estimate of the removed positions from the kept ones, ``x_r ~ mean_r + A (x_k -
    mean_k)``: the weight (A in rows ``removed``, columns kept) and the fill ``mean_r - A mean_k``."""
    assert moments.covariance is not None
    kept = ~removed
    cov, mean = moments.covariance, moments.mean
    weight = np.zeros_like(cov)
    fill = mean.copy()
    if kept.any():
        gram = cov[np.ix_(kept, kept)]
        ridge = RIDGE * max(float(np.mean(np.diag(gram))), 1e-12)
        solve = np.linalg.solve(gram + ridge * np.eye(len(gram)), cov[np.ix_(kept, removed)])
        weight[np.ix_(removed, kept)] = solve.T
        fill[removed] = mean[removed] - solve.T @ mean[kept]
    return weight, fill


def channel_moments(prepared: Prepared, samples: Samples, covariance: bool = False) -> dict[str, Moments]:
    """Per cut tensor, the mean of each position of its channel axis over the samples (and every other
    axis): what calibration folds for a removed channel before it refits; ``covariance``: with the
    positions' covariance, for channel axes narrow enough to rebuild (rewrite.LINEAR_MAX_WIDTH)."""
    _, points = reference_with_cut_inputs(prepared.graph.copy(), prepared.analysis)
    names = [p.tensor for p in points]
    sums: dict[str, np.ndarray] = {}
    products: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    positions: dict[str, int] = {}
    runner = Runner(prepared.model, names, static_batch(prepared.model))
    for _, _, values in runner.run(samples):
        for name in names:
            value = values[name]
            positions[name] = int(np.prod(value.shape[2:])) if value.ndim > 2 else 1
            flat = np.moveaxis(value, 1, -1).reshape(-1, value.shape[1]).astype(np.float64)
            sums[name] = sums.get(name, 0.0) + flat.sum(axis=0)
            rows[name] = rows.get(name, 0) + len(flat)
            if covariance and flat.shape[1] <= LINEAR_MAX_WIDTH:
                products[name] = products.get(name, 0.0) + flat.T @ flat
    found = {}
    for name in names:
        mean = sums[name] / max(rows[name], 1)
        cov = products[name] / max(rows[name], 1) - np.outer(mean, mean) if name in products else None
        found[name] = Moments(mean, cov, positions[name])
    return found


def _chunks(samples: Samples, size: int) -> Iterator[dict[str, Any]]:
    total = count(samples)
    for start in range(0, total, size):
        yield {name: array[start : start + size] for name, array in samples.items()}
