"""A search's evaluations as tasks: (model, plan, samples) -> (damage, worst fidelity), run by workers.

``EvaluationJob`` is what a worker is sent once: the model's bytes, the options it was prepared with and
the ``Evaluation`` (samples, channel statistics or score command). The worker prepares the model again
(the analysis is deterministic, so group ids match; checked) and builds its evaluator once; each task is
then a plan. ``Evaluator`` is the search's side: plans in, results out in order, in this process where
there is one worker, else on the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from onnxprune.channels import Plan
from onnxprune.errors import UsageError
from onnxprune.options import PlanOptions
from onnxprune.pipeline import Prepared, prepare
from onnxprune.search.evaluate import Evaluation
from onnxprune.search.workers import Workers


def fingerprint(prepared: Prepared) -> tuple[tuple[int, int, bool], ...]:
    """Every group's id, size and prunability: what a worker's analysis must reproduce."""
    return tuple((g.id, g.size, g.prunable) for g in prepared.groups)


def model_bytes(prepared: Prepared) -> bytes:
    try:
        return prepared.model.SerializeToString()
    except ValueError:  # protobuf's 2 GB limit
        raise UsageError("a model over 2 GB is searched in one process: give --workers 1") from None


@dataclass(frozen=True)
class EvaluationJob:
    """What every worker builds its evaluator from, once."""

    model: bytes
    options: PlanOptions
    shapes: Mapping[str, tuple[int, ...]]
    evaluation: Evaluation
    groups: tuple[tuple[int, int, bool], ...]

    @classmethod
    def of(cls, prepared: Prepared, evaluation: Evaluation) -> EvaluationJob:
        shapes = dict(prepared.before.inputs)
        return cls(model_bytes(prepared), prepared.options, shapes, evaluation, fingerprint(prepared))

    def build(self) -> Callable[[Plan], tuple[float, float]]:
        prepared = prepare(onnx.load_from_string(self.model), self.options, self.shapes)
        if fingerprint(prepared) != self.groups:
            raise RuntimeError("a worker's analysis of the model differs from the search's")
        return self.evaluation.on(prepared)


class Evaluator:
    """Plans -> (damage, worst fidelity), each evaluated where ``workers`` run (None: this process)."""

    def __init__(self, prepared: Prepared, evaluation: Evaluation, workers: Workers | None = None) -> None:
        self.prepared, self.evaluation, self.workers = prepared, evaluation, workers
        self._local: Callable[[Plan], tuple[float, float]] | None = None
        self._job: EvaluationJob | None = None

    @property
    def where(self) -> str:
        if self.workers is None or self.workers.in_process:
            return "1 worker (this process)"
        found = self.workers.describe()
        return f"up to {found}" if self.workers.adaptive else found

    def __call__(self, plan: Plan) -> tuple[float, float]:
        return self.many([plan])[0]

    def many(
        self, plans: Sequence[Plan], done: Callable[[int], Any] | None = None
    ) -> list[tuple[float, float]]:
        """Every plan's result, in order; ``done(index)`` is told each as it finishes."""
        if self.workers is None:
            function = self._built()
            results = []
            for index, plan in enumerate(plans):
                results.append(function(plan))
                if done is not None:
                    done(index)
            return results
        if self._job is None:
            self._job = EvaluationJob.of(self.prepared, self.evaluation)
        return self.workers.run(self._job, plans, done, local=self._built)

    def _built(self) -> Callable[[Plan], tuple[float, float]]:
        """The evaluation in this process, built once (for one worker, and the first tasks of adaptive
        workers)."""
        if self._local is None:
            self._local = self.evaluation.on(self.prepared)
        return self._local
