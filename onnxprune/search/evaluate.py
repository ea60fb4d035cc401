"""Evaluate plans without rewriting: how far a plan moves the model's outputs on samples.

One ONNX Runtime session of the original with a mask and a fill input at every consumer a plan can cut
(rewrite.reference_with_cut_inputs) computes what the pruned model of any plan computes: a plan's
evaluation is one run over the samples with that plan's masks and fills fed, no rewrite, no new session.
What a removed channel carries (the fill) is the compensation's: the analysis' data-free estimate (modes
none and bn), or its mean on calibration data (mode calib, which folds exactly that into the consumers'
biases before refitting them). An evaluation is a pure function of (model, plan, samples), so a pool of
processes or a cluster can run them unchanged: ``Evaluation`` is what it measures with, a value that
travels to workers (tasks.py), and ``Evaluation.on(prepared)`` the function a worker builds once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxprune.channels import Plan
from onnxprune.compensate.rebuild import Moments, rebuild
from onnxprune.data import Samples, count, static_batch
from onnxprune.fidelity import OutputFidelity, measure_all, total_damage, worst_fidelity
from onnxprune.pipeline import Prepared
from onnxprune.rewrite import cut_feeds, reference_with_cut_inputs, with_cuts
from onnxprune.runtime import ort_session
from onnxprune.search.score import EvalCommand

# Samples per ONNX Runtime call where the batch is free.
EVAL_BATCH = 8


class PlanEvaluator:
    """Outputs, fidelity and damage of any plan of one prepared model on fixed samples."""

    def __init__(
        self,
        prepared: Prepared,
        samples: Samples,
        moments: Mapping[str, Moments] | None = None,
        threads: int = 2,
        run: bool = True,
    ) -> None:
        """``moments``: per cut tensor, calibration statistics: removed channels are rebuilt from the kept
        ones as ``--compensate calib`` does (compensate/rebuild.py); None: they carry the analysis'
        data-free values. ``run=False``: no session, only ``model_for`` (a score command runs the
        models)."""
        linear = moments is not None and any(m.covariance is not None for m in moments.values())
        graph = prepared.graph.copy()
        self.model, self.points = reference_with_cut_inputs(graph, prepared.analysis, linear=linear)
        self.analysis = prepared.analysis
        self.samples = samples
        self.moments = moments
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
        return with_cuts(self.model, self._cut_inputs(plan))

    def fidelity(self, plan: Plan) -> dict[str, OutputFidelity]:
        return measure_all(self.reference, self.outputs(plan))

    def damage(self, plan: Plan) -> float:
        return total_damage(self.fidelity(plan))

    def _cut_inputs(self, plan: Plan) -> dict[str, np.ndarray]:
        rebuilt = rebuild(self.analysis, plan, self.moments) if self.moments is not None else {}
        return cut_feeds(self.analysis, plan, self.points, rebuilt)


@dataclass(frozen=True)
class Evaluation:
    """What a plan is measured with: the samples it runs on and the channel statistics of calibration's
    rebuild (None: data-free fills), or the user's score command and its score of the original. A plan's
    evaluation gives (damage, worst output fidelity), or with a command (original - score, score)."""

    samples: Samples = field(default_factory=dict)
    moments: Mapping[str, Moments] | None = None
    command: EvalCommand | None = None
    original: float = 0.0

    def on(self, prepared: Prepared) -> Callable[[Plan], tuple[float, float]]:
        """The evaluation of any plan of ``prepared``, on one ONNX Runtime thread (a worker's core)."""
        if self.command is not None:
            return self._scored(prepared, self.command)
        evaluator = PlanEvaluator(prepared, self.samples, self.moments, threads=1)

        def evaluate(plan: Plan) -> tuple[float, float]:
            found = evaluator.fidelity(plan)
            return total_damage(found), worst_fidelity(found)

        return evaluate

    def _scored(self, prepared: Prepared, command: EvalCommand) -> Callable[[Plan], tuple[float, float]]:
        """Damage = the original's score minus the plan's, scored by the user's command on a model
        computing what the pruned one does (the original with the plan's cuts fed as constants)."""
        evaluator = PlanEvaluator(prepared, self.samples, self.moments, run=False)

        def evaluate(plan: Plan) -> tuple[float, float]:
            score = command.score(evaluator.model_for(plan))
            return self.original - score, score

        return evaluate


def _chunks(samples: Samples, size: int) -> Iterator[dict[str, Any]]:
    total = count(samples)
    for start in range(0, total, size):
        yield {name: array[start : start + size] for name, array in samples.items()}
