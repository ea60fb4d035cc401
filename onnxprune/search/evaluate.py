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
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.capture import Runner
from onnxprune.channels import Plan
from onnxprune.data import Samples, count, static_batch
from onnxprune.fidelity import OutputFidelity, measure_all, total_damage
from onnxprune.pipeline import Prepared
from onnxprune.rewrite import CutPoint, reference_with_cut_inputs
from onnxprune.runtime import ort_session

# Samples per ONNX Runtime call where the batch is free.
EVAL_BATCH = 8


class PlanEvaluator:
    """Outputs, fidelity and damage of any plan of one prepared model on fixed samples."""

    def __init__(
        self,
        prepared: Prepared,
        samples: Samples,
        fills: Mapping[str, np.ndarray] | None = None,
        threads: int = 2,
        run: bool = True,
    ) -> None:
        """``fills``: per cut tensor, what each removed position carries (calibration means); None: the
        analysis' data-free values. ``run=False``: no session, only ``model_for`` (a score command runs
        the models)."""
        self.model, self.points = reference_with_cut_inputs(prepared.graph.copy(), prepared.analysis)
        self.analysis = prepared.analysis
        self.samples = samples
        self.fills = fills
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
            carried = self._carried(point)
            feed[point.mask] = (~removed).astype(np.float32).reshape(point.shape)
            feed[point.fill] = np.where(removed, carried, 0.0).astype(np.float32).reshape(point.shape)
        return feed

    def _carried(self, point: CutPoint) -> np.ndarray:
        if self.fills is not None and point.tensor in self.fills:
            return self.fills[point.tensor]
        return np.nan_to_num(self.analysis.states[point.tensor].removed_value, nan=0.0)


def channel_means(prepared: Prepared, samples: Samples) -> dict[str, np.ndarray]:
    """Per cut tensor, the mean of each position of its channel axis over the samples (and every other
    axis): what calibration folds for a removed channel before it refits."""
    _, points = reference_with_cut_inputs(prepared.graph.copy(), prepared.analysis)
    names = [p.tensor for p in points]
    sums: dict[str, np.ndarray] = {}
    seen: dict[str, int] = {}
    runner = Runner(prepared.model, names, static_batch(prepared.model))
    for _, _, values in runner.run(samples):
        for name in names:
            value = values[name].astype(np.float64)
            axes = tuple(i for i in range(value.ndim) if i != 1)
            sums[name] = sums.get(name, 0.0) + value.sum(axis=axes)
            seen[name] = seen.get(name, 0) + value.size // max(value.shape[1], 1)
    return {name: sums[name] / max(seen[name], 1) for name in names}


def _chunks(samples: Samples, size: int) -> Iterator[dict[str, Any]]:
    total = count(samples)
    for start in range(0, total, size):
        yield {name: array[start : start + size] for name, array in samples.items()}
