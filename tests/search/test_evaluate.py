"""Plan evaluation without rewriting: the cut-input model computes what the pruned model does."""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import weights

from onnxprune.options import PlanOptions, VerifyOptions
from onnxprune.pipeline import Execution, execute, prepare
from onnxprune.planning import make_plan
from onnxprune.runtime import ort_session
from onnxprune.search.evaluate import PlanEvaluator, channel_moments


def _samples(model, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    spec = model.graph.input[0]
    shape = [d.dim_value or 1 for d in spec.type.tensor_type.shape.dim]
    return {spec.name: np.random.default_rng(seed).standard_normal((n, *shape[1:])).astype(np.float32)}


def _run(model, samples) -> np.ndarray:
    session = ort_session(model)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[None]})[0] for x in samples[name]])


@pytest.mark.parametrize("builder", ["residual", "concat", "depthwise", "squeeze_gemm"])
@pytest.mark.parametrize("mode", ["none", "bn"])
def test_an_evaluated_plan_is_what_the_pruned_model_computes(builder: str, mode: str) -> None:
    model = tiny.REGISTRY[builder](seed=1, dead=0.0)
    options = PlanOptions(ratio=0.5, round_to=1, min_keep=1, compensate=mode)
    prepared = prepare(model, options)
    plan = make_plan(prepared.groups, options, prepared.analysis)
    assert plan.cuts(prepared.groups), "the test needs a plan that cuts"
    samples = _samples(model, 3)
    evaluator = PlanEvaluator(prepared, samples)
    pruned = execute(prepared, plan, Execution(VerifyOptions(enabled=False))).pruned
    got, want = next(iter(evaluator.outputs(plan).values())), _run(pruned, samples)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert (
        evaluator.damage(plan) > 0
        and evaluator.damage(make_plan(prepared.groups, options.__class__(ratio=0.0))) == 0
    )


def test_unpruned_reference_is_the_original_and_means_are_per_channel() -> None:
    model = weights.load("resnet18")
    options = PlanOptions(ratio=0.3, compensate="bn")
    prepared = prepare(model, options)
    samples = _samples(model, 2)
    evaluator = PlanEvaluator(prepared, samples)
    np.testing.assert_allclose(
        next(iter(evaluator.reference.values())), _run(model, samples), rtol=1e-4, atol=1e-4
    )
    means = {k: m.mean for k, m in channel_moments(prepared, samples).items()}
    assert means and all(m.ndim == 1 for m in means.values())
